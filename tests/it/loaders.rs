//! Nested fields are batched: the statement count of a query does not grow
//! with the number of rows it returns.

use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{Backend, TestServer, event_type, register, scenario};

both_backends!(
    a_publish_is_one_statement_on_postgres,
    a_page_of_events_with_types_is_one_statement,
    nested_fields_cost_a_constant_number_of_statements,
    the_readme_query_costs_the_same_for_one_run_and_fifty,
);

/// The README's first query, with relationships and per-engine fields added.
const README_QUERY: &str = "{
  scenarioRuns(status: RUNNING) {
    nodes {
      name status lastSequence
      template { name config { sceneDescriptions { key description } } agentRoles { role } }
      engines { engineType version state group pendingCount inFlight { leaseId } }
      relationships { sourceRole targetRole kind }
      events(orderBy: PRIORITY, first: 5) { nodes { sequence priority eventType payload type { name } } }
    }
  }
}";

/// Statements of the README query (least of two), and the runs it returned.
async fn readme_cost(server: &TestServer) -> (u64, usize) {
    let mut least = u64::MAX;
    let mut runs = 0;
    for _ in 0..2 {
        let before = server.statements();
        let data = server.gql(README_QUERY, json!({})).await;
        least = least.min(server.statements() - before);
        let nodes = data["scenarioRuns"]["nodes"].as_array().unwrap();
        runs = nodes.len();
        for run in nodes {
            assert_eq!(run["engines"].as_array().unwrap().len(), 2, "{run}");
            assert_eq!(run["events"]["nodes"].as_array().unwrap().len(), 3, "{run}");
            assert_eq!(run["relationships"].as_array().unwrap().len(), 1, "{run}");
        }
    }
    (least, runs)
}

/// Adds a RUNNING run of `template` with two engines and two events.
async fn add_run(server: &TestServer, template: &str, i: usize) {
    let run = server
        .gql(
            "mutation($t: UUID!, $n: String!) { createScenarioRun(input: {templateId: $t, name: $n}) { id } }",
            json!({"t": template, "n": format!("run {i}")}),
        )
        .await["createScenarioRun"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .gql(
            "mutation($r: UUID!) { setRunStatus(runId: $r, status: RUNNING) { status } }",
            json!({"r": run}),
        )
        .await;
    register(server, &run, "ActorEngine").await;
    register(server, &run, "NarratorEngine").await;
    for priority in [1, 5] {
        server
            .gql(
                "mutation($r: UUID!, $p: Int!) { publishEvent(input: {runId: $r, eventType: \"a\", priority: $p}) { id } }",
                json!({"r": run, "p": priority}),
            )
            .await;
    }
}

/// No N+1 where the README goes: its query over 50 runs runs as many
/// statements as over one.
async fn the_readme_query_costs_the_same_for_one_run_and_fifty(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "readme").await;
    event_type(&server, "a", json!(null), 0, 1).await;
    // The scenario's own run is RUNNING without engines: close it.
    server
        .gql(
            "mutation($r: UUID!) { setRunStatus(runId: $r, status: COMPLETED) { status } }",
            json!({"r": s.run}),
        )
        .await;
    add_run(&server, &s.template, 0).await;
    let (one, runs) = readme_cost(&server).await;
    assert_eq!(runs, 1);
    for i in 1..50 {
        add_run(&server, &s.template, i).await;
    }
    let (fifty, runs) = readme_cost(&server).await;
    assert_eq!(runs, 50);
    assert_eq!(one, fifty, "statements for 1 run and for 50");
}

const QUERY: &str = "query($r: UUID!, $n: Int) { events(runId: $r, filter: {eventTypes: [\"a\", \"b\", \"c\"]}, first: $n) {
    nodes { id type { name defaultPriority } processedBy { engineId status } run { name } } } }";

async fn statements_for(server: &TestServer, run: &str, n: usize) -> u64 {
    // Least of two runs: once a second a request also re-reads whether any
    // API key exists (`auth::KeyPresence`), which is not the query's cost.
    let mut least = u64::MAX;
    for _ in 0..2 {
        let before = server.statements();
        let data = server.gql(QUERY, json!({ "r": run, "n": n })).await;
        let after = server.statements();
        let nodes = data["events"]["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), n);
        assert!(
            nodes
                .iter()
                .all(|e| e["processedBy"].as_array().unwrap().len() == 2)
        );
        least = least.min(after - before);
    }
    least
}

async fn nested_fields_cost_a_constant_number_of_statements(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "n1").await;
    for name in ["a", "b", "c"] {
        event_type(&server, name, json!(null), 0, 1).await;
    }
    let engines = [
        register(&server, &s.run, "ActorEngine").await,
        register(&server, &s.run, "AnalystEngine").await,
    ];
    let inputs: Vec<Value> = (0..50)
        .map(|i| json!({"runId": s.run, "eventType": (["a", "b", "c"][i % 3])}))
        .collect();
    let events = crate::common::publish_batch(&server, &inputs).await;
    for event in events.as_array().unwrap() {
        for engine in &engines {
            server
                .gql(
                    "mutation($ev: UUID!, $e: UUID!) { recordProcessing(input: {eventId: $ev, engineId: $e, status: PROCESSED}) { attempts } }",
                    json!({ "ev": event["id"], "e": engine }),
                )
                .await;
        }
    }

    let five = statements_for(&server, &s.run, 5).await;
    let fifty = statements_for(&server, &s.run, 50).await;
    assert_eq!(five, fifty, "50 events cost as many statements as 5");
    // Events, processings, runs; the run check and the types when the
    // event type cache is not yet vouched for (PostgreSQL, LISTEN not up).
    assert!(fifty <= 5, "{fifty} statements for one query");
}

/// A page of events by priority with their types (the W1 read of
/// BENCHMARKS.md) is one statement: the run is not looked up when it has
/// events, and the types come from memory.
async fn a_page_of_events_with_types_is_one_statement(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "w1").await;
    event_type(&server, "tick", json!({"type": "object"}), 0, 1).await;
    let inputs: Vec<Value> = (0..60)
        .map(|i| json!({"runId": s.run, "eventType": "tick", "priority": i % 10}))
        .collect();
    crate::common::publish_batch(&server, &inputs).await;
    let query = "query($r: UUID!) { events(runId: $r, orderBy: PRIORITY, first: 50) {
        nodes { id eventType type { name payloadSchema } priority payload } } }";
    // On PostgreSQL the cache is used once the LISTEN connection is up,
    // which the server reaches on its own shortly after it starts.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let statements = loop {
        let before = server.statements();
        let data = server.gql(query, json!({ "r": s.run })).await;
        let statements = server.statements() - before;
        let nodes = data["events"]["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 50);
        // The run's own run_status_changed is among them.
        assert!(nodes.iter().all(|e| e["type"]["name"] == e["eventType"]));
        assert!(
            nodes
                .iter()
                .filter(|e| e["eventType"] == "tick")
                .all(|e| e["type"]["payloadSchema"] == json!({"type": "object"}))
        );
        if statements <= 1 || tokio::time::Instant::now() > deadline {
            break statements;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(statements, 1);

    // A run with no events is still looked up, and an unknown one is NOT_FOUND.
    let empty = crate::common::create_run(&server, &s.template, "PENDING").await;
    let data = server.gql(query, json!({ "r": empty })).await;
    assert_eq!(data["events"]["nodes"], json!([]));
    let unknown = server
        .gql_err(query, json!({ "r": uuid::Uuid::new_v4() }))
        .await;
    assert_eq!(unknown.code, "NOT_FOUND");
}

/// A publish without idempotency key (the W2 write) is one statement on
/// PostgreSQL (the sequence bump and the insert in one CTE, autocommitted);
/// SQLite, in process, keeps its transaction.
async fn a_publish_is_one_statement_on_postgres(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "w2").await;
    event_type(&server, "tick", json!({"type": "object"}), 0, 1).await;
    let publish = "mutation($r: UUID!) { publishEvent(input: {runId: $r, eventType: \"tick\", payload: {}}) { id sequence } }";
    let most = match backend {
        Backend::Postgres => 1,
        // BEGIN, the sequence UPDATE, the INSERT, COMMIT.
        Backend::Sqlite => 4,
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let statements = loop {
        let before = server.statements();
        server.gql(publish, json!({ "r": s.run })).await;
        let statements = server.statements() - before;
        if statements <= most || tokio::time::Instant::now() > deadline {
            break statements;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(statements <= most, "{statements} statements for a publish");
}
