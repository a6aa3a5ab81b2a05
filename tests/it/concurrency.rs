//! Concurrent publishers into one run get gapless, unique sequences.

use std::collections::BTreeSet;

use serde_json::json;

use crate::both_backends;
use crate::common::{Backend, TestServer, event_type, last_sequence, scenario};

both_backends!(concurrent_publishers_get_gapless_sequences);

async fn concurrent_publishers_get_gapless_sequences(backend: Backend) {
    let server = std::sync::Arc::new(TestServer::start(backend).await);
    let s = scenario(&server, "conc").await;
    event_type(&server, "tick", json!(null), 0, 1).await;
    let start = last_sequence(&server, &s.run).await;

    let mut tasks = Vec::new();
    for task in 0..8 {
        let server = server.clone();
        let run = s.run.clone();
        tasks.push(tokio::spawn(async move {
            let mut sequences = Vec::with_capacity(200);
            for i in 0..200 {
                let event = server
                    .gql(
                        "mutation($r: UUID!, $p: JSON) { publishEvent(input: {runId: $r, eventType: \"tick\", payload: $p}) { sequence } }",
                        json!({ "r": run, "p": {"task": task, "i": i} }),
                    )
                    .await;
                sequences.push(event["publishEvent"]["sequence"].as_i64().unwrap());
            }
            sequences
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let sequences = task.await.unwrap();
        // Each publisher sees its own events in increasing order.
        assert!(sequences.windows(2).all(|w| w[0] < w[1]));
        all.extend(sequences);
    }
    let unique: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 1600);
    assert_eq!(unique.len(), 1600, "no duplicate");
    assert_eq!(unique, ((start + 1)..=(start + 1600)).collect(), "no gap");
    assert_eq!(last_sequence(&server, &s.run).await, start + 1600);

    // What the database holds agrees.
    let stored = server
        .gql(
            "query($r: UUID!, $after: Int) { events(runId: $r, filter: {afterSequence: $after, eventTypes: [\"tick\"]}, first: 500) { nodes { sequence } pageInfo { hasNextPage } } }",
            json!({ "r": s.run, "after": start + 1500 }),
        )
        .await;
    let tail: Vec<i64> = stored["events"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(tail, ((start + 1501)..=(start + 1600)).collect::<Vec<_>>());
}
