//! Engine delivery: the window (`maxInFlight`), leases and their expiry,
//! fencing with `LEASE_LOST`, retries with backoff and delayed events, seen
//! by engines that read the websocket eagerly and handle events slowly.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::common::ws::{ENGINE_EVENTS, PATIENCE, WsClient};
use crate::common::{Backend, TestServer, event_type, last_sequence, publish, register, scenario};

both_backends!(
    urgent_events_overtake_a_slow_engines_backlog,
    an_expired_lease_comes_back_and_fences_the_late_engine,
    extended_leases_hold_and_released_leases_return,
    failures_back_off_and_delayed_events_wait,
    window_arguments_are_checked,
    records_through_rest_and_the_websocket_open_the_window,
);

const COMPLETE: &str = "mutation($ev: UUID!, $e: UUID!, $l: UUID, $state: JSON) {
    completeEvent(input: {eventId: $ev, engineId: $e, status: PROCESSED, leaseId: $l, state: $state,
                          emit: [{runId: $run, eventType: \"job\"}]}) { processing { attempts } } }";

/// A server with a RUNNING run, a `job` type (`max_attempts` 1), an engine,
/// and a websocket subscribed for it as `e` with `window` (`max`, `lease`).
struct Engine {
    server: TestServer,
    run: String,
    engine: String,
    ws: WsClient,
}

async fn engine_with(backend: Backend, tag: &str, window: Value) -> Engine {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, tag).await;
    event_type(&server, "job", json!(null), 0, 1).await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let mut ws = WsClient::ready(server.addr).await;
    let mut variables = json!({"run": s.run, "engine": engine, "types": ["job"]});
    for (k, v) in window.as_object().unwrap() {
        variables[k] = v.clone();
    }
    ws.subscribe("e", ENGINE_EVENTS, variables).await;
    Engine {
        server,
        run: s.run,
        engine,
        ws,
    }
}

/// Records `event` as PROCESSED with its lease.
async fn record(server: &TestServer, engine: &str, event: &Value) -> Value {
    server
        .gql_raw(
            "mutation($ev: UUID!, $e: UUID!, $l: UUID) {
                recordProcessing(input: {eventId: $ev, engineId: $e, status: PROCESSED, leaseId: $l}) { attempts } }",
            json!({"ev": event["id"], "e": engine, "l": event["delivery"]["leaseId"]}),
        )
        .await
}

async fn urgent_events_overtake_a_slow_engines_backlog(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "window").await;
    event_type(&server, "job", json!(null), 0, 1).await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let inputs: Vec<Value> = (0..100)
        .map(|i| json!({"runId": s.run, "eventType": "job", "priority": 0, "payload": {"i": i}}))
        .collect();
    server
        .gql(
            "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }",
            json!({ "i": inputs }),
        )
        .await;

    let ws = WsClient::ready(server.addr).await;
    let mut ws = ws;
    ws.subscribe(
        "e",
        ENGINE_EVENTS,
        json!({"run": s.run, "engine": engine, "types": ["job"], "max": 1}),
    )
    .await;
    let mut engine_ws = ws.eager();
    let mut handled: Vec<i64> = Vec::new();
    while handled.len() < 105 {
        let event = engine_ws.next_event("e").await;
        assert_eq!(event["delivery"]["attempt"], 1, "{event}");
        // An LLM call.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            engine_ws.buffered(),
            0,
            "nothing else arrives while an event is unrecorded"
        );
        let answer = record(&server, &engine, &event).await;
        assert!(answer.get("errors").is_none(), "{answer}");
        handled.push(event["priority"].as_i64().unwrap());
        if handled.len() == 10 {
            let urgent: Vec<Value> = (0..5)
                .map(|i| json!({"runId": s.run, "eventType": "job", "priority": 100, "payload": {"u": i}}))
                .collect();
            server
                .gql(
                    "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }",
                    json!({ "i": urgent }),
                )
                .await;
        }
    }
    // The event delivered right before the urgent ones were published may
    // be handled first; after that, the five urgent ones, then the rest.
    let first_urgent = handled.iter().position(|p| *p == 100).unwrap();
    assert!(first_urgent <= 11, "urgent first handled at {first_urgent}");
    assert_eq!(
        handled[first_urgent..first_urgent + 5],
        [100; 5],
        "all five urgent events before any remaining low one: {handled:?}"
    );
    assert_eq!(handled.iter().filter(|p| **p == 0).count(), 100);
}

async fn an_expired_lease_comes_back_and_fences_the_late_engine(backend: Backend) {
    let Engine {
        server,
        run,
        engine,
        mut ws,
    } = engine_with(backend, "expiry", json!({"max": 1, "lease": 1})).await;
    let job = publish(&server, json!({"runId": run, "eventType": "job"})).await;
    let first = ws.next_event("e").await;
    assert_eq!(first["id"], job["id"]);
    assert_eq!(first["delivery"]["attempt"], 1);
    assert_eq!(first["delivery"]["engineId"], engine.as_str());

    // The engine hangs with its socket open: the lease expires and the same
    // subscription gets the event again, without a reconnect.
    let again = ws.next_event("e").await;
    assert_eq!(again["id"], job["id"]);
    assert_eq!(again["delivery"]["attempt"], 2);
    assert_ne!(again["delivery"]["leaseId"], first["delivery"]["leaseId"]);
    // Kept while the test looks around (a one-second lease could lapse on a
    // busy machine).
    server
        .gql(
            "mutation($ev: UUID!, $e: UUID!, $l: UUID!) {
                extendLease(input: {eventId: $ev, engineId: $e, leaseId: $l, seconds: 60}) { attempt } }",
            json!({"ev": job["id"], "e": engine, "l": again["delivery"]["leaseId"]}),
        )
        .await;

    // The hung engine wakes up and completes with its old lease: refused,
    // and nothing changes (no record, no emitted event, no sequence, no state).
    let before = server.digest().await;
    let sequence = last_sequence(&server, &run).await;
    let complete = COMPLETE.replace("$run", &format!("\"{}\"", run));
    let late = server
        .gql_err(
            &complete,
            json!({"ev": job["id"], "e": engine, "l": first["delivery"]["leaseId"], "state": {"n": 1}}),
        )
        .await;
    assert_eq!(late.code, "LEASE_LOST", "{:?}", late.raw);
    let stale = server
        .gql_err(
            "mutation($ev: UUID!, $e: UUID!, $l: UUID) {
                recordProcessing(input: {eventId: $ev, engineId: $e, status: FAILED, leaseId: $l}) { attempts } }",
            json!({"ev": job["id"], "e": engine, "l": first["delivery"]["leaseId"]}),
        )
        .await;
    assert_eq!(stale.code, "LEASE_LOST");
    assert_eq!(server.digest().await, before);
    assert_eq!(last_sequence(&server, &run).await, sequence);

    // The current lease completes.
    let done = server
        .gql(
            &complete,
            json!({"ev": job["id"], "e": engine, "l": again["delivery"]["leaseId"], "state": {"n": 1}}),
        )
        .await;
    assert_eq!(done["completeEvent"]["processing"]["attempts"], 1);
    assert_eq!(last_sequence(&server, &run).await, sequence + 1);
    // What it emitted is the next event; the completed one does not come back.
    let emitted = ws.next_event("e").await;
    assert_eq!(emitted["sequence"], sequence + 1);
    assert_eq!(emitted["delivery"]["attempt"], 1);
}

async fn extended_leases_hold_and_released_leases_return(backend: Backend) {
    let Engine {
        server,
        run,
        engine,
        mut ws,
    } = engine_with(backend, "extend", json!({"max": 1, "lease": 2})).await;
    let job = publish(&server, json!({"runId": run, "eventType": "job"})).await;
    let event = ws.next_event("e").await;
    assert_eq!(event["id"], job["id"]);
    const EXTEND: &str = "mutation($ev: UUID!, $e: UUID!, $l: UUID!, $s: Int!) {
        extendLease(input: {eventId: $ev, engineId: $e, leaseId: $l, seconds: $s}) { leaseId attempt leaseExpiresAt } }";
    let lease = &event["delivery"]["leaseId"];
    let extended = server
        .gql(
            EXTEND,
            json!({"ev": job["id"], "e": engine, "l": lease, "s": 30}),
        )
        .await["extendLease"]
        .clone();
    assert_eq!(extended["leaseId"], *lease);
    assert_eq!(extended["attempt"], 1);
    assert!(
        extended["leaseExpiresAt"].as_str().unwrap()
            > event["delivery"]["leaseExpiresAt"].as_str().unwrap()
    );
    let in_flight = server
        .gql(
            "query($e: UUID!) { engine(engineId: $e) { pendingCount inFlight { eventId leaseId attempt } } }",
            json!({"e": engine}),
        )
        .await;
    // The job, and the run's status change that every engine is sent.
    assert_eq!(in_flight["engine"]["pendingCount"], 2);
    assert_eq!(in_flight["engine"]["inFlight"][0]["leaseId"], *lease);
    // Past the original two seconds the lease still holds: the record with it
    // succeeds, and the next thing on the socket is a new event, not this one.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let answer = record(&server, &engine, &event).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    let next = publish(&server, json!({"runId": run, "eventType": "job"})).await;
    let event = ws.next_event("e").await;
    assert_eq!(event["id"], next["id"]);
    // Bad extensions: a lease that is not the current one, bad lengths.
    let lost = server
        .gql_err(
            EXTEND,
            json!({"ev": next["id"], "e": engine, "l": lease, "s": 30}),
        )
        .await;
    assert_eq!(lost.code, "LEASE_LOST");
    let bad = server
        .gql_err(
            EXTEND,
            json!({"ev": next["id"], "e": engine, "l": event["delivery"]["leaseId"], "s": 0}),
        )
        .await;
    assert_eq!(
        (bad.code.as_str(), bad.field.as_deref()),
        ("BAD_USER_INPUT", Some("input.seconds"))
    );

    // A lease that lapsed is not revived: the first event's is gone.
    let lapsed = server
        .gql_err(
            EXTEND,
            json!({"ev": job["id"], "e": engine, "l": lease, "s": 30}),
        )
        .await;
    assert_eq!(lapsed.code, "LEASE_LOST");

    // The connection drops: its unrecorded delivery is released at once.
    ws.drop_connection().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let engine_now = server
            .gql(
                "query($e: UUID!) { engine(engineId: $e) { inFlight { eventId } } }",
                json!({"e": engine}),
            )
            .await;
        if engine_now["engine"]["inFlight"] == json!([]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "lease not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A new subscription gets it again as attempt 2.
    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "e",
        ENGINE_EVENTS,
        json!({"run": run, "engine": engine, "types": ["job"], "max": 1}),
    )
    .await;
    let again = ws.next_event("e").await;
    assert_eq!(again["id"], next["id"]);
    assert_eq!(again["delivery"]["attempt"], 2);
}

async fn failures_back_off_and_delayed_events_wait(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "backoff").await;
    server
        .gql(
            "mutation { createEventType(input: {name: \"job\", category: \"test\", maxAttempts: 3, retryDelaySeconds: 1}) { retryDelaySeconds leaseSeconds } }",
            json!({}),
        )
        .await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "e",
        ENGINE_EVENTS,
        json!({"run": s.run, "engine": engine, "types": ["job"], "max": 1}),
    )
    .await;
    let job = publish(&server, json!({"runId": s.run, "eventType": "job"})).await;
    const FAIL: &str = "mutation($ev: UUID!, $e: UUID!, $l: UUID, $after: Int) {
        recordProcessing(input: {eventId: $ev, engineId: $e, status: FAILED, error: \"no\", leaseId: $l, retryAfterSeconds: $after}) { attempts } }";
    let mut event = ws.next_event("e").await;
    // The type's delay, doubled per failure: 1 s, then 2 s.
    for (attempt, wait) in [(1, 1000), (2, 2000)] {
        assert_eq!(event["id"], job["id"]);
        assert_eq!(event["delivery"]["attempt"], attempt);
        let failed_at = tokio::time::Instant::now();
        server
            .gql(
                FAIL,
                json!({"ev": job["id"], "e": engine, "l": event["delivery"]["leaseId"]}),
            )
            .await;
        event = ws.next_event("e").await;
        assert!(
            failed_at.elapsed() >= Duration::from_millis(wait - 50),
            "attempt {} came after {:?}",
            attempt + 1,
            failed_at.elapsed()
        );
    }
    assert_eq!(event["delivery"]["attempt"], 3);
    // The third failure is final: one error_occurred, and the event is done.
    let before = last_sequence(&server, &s.run).await;
    server
        .gql(
            FAIL,
            json!({"ev": job["id"], "e": engine, "l": event["delivery"]["leaseId"]}),
        )
        .await;
    assert_eq!(last_sequence(&server, &s.run).await, before + 1);
    let errors = server
        .gql(
            "query($r: UUID!) { events(runId: $r, filter: {eventTypes: [\"error_occurred\"]}) { nodes { payload } } }",
            json!({"r": s.run}),
        )
        .await;
    assert_eq!(errors["events"]["nodes"].as_array().unwrap().len(), 1);

    // retryAfterSeconds overrides the type's delay.
    let quick = publish(&server, json!({"runId": s.run, "eventType": "job"})).await;
    let event = ws.next_event("e").await;
    assert_eq!(event["id"], quick["id"]);
    server
        .gql(
            FAIL,
            json!({"ev": quick["id"], "e": engine, "l": event["delivery"]["leaseId"], "after": 0}),
        )
        .await;
    let event = ws.next_event("e").await;
    assert_eq!(
        (&event["id"], &event["delivery"]["attempt"]),
        (&quick["id"], &json!(2))
    );
    record(&server, &engine, &event).await;

    // A delayed event is published at once but delivered from deliverAt;
    // an event published after it, due now, goes first.
    let at = chrono::Utc::now() + chrono::TimeDelta::milliseconds(1500);
    let delayed = server
        .gql(
            "mutation($r: UUID!, $at: DateTime!) { publishEvent(input: {runId: $r, eventType: \"job\", priority: 50, deliverAt: $at}) { id deliverAt } }",
            json!({"r": s.run, "at": at.to_rfc3339()}),
        )
        .await["publishEvent"]
        .clone();
    assert!(delayed["deliverAt"].is_string());
    let now = publish(
        &server,
        json!({"runId": s.run, "eventType": "job", "priority": 0}),
    )
    .await;
    let event = ws.next_event("e").await;
    assert_eq!(event["id"], now["id"], "the due event first");
    record(&server, &engine, &event).await;
    let event = ws.next_event("e").await;
    assert_eq!(event["id"], delayed["id"]);
    assert!(chrono::Utc::now() >= at, "delivered before its time");
}

async fn window_arguments_are_checked(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "args").await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let mut ws = WsClient::ready(server.addr).await;
    for (i, (vars, field)) in [
        (
            json!({"run": s.run, "engine": engine, "max": 0}),
            "maxInFlight",
        ),
        (
            json!({"run": s.run, "engine": engine, "max": 1001}),
            "maxInFlight",
        ),
        (
            json!({"run": s.run, "engine": engine, "lease": 0}),
            "leaseSeconds",
        ),
        (
            json!({"run": s.run, "engine": engine, "lease": 86_401}),
            "leaseSeconds",
        ),
        (json!({"run": s.run, "max": 5}), "maxInFlight"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("bad{i}");
        ws.subscribe(&id, ENGINE_EVENTS, vars).await;
        let message = ws.message().await;
        assert_eq!(message["type"], "error", "{message}");
        assert_eq!(
            message["payload"][0]["extensions"]["code"],
            "BAD_USER_INPUT"
        );
        assert_eq!(message["payload"][0]["extensions"]["field"], field);
    }
}

async fn records_through_rest_and_the_websocket_open_the_window(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "paths").await;
    event_type(&server, "job", json!(null), 0, 1).await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let jobs: Vec<Value> = {
        let mut jobs = Vec::new();
        for i in 0..3 {
            jobs.push(
                publish(
                    &server,
                    json!({"runId": s.run, "eventType": "job", "priority": 10 - i}),
                )
                .await,
            );
        }
        jobs
    };
    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "e",
        ENGINE_EVENTS,
        json!({"run": s.run, "engine": engine, "types": ["job"], "max": 1}),
    )
    .await;
    let first = ws.next_event("e").await;
    assert_eq!(first["id"], jobs[0]["id"]);
    // The REST adapter, with the lease in snake_case.
    let response = server
        .http
        .put(server.url(&format!("/api/v1/events/{}/process", first["id"].as_str().unwrap())))
        .json(&json!({"engine_id": engine, "status": "processed", "lease_id": first["delivery"]["leaseId"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let second = ws.next_event("e").await;
    assert_eq!(second["id"], jobs[1]["id"]);
    // A stale lease through REST is a 409 LEASE_LOST.
    let stale = server
        .http
        .put(server.url(&format!("/api/v1/events/{}/process", second["id"].as_str().unwrap())))
        .json(&json!({"engine_id": engine, "status": "processed", "lease_id": first["delivery"]["leaseId"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 409);
    let body: Value = stale.json().await.unwrap();
    assert_eq!(body["error"]["code"], "LEASE_LOST");
    // A mutation over the same websocket.
    ws.subscribe(
        "m",
        "mutation($ev: UUID!, $e: UUID!, $l: UUID) {
            recordProcessing(input: {eventId: $ev, engineId: $e, status: PROCESSED, leaseId: $l}) { attempts } }",
        json!({"ev": second["id"], "e": engine, "l": second["delivery"]["leaseId"]}),
    )
    .await;
    let mut third = None;
    let mut recorded = false;
    while third.is_none() || !recorded {
        let message = ws.message().await;
        match (
            message["id"].as_str().unwrap(),
            message["type"].as_str().unwrap(),
        ) {
            ("m", "next") => {
                assert_eq!(
                    message["payload"]["data"]["recordProcessing"]["attempts"],
                    1
                );
                recorded = true;
            }
            ("m", "complete") => {}
            ("e", "next") => third = Some(message["payload"]["data"]["events"].clone()),
            other => panic!("unexpected {other:?}: {message}"),
        }
    }
    assert_eq!(third.unwrap()["id"], jobs[2]["id"]);
}
