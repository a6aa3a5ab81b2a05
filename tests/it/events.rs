//! Publishing and reading events: priorities, idempotency, schemas, atomic
//! batches, filters, orders and cursors.

use serde_json::{Value, json};

use crate::both_backends;
use crate::common::{Backend, TestServer, event_type, last_sequence, publish, register, scenario};

both_backends!(
    published_events_read_back_as_returned,
    publishing_applies_defaults_keys_and_schemas,
    a_failed_batch_stores_nothing,
    events_filter_order_and_page,
    pending_for_follows_routing_and_records,
    oversized_payloads_and_states_are_refused,
);

async fn publishing_applies_defaults_keys_and_schemas(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "pub").await;
    event_type(
        &server,
        "actor.spoke",
        json!({"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}),
        7,
        1,
    )
    .await;
    let start = last_sequence(&server, &s.run).await;

    let first = publish(
        &server,
        json!({"runId": s.run, "eventType": "actor.spoke", "payload": {"text": "hi"}}),
    )
    .await;
    assert_eq!(first["priority"], 7, "the type's default priority");
    assert_eq!(first["sequence"], start + 1);
    let urgent = publish(&server, json!({"runId": s.run, "eventType": "actor.spoke", "priority": 99, "payload": {"text": "!"}})).await;
    assert_eq!(urgent["priority"], 99);

    // The same idempotency key returns the first event, never a second one.
    let keyed = json!({"runId": s.run, "eventType": "actor.spoke", "payload": {"text": "once"}, "idempotencyKey": "k-1"});
    let a = publish(&server, keyed.clone()).await;
    let b = publish(&server, keyed.clone()).await;
    assert_eq!(a, b);
    let batch = server
        .gql(
            "mutation($inputs: [EventInput!]!) { publishEvents(inputs: $inputs) { id sequence } }",
            json!({ "inputs": [keyed, {"runId": s.run, "eventType": "actor.spoke", "payload": {"text": "two"}, "idempotencyKey": "k-2"},
                                {"runId": s.run, "eventType": "actor.spoke", "payload": {"text": "two"}, "idempotencyKey": "k-2"}] }),
        )
        .await["publishEvents"]
        .clone();
    assert_eq!(batch[0]["id"], a["id"]);
    assert_eq!(batch[1], batch[2]);
    assert_eq!(batch[1]["sequence"], a["sequence"].as_i64().unwrap() + 1);
    assert_eq!(last_sequence(&server, &s.run).await, start + 4);

    // A payload that breaks the schema is refused and stores nothing.
    let err = server
        .gql_err(
            "mutation($input: EventInput!) { publishEvent(input: $input) { id } }",
            json!({ "input": {"runId": s.run, "eventType": "actor.spoke", "payload": {"text": 5}} }),
        )
        .await;
    assert_eq!(err.code, "PAYLOAD_SCHEMA_VIOLATION");
    assert_eq!(err.field.as_deref(), Some("input.payload"));
    assert!(
        err.raw["extensions"]["violations"][0]
            .as_str()
            .unwrap()
            .contains("/text")
    );
    // So is an unknown event type, or a run that does not exist.
    let err = server
        .gql_err(
            "mutation($input: EventInput!) { publishEvent(input: $input) { id } }",
            json!({ "input": {"runId": s.run, "eventType": "nope"} }),
        )
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("BAD_USER_INPUT", Some("input.eventType"))
    );
    let err = server
        .gql_err(
            "mutation($input: EventInput!) { publishEvent(input: $input) { id } }",
            json!({ "input": {"runId": uuid::Uuid::new_v4(), "eventType": "actor.spoke", "payload": {"text": "x"}} }),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND");
    // A parent from another run is refused.
    let err = server
        .gql_err(
            "mutation($input: EventInput!) { publishEvent(input: $input) { id } }",
            json!({ "input": {"runId": s.run, "eventType": "actor.spoke", "payload": {"text": "x"}, "parentEventId": uuid::Uuid::new_v4()} }),
        )
        .await;
    assert_eq!(err.field.as_deref(), Some("input.parentEventId"));
    assert_eq!(last_sequence(&server, &s.run).await, start + 4);

    // A parent of the same run links both ways.
    let child = publish(&server, json!({"runId": s.run, "eventType": "actor.spoke", "payload": {"text": "re"}, "parentEventId": first["id"]})).await;
    let read = server
        .gql(
            "query($id: UUID!) { event(id: $id) { parent { id } run { id } } }",
            json!({ "id": child["id"] }),
        )
        .await;
    assert_eq!(read["event"]["parent"]["id"], first["id"]);
    assert_eq!(read["event"]["run"]["id"], json!(s.run));
}

async fn a_failed_batch_stores_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "batch").await;
    event_type(
        &server,
        "tick",
        json!({"type": "object", "required": ["n"]}),
        0,
        1,
    )
    .await;
    let start = last_sequence(&server, &s.run).await;
    let mut inputs: Vec<Value> = (0..10)
        .map(|n| json!({"runId": s.run, "eventType": "tick", "payload": {"n": n}}))
        .collect();
    inputs[7] = json!({"runId": s.run, "eventType": "tick", "payload": {}});
    let err = server
        .gql_err(
            "mutation($inputs: [EventInput!]!) { publishEvents(inputs: $inputs) { id } }",
            json!({ "inputs": inputs }),
        )
        .await;
    assert_eq!(err.code, "PAYLOAD_SCHEMA_VIOLATION");
    assert_eq!(err.field.as_deref(), Some("inputs.7.payload"));
    assert_eq!(last_sequence(&server, &s.run).await, start);

    // Over the batch limit.
    let many: Vec<Value> = (0..1001)
        .map(|n| json!({"runId": s.run, "eventType": "tick", "payload": {"n": n}}))
        .collect();
    let err = server
        .gql_err(
            "mutation($inputs: [EventInput!]!) { publishEvents(inputs: $inputs) { id } }",
            json!({ "inputs": many }),
        )
        .await;
    assert_eq!(err.code, "LIMIT_EXCEEDED");
    assert_eq!(last_sequence(&server, &s.run).await, start);

    // A good batch is stored whole, in input order.
    inputs[7] = json!({"runId": s.run, "eventType": "tick", "payload": {"n": 7}});
    let stored = server
        .gql(
            "mutation($inputs: [EventInput!]!) { publishEvents(inputs: $inputs) { sequence payload } }",
            json!({ "inputs": inputs }),
        )
        .await["publishEvents"]
        .clone();
    for (i, event) in stored.as_array().unwrap().iter().enumerate() {
        assert_eq!(event["sequence"], start + 1 + i as i64);
        assert_eq!(event["payload"]["n"], i);
    }
}

/// Reads every page of `events` with the given arguments.
async fn all_pages(
    server: &TestServer,
    run: &str,
    filter: Value,
    order: &str,
    first: i64,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = server
            .gql(
                "query($r: UUID!, $f: EventFilter, $o: EventOrder!, $first: Int, $after: String) {
                    events(runId: $r, filter: $f, orderBy: $o, first: $first, after: $after) {
                        nodes { sequence priority eventType }
                        pageInfo { hasNextPage endCursor } } }",
                json!({ "r": run, "f": filter, "o": order, "first": first, "after": after }),
            )
            .await["events"]
            .clone();
        out.extend(page["nodes"].as_array().unwrap().iter().cloned());
        if !page["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            return out;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
}

async fn events_filter_order_and_page(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "read").await;
    event_type(&server, "a", json!(null), 0, 1).await;
    event_type(&server, "b", json!(null), 0, 1).await;
    let source = uuid::Uuid::new_v4();
    let base = last_sequence(&server, &s.run).await;
    let priorities = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5];
    let inputs: Vec<Value> = priorities
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut e = json!({"runId": s.run, "eventType": if i % 2 == 0 { "a" } else { "b" }, "priority": p});
            if i % 3 == 0 {
                e["sourceEngineId"] = json!(source);
            }
            e
        })
        .collect();
    crate::common::publish_batch(&server, &inputs).await;

    let only_a = json!({"eventTypes": ["a", "b"], "afterSequence": base});
    let by_seq = all_pages(&server, &s.run, only_a.clone(), "SEQUENCE", 3).await;
    let seqs: Vec<i64> = by_seq
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, ((base + 1)..=(base + 11)).collect::<Vec<_>>());

    let by_priority = all_pages(&server, &s.run, only_a, "PRIORITY", 4).await;
    let got: Vec<(i64, i64)> = by_priority
        .iter()
        .map(|e| {
            (
                e["priority"].as_i64().unwrap(),
                e["sequence"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut expected: Vec<(i64, i64)> = priorities
        .iter()
        .enumerate()
        .map(|(i, p)| (*p as i64, base + 1 + i as i64))
        .collect();
    expected.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    assert_eq!(got, expected);

    let filtered = all_pages(
        &server,
        &s.run,
        json!({"eventTypes": ["a"], "minPriority": 4}),
        "SEQUENCE",
        100,
    )
    .await;
    let got: Vec<i64> = filtered
        .iter()
        .map(|e| e["priority"].as_i64().unwrap())
        .collect();
    assert_eq!(got, [4, 5, 5, 5]);
    let from_source = all_pages(
        &server,
        &s.run,
        json!({"sourceEngineId": source}),
        "SEQUENCE",
        100,
    )
    .await;
    assert_eq!(from_source.len(), 4);

    // A cursor of one order is refused by the other.
    let page = server
        .gql(
            "query($r: UUID!) { events(runId: $r, orderBy: PRIORITY, first: 1) { pageInfo { endCursor } } }",
            json!({ "r": s.run }),
        )
        .await;
    let err = server
        .gql_err(
            "query($r: UUID!, $after: String) { events(runId: $r, after: $after) { nodes { id } } }",
            json!({ "r": s.run, "after": page["events"]["pageInfo"]["endCursor"] }),
        )
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("BAD_USER_INPUT", Some("after"))
    );
    let err = server
        .gql_err(
            "query($r: UUID!) { events(runId: $r, first: -1) { nodes { id } } }",
            json!({ "r": s.run }),
        )
        .await;
    assert_eq!(err.code, "BAD_USER_INPUT");
    let err = server
        .gql_err(
            "query($r: UUID!) { events(runId: $r) { nodes { id } } }",
            json!({ "r": uuid::Uuid::new_v4() }),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND");

    // The run's own events field gives the same.
    let nested = server
        .gql(
            "query($r: UUID!) { scenarioRun(id: $r) { events(orderBy: PRIORITY, first: 3) { nodes { priority } } } }",
            json!({ "r": s.run }),
        )
        .await;
    assert_eq!(
        nested["scenarioRun"]["events"]["nodes"],
        json!([{"priority": 1000}, {"priority": 9}, {"priority": 6}])
    );
}

async fn pending_for_follows_routing_and_records(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "route").await;
    event_type(&server, "note", json!(null), 0, 1).await;
    let actor = register(&server, &s.run, "ActorEngine").await;
    let narrator = register(&server, &s.run, "NarratorEngine").await;
    let everyone = publish(&server, json!({"runId": s.run, "eventType": "note"})).await;
    let to_actors = publish(
        &server,
        json!({"runId": s.run, "eventType": "note", "targetEngineType": "ActorEngine"}),
    )
    .await;
    let to_narrator = publish(
        &server,
        json!({"runId": s.run, "eventType": "note", "targetEngineId": narrator}),
    )
    .await;

    let pending = |engine: String| {
        let server = &server;
        let run = s.run.clone();
        async move {
            server
                .gql(
                    "query($r: UUID!, $e: UUID!) { events(runId: $r, filter: {pendingFor: $e, eventTypes: [\"note\"]}) { nodes { id } } }",
                    json!({ "r": run, "e": engine }),
                )
                .await["events"]["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["id"].clone())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        pending(actor.clone()).await,
        [everyone["id"].clone(), to_actors["id"].clone()]
    );
    assert_eq!(
        pending(narrator.clone()).await,
        [everyone["id"].clone(), to_narrator["id"].clone()]
    );

    server
        .gql(
            "mutation($e: UUID!, $ev: UUID!) { recordProcessing(input: {eventId: $ev, engineId: $e, status: PROCESSED}) { attempts } }",
            json!({ "e": actor, "ev": everyone["id"] }),
        )
        .await;
    assert_eq!(pending(actor.clone()).await, [to_actors["id"].clone()]);
    assert_eq!(
        pending(narrator.clone()).await.len(),
        2,
        "one engine's record is its own"
    );

    // An engine of another run, or none at all, is refused.
    let other_run = crate::common::create_run(&server, &s.template, "RUNNING").await;
    let stranger = register(&server, &other_run, "ActorEngine").await;
    let err = server
        .gql_err(
            "query($r: UUID!, $e: UUID!) { events(runId: $r, filter: {pendingFor: $e}) { nodes { id } } }",
            json!({ "r": s.run, "e": stranger }),
        )
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("BAD_USER_INPUT", Some("filter.pendingFor"))
    );
    let err = server
        .gql_err(
            "query($r: UUID!, $e: UUID!) { events(runId: $r, filter: {pendingFor: $e}) { nodes { id } } }",
            json!({ "r": s.run, "e": uuid::Uuid::new_v4() }),
        )
        .await;
    assert_eq!(err.code, "NOT_FOUND");
}

async fn oversized_payloads_and_states_are_refused(backend: Backend) {
    let server = TestServer::start_with(backend, |config| {
        config.limits.max_payload_bytes = 1024;
        config.limits.max_state_bytes = 2048;
    })
    .await;
    let s = scenario(&server, "big").await;
    event_type(&server, "blob", json!(null), 0, 1).await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let before = last_sequence(&server, &s.run).await;
    let big = "x".repeat(1100);

    let err = server
        .gql_err(
            "mutation($input: EventInput!) { publishEvent(input: $input) { id } }",
            json!({ "input": {"runId": s.run, "eventType": "blob", "payload": {"text": big}} }),
        )
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("LIMIT_EXCEEDED", Some("input.payload"))
    );
    assert_eq!(last_sequence(&server, &s.run).await, before);

    let huge_state = json!({"text": "y".repeat(3000)});
    let err = server
        .gql_err(
            "mutation($e: UUID!, $s: JSON!) { saveEngineState(engineId: $e, state: $s) { version } }",
            json!({ "e": engine, "s": huge_state }),
        )
        .await;
    assert_eq!(
        (err.code.as_str(), err.field.as_deref()),
        ("LIMIT_EXCEEDED", Some("state"))
    );
    let stored = server
        .gql(
            "query($e: UUID!) { engine(engineId: $e) { state version } }",
            json!({ "e": engine }),
        )
        .await;
    assert_eq!(stored["engine"], json!({"state": {}, "version": 1}));
}

const FIELDS: &str = "id runId sequence eventType priority payload sourceEngineId
    parentEventId targetEngineId targetEngineType idempotencyKey createdAt deliverAt partitionKey";

/// What a publish returns is what is stored, every field, for one event and
/// for a batch (on PostgreSQL both take the one-statement path when no
/// idempotency key is given), with sequences gapless after the run's own.
async fn published_events_read_back_as_returned(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "fields").await;
    event_type(&server, "job", json!(null), 3, 1).await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    let start = crate::common::last_sequence(&server, &s.run).await;
    let one = server
        .gql(
            &format!("mutation($i: EventInput!) {{ publishEvent(input: $i) {{ {FIELDS} }} }}"),
            json!({"i": {"runId": s.run, "eventType": "job", "payload": {"n": 0}}}),
        )
        .await["publishEvent"]
        .clone();
    let inputs: Vec<Value> = (1..4)
        .map(|n| {
            json!({
                "runId": s.run, "eventType": "job", "priority": n, "payload": {"n": n, "text": "é\u{1F600}"},
                "sourceEngineId": engine, "parentEventId": one["id"], "targetEngineId": engine,
                "targetEngineType": "ActorEngine", "deliverAt": "2030-01-02T03:04:05.123456Z",
                "partitionKey": format!("k{n}")
            })
        })
        .collect();
    let batch = server
        .gql(
            &format!("mutation($i: [EventInput!]!) {{ publishEvents(inputs: $i) {{ {FIELDS} }} }}"),
            json!({ "i": inputs }),
        )
        .await["publishEvents"]
        .clone();
    let mut returned = vec![one];
    returned.extend(batch.as_array().unwrap().iter().cloned());
    let sequences: Vec<i64> = returned
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, (start + 1..=start + 4).collect::<Vec<_>>());
    assert_eq!(returned[0]["priority"], 3, "the type's default");
    assert_eq!(returned[2]["partitionKey"], "k2");
    let stored = server
        .gql(
            &format!("query($r: UUID!, $a: Int) {{ events(runId: $r, filter: {{afterSequence: $a}}) {{ nodes {{ {FIELDS} }} }} }}"),
            json!({"r": s.run, "a": start}),
        )
        .await["events"]["nodes"]
        .clone();
    assert_eq!(stored, Value::Array(returned));
}
