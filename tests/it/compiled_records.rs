//! Aliased `recordProcessing` fields of one request: the compiled path
//! records them in one transaction (set-based when all are successes), the
//! general path field by field. Random batches (successes and failures,
//! current, stale and no leases, engines of a group, unknown events,
//! engines of another run, an event twice) are sent to three twin runs:
//! one proves the document on the general path, one is answered by the
//! compiled path, one is kept on the general path by a directive. The
//! answers, the records and the leases they leave must be the same.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::both_backends;
use crate::common::ws::WsClient;
use crate::common::{
    Backend, TestServer, compiled_count, create_run, event_type, publish_batch, register,
    register_in_group, scenario,
};
use crate::compiled::run_cases;

both_backends!(compiled_record_batches_match_the_general_path);

/// Events of each twin run.
const EVENTS: usize = 5;

/// An event id no run has.
const UNKNOWN_EVENT: &str = "00000000-0000-4000-8000-00000000e0e0";

/// A lease id no delivery has.
const STALE_LEASE: &str = "00000000-0000-4000-8000-00000000a0a0";

const PROCESSING_FIELDS: [&str; 7] = [
    "eventId",
    "engineId",
    "status",
    "error",
    "attempts",
    "processedAt",
    "runSequence",
];

/// One record of a batch, by index into a twin run.
#[derive(Debug, Clone)]
struct Item {
    /// An event of the run, or `EVENTS` for an unknown one.
    event: usize,
    /// The ungrouped engine, a group's first or second member, or an
    /// engine of another run.
    engine: usize,
    failed: bool,
    /// None, the event's current lease (the ungrouped engine's), a stale
    /// one, or the current lease of the next or the previous event (a lease
    /// named with the wrong event; two such records can swap their leases).
    lease: usize,
    error: Option<&'static str>,
    fields: Vec<String>,
}

/// A twin run: its engines, its events, the ungrouped engine's leases
/// (held by an open subscription), and the names its ids are compared by.
struct Twin {
    run: String,
    engines: [String; 3],
    events: Vec<String>,
    leases: Vec<String>,
    names: Vec<(String, String)>,
    _ws: WsClient,
}

async fn twin(server: &TestServer, template: &str) -> Twin {
    let run = create_run(server, template, "RUNNING").await;
    let engines = [
        register(server, &run, "ActorEngine").await,
        register_in_group(server, &run, "NarratorEngine", "g").await,
        register_in_group(server, &run, "NarratorEngine", "g").await,
    ];
    let inputs: Vec<Value> = (0..EVENTS)
        .map(|i| {
            let mut input = json!({"runId": run, "eventType": "rec", "priority": i});
            if i % 3 == 0 {
                input["targetEngineId"] = json!(engines[0]);
            }
            input
        })
        .collect();
    let events: Vec<String> = publish_batch(server, &inputs)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    // Every event reaches the ungrouped engine: its window takes them all.
    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe(
        "l",
        "subscription($r: UUID!, $e: UUID!) { events(runId: $r, engineId: $e, maxInFlight: 50) { id delivery { leaseId } } }",
        json!({"r": run, "e": engines[0]}),
    )
    .await;
    let mut leases = vec![String::new(); EVENTS];
    while leases.iter().any(String::is_empty) {
        let event = ws.next_event("l").await;
        if let Some(i) = events.iter().position(|id| *id == event["id"]) {
            leases[i] = event["delivery"]["leaseId"].as_str().unwrap().to_owned();
        }
    }
    let mut names = vec![(run.clone(), "run".to_owned())];
    for (i, engine) in engines.iter().enumerate() {
        names.push((engine.clone(), format!("engine{i}")));
    }
    for (i, (event, lease)) in events.iter().zip(&leases).enumerate() {
        names.push((event.clone(), format!("event{i}")));
        names.push((lease.clone(), format!("lease{i}")));
    }
    Twin {
        run,
        engines,
        events,
        leases,
        names,
        _ws: ws,
    }
}

/// The document of `items`; `general` puts a directive that changes
/// nothing on each field (spaces in its place otherwise, so that error
/// locations match).
fn document(items: &[Item], general: bool) -> String {
    let definitions: Vec<String> = (0..items.len())
        .map(|i| format!("$v{i}: RecordProcessingInput!"))
        .collect();
    let directive = if general {
        "@include(if: true)"
    } else {
        "                  "
    };
    let fields: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            format!(
                "r{i}: recordProcessing(input: $v{i}) {directive} {{ {} }}",
                item.fields.join(" ")
            )
        })
        .collect();
    format!(
        "mutation Op({}) {{ {} }}",
        definitions.join(", "),
        fields.join(" ")
    )
}

/// The variables of `items` in `twin`; `foreign` is an engine of another run.
fn variables(items: &[Item], twin: &Twin, foreign: &str) -> Value {
    let mut variables = Map::new();
    for (i, item) in items.iter().enumerate() {
        let mut input = json!({
            "eventId": twin.events.get(item.event).map_or(UNKNOWN_EVENT, String::as_str),
            "engineId": twin.engines.get(item.engine).map_or(foreign, String::as_str),
            "status": if item.failed { "FAILED" } else { "PROCESSED" },
        });
        match item.lease {
            1 => {
                input["leaseId"] = json!(
                    twin.leases
                        .get(item.event)
                        .map_or(STALE_LEASE, String::as_str)
                )
            }
            2 => input["leaseId"] = json!(STALE_LEASE),
            3 => input["leaseId"] = json!(twin.leases[(item.event + 1) % EVENTS]),
            4 => input["leaseId"] = json!(twin.leases[(item.event + EVENTS - 1) % EVENTS]),
            _ => {}
        }
        if let Some(error) = item.error {
            input["error"] = json!(error);
        }
        variables.insert(format!("v{i}"), input);
    }
    Value::Object(variables)
}

/// `value` with the twin's ids named, other ids as `?`, times as `T`, and
/// error locations left out (the documents differ in their directives).
fn named(value: &Value, twin: &Twin) -> Value {
    match value {
        Value::String(text) => {
            if let Some((_, name)) = twin.names.iter().find(|(id, _)| id == text) {
                return json!(name);
            }
            if uuid::Uuid::parse_str(text).is_ok() {
                return json!("?");
            }
            if chrono::DateTime::parse_from_rfc3339(text).is_ok() {
                return json!("T");
            }
            let mut text = text.clone();
            for (id, name) in &twin.names {
                text = text.replace(id.as_str(), name);
            }
            json!(text)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| named(v, twin)).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(k, _)| k.as_str() != "locations")
                .map(|(k, v)| (k.clone(), named(v, twin)))
                .collect(),
        ),
        _ => value.clone(),
    }
}

/// What the records left in `twin`: each event's records, the engines'
/// pending counts, and which of the events the ungrouped engine still
/// holds (events published since, by final failures, are left out: when
/// they reach its window is a matter of time).
async fn aftermath(server: &TestServer, twin: &Twin) -> Value {
    let data = server
        .gql(
            "query($r: UUID!) { scenarioRun(id: $r) {
                events(first: 100) { nodes { id eventType processedBy { engineId status attempts error } } }
                engines { engineId pendingCount inFlight { eventId attempt } }
            } }",
            json!({"r": twin.run}),
        )
        .await;
    let mut run = data["scenarioRun"].clone();
    // A batch's records share their time, and the twins' engine ids (the
    // order after time) differ.
    for event in run["events"]["nodes"].as_array_mut().unwrap() {
        let records = event["processedBy"].as_array_mut().unwrap();
        records.sort_by_key(|r| named(&r["engineId"], twin).to_string());
    }
    for engine in run["engines"].as_array_mut().unwrap() {
        if engine["engineId"] == twin.engines[0] {
            engine["inFlight"]
                .as_array_mut()
                .unwrap()
                .retain(|lease| twin.events.iter().any(|id| *id == lease["eventId"]));
        }
    }
    named(&run, twin)
}

fn items() -> impl Strategy<Value = Vec<Item>> {
    let item = (
        // Mostly records that succeed, so that a third of the batches do.
        prop_oneof![9 => 0..EVENTS, 1 => Just(EVENTS)],
        prop_oneof![12 => Just(0usize), 1 => Just(1), 1 => Just(2), 1 => Just(3)],
        prop_oneof![4 => Just(false), 1 => Just(true)],
        prop_oneof![6 => Just(0usize), 24 => Just(1), 2 => Just(2), 1 => Just(3), 1 => Just(4)],
        proptest::option::of(prop_oneof![Just("timeout"), Just("caf\u{e9} \"x\"")]),
        proptest::sample::subsequence(PROCESSING_FIELDS.to_vec(), 1..=PROCESSING_FIELDS.len()),
    )
        .prop_map(|(event, engine, failed, lease, error, fields)| Item {
            event,
            engine,
            failed,
            lease,
            error,
            fields: fields.into_iter().map(str::to_owned).collect(),
        });
    prop::collection::vec(item, 1..=EVENTS)
}

async fn one_case(server: &TestServer, template: &str, foreign: &str, items: &[Item]) -> bool {
    let prover = twin(server, template).await;
    let compiled = twin(server, template).await;
    let general = twin(server, template).await;
    let plain = document(items, false);
    // The prover's batch succeeds (each field another event, recorded by
    // its lease), so the document is proven whatever the batch under test.
    let clean: Vec<Item> = items
        .iter()
        .enumerate()
        .map(|(i, item)| Item {
            event: i,
            engine: 0,
            failed: false,
            lease: 1,
            error: None,
            fields: item.fields.clone(),
        })
        .collect();
    let proof = server
        .gql_raw(&plain, variables(&clean, &prover, foreign))
        .await;
    assert!(proof.get("errors").is_none(), "{proof}");
    let before = compiled_count(server).await;
    let answer = server
        .gql_raw(&plain, variables(items, &compiled, foreign))
        .await;
    let took_compiled = compiled_count(server).await > before;
    let reference = server
        .gql_raw(&document(items, true), variables(items, &general, foreign))
        .await;
    assert_eq!(
        named(&answer, &compiled),
        named(&reference, &general),
        "{plain}: answers differ"
    );
    // A batch with an error changes nothing and goes field by field.
    assert_eq!(
        took_compiled,
        reference.get("errors").is_none(),
        "{plain}: {answer}"
    );
    assert_eq!(
        aftermath(server, &compiled).await,
        aftermath(server, &general).await,
        "{plain}: the records left differ"
    );
    took_compiled
}

async fn compiled_record_batches_match_the_general_path(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "records").await;
    // One attempt: a failure is final, so nothing comes back by a timer.
    event_type(&server, "rec", json!(null), 0, 1).await;
    let foreign = register(&server, &s.run, "ActorEngine").await;
    let server = std::sync::Arc::new(server);
    let template = s.template.clone();
    let (cases_server, cases_foreign) = (server.clone(), foreign.clone());
    let compiled = run_cases(40, 40, items(), move |items| {
        let server = cases_server.clone();
        let template = template.clone();
        let foreign = cases_foreign.clone();
        async move { one_case(&server, &template, &foreign, &items).await }
    })
    .await;
    assert!(
        compiled >= 5,
        "only {compiled} of 40 batches took the compiled path"
    );
    // Two records that swap their events' leases: every event and lease
    // is in the batch, only the pairs are wrong.
    let swapped: Vec<Item> = [(0, 3), (1, 4)]
        .into_iter()
        .map(|(event, lease)| Item {
            event,
            engine: 0,
            failed: false,
            lease,
            error: None,
            fields: vec!["eventId".to_owned()],
        })
        .collect();
    assert!(!one_case(&server, &s.template, &foreign, &swapped).await);
}
