//! The REST adapters: processing records and engine state in snake_case
//! JSON, the same services, keys and codes as GraphQL, each code with its
//! HTTP status.

use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{Backend, TestServer, event_type, publish, register, scenario};

both_backends!(
    rest_records_processing_and_saves_state,
    rest_errors_map_to_statuses_and_change_nothing,
    rest_routes_follow_the_keys_and_roles,
);

/// Sends `method path` with `body` (raw text, so that bad JSON can be sent)
/// and `token`; returns the status and the JSON answer.
async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<String>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = server.http.request(method, server.url(path));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON answer: {text}"));
    (status, json)
}

/// (what, method, path, body, status, code).
type ErrorCase<'a> = (
    &'a str,
    reqwest::Method,
    String,
    Option<String>,
    u16,
    &'a str,
);

/// (what, method, path, body, token, status).
type RoleCase<'a> = (
    &'a str,
    reqwest::Method,
    &'a str,
    Option<String>,
    Option<&'a str>,
    u16,
);

fn put(path: &str) -> (reqwest::Method, String) {
    (reqwest::Method::PUT, path.to_owned())
}

async fn rest_records_processing_and_saves_state(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "rest").await;
    event_type(&server, "job", Value::Null, 0, 2).await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let event = publish(&server, json!({"runId": s.run, "eventType": "job"})).await;
    let event_id = event["id"].as_str().unwrap();

    let (method, path) = put(&format!("/api/v1/events/{event_id}/process"));
    let body = json!({"engine_id": engine, "status": "failed", "error": "model timed out"});
    let (status, failed) = call(&server, method.clone(), &path, Some(body.to_string()), None).await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempts"], 1);
    assert_eq!(failed["error"], "model timed out");
    let body = json!({"engine_id": engine, "status": "processed"});
    let (status, done) = call(&server, method, &path, Some(body.to_string()), None).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (
            &done["event_id"],
            &done["engine_id"],
            &done["status"],
            &done["attempts"]
        ),
        (
            &json!(event_id),
            &json!(engine),
            &json!("processed"),
            &json!(2)
        )
    );
    assert!(done["processed_at"].is_string());
    // GraphQL sees the same record.
    let record = server
        .gql(
            "query($e: UUID!) { event(id: $e) { processedBy { status attempts } } }",
            json!({ "e": event_id }),
        )
        .await;
    assert_eq!(
        record["event"]["processedBy"],
        json!([{"status": "PROCESSED", "attempts": 2}])
    );

    let path = format!("/api/v1/engine_instances/{engine}/state");
    let (status, stored) = call(&server, reqwest::Method::GET, &path, None, None).await;
    assert_eq!(status, 200, "{stored}");
    let version = stored["version"].as_i64().unwrap();
    assert_eq!(stored["engine_id"], json!(engine));
    assert_eq!(stored["engine_type"], "ActorEngine");
    assert_eq!(stored["run_id"], json!(s.run));
    assert!(stored["updated_at"].is_string());

    let body = json!({"state": {"mood": "calm", "seen": [1, 2]}, "expected_version": version});
    let (status, saved) = call(
        &server,
        reqwest::Method::PUT,
        &path,
        Some(body.to_string()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["version"], version + 1);
    assert_eq!(saved["state"], json!({"mood": "calm", "seen": [1, 2]}));
    // Without expected_version the save is unconditional.
    let body = json!({"state": {"mood": "tense"}});
    let (status, saved) = call(
        &server,
        reqwest::Method::PUT,
        &path,
        Some(body.to_string()),
        None,
    )
    .await;
    assert_eq!((status, &saved["version"]), (200, &json!(version + 2)));
    let (_, stored) = call(&server, reqwest::Method::GET, &path, None, None).await;
    assert_eq!(stored["state"], json!({"mood": "tense"}));
}

async fn rest_errors_map_to_statuses_and_change_nothing(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.limits.max_body_bytes = 64 * 1024;
        c.limits.max_state_bytes = 1024;
    })
    .await;
    let s = scenario(&server, "rest-errors").await;
    event_type(&server, "job", Value::Null, 0, 1).await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let event = publish(&server, json!({"runId": s.run, "eventType": "job"})).await;
    let event_id = event["id"].as_str().unwrap().to_owned();
    let nobody = "00000000-0000-4000-8000-000000000000";
    let state_path = format!("/api/v1/engine_instances/{engine}/state");
    let process_path = format!("/api/v1/events/{event_id}/process");
    let version = server
        .gql(
            "query($e: UUID!) { engine(engineId: $e) { version } }",
            json!({ "e": engine }),
        )
        .await["engine"]["version"]
        .as_i64()
        .unwrap();
    let process = |engine: &str, status: &str| json!({"engine_id": engine, "status": status});
    let big = "x".repeat(2048);
    // (what, method, path, body, status, code)
    let cases: Vec<ErrorCase> = vec![
        (
            "event id not a UUID",
            reqwest::Method::PUT,
            "/api/v1/events/42/process".into(),
            Some(process(&engine, "processed").to_string()),
            400,
            "BAD_USER_INPUT",
        ),
        (
            "unknown event",
            reqwest::Method::PUT,
            format!("/api/v1/events/{nobody}/process"),
            Some(process(&engine, "processed").to_string()),
            404,
            "NOT_FOUND",
        ),
        (
            "unknown engine",
            reqwest::Method::PUT,
            process_path.clone(),
            Some(process(nobody, "processed").to_string()),
            404,
            "NOT_FOUND",
        ),
        (
            "not JSON",
            reqwest::Method::PUT,
            process_path.clone(),
            Some("{engine_id".into()),
            400,
            "BAD_USER_INPUT",
        ),
        (
            "unknown status",
            reqwest::Method::PUT,
            process_path.clone(),
            Some(process(&engine, "done").to_string()),
            400,
            "BAD_USER_INPUT",
        ),
        (
            "GraphQL's upper case",
            reqwest::Method::PUT,
            process_path.clone(),
            Some(process(&engine, "PROCESSED").to_string()),
            400,
            "BAD_USER_INPUT",
        ),
        (
            "camelCase field",
            reqwest::Method::PUT,
            process_path.clone(),
            Some(json!({"engineId": engine, "status": "processed"}).to_string()),
            400,
            "BAD_USER_INPUT",
        ),
        (
            "NUL in the error",
            reqwest::Method::PUT,
            process_path.clone(),
            Some(json!({"engine_id": engine, "status": "failed", "error": "a\u{0}b"}).to_string()),
            400,
            "BAD_USER_INPUT",
        ),
        (
            "body over the limit",
            reqwest::Method::PUT,
            process_path.clone(),
            Some(
                json!({"engine_id": engine, "status": "failed", "error": "e".repeat(70 * 1024)})
                    .to_string(),
            ),
            413,
            "LIMIT_EXCEEDED",
        ),
        (
            "unknown engine state",
            reqwest::Method::GET,
            format!("/api/v1/engine_instances/{nobody}/state"),
            None,
            404,
            "NOT_FOUND",
        ),
        (
            "engine id not a UUID",
            reqwest::Method::GET,
            "/api/v1/engine_instances/me/state".into(),
            None,
            400,
            "BAD_USER_INPUT",
        ),
        (
            "stale expected_version",
            reqwest::Method::PUT,
            state_path.clone(),
            Some(json!({"state": {"a": 1}, "expected_version": version + 5}).to_string()),
            409,
            "VERSION_CONFLICT",
        ),
        (
            "state missing",
            reqwest::Method::PUT,
            state_path.clone(),
            Some(json!({"expected_version": version}).to_string()),
            400,
            "BAD_USER_INPUT",
        ),
        (
            "expected_version of the wrong type",
            reqwest::Method::PUT,
            state_path.clone(),
            Some(json!({"state": {}, "expected_version": "1"}).to_string()),
            400,
            "BAD_USER_INPUT",
        ),
        (
            "state over the limit",
            reqwest::Method::PUT,
            state_path.clone(),
            Some(json!({"state": {"big": big}}).to_string()),
            413,
            "LIMIT_EXCEEDED",
        ),
        (
            "NUL in the state",
            reqwest::Method::PUT,
            state_path.clone(),
            Some(json!({"state": {"k": "\u{0}"}}).to_string()),
            400,
            "BAD_USER_INPUT",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, method, path, body, status, code) in cases {
        let before = server.digest().await;
        let (got_status, answer) = call(&server, method, &path, body, None).await;
        if got_status != status || answer["error"]["code"] != code {
            wrong.push(format!(
                "{what}: expected {status} {code}, got {got_status} {answer}"
            ));
        }
        if !answer["error"]["message"].is_string() {
            wrong.push(format!("{what}: no message in {answer}"));
        }
        if server.digest().await != before {
            wrong.push(format!("{what} changed something"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

async fn rest_routes_follow_the_keys_and_roles(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "rest-keys").await;
    event_type(&server, "job", Value::Null, 0, 1).await;
    let admin = server.create_key("admin", "ops").await;
    let viewer = server.create_key("viewer", "dashboard").await;
    let engine_key = server.create_key("engine", "actor").await;
    let other_key = server.create_key("engine", "someone-else").await;
    let (_, registered) = server
        .gql_as(
            Some(&engine_key),
            "mutation($r: UUID!) { registerEngine(input: {runId: $r, engineType: \"ActorEngine\"}) { engineId } }",
            json!({ "r": s.run }),
        )
        .await;
    let engine = registered["data"]["registerEngine"]["engineId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, published) = server
        .gql_as(
            Some(&admin),
            "mutation($r: UUID!) { publishEvent(input: {runId: $r, eventType: \"job\"}) { id } }",
            json!({ "r": s.run }),
        )
        .await;
    let event_id = published["data"]["publishEvent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let state_path = format!("/api/v1/engine_instances/{engine}/state");
    let process_path = format!("/api/v1/events/{event_id}/process");
    let save = || Some(json!({"state": {"n": 1}}).to_string());
    let process = || Some(json!({"engine_id": engine, "status": "processed"}).to_string());

    // (what, method, path, body, token, status)
    let refused: Vec<RoleCase> = vec![
        ("no key", reqwest::Method::GET, &state_path, None, None, 401),
        (
            "a wrong key",
            reqwest::Method::GET,
            &state_path,
            None,
            Some("shk_nope"),
            401,
        ),
        (
            "no key, saving",
            reqwest::Method::PUT,
            &state_path,
            save(),
            None,
            401,
        ),
        (
            "a viewer saving",
            reqwest::Method::PUT,
            &state_path,
            save(),
            Some(&viewer),
            403,
        ),
        (
            "another engine's key saving",
            reqwest::Method::PUT,
            &state_path,
            save(),
            Some(&other_key),
            403,
        ),
        (
            "a viewer recording",
            reqwest::Method::PUT,
            &process_path,
            process(),
            Some(&viewer),
            403,
        ),
        (
            "no key, recording",
            reqwest::Method::PUT,
            &process_path,
            process(),
            None,
            401,
        ),
    ];
    for (what, method, path, body, token, status) in refused {
        let before = server.digest().await;
        let (got, answer) = call(&server, method, path, body, token).await;
        assert_eq!(got, status, "{what}: {answer}");
        let code = if status == 401 {
            "UNAUTHENTICATED"
        } else {
            "FORBIDDEN"
        };
        assert_eq!(answer["error"]["code"], code, "{what}");
        assert_eq!(server.digest().await, before, "{what} changed something");
    }

    let allowed = [
        (
            "a viewer reading state",
            reqwest::Method::GET,
            &state_path,
            None,
            &viewer,
        ),
        (
            "the registering key saving",
            reqwest::Method::PUT,
            &state_path,
            save(),
            &engine_key,
        ),
        (
            "an admin saving",
            reqwest::Method::PUT,
            &state_path,
            save(),
            &admin,
        ),
        (
            "an engine key recording",
            reqwest::Method::PUT,
            &process_path,
            process(),
            &engine_key,
        ),
    ];
    for (what, method, path, body, token) in allowed {
        let (status, answer) = call(&server, method, path, body, Some(token)).await;
        assert_eq!(status, 200, "{what}: {answer}");
    }
}
