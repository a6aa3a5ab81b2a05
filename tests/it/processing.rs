//! Processing records, retries up to `maxAttempts`, `error_occurred`, and
//! `completeEvent`'s all-or-nothing.

use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{Backend, TestServer, event_type, last_sequence, publish, register, scenario};

both_backends!(
    failures_retry_until_max_attempts_then_publish_error_occurred,
    complete_event_records_emits_and_saves_at_once,
    complete_event_with_a_bad_emit_changes_nothing,
    complete_event_with_a_stale_version_changes_nothing,
);

const RECORD: &str = "mutation($ev: UUID!, $e: UUID!, $s: ProcessingStatus!, $err: String) {
    recordProcessing(input: {eventId: $ev, engineId: $e, status: $s, error: $err}) { eventId engineId status error attempts processedAt } }";

async fn pending_ids(server: &TestServer, run: &str, engine: &str, types: Value) -> Vec<Value> {
    server
        .gql(
            "query($r: UUID!, $e: UUID!, $t: [String!]) { events(runId: $r, filter: {pendingFor: $e, eventTypes: $t}) { nodes { id } } }",
            json!({ "r": run, "e": engine, "t": types }),
        )
        .await["events"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].clone())
        .collect()
}

async fn error_events(server: &TestServer, run: &str) -> Vec<Value> {
    server
        .gql(
            "query($r: UUID!) { events(runId: $r, filter: {eventTypes: [\"error_occurred\"]}) { nodes { payload parentEventId sourceEngineId } } }",
            json!({ "r": run }),
        )
        .await["events"]["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

async fn failures_retry_until_max_attempts_then_publish_error_occurred(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "retry").await;
    event_type(&server, "job", json!(null), 0, 3).await;
    let engine = register(&server, &s.run, "AnalystEngine").await;
    let job = publish(&server, json!({"runId": s.run, "eventType": "job"})).await;
    let only_jobs = json!(["job"]);

    for attempt in 1..=2 {
        let rec = server
            .gql(RECORD, json!({ "ev": job["id"], "e": engine, "s": "FAILED", "err": format!("boom {attempt}") }))
            .await["recordProcessing"]
            .clone();
        assert_eq!(rec["attempts"], attempt);
        assert_eq!(rec["status"], "FAILED");
        assert_eq!(
            pending_ids(&server, &s.run, &engine, only_jobs.clone()).await,
            [job["id"].clone()],
            "still pending after {attempt} failures"
        );
        assert!(error_events(&server, &s.run).await.is_empty());
    }
    let last = server
        .gql(
            RECORD,
            json!({ "ev": job["id"], "e": engine, "s": "FAILED", "err": "boom 3" }),
        )
        .await["recordProcessing"]
        .clone();
    assert_eq!(last["attempts"], 3);
    assert!(
        pending_ids(&server, &s.run, &engine, only_jobs.clone())
            .await
            .is_empty(),
        "the third failure is final"
    );
    let errors = error_events(&server, &s.run).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0]["payload"],
        json!({"eventId": job["id"], "engineId": engine, "error": "boom 3", "attempts": 3})
    );
    assert_eq!(errors[0]["parentEventId"], job["id"]);

    // Recording again later is idempotent for retries: it counts, and
    // announces no second final failure.
    let again = server
        .gql(
            RECORD,
            json!({ "ev": job["id"], "e": engine, "s": "PROCESSED" }),
        )
        .await["recordProcessing"]
        .clone();
    assert_eq!(
        (again["attempts"].as_i64(), again["status"].as_str()),
        (Some(4), Some("PROCESSED"))
    );
    assert_eq!(error_events(&server, &s.run).await.len(), 1);

    let processed_by = server
        .gql("query($id: UUID!) { event(id: $id) { processedBy { engineId status attempts error } } }", json!({ "id": job["id"] }))
        .await;
    assert_eq!(
        processed_by["event"]["processedBy"],
        json!([{"engineId": engine, "status": "PROCESSED", "attempts": 4, "error": null}])
    );

    // With the default maxAttempts of 1 the first failure is final.
    event_type(&server, "once", json!(null), 0, 1).await;
    let once = publish(&server, json!({"runId": s.run, "eventType": "once"})).await;
    server
        .gql(
            RECORD,
            json!({ "ev": once["id"], "e": engine, "s": "FAILED", "err": "no" }),
        )
        .await;
    assert_eq!(error_events(&server, &s.run).await.len(), 2);

    // Unknown event or engine.
    let err = server
        .gql_err(
            RECORD,
            json!({ "ev": uuid::Uuid::new_v4(), "e": engine, "s": "PROCESSED" }),
        )
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("NOT_FOUND", Some("input.eventId"))
    );
    let err = server
        .gql_err(
            RECORD,
            json!({ "ev": job["id"], "e": uuid::Uuid::new_v4(), "s": "PROCESSED" }),
        )
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("NOT_FOUND", Some("input.engineId"))
    );
}

const COMPLETE: &str = "mutation($input: CompleteEventInput!) { completeEvent(input: $input) {
    processing { eventId engineId status attempts }
    emitted { id sequence eventType sourceEngineId parentEventId payload }
    engine { engineId state version } } }";

async fn complete_event_records_emits_and_saves_at_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "complete").await;
    event_type(&server, "prompt", json!(null), 0, 1).await;
    event_type(
        &server,
        "reply",
        json!({"type": "object", "required": ["text"]}),
        0,
        1,
    )
    .await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let prompt = publish(&server, json!({"runId": s.run, "eventType": "prompt"})).await;

    let done = server
        .gql(
            COMPLETE,
            json!({ "input": {
                "eventId": prompt["id"], "engineId": engine, "status": "PROCESSED",
                "emit": [{"runId": s.run, "eventType": "reply", "payload": {"text": "hello"}},
                         {"runId": s.run, "eventType": "reply", "payload": {"text": "again"}}],
                "state": {"turn": 1}, "expectedVersion": 1
            }}),
        )
        .await["completeEvent"]
        .clone();
    assert_eq!(done["processing"]["status"], "PROCESSED");
    assert_eq!(done["engine"]["version"], 2);
    assert_eq!(done["engine"]["state"], json!({"turn": 1}));
    let emitted = done["emitted"].as_array().unwrap();
    assert_eq!(emitted.len(), 2);
    assert_eq!(
        emitted[0]["sourceEngineId"],
        json!(engine),
        "source defaults to the engine"
    );
    assert_eq!(
        emitted[0]["parentEventId"], prompt["id"],
        "parent defaults to the event"
    );
    assert_eq!(
        emitted[1]["sequence"],
        emitted[0]["sequence"].as_i64().unwrap() + 1
    );
    assert!(
        pending_ids(&server, &s.run, &engine, json!(["prompt"]))
            .await
            .is_empty()
    );

    // Without state the engine comes back unchanged.
    let second = publish(&server, json!({"runId": s.run, "eventType": "prompt"})).await;
    let done = server
        .gql(COMPLETE, json!({ "input": {"eventId": second["id"], "engineId": engine, "status": "PROCESSED"} }))
        .await["completeEvent"]
        .clone();
    assert_eq!(done["engine"]["version"], 2);
    assert_eq!(done["emitted"], json!([]));
}

/// Everything a failed completion must leave alone.
async fn snapshot(server: &TestServer, run: &str, engine: &str, event: &Value) -> Value {
    server
        .gql(
            "query($r: UUID!, $e: UUID!, $ev: UUID!) {
                scenarioRun(id: $r) { lastSequence }
                engine(engineId: $e) { state version }
                event(id: $ev) { processedBy { status attempts } }
                events(runId: $r) { nodes { id } } }",
            json!({ "r": run, "e": engine, "ev": event["id"] }),
        )
        .await
}

async fn complete_event_with_a_bad_emit_changes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "bad-emit").await;
    event_type(&server, "prompt", json!(null), 0, 1).await;
    event_type(
        &server,
        "reply",
        json!({"type": "object", "required": ["text"]}),
        0,
        1,
    )
    .await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let prompt = publish(&server, json!({"runId": s.run, "eventType": "prompt"})).await;
    let before = snapshot(&server, &s.run, &engine, &prompt).await;

    let err = server
        .gql_err(
            COMPLETE,
            json!({ "input": {
                "eventId": prompt["id"], "engineId": engine, "status": "PROCESSED",
                "emit": [{"runId": s.run, "eventType": "reply", "payload": {"text": "fine"}},
                         {"runId": s.run, "eventType": "reply", "payload": {"words": "broken"}}],
                "state": {"turn": 1}
            }}),
        )
        .await;
    assert_eq!(err.code, "PAYLOAD_SCHEMA_VIOLATION");
    assert_eq!(err.field.as_deref(), Some("input.emit.1.payload"));
    assert_eq!(snapshot(&server, &s.run, &engine, &prompt).await, before);
    assert_eq!(before["event"]["processedBy"], json!([]));
    assert_eq!(
        pending_ids(&server, &s.run, &engine, json!(["prompt"])).await,
        [prompt["id"].clone()]
    );
    assert_eq!(
        last_sequence(&server, &s.run).await,
        before["scenarioRun"]["lastSequence"].as_i64().unwrap()
    );
}

async fn complete_event_with_a_stale_version_changes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "stale").await;
    event_type(&server, "prompt", json!(null), 0, 1).await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    server
        .gql(
            "mutation($e: UUID!) { saveEngineState(engineId: $e, state: {saved: true}, expectedVersion: 1) { version } }",
            json!({ "e": engine }),
        )
        .await;
    let prompt = publish(&server, json!({"runId": s.run, "eventType": "prompt"})).await;
    let before = snapshot(&server, &s.run, &engine, &prompt).await;
    assert_eq!(
        before["engine"],
        json!({"state": {"saved": true}, "version": 2})
    );

    let err = server
        .gql_err(
            COMPLETE,
            json!({ "input": {
                "eventId": prompt["id"], "engineId": engine, "status": "FAILED", "error": "x",
                "emit": [{"runId": s.run, "eventType": "prompt"}],
                "state": {"saved": "again"}, "expectedVersion": 1
            }}),
        )
        .await;
    assert_eq!(err.code, "VERSION_CONFLICT");
    assert_eq!(err.raw["extensions"]["actualVersion"], 2);
    // No processing row, no emitted event, no error_occurred, state and version as they were.
    assert_eq!(snapshot(&server, &s.run, &engine, &prompt).await, before);
}
