//! Event types are served from memory; a change is seen at once by the
//! server that made it and, on PostgreSQL, by the other replicas as soon as
//! its NOTIFY arrives.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{Backend, TestServer, event_type, scenario};

both_backends!(a_changed_event_type_is_seen_at_once);

const TYPE_OF: &str = "{ eventType(name: \"order\") { defaultPriority payloadSchema } }";
const CHANGE: &str = "mutation($s: JSON) {
    updateEventType(name: \"order\", patch: {payloadSchema: $s, defaultPriority: 7}) { name } }";

fn schema_requiring(field: &str) -> Value {
    json!({"type": "object", "required": [field]})
}

async fn publish_code(server: &TestServer, run: &str, payload: Value) -> Option<String> {
    let answer = server
        .gql_raw(
            "mutation($r: UUID!, $p: JSON) { publishEvent(input: {runId: $r, eventType: \"order\", payload: $p}) { priority } }",
            json!({"r": run, "p": payload}),
        )
        .await;
    answer["errors"][0]["extensions"]["code"]
        .as_str()
        .map(str::to_owned)
}

async fn a_changed_event_type_is_seen_at_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "cache").await;
    event_type(&server, "order", schema_requiring("old"), 0, 1).await;
    // Read it (and so cache it) through every path: publish, type, query.
    assert_eq!(publish_code(&server, &s.run, json!({"old": 1})).await, None);
    server.gql(TYPE_OF, json!({})).await;

    server
        .gql(CHANGE, json!({"s": schema_requiring("new")}))
        .await;
    assert_eq!(
        publish_code(&server, &s.run, json!({"old": 1}))
            .await
            .as_deref(),
        Some("PAYLOAD_SCHEMA_VIOLATION")
    );
    assert_eq!(publish_code(&server, &s.run, json!({"new": 1})).await, None);
    let now = server.gql(TYPE_OF, json!({})).await;
    assert_eq!(now["eventType"]["defaultPriority"], 7);
    assert_eq!(now["eventType"]["payloadSchema"], schema_requiring("new"));
}

/// Replica B holds the type in memory (it answers without a statement);
/// replica A changes it; B forgets it when A's NOTIFY arrives, and from then
/// on validates with the new schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pg_tests),
    ignore = "TEST_DATABASE_URL is not set: PostgreSQL test skipped"
)]
async fn replicas_forget_an_event_type_another_changed() {
    let a = TestServer::start(Backend::Postgres).await;
    let b = TestServer::start_on(a.database_url(), |_| {}).await;
    let s = scenario(&a, "replicas").await;
    event_type(&a, "order", schema_requiring("old"), 0, 1).await;

    let patience = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let before = b.statements();
        b.gql(TYPE_OF, json!({})).await;
        if b.statements() == before {
            break;
        }
        assert!(tokio::time::Instant::now() < patience, "B never caches");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(publish_code(&b, &s.run, json!({"old": 1})).await, None);

    a.gql(CHANGE, json!({"s": schema_requiring("new")})).await;
    loop {
        let seen = b.gql(TYPE_OF, json!({})).await;
        if seen["eventType"]["defaultPriority"] == 7 {
            assert_eq!(seen["eventType"]["payloadSchema"], schema_requiring("new"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < patience,
            "B still serves the old type: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        publish_code(&b, &s.run, json!({"old": 1})).await.as_deref(),
        Some("PAYLOAD_SCHEMA_VIOLATION")
    );
    assert_eq!(publish_code(&b, &s.run, json!({"new": 1})).await, None);
}
