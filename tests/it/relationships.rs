//! Run relationships: the template's overlaid with the run's changes.

use serde_json::json;

use crate::both_backends;
use crate::common::{Backend, TestServer, last_sequence, scenario};

both_backends!(set_relationship_overlays_the_template_and_publishes);

async fn set_relationship_overlays_the_template_and_publishes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "rel").await;
    const READ: &str = "query($r: UUID!) { scenarioRun(id: $r) { relationships { sourceRole targetRole kind strength data updatedAt } } }";
    let initial =
        server.gql(READ, json!({ "r": s.run })).await["scenarioRun"]["relationships"].clone();
    assert_eq!(
        initial,
        json!([{"sourceRole": "hero", "targetRole": "villain", "kind": "rival", "strength": 0.5, "data": null, "updatedAt": null}])
    );

    const SET: &str = "mutation($input: SetRelationshipInput!) { setRelationship(input: $input) { sourceRole targetRole kind strength data updatedAt } }";
    let set = server
        .gql(SET, json!({ "input": {"runId": s.run, "sourceRole": "hero", "targetRole": "villain", "kind": "ally", "strength": 0.9, "data": {"since": "act 2"}} }))
        .await["setRelationship"]
        .clone();
    assert_eq!(set["kind"], "ally");
    assert!(set["updatedAt"].is_string());
    server
        .gql(SET, json!({ "input": {"runId": s.run, "sourceRole": "villain", "targetRole": "hero", "kind": "wary", "strength": -0.2} }))
        .await;

    let now = server.gql(READ, json!({ "r": s.run })).await["scenarioRun"]["relationships"].clone();
    let pairs: Vec<(String, String, String)> = now
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["sourceRole"].as_str().unwrap().into(),
                r["targetRole"].as_str().unwrap().into(),
                r["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("hero".into(), "villain".into(), "ally".into()),
            ("villain".into(), "hero".into(), "wary".into())
        ]
    );
    // The template itself is unchanged.
    let template = server
        .gql("query($t: UUID!) { scenarioTemplate(id: $t) { agentRoles { relationships { kind } } } }", json!({ "t": s.template }))
        .await;
    assert_eq!(
        template["scenarioTemplate"]["agentRoles"][0]["relationships"][0]["kind"],
        "rival"
    );

    let events = server
        .gql(
            "query($r: UUID!) { events(runId: $r, filter: {eventTypes: [\"relationship_updated\"]}) { nodes { payload } } }",
            json!({ "r": s.run }),
        )
        .await["events"]["nodes"]
        .clone();
    assert_eq!(events.as_array().unwrap().len(), 2);
    assert_eq!(
        events[0]["payload"],
        json!({"sourceRole": "hero", "targetRole": "villain", "kind": "ally", "strength": 0.9, "data": {"since": "act 2"}})
    );

    // Roles must be the template's; nothing is stored otherwise.
    let before = last_sequence(&server, &s.run).await;
    let err = server
        .gql_err(SET, json!({ "input": {"runId": s.run, "sourceRole": "hero", "targetRole": "ghost", "kind": "x", "strength": 1} }))
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("BAD_USER_INPUT", Some("input.targetRole"))
    );
    assert_eq!(last_sequence(&server, &s.run).await, before);
}
