//! What a connection holds for a slow reader is bounded in bytes
//! (`WS_SEND_BUFFER_BYTES`), so priority order and fairness between the
//! subscriptions of one connection hold for 150 KB payloads too.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::common::ws::WsClient;
use crate::common::{
    Backend, TestServer, event_type, last_sequence, publish, scenario, subscribe_compiled,
};

both_backends!(
    an_urgent_event_overtakes_large_queued_ones,
    a_quiet_subscription_is_not_held_behind_a_busy_one,
);

const READ: &str = "subscription($r: UUID!, $after: Int, $types: [String!]) {
    events(runId: $r, afterSequence: $after, eventTypes: $types) { id priority eventType payload } }";

/// What a watcher on its own connection subscribes to: it learns when the
/// server's run feed has an event, so that the slow reader starts reading
/// only once the event is in the server's hands, however loaded the machine.
const WATCH: &str = "subscription($r: UUID!, $after: Int, $types: [String!], $min: Int) {
    events(runId: $r, afterSequence: $after, eventTypes: $types, minPriority: $min) { id } }";

/// The reader's kernel buffer: small, so that what waits is the server's.
const RECEIVE_BUFFER: u32 = 16 * 1024;

/// Which path the slow reader's subscriptions take: both must keep the
/// byte bound's promises.
#[derive(Debug, Clone, Copy)]
enum Path {
    General,
    Compiled,
}

/// Subscribes `READ` for `variables` on `ws` through `path`; returns the
/// operation's id.
async fn subscribe(
    server: &TestServer,
    ws: &mut WsClient,
    path: Path,
    id: &str,
    variables: Value,
) -> String {
    match path {
        Path::General => {
            ws.subscribe(id, READ, variables).await;
            id.to_owned()
        }
        Path::Compiled => {
            // A general-path operation of the same text, on its own
            // connection and selecting nothing that will arrive, proves it.
            let mut prover = WsClient::ready(server.addr).await;
            prover
                .subscribe(
                    "prove",
                    READ,
                    json!({"r": variables["r"], "types": ["none"]}),
                )
                .await;
            subscribe_compiled(server, ws, id, READ, &variables)
                .await
                .expect("the compiled path answers the reader")
        }
    }
}

/// Publishes `n` events of `event_type` with 150 KB payloads, five per call.
async fn publish_large(server: &TestServer, run: &str, event_type: &str, n: usize) {
    let blob = "x".repeat(150_000);
    let inputs: Vec<Value> = (0..n)
        .map(|i| json!({"runId": run, "eventType": event_type, "priority": 0, "payload": {"i": i, "blob": blob}}))
        .collect();
    for chunk in inputs.chunks(5) {
        server
            .gql(
                "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }",
                json!({ "i": chunk }),
            )
            .await;
    }
}

/// Reads `n` messages slowly and returns the (operation id, event) pairs.
async fn read_slowly(ws: &mut WsClient, n: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for _ in 0..n {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let message = ws.message().await;
        assert_eq!(message["type"], "next", "{message}");
        out.push((
            message["id"].as_str().unwrap().to_owned(),
            message["payload"]["data"]["events"].clone(),
        ));
    }
    out
}

async fn an_urgent_event_overtakes_large_queued_ones(backend: Backend) {
    for path in [Path::General, Path::Compiled] {
        urgent_overtakes(backend, path).await;
    }
}

async fn urgent_overtakes(backend: Backend, path: Path) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "bytes").await;
    event_type(&server, "big", json!(null), 0, 1).await;
    let start = last_sequence(&server, &s.run).await;
    let mut ws = WsClient::ready_with_receive_buffer(server.addr, RECEIVE_BUFFER).await;
    let r = subscribe(
        &server,
        &mut ws,
        path,
        "r",
        json!({"r": s.run, "after": start, "types": ["big"]}),
    )
    .await;
    let mut watcher = WsClient::ready(server.addr).await;
    watcher
        .subscribe("w", WATCH, json!({"r": s.run, "after": start, "min": 100}))
        .await;
    let marker = publish(&server, json!({"runId": s.run, "eventType": "big"})).await;
    assert_eq!(ws.next_event(&r).await["id"], marker["id"]);

    publish_large(&server, &s.run, "big", 30).await;
    let urgent = publish(
        &server,
        json!({"runId": s.run, "eventType": "big", "priority": 100}),
    )
    .await;
    assert_eq!(watcher.next_event("w").await["id"], urgent["id"]);
    let received = read_slowly(&mut ws, 31).await;
    let at = received
        .iter()
        .position(|(_, e)| e["id"] == urgent["id"])
        .expect("the urgent event arrives");
    // Ahead of it: at most what the server had already let go (one event
    // being rendered, the 128 KiB queue, the 128 KiB socket buffer) and
    // what the reader's own buffer held.
    assert!(
        at <= 6,
        "the urgent event came {at}th of 31 ({path:?} path)"
    );
    let ids: std::collections::HashSet<String> = received
        .iter()
        .map(|(_, e)| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 31, "every event once");
}

async fn a_quiet_subscription_is_not_held_behind_a_busy_one(backend: Backend) {
    for path in [Path::General, Path::Compiled] {
        quiet_not_held(backend, path).await;
    }
}

async fn quiet_not_held(backend: Backend, path: Path) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "fair").await;
    event_type(&server, "big", json!(null), 0, 1).await;
    event_type(&server, "small", json!(null), 0, 1).await;
    let start = last_sequence(&server, &s.run).await;
    let mut ws = WsClient::ready_with_receive_buffer(server.addr, RECEIVE_BUFFER).await;
    let busy = subscribe(
        &server,
        &mut ws,
        path,
        "busy",
        json!({"r": s.run, "after": start, "types": ["big"]}),
    )
    .await;
    let quiet = subscribe(
        &server,
        &mut ws,
        path,
        "quiet",
        json!({"r": s.run, "after": start, "types": ["small"]}),
    )
    .await;
    let mut watcher = WsClient::ready(server.addr).await;
    watcher
        .subscribe(
            "w",
            WATCH,
            json!({"r": s.run, "after": start, "types": ["small"]}),
        )
        .await;
    let first_small = publish(&server, json!({"runId": s.run, "eventType": "small"})).await;
    assert_eq!(watcher.next_event("w").await["id"], first_small["id"]);
    publish(&server, json!({"runId": s.run, "eventType": "big"})).await;
    let mut live: Vec<String> = read_slowly(&mut ws, 2)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    live.sort();
    let mut both = [busy, quiet.clone()];
    both.sort();
    assert_eq!(live, both);

    publish_large(&server, &s.run, "big", 30).await;
    let small = publish(&server, json!({"runId": s.run, "eventType": "small"})).await;
    assert_eq!(watcher.next_event("w").await["id"], small["id"]);
    let received = read_slowly(&mut ws, 31).await;
    let at = received
        .iter()
        .position(|(id, e)| *id == quiet && e["id"] == small["id"])
        .expect("the quiet subscription's event arrives");
    assert!(at <= 6, "the quiet event came {at}th of 31 ({path:?} path)");
}
