//! Faults: a server killed with SIGKILL and restarted on the same database,
//! and two replicas on one PostgreSQL database, one of which loses its
//! LISTEN connection.

use std::collections::HashSet;

use serde_json::json;

use crate::both_backends;
use crate::common::process::{Client, ProcessServer};
use crate::common::ws::{ENGINE_EVENTS, WsClient};
use crate::common::{Backend, TestDb, compiled_count_at};

both_backends!(
    an_engine_resumes_after_the_server_is_killed,
    a_delayed_event_survives_a_killed_server,
    a_stopping_server_releases_its_engines_leases,
);

/// Two replicas on `db` whose periodic delivery check waits ten minutes:
/// within a test only doorbells and timers act.
async fn slow_replicas(db: &TestDb) -> (ProcessServer, ProcessServer) {
    let slow_poll = [("DELIVERY_POLL_INTERVAL_MS", "600000")];
    (
        ProcessServer::spawn(&db.url, &slow_poll).await,
        ProcessServer::spawn(&db.url, &slow_poll).await,
    )
}

/// A run with an engine and `n` events of type `job`, made through `client`.
async fn prepared_run(client: &Client, n: usize) -> (String, String, Vec<String>) {
    let run = client.job_run("crash").await;
    let engine = client
        .gql(
            "mutation($r: UUID!) { registerEngine(input: {runId: $r, engineType: \"ActorEngine\"}) { engineId } }",
            json!({ "r": run }),
        )
        .await["registerEngine"]["engineId"]
        .as_str()
        .unwrap()
        .to_owned();
    let inputs: Vec<_> = (0..n)
        .map(|i| json!({"runId": run, "eventType": "job", "payload": {"i": i}}))
        .collect();
    let events = client
        .gql(
            "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }",
            json!({ "i": inputs }),
        )
        .await["publishEvents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    (run, engine, events)
}

async fn an_engine_resumes_after_the_server_is_killed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = ProcessServer::spawn(&db.url, &[]).await;
    let client = Client::new(server.addr);
    let (run, engine, events) = prepared_run(&client, 40).await;

    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "e",
        ENGINE_EVENTS,
        json!({"run": run, "engine": engine, "types": ["job"]}),
    )
    .await;
    let mut recorded = HashSet::new();
    for _ in 0..20 {
        let event = ws.next_event("e").await;
        client
            .gql(
                "mutation($ev: UUID!, $e: UUID!) { completeEvent(input: {eventId: $ev, engineId: $e, status: PROCESSED, state: {done: true}}) { engine { version } } }",
                json!({ "ev": event["id"], "e": engine }),
            )
            .await;
        recorded.insert(event["id"].as_str().unwrap().to_owned());
    }
    server.kill();

    let server = ProcessServer::spawn(&db.url, &[]).await;
    let client = Client::new(server.addr);
    let state = client
        .gql(
            "query($e: UUID!) { engine(engineId: $e) { version } }",
            json!({ "e": engine }),
        )
        .await;
    assert_eq!(
        state["engine"]["version"], 21,
        "every completed state survived"
    );
    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "e",
        ENGINE_EVENTS,
        json!({"run": run, "engine": engine, "types": ["job"], "max": 100}),
    )
    .await;
    let mut rest = HashSet::new();
    for _ in 0..20 {
        rest.insert(ws.next_event("e").await["id"].as_str().unwrap().to_owned());
    }
    assert!(recorded.is_disjoint(&rest));
    assert_eq!(
        recorded.union(&rest).cloned().collect::<HashSet<_>>(),
        events.into_iter().collect()
    );
    let sentinel = client
        .gql(
            "mutation($r: UUID!) { publishEvent(input: {runId: $r, eventType: \"job\", priority: -1}) { id } }",
            json!({ "r": run }),
        )
        .await["publishEvent"]["id"]
        .clone();
    assert_eq!(
        ws.next_event("e").await["id"],
        sentinel,
        "and nothing twice"
    );
}

/// Two replicas on one PostgreSQL database: what is published through one
/// reaches a subscriber of the other, exactly once and in order, also after
/// the subscriber's replica loses its LISTEN connection. The periodic check
/// is slowed down so that only the doorbell can deliver in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pg_tests),
    ignore = "TEST_DATABASE_URL is not set: PostgreSQL test skipped"
)]
async fn replicas_deliver_each_others_events_and_survive_a_lost_listen() {
    let db = TestDb::new(Backend::Postgres).await;
    let (a, b) = slow_replicas(&db).await;
    let via_b = Client::new(b.addr);
    let (run, _engine, _) = prepared_run(&via_b, 0).await;
    let start = via_b
        .gql(
            "query($r: UUID!) { scenarioRun(id: $r) { lastSequence } }",
            json!({ "r": run }),
        )
        .await["scenarioRun"]["lastSequence"]
        .as_i64()
        .unwrap();

    let mut ws = WsClient::ready(a.addr).await;
    ws.subscribe(
        "d",
        ENGINE_EVENTS,
        json!({"run": run, "types": ["job"], "after": start}),
    )
    .await;
    let publish = |n: usize| {
        let via_b = &via_b;
        let run = run.clone();
        async move {
            for i in 0..n {
                via_b
                    .gql(
                        "mutation($r: UUID!, $i: Int) { publishEvent(input: {runId: $r, eventType: \"job\", payload: {i: $i}}) { sequence } }",
                        json!({ "r": run, "i": i }),
                    )
                    .await;
            }
        }
    };
    publish(30).await;
    let mut expected = start;
    for _ in 0..30 {
        expected += 1;
        assert_eq!(
            ws.next_event("d").await["sequence"],
            expected,
            "in sequence order, once"
        );
    }

    // Cut every LISTEN connection of the database; the replicas reconnect.
    let admin = sea_orm::Database::connect(db.url.as_str()).await.unwrap();
    use sea_orm::ConnectionTrait;
    let killed = admin
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()",
        ))
        .await
        .unwrap();
    assert_eq!(killed.len(), 2, "both replicas were listening");
    admin.close().await.unwrap();

    publish(30).await;
    for _ in 0..30 {
        expected += 1;
        assert_eq!(
            ws.next_event("d").await["sequence"],
            expected,
            "nothing lost across the reconnect"
        );
    }
    drop((a, b));
}

const RECORD: &str = "mutation($ev: UUID!, $e: UUID!, $l: UUID) {
    recordProcessing(input: {eventId: $ev, engineId: $e, status: PROCESSED, leaseId: $l}) { attempts } }";

/// Publishes a `job` through `client` that is due `delay` from now; returns
/// its id and due time.
async fn publish_delayed(
    client: &Client,
    run: &str,
    delay: chrono::TimeDelta,
) -> (serde_json::Value, chrono::DateTime<chrono::Utc>) {
    let at = chrono::Utc::now() + delay;
    let id = client
        .gql(
            "mutation($r: UUID!, $at: DateTime!) { publishEvent(input: {runId: $r, eventType: \"job\", deliverAt: $at}) { id } }",
            json!({ "r": run, "at": at.to_rfc3339() }),
        )
        .await["publishEvent"]["id"]
        .clone();
    (id, at)
}

/// The timer of a delayed event lives in the database: a server killed
/// before it is due, restarted, delivers it on time.
async fn a_delayed_event_survives_a_killed_server(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = ProcessServer::spawn(&db.url, &[]).await;
    let client = Client::new(server.addr);
    let (run, engine, _) = prepared_run(&client, 0).await;
    let (delayed, at) = publish_delayed(&client, &run, chrono::TimeDelta::seconds(2)).await;
    server.kill();

    let server = ProcessServer::spawn(&db.url, &[]).await;
    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "e",
        ENGINE_EVENTS,
        json!({"run": run, "engine": engine, "types": ["job"]}),
    )
    .await;
    let event = ws.next_event("e").await;
    assert_eq!(event["id"], delayed);
    assert!(chrono::Utc::now() >= at, "delivered before its time");
}

/// Two replicas on one PostgreSQL database, with the periodic check slowed
/// down so that only doorbells and timers act: a record through replica B
/// opens the window of an engine subscribed on replica A, and a delayed
/// event published through B is delivered on time by A after B is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pg_tests),
    ignore = "TEST_DATABASE_URL is not set: PostgreSQL test skipped"
)]
async fn replicas_share_windows_and_timers() {
    let db = TestDb::new(Backend::Postgres).await;
    let (a, b) = slow_replicas(&db).await;
    let via_b = Client::new(b.addr);
    let (run, engine, jobs) = prepared_run(&via_b, 2).await;

    let mut ws = WsClient::ready(a.addr).await;
    ws.subscribe(
        "e",
        ENGINE_EVENTS,
        json!({"run": run, "engine": engine, "types": ["job"], "max": 1}),
    )
    .await;
    let first = ws.next_event("e").await;
    assert_eq!(first["id"], jobs[0].as_str());
    via_b
        .gql(
            RECORD,
            json!({"ev": first["id"], "e": engine, "l": first["delivery"]["leaseId"]}),
        )
        .await;
    let second = ws.next_event("e").await;
    assert_eq!(
        second["id"],
        jobs[1].as_str(),
        "the record on B opened A's window"
    );

    // A delayed event, then one due now: once A has sent the second, its
    // feed has read past the first, and B may go.
    let (delayed, at) = publish_delayed(&via_b, &run, chrono::TimeDelta::seconds(2)).await;
    via_b
        .gql(
            RECORD,
            json!({"ev": second["id"], "e": engine, "l": second["delivery"]["leaseId"]}),
        )
        .await;
    let now = via_b
        .gql(
            "mutation($r: UUID!) { publishEvent(input: {runId: $r, eventType: \"job\"}) { id } }",
            json!({ "r": run }),
        )
        .await["publishEvent"]["id"]
        .clone();
    let event = ws.next_event("e").await;
    assert_eq!(event["id"], now);
    b.kill();
    let via_a = Client::new(a.addr);
    via_a
        .gql(
            RECORD,
            json!({"ev": event["id"], "e": engine, "l": event["delivery"]["leaseId"]}),
        )
        .await;
    let event = ws.next_event("e").await;
    assert_eq!(event["id"], delayed);
    assert!(chrono::Utc::now() >= at, "delivered before its time");
}

/// A batch of records (aliased `recordProcessing` fields, one transaction
/// on the compiled path) through replica B opens the window of an engine
/// subscribed on replica A: its news crosses as one NOTIFY naming every
/// event of the batch. The periodic check is slowed down so that only the
/// doorbell can do it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pg_tests),
    ignore = "TEST_DATABASE_URL is not set: PostgreSQL test skipped"
)]
async fn a_batch_of_records_on_one_replica_opens_the_window_on_another() {
    const BATCH: &str = "mutation($a: RecordProcessingInput!, $b: RecordProcessingInput!) {
        a: recordProcessing(input: $a) { attempts } b: recordProcessing(input: $b) { attempts } }";
    let db = TestDb::new(Backend::Postgres).await;
    let (a, b) = slow_replicas(&db).await;
    let via_b = Client::new(b.addr);
    let (run, engine, jobs) = prepared_run(&via_b, 6).await;

    let mut ws = WsClient::ready(a.addr).await;
    ws.subscribe(
        "e",
        ENGINE_EVENTS,
        json!({"run": run, "engine": engine, "types": ["job"], "max": 2}),
    )
    .await;
    // The first batch proves the document on the general path (a record
    // each); the second is compiled (one transaction, one piece of news).
    for (round, expected) in jobs.chunks(2).enumerate() {
        let held = [ws.next_event("e").await, ws.next_event("e").await];
        let ids: HashSet<&str> = held.iter().map(|e| e["id"].as_str().unwrap()).collect();
        let wanted: HashSet<&str> = expected.iter().map(String::as_str).collect();
        assert_eq!(ids, wanted, "round {round}: the window's next two");
        if round == 2 {
            break;
        }
        let before = compiled_count_at(b.addr).await;
        let input = |e: &serde_json::Value| {
            json!({"eventId": e["id"], "engineId": engine, "status": "PROCESSED",
                   "leaseId": e["delivery"]["leaseId"]})
        };
        let answer = via_b
            .gql(BATCH, json!({"a": input(&held[0]), "b": input(&held[1])}))
            .await;
        assert_eq!(answer["a"]["attempts"], 1, "{answer}");
        assert_eq!(answer["b"]["attempts"], 1, "{answer}");
        assert_eq!(
            compiled_count_at(b.addr).await > before,
            round == 1,
            "round {round}"
        );
    }
}

/// SIGTERM ends every subscription, and their unrecorded deliveries are
/// released before the process exits: nothing waits for a lease to expire.
async fn a_stopping_server_releases_its_engines_leases(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = ProcessServer::spawn(&db.url, &[]).await;
    let client = Client::new(server.addr);
    let (run, engine, jobs) = prepared_run(&client, 3).await;
    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "e",
        ENGINE_EVENTS,
        json!({"run": run, "engine": engine, "types": ["job"], "max": 2}),
    )
    .await;
    ws.next_event("e").await;
    ws.next_event("e").await;
    const IN_FLIGHT: &str =
        "query($e: UUID!) { engine(engineId: $e) { inFlight { eventId } pendingCount } }";
    let held = client.gql(IN_FLIGHT, json!({ "e": engine })).await;
    assert_eq!(held["engine"]["inFlight"].as_array().unwrap().len(), 2);
    assert!(server.stop("TERM").await.success());

    let server = ProcessServer::spawn(&db.url, &[]).await;
    let client = Client::new(server.addr);
    let after = client.gql(IN_FLIGHT, json!({ "e": engine })).await;
    assert_eq!(
        after["engine"]["inFlight"],
        json!([]),
        "released at shutdown"
    );
    // Still pending: the three jobs and the run's status change.
    assert_eq!(after["engine"]["pendingCount"], jobs.len() + 1);
}

/// PostgreSQL drops every connection of the server (as a restart does):
/// the calls that meet a dead connection answer `UNAVAILABLE` (retryable,
/// 503 on REST), never `INTERNAL`, and the server serves again on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pg_tests),
    ignore = "TEST_DATABASE_URL is not set: PostgreSQL test skipped"
)]
async fn dropped_database_connections_are_unavailable_then_served_again() {
    use sea_orm::ConnectionTrait;
    let server = crate::common::TestServer::start(Backend::Postgres).await;
    let s = crate::common::scenario(&server, "restart").await;
    let query = "query($r: UUID!) { scenarioRun(id: $r) { lastSequence } }";
    // Warm the pool: several connections open and idle.
    let warm: Vec<_> = (0..8)
        .map(|_| server.gql_raw(query, json!({"r": s.run})))
        .collect();
    futures::future::join_all(warm).await;

    let admin = sea_orm::Database::connect(server.database_url())
        .await
        .unwrap();
    admin
        .execute_unprepared(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap();
    admin.close().await.unwrap();

    let mut codes = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let answers =
            futures::future::join_all((0..8).map(|_| server.gql_raw(query, json!({"r": s.run}))))
                .await;
        let failed: Vec<String> = answers
            .iter()
            .filter_map(|a| a["errors"][0]["extensions"]["code"].as_str())
            .map(str::to_owned)
            .collect();
        let all_served = failed.is_empty();
        codes.extend(failed);
        if all_served {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "served again: {codes:?}"
        );
    }
    assert!(!codes.is_empty(), "some call met a dropped connection");
    assert!(codes.iter().all(|c| c == "UNAVAILABLE"), "{codes:?}");
}

/// What the load of the restart test saw: successes, and the codes of the
/// calls that failed.
#[derive(Default)]
struct Outcomes {
    published: Vec<i64>,
    saved: usize,
    graphql_codes: Vec<String>,
    rest_failures: Vec<(u16, String)>,
}

/// `pg_ctl restart` of the database under load (a GraphQL publisher and a
/// REST state saver calling without pause, a subscriber reading): the calls
/// caught in the restart answer `UNAVAILABLE` (503 on REST), never
/// `INTERNAL`; the server serves again without a restart of its own; and the
/// subscriber receives every committed event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pg_tests),
    ignore = "TEST_DATABASE_URL is not set: PostgreSQL test skipped"
)]
async fn a_restarted_database_is_unavailable_then_served_again_losing_nothing() {
    use crate::common::pg_cluster::PgCluster;
    use crate::common::{TestServer, event_type, register, scenario};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    let cluster = PgCluster::launch(
        &[],
        "local all all trust\nhost all all 127.0.0.1/32 trust\n",
        &[],
    )
    .await;
    let server = Arc::new(TestServer::start_on(&cluster.url("127.0.0.1", ""), |_| {}).await);
    let s = scenario(&server, "restart").await;
    event_type(&server, "tick", json!(null), 0, 1).await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "1",
        "subscription($r: UUID!) { events(runId: $r, afterSequence: 0) { sequence } }",
        json!({"r": s.run}),
    )
    .await;
    let mut reader = ws.eager();

    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let publisher = tokio::spawn({
        let (server, outcomes, stop, run) = (
            server.clone(),
            outcomes.clone(),
            stop.clone(),
            s.run.clone(),
        );
        async move {
            while !stop.is_cancelled() {
                let answer = server
                    .gql_raw(
                        "mutation($r: UUID!) { publishEvent(input: {runId: $r, eventType: \"tick\"}) { sequence } }",
                        json!({"r": run}),
                    )
                    .await;
                let mut seen = outcomes.lock().unwrap();
                match answer["errors"][0]["extensions"]["code"].as_str() {
                    None => seen
                        .published
                        .push(answer["data"]["publishEvent"]["sequence"].as_i64().unwrap()),
                    Some(code) => seen.graphql_codes.push(code.to_owned()),
                }
            }
        }
    });
    let saver = tokio::spawn({
        let (server, outcomes, stop) = (server.clone(), outcomes.clone(), stop.clone());
        let path = format!("/api/v1/engine_instances/{engine}/state");
        async move {
            let mut n = 0;
            while !stop.is_cancelled() {
                n += 1;
                let response = server
                    .http
                    .put(server.url(&path))
                    .json(&json!({"state": {"n": n}}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap();
                let mut seen = outcomes.lock().unwrap();
                if status == 200 {
                    seen.saved += 1;
                } else {
                    let code = body["error"]["code"].as_str().unwrap_or_default();
                    seen.rest_failures.push((status, code.to_owned()));
                }
            }
        }
    });
    let progress = |outcomes: &Mutex<Outcomes>| {
        let seen = outcomes.lock().unwrap();
        (seen.published.len(), seen.saved)
    };
    let until = |goal: (usize, usize)| {
        let outcomes = outcomes.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let (published, saved) = progress(&outcomes);
                if published >= goal.0 && saved >= goal.1 {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "served: {published} publishes, {saved} saves of {goal:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    until((20, 20)).await;
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart();
        cluster
    })
    .await
    .unwrap();
    // Served again, by the same server process, for a while.
    let (published, saved) = progress(&outcomes);
    until((published + 50, saved + 50)).await;
    stop.cancel();
    publisher.await.unwrap();
    saver.await.unwrap();

    let seen = std::mem::take(&mut *outcomes.lock().unwrap());
    eprintln!(
        "{} publishes, {} saves; failed: GraphQL {:?}, REST {:?}",
        seen.published.len(),
        seen.saved,
        seen.graphql_codes,
        seen.rest_failures
    );
    assert!(
        seen.graphql_codes.iter().all(|code| code == "UNAVAILABLE"),
        "{:?}",
        seen.graphql_codes
    );
    assert!(
        seen.rest_failures
            .iter()
            .all(|(status, code)| *status == 503 && code == "UNAVAILABLE"),
        "{:?}",
        seen.rest_failures
    );
    assert!(
        !seen.graphql_codes.is_empty() || !seen.rest_failures.is_empty(),
        "some call was caught in the restart"
    );

    // Every committed event reaches the subscriber once, in order: the
    // acknowledged ones and any whose answer the restart cut off.
    let last = server
        .gql(
            "query($r: UUID!) { scenarioRun(id: $r) { lastSequence } }",
            json!({"r": s.run}),
        )
        .await["scenarioRun"]["lastSequence"]
        .as_i64()
        .unwrap();
    let mut received = Vec::new();
    while received.last() != Some(&last) {
        received.push(reader.next_event("1").await["sequence"].as_i64().unwrap());
    }
    assert_eq!(received, (1..=last).collect::<Vec<_>>());
    let acknowledged: HashSet<i64> = seen.published.iter().copied().collect();
    assert!(acknowledged.iter().all(|sequence| *sequence <= last));
    drop(cluster);
}
