//! Agent and scenario templates: typed config, validation, conflicts, paging.

use serde_json::json;

use crate::both_backends;
use crate::common::{Backend, TestServer, scenario};

both_backends!(
    scenario_template_config_is_typed_and_validated,
    duplicate_names_and_used_templates_conflict,
    template_lists_page_with_cursors,
    template_updates_apply_and_validate,
    racing_creations_of_one_name_have_one_winner,
);

/// The database decides who gets a unique name: of creations racing for
/// one name (agent template, scenario template, event type) exactly one
/// succeeds, the rest are CONFLICT naming it, none INTERNAL.
async fn racing_creations_of_one_name_have_one_winner(backend: Backend) {
    let server = TestServer::start(backend).await;
    for (mutation, message) in [
        (
            "mutation { createAgentTemplate(input: {name: \"twin\"}) { id } }",
            "an agent template named \"twin\" already exists",
        ),
        (
            "mutation { createScenarioTemplate(input: {name: \"twin\"}) { id } }",
            "a scenario template named \"twin\" already exists",
        ),
        (
            "mutation { createEventType(input: {name: \"twin\", category: \"t\"}) { name } }",
            "event type \"twin\" already exists",
        ),
    ] {
        let answers =
            futures::future::join_all((0..8).map(|_| server.gql_raw(mutation, json!({})))).await;
        let won = answers.iter().filter(|a| a.get("errors").is_none()).count();
        assert_eq!(won, 1, "{answers:?}");
        for lost in answers.iter().filter(|a| a.get("errors").is_some()) {
            assert_eq!(
                lost["errors"][0]["extensions"]["code"], "CONFLICT",
                "{lost}"
            );
            assert_eq!(lost["errors"][0]["message"], message, "{lost}");
        }
    }
}

async fn scenario_template_config_is_typed_and_validated(backend: Backend) {
    let server = TestServer::start(backend).await;
    let agent = server
        .gql(
            "mutation { createAgentTemplate(input: {name: \"narrator\", config: {model: \"gpt\", tools: [\"search\"]}}) { id config } }",
            json!({}),
        )
        .await["createAgentTemplate"]
        .clone();
    assert_eq!(
        agent["config"],
        json!({"model": "gpt", "tools": ["search"]})
    );
    let agent_id = agent["id"].as_str().unwrap();

    let input = json!({
        "name": "siege",
        "description": "a castle under siege",
        "config": {
            "sceneDescriptions": [{"key": "gate", "description": "the main gate"}],
            "metricsDefinitions": [{"name": "morale", "description": "d", "unit": "pts", "aggregation": "MEAN"}],
            "successCriteria": [{"metric": "morale", "operator": "GTE", "threshold": 0.5}],
            "extra": {"weather": "rain"}
        },
        "agentRoles": [{"role": "captain", "agentTemplateId": agent_id,
                        "relationships": [{"targetRole": "captain", "kind": "self", "strength": 1.0, "data": {"x": 1}}]}],
        "eventFlow": {"worldRules": [{"key": "night", "description": "no fighting at night", "data": {}}], "extra": {}}
    });
    let created = server
        .gql(
            "mutation($input: CreateScenarioTemplateInput!) { createScenarioTemplate(input: $input) {
                id name description
                config { sceneDescriptions { key description }
                         metricsDefinitions { name description unit aggregation }
                         successCriteria { metric operator threshold } extra }
                agentRoles { role agentTemplateId agentTemplate { name }
                             relationships { targetRole kind strength data } }
                eventFlow { worldRules { key description data } extra }
            } }",
            json!({ "input": input }),
        )
        .await["createScenarioTemplate"]
        .clone();
    assert_eq!(created["config"]["successCriteria"][0]["operator"], "GTE");
    assert_eq!(created["config"]["extra"], json!({"weather": "rain"}));
    assert_eq!(
        created["agentRoles"][0]["agentTemplate"]["name"],
        "narrator"
    );
    assert_eq!(created["eventFlow"]["worldRules"][0]["key"], "night");

    // Read back through the query: what was stored is what was returned.
    let read = server
        .gql(
            "query($id: UUID!) { scenarioTemplate(id: $id) { id name description
                config { sceneDescriptions { key description }
                         metricsDefinitions { name description unit aggregation }
                         successCriteria { metric operator threshold } extra }
                agentRoles { role agentTemplateId agentTemplate { name }
                             relationships { targetRole kind strength data } }
                eventFlow { worldRules { key description data } extra } } }",
            json!({ "id": created["id"] }),
        )
        .await["scenarioTemplate"]
        .clone();
    assert_eq!(read, created);

    // A success criterion on an undefined metric.
    let mut bad = input.clone();
    bad["name"] = json!("siege-2");
    bad["config"]["successCriteria"][0]["metric"] = json!("courage");
    let err = server
        .gql_err(
            "mutation($input: CreateScenarioTemplateInput!) { createScenarioTemplate(input: $input) { id } }",
            json!({ "input": bad }),
        )
        .await;
    assert_eq!(err.code, "BAD_USER_INPUT");
    assert_eq!(
        err.field.as_deref(),
        Some("input.config.successCriteria.0.metric")
    );

    // An unknown operator is rejected by the schema itself.
    let mut bad = input.clone();
    bad["name"] = json!("siege-3");
    bad["config"]["successCriteria"][0]["operator"] = json!("ABOUT");
    let err = server
        .gql_err(
            "mutation($input: CreateScenarioTemplateInput!) { createScenarioTemplate(input: $input) { id } }",
            json!({ "input": bad }),
        )
        .await;
    assert_eq!(err.code, "BAD_USER_INPUT");

    // A role played by an agent template that does not exist.
    let mut bad = input.clone();
    bad["name"] = json!("siege-4");
    bad["agentRoles"][0]["agentTemplateId"] = json!(uuid::Uuid::new_v4());
    let err = server
        .gql_err(
            "mutation($input: CreateScenarioTemplateInput!) { createScenarioTemplate(input: $input) { id } }",
            json!({ "input": bad }),
        )
        .await;
    assert_eq!(err.code, "BAD_USER_INPUT");
    assert_eq!(
        err.field.as_deref(),
        Some("input.agentRoles.0.agentTemplateId")
    );

    // A relationship to a role that does not exist.
    let mut bad = input.clone();
    bad["name"] = json!("siege-5");
    bad["agentRoles"][0]["relationships"][0]["targetRole"] = json!("ghost");
    let err = server
        .gql_err(
            "mutation($input: CreateScenarioTemplateInput!) { createScenarioTemplate(input: $input) { id } }",
            json!({ "input": bad }),
        )
        .await;
    assert_eq!(
        err.field.as_deref(),
        Some("input.agentRoles.0.relationships.0.targetRole")
    );

    // An agent config that is not an object.
    let err = server
        .gql_err(
            "mutation { createAgentTemplate(input: {name: \"x\", config: [1, 2]}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(err.code, "BAD_USER_INPUT");
    assert_eq!(err.field.as_deref(), Some("config"));

    // None of the failed calls stored anything.
    let count = server
        .gql(
            "{ scenarioTemplates { nodes { name } } agentTemplates { nodes { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        count["scenarioTemplates"]["nodes"],
        json!([{"name": "siege"}])
    );
    assert_eq!(
        count["agentTemplates"]["nodes"],
        json!([{"name": "narrator"}])
    );
}

async fn duplicate_names_and_used_templates_conflict(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "dup").await;
    let err = server
        .gql_err(
            "mutation { createAgentTemplate(input: {name: \"dup-hero\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(err.code, "CONFLICT");

    // The hero agent plays a role of the template: it cannot go.
    let err = server
        .gql_err(
            "mutation($id: UUID!) { deleteAgentTemplate(id: $id) { id } }",
            json!({ "id": s.hero_agent }),
        )
        .await;
    assert_eq!(err.code, "CONFLICT");
    // The template has a run: it cannot go either.
    let err = server
        .gql_err(
            "mutation($id: UUID!) { deleteScenarioTemplate(id: $id) { id } }",
            json!({ "id": s.template }),
        )
        .await;
    assert_eq!(err.code, "CONFLICT");

    // An unused template goes, and then it is not found.
    let lone = server
        .gql(
            "mutation { createScenarioTemplate(input: {name: \"lone\"}) { id } }",
            json!({}),
        )
        .await["createScenarioTemplate"]["id"]
        .clone();
    server
        .gql(
            "mutation($id: UUID!) { deleteScenarioTemplate(id: $id) { name } }",
            json!({ "id": lone }),
        )
        .await;
    let gone = server
        .gql(
            "query($id: UUID!) { scenarioTemplate(id: $id) { id } }",
            json!({ "id": lone }),
        )
        .await;
    assert_eq!(gone["scenarioTemplate"], json!(null));
    let err = server
        .gql_err(
            "mutation($id: UUID!) { deleteScenarioTemplate(id: $id) { id } }",
            json!({ "id": lone }),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND");
}

async fn template_lists_page_with_cursors(backend: Backend) {
    let server = TestServer::start(backend).await;
    for i in 0..5 {
        server
            .gql(
                "mutation($n: String!) { createAgentTemplate(input: {name: $n}) { id } }",
                json!({ "n": format!("agent-{i}") }),
            )
            .await;
    }
    let mut names = Vec::new();
    let mut after = serde_json::Value::Null;
    loop {
        let page = server
            .gql(
                "query($after: String) { agentTemplates(first: 2, after: $after) {
                    edges { cursor node { name } } nodes { name } pageInfo { hasNextPage endCursor } } }",
                json!({ "after": after }),
            )
            .await["agentTemplates"]
            .clone();
        for node in page["nodes"].as_array().unwrap() {
            names.push(node["name"].as_str().unwrap().to_owned());
        }
        if !page["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(
        names,
        ["agent-0", "agent-1", "agent-2", "agent-3", "agent-4"]
    );

    let err = server
        .gql_err("{ agentTemplates(first: 501) { nodes { id } } }", json!({}))
        .await;
    assert_eq!(err.code, "LIMIT_EXCEEDED");
    assert_eq!(err.field.as_deref(), Some("first"));
    let err = server
        .gql_err(
            "{ agentTemplates(after: \"garbage\") { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(err.code, "BAD_USER_INPUT");
    assert_eq!(err.field.as_deref(), Some("after"));
}

async fn template_updates_apply_and_validate(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "upd").await;
    let updated = server
        .gql(
            "mutation($id: UUID!) { updateScenarioTemplate(id: $id, patch: {
                description: \"new\", eventFlow: {worldRules: [{key: \"k\", description: \"d\"}]}
            }) { name description eventFlow { worldRules { key } } agentRoles { role } } }",
            json!({ "id": s.template }),
        )
        .await["updateScenarioTemplate"]
        .clone();
    assert_eq!(updated["description"], "new");
    assert_eq!(updated["name"], "upd-scenario");
    assert_eq!(updated["agentRoles"].as_array().unwrap().len(), 2);
    assert_eq!(updated["eventFlow"]["worldRules"][0]["key"], "k");

    let err = server
        .gql_err(
            "mutation($id: UUID!) { updateScenarioTemplate(id: $id, patch: {
                eventFlow: {worldRules: [{key: \"k\", description: \"a\"}, {key: \"k\", description: \"b\"}]}
            }) { name } }",
            json!({ "id": s.template }),
        )
        .await;
    assert_eq!(err.code, "BAD_USER_INPUT");
    assert_eq!(err.field.as_deref(), Some("patch.eventFlow.worldRules.1"));

    let renamed = server
        .gql(
            "mutation($id: UUID!) { updateAgentTemplate(id: $id, patch: {name: \"upd-paladin\"}) { name config } }",
            json!({ "id": s.hero_agent }),
        )
        .await["updateAgentTemplate"]
        .clone();
    assert_eq!(
        renamed,
        json!({"name": "upd-paladin", "config": {"model": "m"}})
    );
    let err = server
        .gql_err(
            "mutation($id: UUID!) { updateAgentTemplate(id: $id, patch: {name: \"upd-villain\"}) { name } }",
            json!({ "id": s.hero_agent }),
        )
        .await;
    assert_eq!(err.code, "CONFLICT");
}
