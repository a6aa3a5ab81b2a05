//! Concurrent publishers into one run get gapless, unique sequences; many
//! concurrent requests on a small PostgreSQL pool open each connection once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use crate::both_backends;
use crate::common::{Backend, TestDb, TestServer, event_type, last_sequence, publish, scenario};

both_backends!(concurrent_publishers_get_gapless_sequences);

async fn concurrent_publishers_get_gapless_sequences(backend: Backend) {
    let server = std::sync::Arc::new(TestServer::start(backend).await);
    let s = scenario(&server, "conc").await;
    event_type(&server, "tick", json!(null), 0, 1).await;
    let start = last_sequence(&server, &s.run).await;

    let mut tasks = Vec::new();
    for task in 0..8 {
        let server = server.clone();
        let run = s.run.clone();
        tasks.push(tokio::spawn(async move {
            let mut sequences = Vec::with_capacity(200);
            for i in 0..200 {
                let event = server
                    .gql(
                        "mutation($r: UUID!, $p: JSON) { publishEvent(input: {runId: $r, eventType: \"tick\", payload: $p}) { sequence } }",
                        json!({ "r": run, "p": {"task": task, "i": i} }),
                    )
                    .await;
                sequences.push(event["publishEvent"]["sequence"].as_i64().unwrap());
            }
            sequences
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let sequences = task.await.unwrap();
        // Each publisher sees its own events in increasing order.
        assert!(sequences.windows(2).all(|w| w[0] < w[1]));
        all.extend(sequences);
    }
    let unique: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 1600);
    assert_eq!(unique.len(), 1600, "no duplicate");
    assert_eq!(unique, ((start + 1)..=(start + 1600)).collect(), "no gap");
    assert_eq!(last_sequence(&server, &s.run).await, start + 1600);

    // What the database holds agrees.
    let stored = server
        .gql(
            "query($r: UUID!, $after: Int) { events(runId: $r, filter: {afterSequence: $after, eventTypes: [\"tick\"]}, first: 500) { nodes { sequence } pageInfo { hasNextPage } } }",
            json!({ "r": s.run, "after": start + 1500 }),
        )
        .await;
    let tail: Vec<i64> = stored["events"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(tail, ((start + 1501)..=(start + 1600)).collect::<Vec<_>>());
}

/// More concurrent requests than pooled connections: waiting requests take
/// connections others give back, and no connection attempt is started and
/// abandoned on the way (each one a forked backend and a TLS handshake on
/// PostgreSQL's side). Counted at a TCP proxy in front of PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pg_tests),
    ignore = "TEST_DATABASE_URL is not set: PostgreSQL test skipped"
)]
async fn a_busy_pool_opens_each_connection_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let (proxy, opened) = counting_proxy(&db.url).await;
    let pool = 4;
    let server = Arc::new(
        TestServer::start_on(&proxy, |config| {
            config.database.database_max_connections = Some(pool);
        })
        .await,
    );
    let s = scenario(&server, "pool").await;
    event_type(&server, "tick", json!(null), 0, 1).await;
    for i in 0..60 {
        publish(
            &server,
            json!({"runId": s.run, "eventType": "tick", "priority": i % 7}),
        )
        .await;
    }
    let before = opened.load(Ordering::SeqCst);
    let readers: Vec<_> = (0..48)
        .map(|_| {
            let server = server.clone();
            let run = s.run.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    let page = server
                        .gql(
                            "query($r: UUID!) { events(runId: $r, orderBy: PRIORITY, first: 50) { nodes { sequence } } }",
                            json!({ "r": run }),
                        )
                        .await;
                    assert_eq!(page["events"]["nodes"].as_array().unwrap().len(), 50);
                }
            })
        })
        .collect();
    for reader in readers {
        reader.await.unwrap();
    }
    let during = opened.load(Ordering::SeqCst) - before;
    assert!(
        during <= pool as usize,
        "{during} connections opened for 960 reads on a pool of {pool}"
    );
}

/// A TCP proxy to the PostgreSQL server of `url`: the same URL through the
/// proxy, and how many connections it has accepted.
async fn counting_proxy(url: &str) -> (String, Arc<AtomicUsize>) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, rest) = rest.rsplit_once('@').map_or(("", rest), |(u, r)| (u, r));
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let target = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let opened = Arc::new(AtomicUsize::new(0));
    let count = opened.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    let at = if userinfo.is_empty() {
        String::new()
    } else {
        format!("{userinfo}@")
    };
    (format!("{scheme}://{at}{addr}{path}"), opened)
}
