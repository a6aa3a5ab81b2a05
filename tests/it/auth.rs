//! API keys and roles: open without keys; once a key exists, every request
//! needs one, and each role does only its own job.

use std::process::Command;

use serde_json::json;

use crate::both_backends;
use crate::common::ws::{ENGINE_EVENTS, WsClient};
use crate::common::{Backend, TestServer, scenario};

both_backends!(
    keys_gate_every_request_by_role,
    engine_keys_save_only_their_engines_state,
    websockets_need_a_valid_key_and_close_on_revocation,
);

const PUBLISH: &str =
    "mutation($r: UUID!) { publishEvent(input: {runId: $r, eventType: \"error_occurred\",
    payload: {eventId: \"e\", engineId: \"x\", error: null, attempts: 1}}) { sequence } }";

fn code(body: &serde_json::Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

async fn keys_gate_every_request_by_role(backend: Backend) {
    let server = TestServer::start(backend).await;
    // No key yet: open.
    let s = scenario(&server, "auth").await;
    let admin = server.create_key("admin", "ops").await;
    let engine = server.create_key("engine", "actor").await;
    let viewer = server.create_key("viewer", "dashboard").await;
    assert!(
        admin.len() >= 43 && admin != engine,
        "tokens carry 256 random bits"
    );

    // Without a key, or with a wrong one: 401 UNAUTHENTICATED.
    for token in [None, Some("shk_wrong")] {
        let (status, body) = server
            .gql_as(token, "{ eventTypes { name } }", json!({}))
            .await;
        assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"), "{token:?}");
    }

    let count_events = || async {
        server
            .gql_as(
                Some(&admin),
                "query($r: UUID!) { scenarioRun(id: $r) { lastSequence } }",
                json!({ "r": s.run }),
            )
            .await
            .1["data"]["scenarioRun"]["lastSequence"]
            .as_i64()
            .unwrap()
    };
    let before = count_events().await;

    // A viewer reads, and changes nothing.
    let (status, body) = server
        .gql_as(Some(&viewer), "{ eventTypes { name } }", json!({}))
        .await;
    assert_eq!(status, 200);
    assert!(body["data"]["eventTypes"].is_array());
    let (_, body) = server
        .gql_as(Some(&viewer), PUBLISH, json!({ "r": s.run }))
        .await;
    assert_eq!(code(&body), "FORBIDDEN");
    assert_eq!(count_events().await, before);

    // An engine publishes, but does not manage templates or runs.
    let (_, body) = server
        .gql_as(Some(&engine), PUBLISH, json!({ "r": s.run }))
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    for mutation in [
        "mutation { createEventType(input: {name: \"x\", category: \"c\"}) { name } }",
        "mutation { createAgentTemplate(input: {name: \"x\"}) { id } }",
    ] {
        let (_, body) = server.gql_as(Some(&engine), mutation, json!({})).await;
        assert_eq!(code(&body), "FORBIDDEN", "{mutation}");
    }
    let (_, body) = server
        .gql_as(
            Some(&engine),
            "mutation($r: UUID!) { setRunStatus(runId: $r, status: PAUSED) { status } }",
            json!({ "r": s.run }),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN");

    // An admin does everything.
    let (_, body) = server
        .gql_as(
            Some(&admin),
            "mutation { createEventType(input: {name: \"x\", category: \"c\"}) { name } }",
            json!({}),
        )
        .await;
    assert_eq!(body["data"]["createEventType"]["name"], "x");

    // A revoked key is refused at once.
    server.revoke_key("dashboard").await;
    let (status, body) = server
        .gql_as(Some(&viewer), "{ eventTypes { name } }", json!({}))
        .await;
    assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"));
}

async fn engine_keys_save_only_their_engines_state(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "owner").await;
    let mine = server.create_key("engine", "mine").await;
    let theirs = server.create_key("engine", "theirs").await;
    const REGISTER: &str = "mutation($r: UUID!) { registerEngine(input: {runId: $r, engineType: \"ActorEngine\"}) { engineId } }";
    const SAVE: &str =
        "mutation($e: UUID!) { saveEngineState(engineId: $e, state: {n: 1}) { version } }";
    let engine = server
        .gql_as(Some(&mine), REGISTER, json!({ "r": s.run }))
        .await
        .1["data"]["registerEngine"]["engineId"]
        .clone();

    let (_, body) = server
        .gql_as(Some(&mine), SAVE, json!({ "e": engine }))
        .await;
    assert_eq!(body["data"]["saveEngineState"]["version"], 2);
    let (_, body) = server
        .gql_as(Some(&theirs), SAVE, json!({ "e": engine }))
        .await;
    assert_eq!(code(&body), "FORBIDDEN");
    // Resuming it under another key is refused at registration, not at the
    // first save; its own key resumes it.
    const RESUME: &str = "mutation($r: UUID!, $e: UUID!) { registerEngine(input: {runId: $r, engineId: $e, engineType: \"ActorEngine\"}) { version } }";
    let (_, body) = server
        .gql_as(Some(&theirs), RESUME, json!({ "r": s.run, "e": engine }))
        .await;
    assert_eq!(code(&body), "FORBIDDEN");
    let (_, body) = server
        .gql_as(Some(&mine), RESUME, json!({ "r": s.run, "e": engine }))
        .await;
    assert_eq!(body["data"]["registerEngine"]["version"], 2, "{body}");
    // Nor through completeEvent.
    server
        .gql_as(Some(&mine), PUBLISH, json!({ "r": s.run }))
        .await;
    let events = server
        .gql_as(
            Some(&mine),
            "query($r: UUID!) { events(runId: $r, first: 1) { nodes { id } } }",
            json!({ "r": s.run }),
        )
        .await
        .1;
    let event_id = events["data"]["events"]["nodes"][0]["id"].clone();
    let (_, body) = server
        .gql_as(
            Some(&theirs),
            "mutation($ev: UUID!, $e: UUID!) { completeEvent(input: {eventId: $ev, engineId: $e, status: PROCESSED, state: {stolen: true}}) { engine { version } } }",
            json!({ "ev": event_id, "e": engine }),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN");
    let (_, body) = server
        .gql_as(
            Some(&mine),
            "query($e: UUID!) { engine(engineId: $e) { state version } }",
            json!({ "e": engine }),
        )
        .await;
    assert_eq!(
        body["data"]["engine"],
        json!({"state": {"n": 1}, "version": 2})
    );
}

async fn websockets_need_a_valid_key_and_close_on_revocation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "wsauth").await;
    let viewer = server.create_key("viewer", "screen").await;

    for authorization in [None, Some("Bearer shk_wrong")] {
        let mut ws = WsClient::init_with(server.addr, authorization).await;
        assert_eq!(ws.close_code().await, 4403, "{authorization:?}");
    }
    let mut ws = WsClient::init_with(server.addr, Some(&format!("Bearer {viewer}"))).await;
    assert_eq!(ws.message().await["type"], "connection_ack");
    ws.subscribe("e", ENGINE_EVENTS, json!({"run": s.run}))
        .await;
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.message().await["type"], "pong");
    // A viewer may not mutate over the websocket either.
    ws.subscribe(
        "m",
        "mutation { createAgentTemplate(input: {name: \"ws\"}) { id } }",
        json!({}),
    )
    .await;
    let answer = ws.message().await;
    assert_eq!(
        (
            answer["type"].as_str(),
            answer["payload"][0]["extensions"]["code"].as_str()
        ),
        (Some("error"), Some("FORBIDDEN")),
        "{answer}"
    );

    server.revoke_key("screen").await;
    assert_eq!(
        ws.close_code().await,
        4403,
        "revocation cuts the open websocket"
    );
}

/// Without keys the server refuses a non-loopback address unless told
/// `--insecure-no-auth`; `keys create` prints the token alone on its last line.
#[test]
fn open_servers_stay_on_loopback_and_the_cli_manages_keys() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    let bin = env!("CARGO_BIN_EXE_scenario-hub");
    let output = Command::new(bin)
        .args(["serve", "--bind", "0.0.0.0:0"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--insecure-no-auth"));

    let created = Command::new(bin)
        .args(["keys", "create", "--role", "engine", "--name", "actor-1"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let stdout = String::from_utf8(created.stdout).unwrap();
    let token = stdout.lines().last().unwrap();
    assert!(token.starts_with("shk_") && !token.contains(' '));

    let listed = Command::new(bin)
        .args(["keys", "list"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.contains("actor-1") && listed.contains("engine"));
    assert!(!listed.contains(token), "the token is never shown again");
    let revoked = Command::new(bin)
        .args(["keys", "revoke", "actor-1"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(revoked.status.success());
    let again = Command::new(bin)
        .args(["keys", "revoke", "actor-1"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!again.status.success(), "revoking twice says so");
}
