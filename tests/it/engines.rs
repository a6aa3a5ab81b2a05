//! Engine registration and state checkpoints.

use serde_json::json;

use crate::both_backends;
use crate::common::{Backend, TestServer, scenario};

both_backends!(
    registration_is_idempotent_and_returns_stored_state,
    state_saves_check_the_expected_version,
);

const REGISTER: &str = "mutation($input: RegisterEngineInput!) { registerEngine(input: $input) {
    engineId runId engineType state version online registeredAt run { id } } }";

async fn registration_is_idempotent_and_returns_stored_state(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "reg").await;
    let engine_id = uuid::Uuid::new_v4();
    let first = server
        .gql(REGISTER, json!({ "input": {"engineId": engine_id, "runId": s.run, "engineType": "NarratorEngine", "state": {"scene": "gate"}} }))
        .await["registerEngine"]
        .clone();
    assert_eq!(first["engineId"], json!(engine_id));
    assert_eq!(first["version"], 1);
    assert_eq!(first["online"], true);
    assert_eq!(first["run"]["id"], json!(s.run));
    server
        .gql(
            "mutation($e: UUID!) { saveEngineState(engineId: $e, state: {scene: \"hall\"}) { version } }",
            json!({ "e": engine_id }),
        )
        .await;

    // A restarted engine registers again and gets its stored state back.
    let again = server
        .gql(REGISTER, json!({ "input": {"engineId": engine_id, "runId": s.run, "engineType": "NarratorEngine", "state": {"scene": "ignored"}} }))
        .await["registerEngine"]
        .clone();
    assert_eq!(again["state"], json!({"scene": "hall"}));
    assert_eq!(again["version"], 2);
    assert_eq!(again["registeredAt"], first["registeredAt"]);

    // The same id as another type is a conflict.
    let err = server
        .gql_err(REGISTER, json!({ "input": {"engineId": engine_id, "runId": s.run, "engineType": "ActorEngine"} }))
        .await;
    assert_eq!(err.code, "CONFLICT");

    // Without an id one is generated; engines list by run and type.
    let generated = server
        .gql(
            REGISTER,
            json!({ "input": {"runId": s.run, "engineType": "ActorEngine"} }),
        )
        .await["registerEngine"]
        .clone();
    assert_eq!(generated["state"], json!({}));
    let listed = server
        .gql(
            "query($r: UUID!) { all: engines(runId: $r) { engineId } actors: engines(runId: $r, engineType: \"ActorEngine\") { engineId }
                               scenarioRun(id: $r) { engines { engineType } } }",
            json!({ "r": s.run }),
        )
        .await;
    assert_eq!(listed["all"].as_array().unwrap().len(), 2);
    assert_eq!(
        listed["actors"],
        json!([{"engineId": generated["engineId"]}])
    );
    assert_eq!(
        listed["scenarioRun"]["engines"].as_array().unwrap().len(),
        2
    );

    let err = server
        .gql_err(
            REGISTER,
            json!({ "input": {"runId": uuid::Uuid::new_v4(), "engineType": "ActorEngine"} }),
        )
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("NOT_FOUND", Some("input.runId"))
    );
    let err = server
        .gql_err(
            REGISTER,
            json!({ "input": {"runId": s.run, "engineType": "  "} }),
        )
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("BAD_USER_INPUT", Some("input.engineType"))
    );
}

async fn state_saves_check_the_expected_version(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "save").await;
    let engine = crate::common::register(&server, &s.run, "AnalystEngine").await;
    const SAVE: &str = "mutation($e: UUID!, $s: JSON!, $v: Int) { saveEngineState(engineId: $e, state: $s, expectedVersion: $v) { state version updatedAt } }";

    let saved = server
        .gql(SAVE, json!({ "e": engine, "s": {"n": 1}, "v": 1 }))
        .await["saveEngineState"]
        .clone();
    assert_eq!(saved["version"], 2);
    let err = server
        .gql_err(SAVE, json!({ "e": engine, "s": {"n": 99}, "v": 1 }))
        .await;
    assert_eq!(err.code, "VERSION_CONFLICT");
    assert_eq!(
        (
            err.raw["extensions"]["expectedVersion"].as_i64(),
            err.raw["extensions"]["actualVersion"].as_i64()
        ),
        (Some(1), Some(2))
    );
    let stored = server
        .gql(
            "query($e: UUID!) { engine(engineId: $e) { state version } }",
            json!({ "e": engine }),
        )
        .await;
    assert_eq!(stored["engine"], json!({"state": {"n": 1}, "version": 2}));

    // Without expectedVersion the save always applies.
    let forced = server
        .gql(SAVE, json!({ "e": engine, "s": [1, 2, 3], "v": null }))
        .await["saveEngineState"]
        .clone();
    assert_eq!(
        (forced["state"].clone(), forced["version"].as_i64()),
        (json!([1, 2, 3]), Some(3))
    );
    // What a save returns is what a read returns, every field (the save
    // builds its answer from what it wrote and what the UPDATE returned).
    const ALL: &str =
        "engineId runId engineType state version registeredAt updatedAt lastSeenAt group";
    let returned = server
        .gql(
            &format!("mutation($e: UUID!) {{ saveEngineState(engineId: $e, state: {{deep: {{list: [1, {{x: null}}], text: \"é\"}}}}) {{ {ALL} }} }}"),
            json!({ "e": engine }),
        )
        .await["saveEngineState"]
        .clone();
    let read = server
        .gql(
            &format!("query($e: UUID!) {{ engine(engineId: $e) {{ {ALL} }} }}"),
            json!({ "e": engine }),
        )
        .await["engine"]
        .clone();
    assert_eq!(returned, read);
    assert_eq!(read["version"], 4);

    let err = server
        .gql_err(
            SAVE,
            json!({ "e": uuid::Uuid::new_v4(), "s": {}, "v": null }),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND");
    let missing = server
        .gql(
            "query($e: UUID!) { engine(engineId: $e) { version } }",
            json!({ "e": uuid::Uuid::new_v4() }),
        )
        .await;
    assert_eq!(missing["engine"], json!(null));
}
