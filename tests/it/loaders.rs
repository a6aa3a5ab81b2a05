//! Nested fields are batched: the statement count of a query does not grow
//! with the number of rows it returns.

use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{Backend, TestServer, event_type, register, scenario};

both_backends!(nested_fields_cost_a_constant_number_of_statements);

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
    let events = server
        .gql(
            "mutation($inputs: [EventInput!]!) { publishEvents(inputs: $inputs) { id } }",
            json!({ "inputs": inputs }),
        )
        .await["publishEvents"]
        .clone();
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
    // Run check, events, types, processings, runs.
    assert!(fifty <= 5, "{fifty} statements for one query");
}
