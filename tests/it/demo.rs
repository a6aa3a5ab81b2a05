//! `scenario-hub demo`: what it loads, that a second call changes nothing,
//! and that the README's first GraphiQL query shows it.

use std::collections::HashSet;
use std::process::Command;

use serde_json::json;

use crate::both_backends;
use crate::common::{Backend, TestServer};

both_backends!(the_demo_loads_once_and_the_readme_query_shows_it);

/// The first ```graphql block of README.md.
pub fn readme_first_query() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme.find("```graphql\n").expect("a graphql block") + "```graphql\n".len();
    let end = start + readme[start..].find("```").expect("the block ends");
    readme[start..end].to_owned()
}

fn demo(url: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_scenario-hub"))
        .arg("demo")
        .env("DATABASE_URL", url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

async fn the_demo_loads_once_and_the_readme_query_shows_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let said = demo(server.database_url());
    assert!(said.contains("RUNNING"), "{said}");
    let loaded = server.digest().await;
    assert_eq!(demo(server.database_url()), said, "the same ids again");
    assert_eq!(
        server.digest().await,
        loaded,
        "a second call changes nothing"
    );

    let data = server.gql(&readme_first_query(), json!({})).await;
    let runs = data["scenarioRuns"]["nodes"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{data:#}");
    let run = &runs[0];
    assert_eq!(run["status"], "RUNNING");
    // The analyst's samples, aggregated: trust's mean over three rounds
    // (0.55, 0.62, 0.69) and one theft, against both criteria.
    let metrics = &run["metrics"];
    assert_eq!(metrics[0]["name"], "trust");
    assert_eq!(metrics[0]["aggregation"], "MEAN");
    let trust = metrics[0]["value"].as_f64().unwrap();
    assert!((trust - 0.62).abs() < 1e-9, "{metrics}");
    assert_eq!(metrics[1]["value"], 1.0, "{metrics}");
    assert_eq!(run["evaluation"]["status"], "PASSED", "{run}");
    assert!(
        run["lastSequence"].as_i64().unwrap() >= 24,
        "a few dozen events"
    );
    assert_eq!(
        run["template"]["config"]["sceneDescriptions"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let roles: HashSet<_> = run["template"]["agentRoles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, HashSet::from(["merchant", "guard", "thief"]));
    let engines = run["engines"].as_array().unwrap();
    assert_eq!(engines.len(), 5);
    assert!(
        engines
            .iter()
            .all(|e| e["state"].as_object().is_some_and(|s| !s.is_empty()))
    );
    let top = run["events"]["nodes"].as_array().unwrap();
    let priorities: Vec<i64> = top
        .iter()
        .map(|e| e["priority"].as_i64().unwrap())
        .collect();
    assert!(
        priorities.windows(2).all(|w| w[0] >= w[1]),
        "{priorities:?}"
    );

    // Every typed key of the template is filled, and priorities are mixed.
    let filled = server
        .gql(
            "{ scenarioTemplates { nodes { agentRoles { relationships { kind } }
                config { metricsDefinitions { name } successCriteria { metric } extra }
                eventFlow { worldRules { key } extra } } }
               agentTemplates { nodes { name } } }",
            json!({}),
        )
        .await;
    let template = &filled["scenarioTemplates"]["nodes"][0];
    for key in ["metricsDefinitions", "successCriteria"] {
        assert!(
            !template["config"][key].as_array().unwrap().is_empty(),
            "{key}"
        );
    }
    assert!(
        template["config"]["extra"]
            .as_object()
            .is_some_and(|o| !o.is_empty())
    );
    assert!(
        !template["eventFlow"]["worldRules"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        template["eventFlow"]["extra"]
            .as_object()
            .is_some_and(|o| !o.is_empty())
    );
    assert_eq!(
        filled["agentTemplates"]["nodes"].as_array().unwrap().len(),
        5
    );
    let all = server
        .gql(
            "query($r: UUID!) { events(runId: $r, first: 500) { nodes { priority } } }",
            json!({ "r": run_id(&server).await }),
        )
        .await;
    let distinct: HashSet<i64> = all["events"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["priority"].as_i64().unwrap())
        .collect();
    assert!(distinct.len() >= 5, "mixed priorities: {distinct:?}");
}

async fn run_id(server: &TestServer) -> String {
    server
        .gql("{ scenarioRuns { nodes { id } } }", json!({}))
        .await["scenarioRuns"]["nodes"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}
