//! Hostile input: NUL bytes, unicode, deep JSON, racing saves, and internal
//! errors that must not leak. Each case checks the code and that nothing changed.

use std::sync::Arc;

use async_graphql::ServerResult;
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo,
};
use serde_json::{Value, json};

use crate::both_backends;
use crate::common::ws::WsClient;
use crate::common::{Backend, TestServer, event_type, last_sequence, publish, register, scenario};

both_backends!(
    nul_bytes_are_refused_and_unicode_round_trips,
    deeply_nested_json_is_refused,
    racing_saves_with_one_expected_version_have_one_winner,
    internal_errors_do_not_leak,
    a_panicking_resolver_fails_only_its_request,
    wrong_values_in_every_mutation_change_nothing,
    a_thousand_aliases_over_the_websocket_are_refused,
);

async fn nul_bytes_are_refused_and_unicode_round_trips(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "nul").await;
    event_type(&server, "note", json!(null), 0, 1).await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let before = last_sequence(&server, &s.run).await;

    let err = server
        .gql_err(
            "mutation($input: EventInput!) { publishEvent(input: $input) { id } }",
            json!({ "input": {"runId": s.run, "eventType": "note", "payload": {"t": "a\u{0}b"}} }),
        )
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("BAD_USER_INPUT", Some("input.payload"))
    );
    let err = server
        .gql_err(
            "mutation($e: UUID!) { saveEngineState(engineId: $e, state: {\"k\\u0000\": 1}) { version } }",
            json!({ "e": engine }),
        )
        .await;
    assert_eq!(err.code, "BAD_USER_INPUT");
    let err = server
        .gql_err(
            "mutation($n: String!) { createAgentTemplate(input: {name: $n}) { id } }",
            json!({ "n": "x\u{0}" }),
        )
        .await;
    assert_eq!(err.code, "BAD_USER_INPUT");
    let err = server
        .gql_err(
            "mutation($d: String!) { createAgentTemplate(input: {name: \"ok\", description: $d}) { id } }",
            json!({ "d": "bad\u{0}" }),
        )
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("BAD_USER_INPUT", Some("input.description"))
    );
    assert_eq!(last_sequence(&server, &s.run).await, before);
    let state = server
        .gql(
            "query($e: UUID!) { engine(engineId: $e) { version } }",
            json!({ "e": engine }),
        )
        .await;
    assert_eq!(state["engine"]["version"], 1);

    let text = "Грозовой перевал 🌩️ — ‏שלום‎ — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 — \"quotes\" \\ back";
    let stored = server
        .gql(
            "mutation($input: EventInput!) { publishEvent(input: $input) { payload } }",
            json!({ "input": {"runId": s.run, "eventType": "note", "payload": {"t": text, "🔑": [text]}} }),
        )
        .await;
    assert_eq!(
        stored["publishEvent"]["payload"],
        json!({"t": text, "🔑": [text]})
    );
    let named = server
        .gql(
            "mutation($n: String!) { createAgentTemplate(input: {name: $n}) { name } }",
            json!({ "n": text }),
        )
        .await;
    assert_eq!(named["createAgentTemplate"]["name"], text);
}

async fn deeply_nested_json_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "deep").await;
    event_type(&server, "note", json!(null), 0, 1).await;
    let before = last_sequence(&server, &s.run).await;
    let depth = 400;
    let payload = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let body = format!(
        r#"{{"query": "mutation($p: JSON) {{ publishEvent(input: {{runId: \"{}\", eventType: \"note\", payload: $p}}) {{ id }} }}", "variables": {{"p": {payload}}}}}"#,
        s.run
    );
    let response = server
        .http
        .post(server.url("/graphql"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(last_sequence(&server, &s.run).await, before);
}

async fn racing_saves_with_one_expected_version_have_one_winner(backend: Backend) {
    let server = std::sync::Arc::new(TestServer::start(backend).await);
    let s = scenario(&server, "race").await;
    let engine = register(&server, &s.run, "NarratorEngine").await;
    let racers: Vec<_> = (0..10)
        .map(|i| {
            let server = server.clone();
            let engine = engine.clone();
            tokio::spawn(async move {
                server
                    .gql_raw(
                        "mutation($e: UUID!, $s: JSON!) { saveEngineState(engineId: $e, state: $s, expectedVersion: 1) { version } }",
                        json!({ "e": engine, "s": {"writer": i} }),
                    )
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, racer) in racers.into_iter().enumerate() {
        let response = racer.await.unwrap();
        match response.get("errors") {
            None => winners.push(i),
            Some(errors) => assert_eq!(errors[0]["extensions"]["code"], "VERSION_CONFLICT"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one save wins");
    let stored = server
        .gql(
            "query($e: UUID!) { engine(engineId: $e) { state version } }",
            json!({ "e": engine }),
        )
        .await;
    assert_eq!(
        stored["engine"],
        json!({"state": {"writer": winners[0]}, "version": 2})
    );
}

async fn internal_errors_do_not_leak(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "leak").await;
    // Break the database under the server's feet.
    let db = sea_orm::Database::connect(server.database_url())
        .await
        .unwrap();
    use sea_orm::ConnectionTrait;
    db.execute_unprepared("DROP TABLE run_relationships")
        .await
        .unwrap();
    db.close().await.unwrap();

    let response = server
        .gql_raw(
            "query($r: UUID!) { scenarioRun(id: $r) { name relationships { kind } } }",
            json!({ "r": s.run }),
        )
        .await;
    let error = &response["errors"][0];
    assert_eq!(error["extensions"]["code"], "INTERNAL", "{response}");
    assert_eq!(error["message"], "internal error");
    let text = response.to_string().to_lowercase();
    for leak in [
        "select",
        "run_relationships",
        "sqlite",
        "postgres",
        "no such table",
        "does not exist",
        "/tmp",
    ] {
        assert!(!text.contains(leak), "{leak:?} leaked: {response}");
    }
    // The server keeps serving.
    let still = server
        .gql("{ eventTypes(category: \"system\") { name } }", json!({}))
        .await;
    assert_eq!(still["eventTypes"].as_array().unwrap().len(), 4);
}

/// Panics in any field aliased `boom`, with text that must not reach clients.
struct PanicOnBoom;

impl ExtensionFactory for PanicOnBoom {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PanicOnBoom)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for PanicOnBoom {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<async_graphql::Value>> {
        if info.alias == Some("boom") {
            panic!("boom at /srv/secret.rs: SELECT * FROM api_keys");
        }
        next.run(ctx, info).await
    }
}

async fn a_panicking_resolver_fails_only_its_request(backend: Backend) {
    let server =
        TestServer::start_with_schema(backend, |builder| builder.extension(PanicOnBoom)).await;
    let s = scenario(&server, "panic").await;
    event_type(&server, "tick", Value::Null, 0, 1).await;
    let leaks = ["boom", "secret", "select", "api_keys", "panicked"];

    let response = server
        .gql_raw("{ boom: eventTypes { name } }", json!({}))
        .await;
    let error = &response["errors"][0];
    assert_eq!(error["extensions"]["code"], "INTERNAL", "{response}");
    let text = response.to_string().to_lowercase();
    for leak in leaks {
        assert!(!text.contains(leak), "{leak:?} leaked: {response}");
    }
    let still = server
        .gql("{ eventTypes(category: \"system\") { name } }", json!({}))
        .await;
    assert_eq!(still["eventTypes"].as_array().unwrap().len(), 4);

    // Over the websocket: the panicking subscription ends with an INTERNAL
    // error; the connection and its other subscription go on.
    let mut ws = WsClient::ready(server.addr).await;
    // From sequence 0 on: the first event reaches both, however late they start.
    let query = "subscription($r: UUID!) {
        events(runId: $r, eventTypes: [\"tick\"], afterSequence: 0) { id boom: priority } }";
    ws.subscribe("bad", query, json!({ "r": s.run })).await;
    ws.subscribe(
        "good",
        "subscription($r: UUID!) {
            events(runId: $r, eventTypes: [\"tick\"], afterSequence: 0) { id priority } }",
        json!({ "r": s.run }),
    )
    .await;
    let event = publish(&server, json!({"runId": s.run, "eventType": "tick"})).await;
    let mut errored = false;
    let mut delivered = false;
    while !(errored && delivered) {
        let message = ws.message().await;
        match (message["id"].as_str(), message["type"].as_str()) {
            (Some("bad"), Some("error")) => {
                assert_eq!(message["payload"][0]["extensions"]["code"], "INTERNAL");
                let text = message.to_string().to_lowercase();
                for leak in leaks {
                    assert!(!text.contains(leak), "{leak:?} leaked: {message}");
                }
                errored = true;
            }
            (Some("good"), Some("next")) => {
                assert_eq!(message["payload"]["data"]["events"]["id"], event["id"]);
                delivered = true;
            }
            _ => panic!("unexpected {message}"),
        }
    }
    let second = publish(&server, json!({"runId": s.run, "eventType": "tick"})).await;
    assert_eq!(ws.next_event("good").await["id"], second["id"]);
}

async fn wrong_values_in_every_mutation_change_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "wrong").await;
    event_type(&server, "tick", Value::Null, 0, 1).await;
    event_type(
        &server,
        "said",
        json!({"type": "object", "required": ["text"]}),
        0,
        1,
    )
    .await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let event = publish(&server, json!({"runId": s.run, "eventType": "tick"})).await;
    let nobody = "00000000-0000-4000-8000-000000000000";
    let publish_one = "mutation($i: EventInput!) { publishEvent(input: $i) { id } }";
    let publish_many = "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }";
    let complete =
        "mutation($i: CompleteEventInput!) { completeEvent(input: $i) { engine { version } } }";
    let save = "mutation($e: UUID!, $s: JSON!, $v: Int) { saveEngineState(engineId: $e, state: $s, expectedVersion: $v) { version } }";
    let tick = |extra: Value| {
        let mut input = json!({"runId": s.run, "eventType": "tick"});
        input
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        input
    };
    // (what, query, variables, code, field)
    let cases: Vec<(&str, String, Value, &str, Option<&str>)> = vec![
        ("priority of the wrong type", publish_one.into(), json!({"i": tick(json!({"priority": "high"}))}), "BAD_USER_INPUT", Some("input.priority")),
        ("priority past i32", publish_one.into(), json!({"i": tick(json!({"priority": 2_147_483_648_i64}))}), "BAD_USER_INPUT", Some("input")),
        ("inline priority past i32", format!("mutation {{ publishEvent(input: {{runId: \"{}\", eventType: \"tick\", priority: 99999999999}}) {{ id }} }}", s.run), json!({}), "BAD_USER_INPUT", Some("input")),
        ("unknown event type", publish_one.into(), json!({"i": {"runId": s.run, "eventType": "nope"}}), "BAD_USER_INPUT", Some("input.eventType")),
        ("unknown run", publish_one.into(), json!({"i": {"runId": nobody, "eventType": "tick"}}), "NOT_FOUND", None),
        ("invalid parent UUID", publish_one.into(), json!({"i": tick(json!({"parentEventId": "42"}))}), "BAD_USER_INPUT", Some("input")),
        ("schema violation", publish_one.into(), json!({"i": {"runId": s.run, "eventType": "said", "payload": {"txt": 1}}}), "PAYLOAD_SCHEMA_VIOLATION", None),
        ("unknown type inside a batch", publish_many.into(), json!({"i": [tick(json!({})), {"runId": s.run, "eventType": "nope"}, tick(json!({}))]}), "BAD_USER_INPUT", Some("inputs.1.eventType")),
        ("wrong type inside a batch", publish_many.into(), json!({"i": [tick(json!({})), tick(json!({"priority": 1.5}))]}), "BAD_USER_INPUT", Some("inputs.1.priority")),
        ("unknown run status", format!("mutation {{ setRunStatus(runId: \"{}\", status: FINISHED) {{ status }} }}", s.run), json!({}), "BAD_USER_INPUT", Some("status")),
        ("run status as a string", "mutation($r: UUID!, $s: RunStatus!) { setRunStatus(runId: $r, status: $s) { status } }".into(), json!({"r": s.run, "s": "completed"}), "BAD_USER_INPUT", Some("status")),
        ("unknown processing status", complete.into(), json!({"i": {"eventId": event["id"], "engineId": engine, "status": "DONE", "state": {"x": 1}}}), "BAD_USER_INPUT", Some("input.status")),
        ("completion by an unknown engine", complete.into(), json!({"i": {"eventId": event["id"], "engineId": nobody, "status": "PROCESSED", "state": {"x": 1}}}), "NOT_FOUND", None),
        ("completion emitting an unknown type", complete.into(), json!({"i": {"eventId": event["id"], "engineId": engine, "status": "PROCESSED", "state": {"x": 1}, "emit": [{"runId": s.run, "eventType": "nope"}]}}), "BAD_USER_INPUT", Some("input.emit.0.eventType")),
        ("engine of an invalid run id", "mutation($i: RegisterEngineInput!) { registerEngine(input: $i) { engineId } }".into(), json!({"i": {"runId": "not-a-uuid", "engineType": "ActorEngine"}}), "BAD_USER_INPUT", Some("input")),
        ("expected version of the wrong type", save.into(), json!({"e": engine, "s": {"x": 1}, "v": "one"}), "BAD_USER_INPUT", Some("expectedVersion")),
        ("expected version past i64", save.into(), json!({"e": engine, "s": {"x": 1}, "v": u64::MAX}), "BAD_USER_INPUT", Some("expectedVersion")),
        ("state of an unknown engine", save.into(), json!({"e": nobody, "s": {"x": 1}}), "NOT_FOUND", None),
        ("max attempts of the wrong type", "mutation { createEventType(input: {name: \"t2\", category: \"c\", maxAttempts: \"3\"}) { name } }".into(), json!({}), "BAD_USER_INPUT", Some("input.maxAttempts")),
        ("strength of the wrong type", "mutation($r: UUID!) { setRelationship(input: {runId: $r, sourceRole: \"hero\", targetRole: \"villain\", kind: \"k\", strength: \"strong\"}) { kind } }".into(), json!({"r": s.run}), "BAD_USER_INPUT", Some("input.strength")),
        ("run of an unknown template", "mutation($t: UUID!) { createScenarioRun(input: {templateId: $t, name: \"r\"}) { id } }".into(), json!({"t": nobody}), "BAD_USER_INPUT", Some("input.templateId")),
        ("malformed GraphQL", "mutation { publishEvent(input: {".into(), json!({}), "BAD_USER_INPUT", None),
        ("unknown mutation", "mutation { publishEvnt(input: {}) { id } }".into(), json!({}), "BAD_USER_INPUT", None),
        ("variables of the wrong shape", publish_one.into(), json!({"i": [1, 2]}), "BAD_USER_INPUT", Some("input")),
    ];
    let mut wrong = Vec::new();
    for (what, query, variables, code, field) in cases {
        let before = server.digest().await;
        let err = server.gql_err(&query, variables).await;
        if err.code != code || field.is_some_and(|f| err.field.as_deref() != Some(f)) {
            wrong.push(format!(
                "{what}: expected {code} {field:?}, got {}",
                err.raw
            ));
        }
        if server.digest().await != before {
            wrong.push(format!("{what} changed something"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

async fn a_thousand_aliases_over_the_websocket_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "aliases").await;
    event_type(&server, "tick", Value::Null, 0, 1).await;
    // Each alias costs a field and its subfield: 2,001 against 2,000.
    let aliases: String = (0..1000)
        .map(|i| format!("a{i}: processedBy {{ status }} "))
        .collect();
    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "wide",
        &format!("subscription($r: UUID!) {{ events(runId: $r) {{ {aliases} }} }}"),
        json!({ "r": s.run }),
    )
    .await;
    let refused = ws.message().await;
    assert_eq!(refused["id"], "wide", "{refused}");
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"],
        "LIMIT_EXCEEDED"
    );
    // The connection stays usable.
    ws.subscribe(
        "narrow",
        "subscription($r: UUID!) { events(runId: $r, afterSequence: 0, eventTypes: [\"tick\"]) { id } }",
        json!({ "r": s.run }),
    )
    .await;
    let event = publish(&server, json!({"runId": s.run, "eventType": "tick"})).await;
    assert_eq!(ws.next_event("narrow").await["id"], event["id"]);
}
