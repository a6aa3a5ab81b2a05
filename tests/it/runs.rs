//! Run lifecycle: transitions, `run_status_changed`, `RUN_CLOSED`.

use serde_json::json;

use crate::both_backends;
use crate::common::{Backend, TestServer, create_run, last_sequence, scenario};

both_backends!(
    status_changes_follow_the_lifecycle_and_publish_events,
    closed_runs_take_no_events,
    runs_filter_by_status_and_template,
);

const SET: &str = "mutation($r: UUID!, $s: RunStatus!) { setRunStatus(runId: $r, status: $s) { status startedAt endedAt lastSequence } }";

async fn status_changes_follow_the_lifecycle_and_publish_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "life").await;
    let run = create_run(&server, &s.template, "PENDING").await;

    // PENDING cannot pause or complete.
    for bad in ["PAUSED", "COMPLETED", "PENDING"] {
        let err = server.gql_err(SET, json!({ "r": run, "s": bad })).await;
        assert_eq!(err.code, "INVALID_TRANSITION", "PENDING -> {bad}");
    }
    assert_eq!(last_sequence(&server, &run).await, 0);

    let running =
        server.gql(SET, json!({ "r": run, "s": "RUNNING" })).await["setRunStatus"].clone();
    assert_eq!(running["status"], "RUNNING");
    assert!(running["startedAt"].is_string());
    assert!(running["endedAt"].is_null());
    server.gql(SET, json!({ "r": run, "s": "PAUSED" })).await;
    server.gql(SET, json!({ "r": run, "s": "RUNNING" })).await;
    let done = server.gql(SET, json!({ "r": run, "s": "COMPLETED" })).await["setRunStatus"].clone();
    assert_eq!(done["status"], "COMPLETED");
    assert!(done["endedAt"].is_string());
    assert_eq!(
        done["startedAt"], running["startedAt"],
        "startedAt is the first start"
    );

    // Terminal is terminal.
    for bad in ["RUNNING", "PAUSED", "FAILED", "CANCELLED"] {
        let err = server.gql_err(SET, json!({ "r": run, "s": bad })).await;
        assert_eq!(err.code, "INVALID_TRANSITION", "COMPLETED -> {bad}");
    }

    let events = server
        .gql(
            "query($r: UUID!) { events(runId: $r) { nodes { sequence eventType priority payload type { category } } } }",
            json!({ "r": run }),
        )
        .await["events"]["nodes"]
        .clone();
    let changes: Vec<(String, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["eventType"], "run_status_changed");
            assert_eq!(e["type"]["category"], "system");
            assert_eq!(e["payload"]["runId"], json!(run));
            (
                e["payload"]["from"].as_str().unwrap().to_owned(),
                e["payload"]["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("PENDING", "RUNNING"),
        ("RUNNING", "PAUSED"),
        ("PAUSED", "RUNNING"),
        ("RUNNING", "COMPLETED"),
    ];
    assert_eq!(
        changes,
        expected.map(|(a, b)| (a.to_owned(), b.to_owned())).to_vec()
    );
    let sequences: Vec<i64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, [1, 2, 3, 4]);

    // PENDING may be cancelled; a missing run is NOT_FOUND.
    let other = create_run(&server, &s.template, "PENDING").await;
    server
        .gql(SET, json!({ "r": other, "s": "CANCELLED" }))
        .await;
    let err = server
        .gql_err(SET, json!({ "r": uuid::Uuid::new_v4(), "s": "RUNNING" }))
        .await;
    assert_eq!(err.code, "NOT_FOUND");
}

async fn closed_runs_take_no_events(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "closed").await;
    let engine = crate::common::register(&server, &s.run, "ActorEngine").await;
    server.gql(SET, json!({ "r": s.run, "s": "FAILED" })).await;
    let before = last_sequence(&server, &s.run).await;

    let err = server
        .gql_err(
            "mutation($r: UUID!) { publishEvent(input: {runId: $r, eventType: \"error_occurred\",
                payload: {eventId: \"e\", engineId: \"x\", error: null, attempts: 1}}) { id } }",
            json!({ "r": s.run }),
        )
        .await;
    assert_eq!(err.code, "RUN_CLOSED");
    let err = server
        .gql_err(
            "mutation($r: UUID!) { setRelationship(input: {runId: $r, sourceRole: \"hero\", targetRole: \"villain\", kind: \"ally\", strength: 1}) { kind } }",
            json!({ "r": s.run }),
        )
        .await;
    assert_eq!(err.code, "RUN_CLOSED");
    let err = server
        .gql_err(
            "mutation($r: UUID!) { registerEngine(input: {runId: $r, engineType: \"ActorEngine\"}) { engineId } }",
            json!({ "r": s.run }),
        )
        .await;
    assert_eq!(err.code, "RUN_CLOSED");
    // An engine registered before still gets its state back.
    let back = server
        .gql(
            "mutation($r: UUID!, $e: UUID!) { registerEngine(input: {engineId: $e, runId: $r, engineType: \"ActorEngine\"}) { engineId version } }",
            json!({ "r": s.run, "e": engine }),
        )
        .await;
    assert_eq!(back["registerEngine"]["version"], 1);
    assert_eq!(last_sequence(&server, &s.run).await, before);
}

async fn runs_filter_by_status_and_template(backend: Backend) {
    let server = TestServer::start(backend).await;
    let a = scenario(&server, "a").await;
    let b = scenario(&server, "b").await;
    create_run(&server, &a.template, "PENDING").await;
    let runs = server
        .gql(
            "query($t: UUID!) { pending: scenarioRuns(status: PENDING) { nodes { templateId status } }
                               ofA: scenarioRuns(templateId: $t) { nodes { id template { name } } }
                               all: scenarioRuns { nodes { id } } }",
            json!({ "t": a.template }),
        )
        .await;
    assert_eq!(
        runs["pending"]["nodes"],
        json!([{"templateId": a.template, "status": "PENDING"}])
    );
    assert_eq!(runs["ofA"]["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(runs["ofA"]["nodes"][0]["template"]["name"], "a-scenario");
    assert_eq!(runs["all"]["nodes"].as_array().unwrap().len(), 3);
    let _ = b;
}
