//! The run timeline: every state save kept with the run sequence it was
//! made at, and forks that hold a run as it stood at one sequence.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{Backend, TestServer, event_type, last_sequence, publish, register, scenario};

both_backends!(
    every_save_is_kept_with_its_run_sequence,
    rows_from_before_the_timeline_get_a_history_of_one,
    state_history_keeps_the_last_n,
    a_fork_holds_the_run_as_it_stood,
    large_states_are_compressed_with_lz4,
);

const SAVE: &str = "mutation($e: UUID!, $s: JSON!, $v: Int) {
    saveEngineState(engineId: $e, state: $s, expectedVersion: $v) { version } }";
const HISTORY: &str = "query($e: UUID!, $first: Int, $after: String) { engine(engineId: $e) {
    history(first: $first, after: $after) {
        nodes { version state runSequence savedAt } pageInfo { hasNextPage endCursor } } } }";
const STATE_AT: &str = "query($e: UUID!, $s: Int!) { engine(engineId: $e) {
    stateAt(sequence: $s) { version state runSequence } } }";

async fn save(server: &TestServer, engine: &str, state: Value) -> i64 {
    server.gql(SAVE, json!({ "e": engine, "s": state })).await["saveEngineState"]["version"]
        .as_i64()
        .unwrap()
}

async fn state_at(server: &TestServer, engine: &str, sequence: i64) -> Value {
    server
        .gql(STATE_AT, json!({ "e": engine, "s": sequence }))
        .await["engine"]["stateAt"]
        .clone()
}

async fn tick(server: &TestServer, run: &str) -> Value {
    publish(server, json!({ "runId": run, "eventType": "tl_tick" })).await
}

async fn every_save_is_kept_with_its_run_sequence(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "hist").await;
    event_type(&server, "tl_tick", Value::Null, 0, 1).await;
    let registered_at = last_sequence(&server, &s.run).await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    tick(&server, &s.run).await;
    tick(&server, &s.run).await;
    assert_eq!(save(&server, &engine, json!({"n": 1})).await, 2);
    let first_save_at = last_sequence(&server, &s.run).await;
    let event = tick(&server, &s.run).await;
    assert_eq!(save(&server, &engine, json!({"n": 2})).await, 3);

    // A refused save keeps no version, nor does a refused completion
    // (its record, emits and state go together or not at all).
    let before = server.digest().await;
    let err = server
        .gql_err(SAVE, json!({ "e": engine, "s": {"n": 99}, "v": 1 }))
        .await;
    assert_eq!(err.code, "VERSION_CONFLICT");
    let err = server
        .gql_err(
            "mutation($ev: UUID!, $e: UUID!) { completeEvent(input: {eventId: $ev, engineId: $e,
                status: PROCESSED, state: {n: 99}, expectedVersion: 1,
                emit: [{runId: \"RUN\", eventType: \"tl_tick\"}]}) { engine { version } } }"
                .replace("RUN", &s.run)
                .as_str(),
            json!({ "ev": event["id"], "e": engine }),
        )
        .await;
    assert_eq!(err.code, "VERSION_CONFLICT");
    assert_eq!(server.digest().await, before);

    // A completion's state is dated after the events it emitted, and so is
    // its record.
    let done = server
        .gql(
            "mutation($ev: UUID!, $e: UUID!) { completeEvent(input: {eventId: $ev, engineId: $e,
                status: PROCESSED, state: {n: 3}, emit: [{runId: \"RUN\", eventType: \"tl_tick\"},
                {runId: \"RUN\", eventType: \"tl_tick\"}]}) {
                processing { runSequence } emitted { sequence } engine { version } } }"
                .replace("RUN", &s.run)
                .as_str(),
            json!({ "ev": event["id"], "e": engine }),
        )
        .await["completeEvent"]
        .clone();
    let completed_at = done["emitted"][1]["sequence"].as_i64().unwrap();
    assert_eq!(done["processing"]["runSequence"], completed_at);
    assert_eq!(done["engine"]["version"], 4);

    let page = server
        .gql(HISTORY, json!({ "e": engine, "first": 2 }))
        .await["engine"]["history"]
        .clone();
    let versions = |page: &Value| -> Vec<(i64, Value, i64)> {
        page["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["version"].as_i64().unwrap(),
                    v["state"].clone(),
                    v["runSequence"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        versions(&page),
        [
            (4, json!({"n": 3}), completed_at),
            (3, json!({"n": 2}), first_save_at + 1)
        ]
    );
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let rest = server
        .gql(
            HISTORY,
            json!({ "e": engine, "first": 2, "after": page["pageInfo"]["endCursor"] }),
        )
        .await["engine"]["history"]
        .clone();
    assert_eq!(
        versions(&rest),
        [
            (2, json!({"n": 1}), first_save_at),
            (1, json!({}), registered_at)
        ]
    );
    assert_eq!(rest["pageInfo"]["hasNextPage"], false);

    // stateAt: the latest version saved at or before the sequence.
    assert_eq!(
        state_at(&server, &engine, registered_at - 1).await,
        Value::Null
    );
    assert_eq!(
        state_at(&server, &engine, registered_at).await["version"],
        1
    );
    assert_eq!(
        state_at(&server, &engine, first_save_at - 1).await["version"],
        1
    );
    assert_eq!(
        state_at(&server, &engine, first_save_at).await["state"],
        json!({"n": 1})
    );
    assert_eq!(
        state_at(&server, &engine, completed_at - 1).await["version"],
        3
    );
    assert_eq!(
        state_at(&server, &engine, completed_at + 100).await["version"],
        4
    );
    let err = server
        .gql_err(HISTORY, json!({ "e": engine, "after": "bm90IG91cnM" }))
        .await;
    assert_eq!(err.code, "BAD_USER_INPUT");
    server.stop().await;
}

async fn rows_from_before_the_timeline_get_a_history_of_one(backend: Backend) {
    use scenario_hub::config::DatabaseConfig;
    use scenario_hub::db::Db;
    use sea_orm::ConnectionTrait;

    let server = TestServer::start(backend).await;
    let s = scenario(&server, "legacy").await;
    event_type(&server, "tl_tick", Value::Null, 0, 1).await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let event = tick(&server, &s.run).await;
    save(&server, &engine, json!({"n": 1})).await;
    save(&server, &engine, json!({"n": 2})).await;
    server
        .gql(
            "mutation($ev: UUID!, $e: UUID!) { recordProcessing(input:
                {eventId: $ev, engineId: $e, status: PROCESSED}) { attempts } }",
            json!({ "ev": event["id"], "e": engine }),
        )
        .await;
    tick(&server, &s.run).await;
    let last = last_sequence(&server, &s.run).await;

    // Back to before the timeline, and forward again.
    let pool = Db::connect(&DatabaseConfig {
        database_url: server.database_url().to_owned(),
        database_max_connections: Some(2),
    })
    .await
    .unwrap();
    // Back past the metrics migration and the timeline's.
    pool.migrate_down(Some(crate::common::steps_back_past(
        "m20261203_000002_add_run_timeline",
    )))
    .await
    .unwrap();
    let gone = pool
        .conn
        .execute_unprepared("SELECT COUNT(*) FROM engine_state_versions")
        .await;
    assert!(gone.is_err(), "the down migration drops the history");
    pool.migrate().await.unwrap();
    pool.conn.close().await.ok();

    let history =
        server.gql(HISTORY, json!({ "e": engine })).await["engine"]["history"]["nodes"].clone();
    assert_eq!(
        history,
        json!([{ "version": 3, "state": {"n": 2}, "runSequence": last,
                 "savedAt": history[0]["savedAt"] }])
    );
    let record = server
        .gql(
            "query($ev: UUID!) { event(id: $ev) { processedBy { runSequence } } }",
            json!({ "ev": event["id"] }),
        )
        .await["event"]["processedBy"][0]["runSequence"]
        .clone();
    assert_eq!(record, last);
    // Its past is gone: a fork before the migration point is refused.
    let err = server
        .gql_err(FORK, json!({ "r": s.run, "s": last - 1 }))
        .await;
    assert_eq!(err.code, "BAD_USER_INPUT");
    server.stop().await;
}

async fn state_history_keeps_the_last_n(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.limits.state_history = "2".parse().unwrap();
    })
    .await;
    let s = scenario(&server, "keep").await;
    event_type(&server, "tl_tick", Value::Null, 0, 1).await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let early = last_sequence(&server, &s.run).await;
    for n in 1..=4 {
        tick(&server, &s.run).await;
        save(&server, &engine, json!({ "n": n })).await;
    }
    let history =
        server.gql(HISTORY, json!({ "e": engine })).await["engine"]["history"]["nodes"].clone();
    let kept: Vec<i64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(kept, [5, 4]);
    assert_eq!(state_at(&server, &engine, early).await, Value::Null);

    // A fork at a point the history no longer reaches is refused.
    let before = server.digest().await;
    let err = server
        .gql_err(
            "mutation($r: UUID!, $s: Int!) { forkRun(input: {runId: $r, atSequence: $s}) { id } }",
            json!({ "r": s.run, "s": early }),
        )
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("BAD_USER_INPUT", Some("input.atSequence"))
    );
    assert_eq!(server.digest().await, before);
    server.stop().await;
}

const FORK: &str = "mutation($r: UUID!, $s: Int!) {
    forkRun(input: {runId: $r, atSequence: $s, name: \"what if\"}) {
        id name status lastSequence forkedAtSequence parentRun { id } } }";

/// Everything readable about a run: events with their records, engines
/// with their history, relationships.
pub async fn run_digest(server: &TestServer, run: &str) -> Value {
    server
        .gql(
            "query($r: UUID!) { scenarioRun(id: $r) { status lastSequence
                relationships { sourceRole targetRole kind strength data }
                engines { engineId engineType state version group
                    history(first: 500) { nodes { version state runSequence } } }
                events(first: 500) { nodes { id sequence eventType priority payload
                    sourceEngineId targetEngineId targetEngineType idempotencyKey partitionKey
                    parent { sequence }
                    processedBy { engineId status error attempts runSequence } } } } }",
            json!({ "r": run }),
        )
        .await["scenarioRun"]
        .clone()
}

/// The sequences pending for `engine` in `run`.
pub async fn pending(server: &TestServer, run: &str, engine: &str) -> Vec<i64> {
    server
        .gql(
            "query($r: UUID!, $e: UUID!) { events(runId: $r, filter: {pendingFor: $e}, first: 500) {
                nodes { sequence } } }",
            json!({ "r": run, "e": engine }),
        )
        .await["events"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect()
}

/// The run as it stood at one sequence, read while it did.
pub struct Snapshot {
    /// Its relationships.
    pub relationships: Value,
    /// The sequences pending for each engine.
    pub pending: BTreeMap<String, Vec<i64>>,
}

/// A run with three engines (two ActorEngines, a NarratorEngine) and at
/// least `until` events: plain, targeted by id and by type, keyed; chains
/// emitted by completions with states; failures (final ones publish
/// `error_occurred`); relationship changes; plain state saves. When the run
/// reaches `pause_at`, what it then is is read into a [`Snapshot`].
pub async fn build_run(server: &TestServer, tag: &str, until: i64, pause_at: i64) -> BuiltRun {
    let s = scenario(server, tag).await;
    event_type(server, "tl_tick", Value::Null, 0, 1).await;
    event_type(server, "tl_flaky", Value::Null, 5, 2).await;
    let a = register(server, &s.run, "ActorEngine").await;
    let b = register(server, &s.run, "ActorEngine").await;
    let n = register(server, &s.run, "NarratorEngine").await;
    let engines = [a.clone(), b.clone(), n.clone()];

    let mut snapshot = None;
    let mut step = 0;
    while last_sequence(server, &s.run).await < until {
        step += 1;
        let at = last_sequence(server, &s.run).await;
        if at < pause_at && at + 4 > pause_at {
            while last_sequence(server, &s.run).await < pause_at {
                tick(server, &s.run).await;
            }
            let mut pending_at = BTreeMap::new();
            for engine in &engines {
                pending_at.insert(engine.clone(), pending(server, &s.run, engine).await);
            }
            let relationships = server
                .gql(
                    "query($r: UUID!) { scenarioRun(id: $r) {
                        relationships { sourceRole targetRole kind strength data } } }",
                    json!({ "r": s.run }),
                )
                .await["scenarioRun"]["relationships"]
                .clone();
            snapshot = Some(Snapshot {
                relationships,
                pending: pending_at,
            });
            continue;
        }
        let target = match step % 4 {
            0 => json!({ "targetEngineId": a }),
            1 => json!({ "targetEngineType": "NarratorEngine" }),
            2 => json!({ "partitionKey": format!("k{}", step % 3) }),
            _ => json!({}),
        };
        let mut input = json!({
            "runId": s.run,
            "eventType": if step % 5 == 0 { "tl_flaky" } else { "tl_tick" },
            "priority": step % 7,
            "payload": { "step": step },
            "idempotencyKey": format!("step-{step}"),
            "sourceEngineId": engines[step % 3],
        });
        input
            .as_object_mut()
            .unwrap()
            .extend(target.as_object().unwrap().clone());
        publish(server, input).await;

        let engine = &engines[step % 3];
        let next = server
            .gql(
                "query($r: UUID!, $e: UUID!) { events(runId: $r, orderBy: PRIORITY,
                    filter: {pendingFor: $e}, first: 1) { nodes { id eventType } } }",
                json!({ "r": s.run, "e": engine }),
            )
            .await["events"]["nodes"][0]
            .clone();
        if next.is_null() {
            continue;
        }
        if step % 3 == 1 {
            server
                .gql(
                    "mutation($ev: UUID!, $e: UUID!, $err: String) { recordProcessing(input:
                        {eventId: $ev, engineId: $e, status: FAILED, error: $err}) { attempts } }",
                    json!({ "ev": next["id"], "e": engine, "err": format!("step {step}") }),
                )
                .await;
        } else {
            server
                .gql(
                    "mutation($ev: UUID!, $e: UUID!, $st: JSON!, $emit: [EventInput!]) {
                        completeEvent(input: {eventId: $ev, engineId: $e, status: PROCESSED,
                        state: $st, emit: $emit}) { engine { version } } }",
                    json!({
                        "ev": next["id"], "e": engine, "st": { "step": step },
                        "emit": if step % 2 == 0 {
                            json!([{ "runId": s.run, "eventType": "tl_tick", "payload": { "child": step } }])
                        } else {
                            json!([])
                        },
                    }),
                )
                .await;
        }
        if step % 7 == 0 {
            server
                .gql(
                    "mutation($input: SetRelationshipInput!) { setRelationship(input: $input) { kind } }",
                    json!({ "input": { "runId": s.run, "sourceRole": "hero", "targetRole": "villain",
                        "kind": format!("kind-{step}"), "strength": step as f64 / 100.0, "data": { "step": step } } }),
                )
                .await;
        }
        if step % 11 == 0 {
            save(server, &n, json!({ "saved": step })).await;
        }
    }
    BuiltRun {
        scenario: s,
        engines,
        snapshot: snapshot.expect("the run passed its pause"),
    }
}

/// A run made by [`build_run`].
pub struct BuiltRun {
    /// Its scenario (template and run).
    pub scenario: crate::common::Scenario,
    /// Its engines.
    pub engines: [String; 3],
    /// The run as it stood at the pause.
    pub snapshot: Snapshot,
}

async fn a_fork_holds_the_run_as_it_stood(backend: Backend) {
    const AT: i64 = 150;
    let server = TestServer::start(backend).await;
    let built = build_run(&server, "fork", 300, AT).await;
    let s = &built.scenario;
    let snapshot = built.snapshot;
    let source_before = run_digest(&server, &s.run).await;

    let fork = server.gql(FORK, json!({ "r": s.run, "s": AT })).await["forkRun"].clone();
    assert_eq!(fork["status"], "PENDING");
    assert_eq!(fork["lastSequence"], AT);
    assert_eq!(fork["forkedAtSequence"], AT);
    assert_eq!(fork["parentRun"]["id"], s.run.as_str());
    let fork_id = fork["id"].as_str().unwrap().to_owned();
    assert_eq!(
        run_digest(&server, &s.run).await,
        source_before,
        "the source is untouched"
    );

    let forked = run_digest(&server, &fork_id).await;
    // Engines: one copy of each, at its state as of the fork, version 1.
    let copies = server
        .gql(
            "query($r: UUID!) { scenarioRun(id: $r) { engines { engineId engineType state version
                forkedFrom { engineId } } } }",
            json!({ "r": fork_id }),
        )
        .await["scenarioRun"]["engines"]
        .clone();
    let mut copy_of = BTreeMap::new();
    for copy in copies.as_array().unwrap() {
        let source = copy["forkedFrom"]["engineId"].as_str().unwrap().to_owned();
        assert_ne!(copy["engineId"].as_str().unwrap(), source);
        assert_eq!(copy["version"], 1);
        assert_eq!(
            copy["state"],
            state_at(&server, &source, AT).await["state"],
            "engine {source}"
        );
        copy_of.insert(source, copy["engineId"].as_str().unwrap().to_owned());
    }
    assert_eq!(copy_of.len(), 3);
    let mapped = |id: &Value| -> Value {
        id.as_str()
            .and_then(|id| copy_of.get(id))
            .map_or(id.clone(), |c| json!(c))
    };

    // Events: the source's first 150, field by field, with engines and
    // parents mapped to their copies; records: those made by then.
    let source_events = source_before["events"]["nodes"].as_array().unwrap();
    let fork_events = forked["events"]["nodes"].as_array().unwrap();
    assert_eq!(fork_events.len(), AT as usize);
    let mut records_copied = 0;
    for (source, copy) in source_events.iter().zip(fork_events) {
        assert_ne!(source["id"], copy["id"]);
        for field in [
            "sequence",
            "eventType",
            "priority",
            "payload",
            "targetEngineType",
            "idempotencyKey",
            "partitionKey",
            "parent",
        ] {
            assert_eq!(
                source[field], copy[field],
                "{field} of {}",
                source["sequence"]
            );
        }
        assert_eq!(mapped(&source["sourceEngineId"]), copy["sourceEngineId"]);
        assert_eq!(mapped(&source["targetEngineId"]), copy["targetEngineId"]);
        let expected: Vec<Value> = source["processedBy"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["runSequence"].as_i64().unwrap() <= AT)
            .map(|p| {
                let mut p = p.clone();
                p["engineId"] = mapped(&p["engineId"]);
                p
            })
            .collect();
        let mut got = copy["processedBy"].as_array().unwrap().clone();
        let key = |p: &Value| p["engineId"].as_str().unwrap().to_owned();
        let mut expected = expected;
        expected.sort_by_key(key);
        got.sort_by_key(key);
        records_copied += got.len();
        assert_eq!(got, expected, "records of {}", source["sequence"]);
    }
    assert!(
        records_copied > 20,
        "the test records along the way: {records_copied}"
    );
    assert!(
        source_events[..AT as usize]
            .iter()
            .any(|e| e["eventType"] == "error_occurred"),
        "a final failure before the fork point"
    );

    // Relationships and backlogs as they were at 150.
    assert_eq!(forked["relationships"], snapshot.relationships);
    for (source, was_pending) in &snapshot.pending {
        assert!(!was_pending.is_empty());
        assert_eq!(
            &pending(&server, &fork_id, &copy_of[source]).await,
            was_pending,
            "backlog of {source}"
        );
    }

    // The fork goes on from 151.
    assert_eq!(tick(&server, &fork_id).await["sequence"], AT + 1);

    // A fork of the fork: the same first 100 events again.
    let grandchild = server.gql(FORK, json!({ "r": fork_id, "s": 100 })).await["forkRun"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let again = run_digest(&server, &grandchild).await;
    let nodes = again["events"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 100);
    for (source, copy) in source_events.iter().zip(nodes) {
        assert_eq!(source["payload"], copy["payload"]);
        assert_eq!(source["parent"], copy["parent"]);
    }
    // Its engines' states are the original engines' as of 100: before the
    // fork point, a fork's past is its parent's.
    let grandchildren = server
        .gql(
            "query($r: UUID!) { scenarioRun(id: $r) { engines { state
                forkedFrom { stateAt(sequence: 100) { state } forkedFrom { engineId } } } } }",
            json!({ "r": grandchild }),
        )
        .await["scenarioRun"]["engines"]
        .clone();
    assert_eq!(grandchildren.as_array().unwrap().len(), 3);
    for engine in grandchildren.as_array().unwrap() {
        let original = engine["forkedFrom"]["forkedFrom"]["engineId"]
            .as_str()
            .unwrap();
        let expected = state_at(&server, original, 100).await["state"].clone();
        assert_eq!(engine["state"], expected);
        assert_eq!(engine["forkedFrom"]["stateAt"]["state"], expected);
    }
    let forks = server
        .gql(
            "query($r: UUID!) { scenarioRun(id: $r) { forks { id forkedAtSequence } } }",
            json!({ "r": fork_id }),
        )
        .await["scenarioRun"]["forks"]
        .clone();
    assert_eq!(
        forks,
        json!([{ "id": grandchild, "forkedAtSequence": 100 }])
    );

    // At 0 (nothing yet) and at the last sequence (everything).
    let last = last_sequence(&server, &s.run).await;
    let empty = server.gql(FORK, json!({ "r": s.run, "s": 0 })).await["forkRun"].clone();
    assert_eq!(empty["lastSequence"], 0);
    let empty_run = run_digest(&server, empty["id"].as_str().unwrap()).await;
    assert_eq!(empty_run["events"]["nodes"], json!([]));
    let whole = server.gql(FORK, json!({ "r": s.run, "s": last })).await["forkRun"].clone();
    let whole_run = run_digest(&server, whole["id"].as_str().unwrap()).await;
    assert_eq!(
        whole_run["events"]["nodes"].as_array().unwrap().len() as i64,
        last
    );

    // Past the end, or by anyone but an admin: refused, nothing changed.
    let before = server.digest().await;
    let err = server
        .gql_err(FORK, json!({ "r": s.run, "s": last + 1 }))
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("BAD_USER_INPUT", Some("input.atSequence"))
    );
    let err = server
        .gql_err(FORK, json!({ "r": uuid::Uuid::new_v4(), "s": 1 }))
        .await;
    assert_eq!(err.code, "NOT_FOUND");
    assert_eq!(server.digest().await, before);
    let engine_key = server.create_key("engine", "fork-engine").await;
    let before = server.digest().await;
    let (_, body) = server
        .gql_as(Some(&engine_key), FORK, json!({ "r": s.run, "s": 10 }))
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    assert_eq!(server.digest().await, before);
    server.stop().await;
}

/// A state over PostgreSQL's TOAST threshold is stored compressed, with lz4
/// where this PostgreSQL has it (pglz cost a fifth of its CPU per save),
/// in the engine's row and in its history; it reads back as saved.
async fn large_states_are_compressed_with_lz4(backend: Backend) {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    let server = TestServer::start(backend).await;
    let s = scenario(&server, "lz4").await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let memory: Vec<Value> = (0..40)
        .map(|i| json!({"key": format!("memory-{i:02}"), "value": format!("observation {i}: the square is busy")}))
        .collect();
    let state = json!({"mood": "wary", "memory": memory});
    assert!(state.to_string().len() > 2048);
    let version = save(&server, &engine, state.clone()).await;
    let stored = server
        .gql(
            "query($e: UUID!) { engine(engineId: $e) { state history(first: 1) { nodes { state } } } }",
            json!({ "e": engine }),
        )
        .await;
    assert_eq!(stored["engine"]["state"], state);
    assert_eq!(stored["engine"]["history"]["nodes"][0]["state"], state);
    if backend != Backend::Postgres {
        return;
    }
    let conn = &server.ctx().db.conn;
    let methods = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT enumvals::text AS m FROM pg_settings WHERE name = 'default_toast_compression'",
        ))
        .await
        .unwrap()
        .unwrap();
    let has_lz4 = methods.try_get::<String>("", "m").unwrap().contains("lz4");
    let expected = if has_lz4 { "lz4" } else { "pglz" };
    for sql in [
        format!(
            "SELECT pg_column_compression(state) AS c FROM engine_states WHERE engine_id = '{engine}'"
        ),
        format!(
            "SELECT pg_column_compression(state) AS c FROM engine_state_versions \
             WHERE engine_id = '{engine}' AND version = {version}"
        ),
    ] {
        let row = conn
            .query_one_raw(Statement::from_string(DbBackend::Postgres, sql.clone()))
            .await
            .unwrap()
            .unwrap();
        let method: Option<String> = row.try_get("", "c").unwrap();
        assert_eq!(method.as_deref(), Some(expected), "{sql}");
    }
    server.stop().await;
}
