//! An explicit `null` for a nullable JSON input field is valid GraphQL: the
//! schema is walked for every such field, and each is sent `null` through a
//! mutation that takes it. A field the table below does not cover fails the
//! test, so a new one cannot slip by.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{Backend, TestServer, event_type, publish, register, scenario};

both_backends!(every_nullable_json_input_field_takes_null);

/// `(input type, field)` of every nullable `JSON` field of an input type.
async fn nullable_json_fields(server: &TestServer) -> BTreeSet<(String, String)> {
    let schema = server
        .gql(
            "{ __schema { types { name kind inputFields { name type { kind name } } } } }",
            json!({}),
        )
        .await;
    let mut fields = BTreeSet::new();
    for t in schema["__schema"]["types"].as_array().unwrap() {
        if t["kind"] != "INPUT_OBJECT" {
            continue;
        }
        for f in t["inputFields"].as_array().unwrap() {
            if f["type"]["kind"] == "SCALAR" && f["type"]["name"] == "JSON" {
                let name = t["name"].as_str().unwrap().to_owned();
                fields.insert((name, f["name"].as_str().unwrap().to_owned()));
            }
        }
    }
    fields
}

async fn every_nullable_json_input_field_takes_null(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "nulls").await;
    event_type(&server, "job", Value::Null, 0, 1).await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let event = publish(&server, json!({"runId": s.run, "eventType": "job"})).await;

    // (input type, field, mutation sending null there, variables, what to check)
    let cases: Vec<(&str, &str, &str, Value, &str, Value)> = vec![
        (
            "AgentTemplatePatch",
            "config",
            "mutation($id: UUID!) { r: updateAgentTemplate(id: $id, patch: {config: null}) { config } }",
            json!({"id": s.hero_agent}),
            "/r/config",
            json!({}),
        ),
        (
            "CreateAgentTemplateInput",
            "config",
            "mutation { r: createAgentTemplate(input: {name: \"nullish\", config: null}) { config } }",
            json!({}),
            "/r/config",
            json!({}),
        ),
        (
            "CreateEventTypeInput",
            "payloadSchema",
            "mutation { r: createEventType(input: {name: \"nullish\", category: \"t\", payloadSchema: null}) { payloadSchema } }",
            json!({}),
            "/r/payloadSchema",
            Value::Null,
        ),
        (
            "EventTypePatch",
            "payloadSchema",
            "mutation { r: updateEventType(name: \"nullish\", patch: {payloadSchema: null}) { payloadSchema } }",
            json!({}),
            "/r/payloadSchema",
            Value::Null,
        ),
        (
            "CreateScenarioRunInput",
            "parameters",
            "mutation($t: UUID!) { r: createScenarioRun(input: {templateId: $t, name: \"n\", parameters: null}) { parameters } }",
            json!({"t": s.template}),
            "/r/parameters",
            json!({}),
        ),
        (
            "ForkRunInput",
            "parameters",
            "mutation($r: UUID!) { r: forkRun(input: {runId: $r, atSequence: 0, parameters: null}) { parameters } }",
            json!({"r": s.run}),
            "/r/parameters",
            json!({}),
        ),
        (
            "EventInput",
            "payload",
            "mutation($r: UUID!) { r: publishEvent(input: {runId: $r, eventType: \"job\", payload: null}) { payload } }",
            json!({"r": s.run}),
            "/r/payload",
            json!({}),
        ),
        (
            "RegisterEngineInput",
            "state",
            "mutation($r: UUID!) { r: registerEngine(input: {runId: $r, engineType: \"X\", state: null}) { state } }",
            json!({"r": s.run}),
            "/r/state",
            json!({}),
        ),
        (
            "CompleteEventInput",
            "state",
            "mutation($ev: UUID!, $e: UUID!) { r: completeEvent(input: {eventId: $ev, engineId: $e, status: PROCESSED, state: null}) { engine { version } } }",
            json!({"ev": event["id"], "e": engine}),
            "/r/engine/version",
            json!(1),
        ),
        (
            "SetRelationshipInput",
            "data",
            "mutation($r: UUID!) { r: setRelationship(input: {runId: $r, sourceRole: \"hero\", targetRole: \"hero\", kind: \"self\", strength: 1, data: null}) { data } }",
            json!({"r": s.run}),
            "/r/data",
            json!({}),
        ),
        (
            "ScenarioConfigInput",
            "extra",
            "mutation($id: UUID!) { r: updateScenarioTemplate(id: $id, patch: {config: {extra: null}}) { config { extra } } }",
            json!({"id": s.template}),
            "/r/config/extra",
            json!({}),
        ),
        (
            "EventFlowInput",
            "extra",
            "mutation($id: UUID!) { r: updateScenarioTemplate(id: $id, patch: {eventFlow: {worldRules: [], extra: null}}) { eventFlow { extra } } }",
            json!({"id": s.template}),
            "/r/eventFlow/extra",
            json!({}),
        ),
        (
            "WorldRuleInput",
            "data",
            "mutation($id: UUID!) { r: updateScenarioTemplate(id: $id, patch: {eventFlow: {worldRules: [{key: \"k\", description: \"d\", data: null}]}}) { eventFlow { worldRules { data } } } }",
            json!({"id": s.template}),
            "/r/eventFlow/worldRules/0/data",
            Value::Null,
        ),
        (
            "RoleRelationshipInput",
            "data",
            "mutation($id: UUID!, $a: UUID!) { r: updateScenarioTemplate(id: $id, patch: {agentRoles: [{role: \"hero\", agentTemplateId: $a, relationships: [{targetRole: \"hero\", kind: \"self\", strength: 1, data: null}]}]}) { agentRoles { relationships { data } } } }",
            json!({"id": s.template, "a": s.hero_agent}),
            "/r/agentRoles/0/relationships/0/data",
            Value::Null,
        ),
    ];

    let covered: BTreeSet<(String, String)> = cases
        .iter()
        .map(|c| (c.0.to_owned(), c.1.to_owned()))
        .collect();
    assert_eq!(
        nullable_json_fields(&server).await,
        covered,
        "every nullable JSON input field is tried"
    );
    for (input, field, query, variables, pointer, expected) in cases {
        let answer = server.gql_raw(query, variables).await;
        assert!(answer.get("errors").is_none(), "{input}.{field}: {answer}");
        assert_eq!(
            answer["data"].pointer(pointer),
            Some(&expected),
            "{input}.{field}: {answer}"
        );
    }
}
