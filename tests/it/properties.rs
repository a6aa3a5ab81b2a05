//! Property tests: random event inputs and random JSON thrown at
//! `publishEvents` and `completeEvent`. Whatever is accepted or refused, the
//! run's sequences stay gapless, a refused call changes nothing, and the
//! server keeps answering.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{Backend, TestServer, event_type, register, scenario};

both_backends!(random_publishes_and_completions_keep_the_invariants);

/// Any JSON, unicode and NUL included, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `value` with each integral float written as the integer it is: JSON
/// has one kind of number, and PostgreSQL's `jsonb` gives back
/// `3.4523270149980685e17` as `345232701499806850`.
fn by_value(value: &Value) -> Value {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e18 => Value::from(f as i64),
            Some(f) if n.is_f64() && f.fract() == 0.0 && (0.0..1.8e19).contains(&f) => {
                Value::from(f as u64)
            }
            _ => value.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(by_value).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), by_value(v)))
                .collect(),
        ),
        _ => value.clone(),
    }
}

/// One event input against `run`: a known or unknown type, any priority,
/// any payload (the `typed` type requires `{"n": integer}`), maybe a key.
fn any_event(run: String) -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just("typed"), Just("free"), Just("missing")],
        proptest::option::of(any::<i32>()),
        prop_oneof![any_json(), any::<i64>().prop_map(|n| json!({ "n": n })),],
        proptest::option::of("[a-c]{1,2}"),
        any::<bool>(),
    )
        .prop_map(move |(event_type, priority, payload, key, other_run)| {
            let run_id = if other_run && priority.is_some_and(|p| p % 7 == 0) {
                uuid::Uuid::new_v4().to_string()
            } else {
                run.clone()
            };
            json!({
                "runId": run_id, "eventType": event_type, "priority": priority,
                "payload": payload, "idempotencyKey": key,
            })
        })
}

/// (count, max sequence, last_sequence) of a run, read straight from the database.
async fn sequences(db: &DatabaseConnection, run: &str) -> (i64, i64, i64) {
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DatabaseBackend::Postgres => format!(
            "SELECT (SELECT COUNT(*) FROM event_instances WHERE run_id = '{run}'), \
                    (SELECT COALESCE(MAX(sequence), 0) FROM event_instances WHERE run_id = '{run}'), \
                    (SELECT last_sequence FROM scenario_runs WHERE id = '{run}')"
        ),
        _ => {
            // SQLite stores UUIDs as 16-byte blobs.
            let hex = run.replace('-', "");
            format!(
                "SELECT (SELECT COUNT(*) FROM event_instances WHERE run_id = x'{hex}'), \
                        (SELECT COALESCE(MAX(sequence), 0) FROM event_instances WHERE run_id = x'{hex}'), \
                        (SELECT last_sequence FROM scenario_runs WHERE id = x'{hex}')"
            )
        }
    };
    let row = db
        .query_one_raw(Statement::from_string(backend, sql))
        .await
        .unwrap()
        .unwrap();
    (
        row.try_get_by_index(0).unwrap(),
        row.try_get_by_index(1).unwrap(),
        row.try_get_by_index(2).unwrap(),
    )
}

async fn random_publishes_and_completions_keep_the_invariants(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "prop").await;
    let run = s.run.clone();
    event_type(
        &server,
        "typed",
        json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}),
        0,
        1,
    )
    .await;
    event_type(&server, "free", json!(null), 0, 3).await;
    let engine = register(&server, &run, "ActorEngine").await;
    let db = sea_orm::Database::connect(server.database_url())
        .await
        .unwrap();

    let counts = Arc::new(Counts::default());
    let context = Arc::new((server, db, run.clone(), engine));
    // proptest runs (and shrinks) synchronously: each case blocks on the
    // async checks from a blocking thread of the test's runtime.
    let handle = tokio::runtime::Handle::current();
    let (run_context, run_counts) = (context.clone(), counts.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        let strategy = (
            prop::collection::vec(any_event(run_context.2.clone()), 1..5),
            any_json(),
            any::<bool>(),
        );
        let mut runner = TestRunner::new(Config {
            cases: 48,
            max_shrink_iters: 200,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&strategy, |(inputs, state, failed)| {
                let (server, db, run, engine) = &*run_context;
                handle.block_on(one_case(
                    server,
                    db,
                    run,
                    engine,
                    inputs,
                    state,
                    failed,
                    &run_counts,
                ));
                Ok(())
            })
            .map_err(|failure| failure.to_string())
    })
    .await
    .unwrap();
    if let Err(failure) = outcome {
        panic!("property failed; smallest input found: {failure}");
    }
    // Both outcomes were exercised, not only refusals.
    let (published, completed) = (
        counts.published.load(Ordering::Relaxed),
        counts.completed.load(Ordering::Relaxed),
    );
    assert!(
        published > 0 && completed > 0,
        "{published} publishes, {completed} completions accepted"
    );
}

/// Accepted calls, to show that the cases did not only exercise refusals.
#[derive(Default)]
struct Counts {
    published: AtomicUsize,
    completed: AtomicUsize,
}

/// One case: `inputs` through `publishEvents`, then `completeEvent` of the
/// latest event emitting `inputs` and saving `state`; the invariants hold
/// after each.
#[allow(clippy::too_many_arguments)]
async fn one_case(
    server: &TestServer,
    db: &DatabaseConnection,
    run: &str,
    engine: &str,
    inputs: Vec<Value>,
    state: Value,
    failed: bool,
    counts: &Counts,
) {
    // publishEvents: all or nothing, gapless either way.
    let before = sequences(db, run).await;
    let response = server
        .gql_raw(
            "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id sequence } }",
            json!({ "i": inputs }),
        )
        .await;
    let after = sequences(db, run).await;
    assert_eq!(
        after.0, after.1,
        "gapless: count = max sequence ({response})"
    );
    assert_eq!(after.1, after.2, "last_sequence = max sequence");
    match response.get("errors") {
        Some(errors) => {
            assert!(errors[0]["extensions"]["code"].is_string(), "{response}");
            assert_eq!(after, before, "a refused batch changes nothing: {response}");
        }
        None => {
            counts.published.fetch_add(1, Ordering::Relaxed);
            assert!(after.1 >= before.1);
        }
    }

    // completeEvent on the latest event, emitting the same random inputs
    // and saving a random state: all or nothing.
    let latest = server
            .gql("query($r: UUID!) { events(runId: $r, orderBy: SEQUENCE, filter: {afterSequence: 0}, first: 1) { nodes { id } } }", json!({ "r": run }))
            .await["events"]["nodes"][0]["id"]
            .clone();
    let engine_before = server
            .gql("query($e: UUID!, $ev: UUID!) { engine(engineId: $e) { version state } event(id: $ev) { processedBy { attempts } } }",
                 json!({ "e": engine, "ev": latest }))
            .await;
    let before = sequences(db, run).await;
    let response = server
            .gql_raw(
                "mutation($input: CompleteEventInput!) { completeEvent(input: $input) { emitted { id } engine { version } } }",
                json!({ "input": {
                    "eventId": latest, "engineId": engine,
                    "status": if failed { "FAILED" } else { "PROCESSED" },
                    "emit": inputs, "state": state
                }}),
            )
            .await;
    let after = sequences(db, run).await;
    assert_eq!(after.0, after.1, "gapless after completeEvent");
    let engine_after = server
            .gql("query($e: UUID!, $ev: UUID!) { engine(engineId: $e) { version state } event(id: $ev) { processedBy { attempts } } }",
                 json!({ "e": engine, "ev": latest }))
            .await;
    match response.get("errors") {
        Some(errors) => {
            assert!(errors[0]["extensions"]["code"].is_string(), "{response}");
            assert_eq!(after, before, "no partial completion: {response}");
            assert_eq!(
                engine_after, engine_before,
                "no partial completion: {response}"
            );
        }
        None => {
            counts.completed.fetch_add(1, Ordering::Relaxed);
            let version = |engine: &Value| engine["engine"]["version"].as_i64().unwrap();
            if state.is_null() {
                // A null state is no state: nothing is saved.
                assert_eq!(engine_after["engine"], engine_before["engine"]);
            } else {
                assert_eq!(version(&engine_after), version(&engine_before) + 1);
                assert_eq!(by_value(&engine_after["engine"]["state"]), by_value(&state));
            }
        }
    }
    let health = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the server keeps answering");
}
