//! PostgreSQL reached over its Unix socket, in both forms README.md gives:
//! the socket's folder as the escaped host, or in a `host` parameter.

use std::time::Duration;

use serde_json::json;

use crate::common::pg_cluster::PgCluster;
use crate::common::ws::WsClient;
use crate::common::{TestServer, event_type, publish, scenario};

/// Two replicas on a cluster that refuses TCP serve, and one's publish
/// reaches the other's subscriber by the NOTIFY sent over the socket (the
/// subscriber's replica checks runs on its own only every ten minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pg_tests),
    ignore = "TEST_DATABASE_URL is not set: PostgreSQL test skipped"
)]
async fn replicas_on_the_unix_socket_serve_and_ring_each_other() {
    let cluster = PgCluster::launch(
        &[],
        "local all all trust\nhost all all 127.0.0.1/32 reject\n",
        &[],
    )
    .await;
    let dir = cluster.socket_dir().display().to_string();
    let escaped = dir.replace('/', "%2F");
    let port = cluster.port;
    let a = TestServer::start_on(
        &format!("postgres://postgres@{escaped}:{port}/postgres"),
        |_| {},
    )
    .await;
    let b = TestServer::start_on(
        &format!("postgres://postgres@localhost:{port}/postgres?host={dir}"),
        |config| config.realtime.delivery_poll_interval_ms = 600_000,
    )
    .await;
    let s = scenario(&a, "socket").await;
    event_type(&a, "tick", json!(null), 0, 1).await;
    let first = publish(&a, json!({"runId": s.run, "eventType": "tick"})).await;

    let mut ws = WsClient::ready(b.addr).await;
    ws.subscribe(
        "1",
        "subscription($r: UUID!) { events(runId: $r, afterSequence: 0) { id eventType } }",
        json!({"r": s.run}),
    )
    .await;
    let within = Duration::from_secs(20);
    let tick = tokio::time::timeout(within, next_tick(&mut ws)).await;
    assert_eq!(tick.expect("the first tick arrives"), first["id"]);
    let second = publish(&a, json!({"runId": s.run, "eventType": "tick"})).await;
    let tick = tokio::time::timeout(within, next_tick(&mut ws)).await;
    assert_eq!(tick.expect("the second tick arrives"), second["id"]);
}

/// The id of the next `tick` subscription `1` delivers.
async fn next_tick(ws: &mut WsClient) -> serde_json::Value {
    loop {
        let event = ws.next_event("1").await;
        if event["eventType"] == "tick" {
            return event["id"].clone();
        }
    }
}
