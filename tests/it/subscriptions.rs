//! Event delivery over the websocket: backlog in priority order, live
//! events, fan-out, resume after a drop, slow readers, completion.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};

use crate::both_backends;
use crate::common::ws::{ENGINE_EVENTS, WsClient};
use crate::common::{
    Backend, TestServer, event_type, last_sequence, publish, register, scenario, subscribe_compiled,
};

both_backends!(
    backlog_arrives_by_priority_then_live_events,
    every_subscriber_gets_every_event_once,
    an_engine_resumes_where_it_stopped,
    a_reader_that_pauses_loses_nothing,
    streams_complete_when_the_run_closes,
    failed_events_come_back_until_max_attempts,
    live_events_are_sent_as_stored,
);

/// A deterministic spread of priorities.
fn priorities(n: usize) -> Vec<i64> {
    let mut x: u64 = 0x2545F4914F6CDD1D;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 100) as i64
        })
        .collect()
}

async fn publish_many(
    server: &TestServer,
    run: &str,
    event_type: &str,
    priorities: &[i64],
) -> Vec<Value> {
    let inputs: Vec<Value> = priorities
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"runId": run, "eventType": event_type, "priority": p, "payload": {"i": i}}))
        .collect();
    let mut out = Vec::new();
    for chunk in inputs.chunks(500) {
        let data = server
            .gql(
                "mutation($inputs: [EventInput!]!) { publishEvents(inputs: $inputs) { id sequence priority } }",
                json!({ "inputs": chunk }),
            )
            .await;
        out.extend(data["publishEvents"].as_array().unwrap().iter().cloned());
    }
    out
}

async fn backlog_arrives_by_priority_then_live_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "backlog").await;
    event_type(&server, "job", json!(null), 0, 1).await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let published = publish_many(&server, &s.run, "job", &priorities(50)).await;

    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "1",
        ENGINE_EVENTS,
        json!({"run": s.run, "engine": engine, "types": ["job"], "max": 1000}),
    )
    .await;
    let mut received = Vec::new();
    for _ in 0..50 {
        let event = ws.next_event("1").await;
        received.push((
            event["priority"].as_i64().unwrap(),
            event["sequence"].as_i64().unwrap(),
        ));
    }
    let mut expected: Vec<(i64, i64)> = published
        .iter()
        .map(|e| {
            (
                e["priority"].as_i64().unwrap(),
                e["sequence"].as_i64().unwrap(),
            )
        })
        .collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    assert_eq!(
        received, expected,
        "backlog in (priority desc, sequence asc) order"
    );

    let live = publish(
        &server,
        json!({"runId": s.run, "eventType": "job", "priority": 1}),
    )
    .await;
    let event = ws.next_event("1").await;
    assert_eq!(event["id"], live["id"]);
}

async fn every_subscriber_gets_every_event_once(backend: Backend) {
    let server = std::sync::Arc::new(TestServer::start(backend).await);
    let s = scenario(&server, "fanout").await;
    event_type(&server, "tick", json!(null), 0, 1).await;
    let start = last_sequence(&server, &s.run).await;

    let mut subscribers = Vec::new();
    for i in 0..20 {
        let mut ws = WsClient::ready(server.addr).await;
        ws.subscribe(
            &format!("s{i}"),
            ENGINE_EVENTS,
            json!({"run": s.run, "types": ["tick"], "after": start}),
        )
        .await;
        subscribers.push(ws);
    }
    let mut publishers = Vec::new();
    for p in 0..4 {
        let server = server.clone();
        let run = s.run.clone();
        publishers.push(tokio::spawn(async move {
            for i in 0..125 {
                publish(
                    &server,
                    json!({"runId": run, "eventType": "tick", "payload": {"p": p, "i": i}}),
                )
                .await;
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let sentinel = publish(
        &server,
        json!({"runId": s.run, "eventType": "tick", "priority": -1}),
    )
    .await;

    let readers: Vec<_> = subscribers
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let sentinel = sentinel["id"].clone();
            tokio::spawn(async move {
                let id = format!("s{i}");
                let mut seen = HashSet::new();
                for _ in 0..500 {
                    let event = ws.next_event(&id).await;
                    assert!(
                        seen.insert(event["sequence"].as_i64().unwrap()),
                        "duplicate {event}"
                    );
                }
                // Nothing more than the 500 before the sentinel.
                assert_eq!(ws.next_event(&id).await["id"], sentinel);
                seen
            })
        })
        .collect();
    let expected: HashSet<i64> = ((start + 1)..=(start + 500)).collect();
    for reader in readers {
        assert_eq!(reader.await.unwrap(), expected);
    }
    // The 20 subscriptions send the same query: each event was serialized once.
    let (serialized, reused) = server.render_counts();
    assert_eq!((serialized, reused), (501, 501 * 19));
}

async fn an_engine_resumes_where_it_stopped(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "resume").await;
    event_type(&server, "job", json!(null), 0, 1).await;
    let engine = register(&server, &s.run, "NarratorEngine").await;
    let published = publish_many(&server, &s.run, "job", &vec![0; 40]).await;

    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "e",
        ENGINE_EVENTS,
        json!({"run": s.run, "engine": engine, "types": ["job"]}),
    )
    .await;
    let mut recorded = HashSet::new();
    for _ in 0..20 {
        let event = ws.next_event("e").await;
        server
            .gql(
                "mutation($ev: UUID!, $e: UUID!) { recordProcessing(input: {eventId: $ev, engineId: $e, status: PROCESSED}) { attempts } }",
                json!({ "ev": event["id"], "e": engine }),
            )
            .await;
        recorded.insert(event["id"].as_str().unwrap().to_owned());
    }
    ws.drop_connection().await;

    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "e2",
        ENGINE_EVENTS,
        json!({"run": s.run, "engine": engine, "types": ["job"], "max": 100}),
    )
    .await;
    let mut again = HashSet::new();
    for _ in 0..20 {
        let event = ws.next_event("e2").await;
        again.insert(event["id"].as_str().unwrap().to_owned());
    }
    let all: HashSet<String> = published
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(recorded.is_disjoint(&again), "nothing recorded comes again");
    assert_eq!(
        recorded.union(&again).cloned().collect::<HashSet<_>>(),
        all,
        "nothing lost"
    );
    let sentinel = publish(
        &server,
        json!({"runId": s.run, "eventType": "job", "priority": -5}),
    )
    .await;
    assert_eq!(
        ws.next_event("e2").await["id"],
        sentinel["id"],
        "and nothing else"
    );
}

async fn a_reader_that_pauses_loses_nothing(backend: Backend) {
    // Small buffers, so that the reader falls behind the feed and overflows
    // its queue: both gaps are then read from the database.
    let server = TestServer::start_with(backend, |config| {
        config.realtime.delivery_feed_capacity = 2;
        config.realtime.subscription_queue_capacity = 300;
    })
    .await;
    let s = scenario(&server, "pause").await;
    event_type(&server, "tick", json!(null), 0, 1).await;
    let start = last_sequence(&server, &s.run).await;

    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "slow",
        ENGINE_EVENTS,
        json!({"run": s.run, "types": ["tick"], "after": start}),
    )
    .await;
    // Make sure the subscription is live before the flood.
    let first = publish(
        &server,
        json!({"runId": s.run, "eventType": "tick", "priority": 0}),
    )
    .await;
    assert_eq!(ws.next_event("slow").await["id"], first["id"]);

    let mut published = Vec::new();
    for chunk in priorities(5000).chunks(100) {
        published.extend(publish_many(&server, &s.run, "tick", chunk).await);
    }
    let mut seen = HashSet::new();
    let mut last_priority = i64::MAX;
    let mut out_of_order = 0;
    for _ in 0..5000 {
        let event = ws.next_event("slow").await;
        let priority = event["priority"].as_i64().unwrap();
        if priority > last_priority {
            out_of_order += 1;
        }
        last_priority = priority;
        assert!(
            seen.insert(event["sequence"].as_i64().unwrap()),
            "duplicate {event}"
        );
    }
    let expected: HashSet<i64> = published
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(seen, expected);
    // The queue reorders what waits in it: far fewer inversions than arrival order.
    assert!(out_of_order < 2500, "{out_of_order} priority inversions");
    let sentinel = publish(
        &server,
        json!({"runId": s.run, "eventType": "tick", "priority": -1}),
    )
    .await;
    assert_eq!(
        ws.next_event("slow").await["id"],
        sentinel["id"],
        "and nothing twice"
    );
}

async fn streams_complete_when_the_run_closes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "close").await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let mut ws = WsClient::ready(server.addr).await;
    // `runUpdated` starts with the run as it is.
    ws.subscribe(
        "run",
        "subscription($r: UUID!) { runUpdated(runId: $r) { status lastSequence } }",
        json!({"r": s.run}),
    )
    .await;
    let first = ws.next_data("run").await;
    assert_eq!(first["runUpdated"]["status"], "RUNNING");
    assert_eq!(
        first["runUpdated"]["lastSequence"],
        last_sequence(&server, &s.run).await
    );
    // From the current sequence on, so that `live` gets the tick however
    // late it starts.
    let start = last_sequence(&server, &s.run).await;
    ws.subscribe("live", ENGINE_EVENTS, json!({"run": s.run, "after": start}))
        .await;
    event_type(&server, "tick", json!(null), 0, 1).await;
    let tick = publish(&server, json!({"runId": s.run, "eventType": "tick"})).await;
    assert_eq!(ws.next_event("live").await["id"], tick["id"]);

    server
        .gql(
            "mutation($r: UUID!) { setRunStatus(runId: $r, status: COMPLETED) { status } }",
            json!({"r": s.run}),
        )
        .await;
    let mut live_closed = false;
    let mut run_closed = false;
    let mut saw_status = false;
    while !(live_closed && run_closed) {
        let message = ws.message().await;
        match (
            message["id"].as_str().unwrap(),
            message["type"].as_str().unwrap(),
        ) {
            ("live", "next") => {
                assert_eq!(
                    message["payload"]["data"]["events"]["eventType"],
                    "run_status_changed"
                );
                assert_eq!(
                    message["payload"]["data"]["events"]["payload"]["to"],
                    "COMPLETED"
                );
            }
            ("live", "complete") => live_closed = true,
            ("run", "next") => {
                assert_eq!(
                    message["payload"]["data"]["runUpdated"]["status"],
                    "COMPLETED"
                );
                saw_status = true;
            }
            ("run", "complete") => run_closed = true,
            other => panic!("unexpected {other:?}: {message}"),
        }
    }
    assert!(saw_status);

    // An engine subscribing to a closed run gets its backlog, then the end.
    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "late",
        ENGINE_EVENTS,
        json!({"run": s.run, "engine": engine, "max": 100}),
    )
    .await;
    let mut types = Vec::new();
    loop {
        let message = ws.message().await;
        if message["type"] == "complete" {
            break;
        }
        types.push(
            message["payload"]["data"]["events"]["eventType"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        types,
        ["run_status_changed", "run_status_changed", "tick"],
        "by priority: 1000, 1000, 0"
    );
}

async fn failed_events_come_back_until_max_attempts(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "retry").await;
    event_type(&server, "job", json!(null), 0, 2).await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "e",
        ENGINE_EVENTS,
        json!({"run": s.run, "engine": engine, "types": ["job"]}),
    )
    .await;
    let job = publish(&server, json!({"runId": s.run, "eventType": "job"})).await;
    assert_eq!(ws.next_event("e").await["id"], job["id"]);

    const FAIL: &str = "mutation($ev: UUID!, $e: UUID!) { recordProcessing(input: {eventId: $ev, engineId: $e, status: FAILED, error: \"try again\"}) { attempts } }";
    server
        .gql(FAIL, json!({ "ev": job["id"], "e": engine }))
        .await;
    // One attempt left: the live subscription gets the event again.
    assert_eq!(ws.next_event("e").await["id"], job["id"]);
    server
        .gql(FAIL, json!({ "ev": job["id"], "e": engine }))
        .await;
    // That failure was final: nothing comes back, the next job does.
    let next = publish(&server, json!({"runId": s.run, "eventType": "job"})).await;
    assert_eq!(ws.next_event("e").await["id"], next["id"]);

    // While subscribed, the engine is online.
    let presence = server
        .gql(
            "query($e: UUID!) { engine(engineId: $e) { online lastSeenAt } }",
            json!({ "e": engine }),
        )
        .await;
    assert_eq!(presence["engine"]["online"], true);

    // Gone: offline as soon as its subscription has ended, not 30 s later.
    ws.drop_connection().await;
    let mut online = true;
    for _ in 0..100 {
        online = server
            .gql(
                "query($e: UUID!) { engine(engineId: $e) { online } }",
                json!({ "e": engine }),
            )
            .await["engine"]["online"]
            == true;
        if !online {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!online, "the engine still shows online 5 s after it left");
}

/// The fields of the `events` event in a `next` message, each as the
/// server wrote it.
fn written_fields(text: &str) -> (String, BTreeMap<String, String>) {
    #[derive(serde::Deserialize)]
    struct Message {
        payload: Payload,
    }
    #[derive(serde::Deserialize)]
    struct Payload {
        data: Data,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        events: BTreeMap<String, Box<serde_json::value::RawValue>>,
    }
    let message: Message = serde_json::from_str(text).expect("a next message");
    let fields: BTreeMap<String, String> = message
        .payload
        .data
        .events
        .into_iter()
        .map(|(k, v)| (k, v.get().to_owned()))
        .collect();
    let id = serde_json::from_str(&fields["id"]).expect("an id");
    (id, fields)
}

/// Live events reach a subscriber byte for byte as a replay reads them from
/// the database: on PostgreSQL the publisher hands the rows its statement
/// stored to the subscribers of its process, the payload as jsonb gives it
/// back (its key order, its spaces), not as the client sent it (which is
/// what the publisher's answer holds, as before). Both
/// subscriptions take the compiled path, which writes the payload as
/// stored; their selections differ, so no rendering is shared.
async fn live_events_are_sent_as_stored(backend: Backend) {
    const LIVE: &str = "subscription($r: UUID!, $a: Int) { events(runId: $r, afterSequence: $a) {
        id sequence eventType priority payload sourceEngineId parentEventId targetEngineId
        targetEngineType partitionKey createdAt deliverAt } }";
    const REPLAY: &str = "subscription($r: UUID!, $a: Int) { events(runId: $r, afterSequence: $a) {
        payload deliverAt createdAt partitionKey targetEngineType targetEngineId parentEventId
        sourceEngineId priority eventType sequence id } }";
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "as-stored").await;
    let quiet = scenario(&server, "as-stored-quiet").await;
    event_type(&server, "rich", json!(null), 0, 1).await;
    let source = register(&server, &s.run, "ActorEngine").await;
    let target = register(&server, &s.run, "NarratorEngine").await;
    let start = last_sequence(&server, &s.run).await;
    // General-path runs of both texts on a quiet run prove the documents.
    let mut general = WsClient::ready(server.addr).await;
    general.subscribe("g1", LIVE, json!({"r": quiet.run})).await;
    general
        .subscribe("g2", REPLAY, json!({"r": quiet.run}))
        .await;
    let mut live = WsClient::ready(server.addr).await;
    let vars = json!({"r": s.run, "a": start});
    let id = subscribe_compiled(&server, &mut live, "l", LIVE, &vars)
        .await
        .expect("the live subscription compiled");
    let mut sent = Vec::new();
    for i in 0..6 {
        let mut input = json!({
            "runId": s.run,
            "eventType": "rich",
            "priority": i,
            "payload": {"aaa": i, "b": {"yy": 2.5, "x": null, "text": "\u{e9} \u{2713}"}, "list": [3, 1.25, "z"]},
            "sourceEngineId": source,
            "partitionKey": format!("k{i}"),
        });
        if let Some((id, _)) = sent.first() {
            input["parentEventId"] = json!(id);
        }
        if i % 2 == 0 {
            input["targetEngineId"] = json!(target);
        } else {
            input["targetEngineType"] = json!("NarratorEngine");
            input["deliverAt"] = json!("2099-01-01T00:00:00.123456Z");
        }
        publish(&server, input).await;
        let text = live.next_text().await;
        assert!(text.contains(&format!("\"id\":\"{id}\"")), "{text}");
        sent.push(written_fields(&text));
    }
    let mut replay = WsClient::ready(server.addr).await;
    let id = subscribe_compiled(&server, &mut replay, "r", REPLAY, &vars)
        .await
        .expect("the replay compiled");
    let mut read = Vec::new();
    while read.len() < sent.len() {
        let text = replay.next_text().await;
        // Tries that the general path answered may have sent events too.
        let message: Value = serde_json::from_str(&text).unwrap();
        if message["id"] == id.as_str() && message["type"] == "next" {
            read.push(written_fields(&text));
        }
    }
    let sent: BTreeMap<_, _> = sent.into_iter().collect();
    let read: BTreeMap<_, _> = read.into_iter().collect();
    assert_eq!(sent, read);
}
