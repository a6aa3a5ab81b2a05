//! The compiled path of hot documents against the general executor, byte
//! for byte. Random documents of the compiled shapes (`events`,
//! `publishEvent`, `saveEngineState`: random fields in random order, aliases,
//! literal or variable arguments, good and bad argument values) are sent
//! twice, so that the second goes through the compiled path once the first
//! has proven the document; a read is compared with the same document
//! carrying `@include(if: true)` on its root field, which keeps it on the
//! general path; a mutation's answer with the general path's read of what
//! it wrote. Answers are compared as JSON values (see `parse`). `scenario_hub_compiled_requests_total` shows that the compiled
//! path answered every case the general path answers without errors.
//! Reader subscriptions likewise: a random `events` subscription on the
//! general path (twice, once kept there by a directive) and on the compiled
//! path sends the same messages for a run's backlog, its live events and
//! its close.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::both_backends;
use crate::common::ws::WsClient;
use crate::common::{
    Backend, TestServer, compiled_count, create_run, event_type, publish, register, scenario,
    subscribe_compiled,
};

both_backends!(
    compiled_answers_match_the_general_path,
    compiled_subscriptions_match_the_general_path,
);

/// The fields of `event_instance::Head`.
const HEAD_FIELDS: [&str; 5] = ["id", "sequence", "eventType", "priority", "payload"];

const EVENT_FIELDS: [&str; 14] = [
    "id",
    "runId",
    "sequence",
    "eventType",
    "priority",
    "payload",
    "sourceEngineId",
    "parentEventId",
    "targetEngineId",
    "targetEngineType",
    "idempotencyKey",
    "createdAt",
    "deliverAt",
    "partitionKey",
];

const TYPE_FIELDS: [&str; 9] = [
    "name",
    "category",
    "engineType",
    "description",
    "payloadSchema",
    "defaultPriority",
    "maxAttempts",
    "leaseSeconds",
    "retryDelaySeconds",
];

const ENGINE_FIELDS: [&str; 8] = [
    "engineId",
    "runId",
    "engineType",
    "state",
    "version",
    "registeredAt",
    "updatedAt",
    "lastSeenAt",
];

/// Some of `names` (at least one), shuffled, some under an alias.
fn pick(names: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    (
        prop::sample::subsequence(names, 1..=names.len()).prop_shuffle(),
        prop::collection::vec(any::<bool>(), names.len()),
    )
        .prop_map(|(names, aliased)| {
            names
                .into_iter()
                .zip(aliased)
                .map(|(name, alias)| {
                    if alias {
                        format!("a_{name}: {name}")
                    } else {
                        name.to_owned()
                    }
                })
                .collect()
        })
}

/// An `Event` selection: scalars, maybe `type { ... }`.
fn event_selection() -> impl Strategy<Value = String> {
    (
        // Half the time only fields of an event's head, which a page reads
        // as `event_instance::Head` rows.
        prop_oneof![pick(&EVENT_FIELDS), pick(&HEAD_FIELDS)],
        proptest::option::of(pick(&TYPE_FIELDS)),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut fields, type_fields, at)| {
            if let Some(type_fields) = type_fields {
                let at = at.index(fields.len() + 1);
                fields.insert(at, format!("type {{ {} }}", type_fields.join(" ")));
            }
            fields.join(" ")
        })
}

/// An `EventConnection` selection.
fn connection_selection() -> impl Strategy<Value = String> {
    let page_info = pick(&["hasPreviousPage", "hasNextPage", "startCursor", "endCursor"]);
    (
        proptest::option::of(event_selection()),
        proptest::option::of((any::<bool>(), event_selection())),
        proptest::option::of(page_info),
        any::<u8>(),
    )
        .prop_filter("selects something", |(n, e, p, _)| {
            n.is_some() || e.is_some() || p.is_some()
        })
        .prop_map(|(nodes, edges, page_info, order)| {
            let mut parts = Vec::new();
            if let Some(nodes) = nodes {
                parts.push(format!("nodes {{ {nodes} }}"));
            }
            if let Some((cursor_first, node)) = edges {
                parts.push(if cursor_first {
                    format!("edges {{ cursor node {{ {node} }} }}")
                } else {
                    format!("e: edges {{ node {{ {node} }} cursor }}")
                });
            }
            if let Some(info) = page_info {
                parts.push(format!("pageInfo {{ {} }}", info.join(" ")));
            }
            let len = parts.len();
            parts.rotate_left(order as usize % len);
            parts.join(" ")
        })
}

/// An argument: left out, written in the document, or a variable.
#[derive(Debug, Clone)]
enum Arg {
    Absent,
    Literal(String),
    Variable(&'static str, Value),
    /// A variable sent as this JSON text, as no serializer of a value would
    /// write it (spacing, escapes, exponents, a key twice).
    RawVariable(&'static str, &'static str),
}

/// A document of one root field: `name(args) @include? { selection }`.
#[derive(Debug, Clone)]
struct Doc {
    operation: &'static str,
    field: &'static str,
    alias: bool,
    args: Vec<(&'static str, Arg)>,
    selection: String,
}

impl Doc {
    /// The document's text and its variables' JSON text; `general` adds a
    /// directive that changes nothing but keeps it off the compiled path.
    fn render(&self, general: bool) -> (String, String) {
        let mut definitions = Vec::new();
        let mut args = Vec::new();
        let mut variables = Vec::new();
        for (i, (name, arg)) in self.args.iter().enumerate() {
            let text = match arg {
                Arg::Absent => continue,
                Arg::Literal(text) => {
                    args.push(format!("{name}: {text}"));
                    continue;
                }
                Arg::Variable(_, value) => value.to_string(),
                Arg::RawVariable(_, text) => text.to_string(),
            };
            let (Arg::Variable(ty, _) | Arg::RawVariable(ty, _)) = arg else {
                unreachable!("a variable")
            };
            definitions.push(format!("$v{i}: {ty}"));
            args.push(format!("{name}: $v{i}"));
            variables.push(format!("\"v{i}\" : {text}"));
        }
        let definitions = if definitions.is_empty() {
            String::new()
        } else {
            format!("({})", definitions.join(", "))
        };
        let args = if args.is_empty() {
            String::new()
        } else {
            format!("({})", args.join(", "))
        };
        let alias = if self.alias { "root: " } else { "" };
        let directive = if general { " @include(if: true)" } else { "" };
        let text = format!(
            "{} Op{definitions} {{ {alias}{}{args}{directive} {{ {} }} }}",
            self.operation, self.field, self.selection
        );
        (text, format!("{{ {} }}", variables.join(" ,\n ")))
    }
}

/// The setting of one test: a run with events of every kind of field.
struct Setting {
    run: String,
    engine: String,
    cursors: Vec<String>,
}

fn events_doc(setting: &Setting) -> impl Strategy<Value = Doc> + use<> {
    let run = setting.run.clone();
    let cursors = setting.cursors.clone();
    let run_id = prop_oneof![
        4 => Just(Arg::Variable("UUID!", json!(run))),
        1 => Just(Arg::Literal(format!("\"{run}\""))),
        1 => Just(Arg::Variable("UUID!", json!(uuid::Uuid::new_v4().to_string()))),
        1 => Just(Arg::Variable("UUID!", json!("not-a-uuid"))),
    ];
    let order = prop_oneof![
        Just(Arg::Absent),
        Just(Arg::Literal("PRIORITY".into())),
        Just(Arg::Literal("SEQUENCE".into())),
        Just(Arg::Variable("EventOrder", json!("PRIORITY"))),
        Just(Arg::Variable("EventOrder!", json!("SEQUENCE"))),
    ];
    let first = prop_oneof![
        Just(Arg::Absent),
        (0..60i64).prop_map(|n| Arg::Literal(n.to_string())),
        (0..60i64).prop_map(|n| Arg::Variable("Int", json!(n))),
        Just(Arg::Variable("Int", json!(-1))),
        Just(Arg::Variable("Int", json!(100_000))),
        Just(Arg::Variable("Int", Value::Null)),
    ];
    let after = prop_oneof![
        3 => Just(Arg::Absent),
        2 => prop::sample::select(cursors).prop_map(|c| Arg::Variable("String", json!(c))),
        1 => Just(Arg::Variable("String", json!("garbage"))),
        1 => Just(Arg::Variable("String", Value::Null)),
    ];
    (
        run_id,
        order,
        first,
        after,
        connection_selection(),
        any::<bool>(),
    )
        .prop_map(|(run_id, order, first, after, selection, alias)| Doc {
            operation: "query",
            field: "events",
            alias,
            args: vec![
                ("runId", run_id),
                ("orderBy", order),
                ("first", first),
                ("after", after),
            ],
            selection,
        })
}

fn publish_doc(setting: &Setting) -> impl Strategy<Value = Doc> + use<> {
    let run = setting.run.clone();
    let engine = setting.engine.clone();
    let input = (
        prop_oneof![Just("free"), Just("typed"), Just("missing")],
        proptest::option::of(-5..5i32),
        prop_oneof![
            Just(json!({"n": 1, "text": "caf\u{e9} \"quoted\" \\ \n tab\t"})),
            Just(json!({"n": "not a number"})),
            Just(json!([1, 2.5, null, {"deep": {"er": true}}])),
            Just(Value::Null),
        ],
        any::<bool>(),
        proptest::option::of("[a-d]{1,3}"),
        proptest::option::of("[a-d]"),
        any::<bool>(),
    )
        .prop_map(
            move |(ty, priority, payload, targeted, key, partition, sourced)| {
                let mut input = json!({"runId": run, "eventType": ty, "payload": payload});
                if let Some(p) = priority {
                    input["priority"] = json!(p);
                }
                if targeted {
                    input["targetEngineType"] = json!("ActorEngine");
                }
                if let Some(key) = key {
                    input["idempotencyKey"] = json!(key);
                }
                if let Some(partition) = partition {
                    input["partitionKey"] = json!(partition);
                }
                if sourced {
                    input["sourceEngineId"] = json!(engine);
                }
                input
            },
        );
    // `pubid` finds the event again for the general read.
    (input, event_selection(), any::<bool>()).prop_map(|(input, selection, alias)| Doc {
        operation: "mutation",
        field: "publishEvent",
        alias,
        args: vec![("input", Arg::Variable("EventInput!", input))],
        selection: format!("pubid: id {selection}"),
    })
}

fn save_doc(setting: &Setting) -> impl Strategy<Value = Doc> + use<> {
    let engine = setting.engine.clone();
    let state = prop_oneof![
        Just(Arg::Variable(
            "JSON!",
            json!({"turn": 1, "notes": "\u{1F600} \"x\""})
        )),
        Just(Arg::Variable("JSON!", json!([1, {"a": null}]))),
        Just(Arg::Variable("JSON!", json!("plain"))),
        Just(Arg::Variable("JSON!", Value::Null)),
        Just(Arg::RawVariable(
            "JSON!",
            r#"{ "b" : 1e2 , "a" : [ 1 , -0.0 , 12345678901234567890, 1.5E-3 ] }"#
        )),
        Just(Arg::RawVariable(
            "JSON!",
            r#"{"k":"\u00e9\ud83d\ude00 \/ \n \\u0000","dup":1,"dup":[2]}"#
        )),
        Just(Arg::RawVariable("JSON!", r#"{"nul": ["a\u0000b"]}"#)),
        Just(Arg::RawVariable("JSON!", "\n [ ] \n")),
    ];
    let version = prop_oneof![
        Just(Arg::Absent),
        Just(Arg::Variable("Int", Value::Null)),
        Just(Arg::Variable("Int", json!(1))),
    ];
    (state, version, pick(&ENGINE_FIELDS), any::<bool>()).prop_map(
        move |(state, version, fields, alias)| Doc {
            operation: "mutation",
            field: "saveEngineState",
            alias,
            args: vec![
                ("engineId", Arg::Variable("UUID!", json!(engine))),
                ("state", state),
                ("expectedVersion", version),
            ],
            selection: fields.join(" "),
        },
    )
}

/// The body of a response as text, and whether it has errors;
/// `variables` is JSON text, sent as it is.
async fn body(server: &TestServer, query: &str, variables: &str) -> (String, bool) {
    let request = format!(
        "{{\"query\": {}, \"variables\": {variables}}}",
        Value::from(query)
    );
    let response = reqwest::Client::new()
        .post(server.url("/graphql"))
        .header("content-type", "application/json")
        .body(request)
        .send()
        .await
        .expect("request sent");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/graphql-response+json");
    let text = response.text().await.unwrap();
    let errors = serde_json::from_str::<Value>(&text)
        .unwrap()
        .get("errors")
        .is_some();
    (text, errors)
}

/// `text` parsed. Compared as values: async-graphql 7 writes an object's
/// fields in the order their resolvers finish (a field that waits for a
/// loader comes last), where the compiled path writes them in selection
/// order, as the GraphQL specification says.
fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// The root field's value in `body`, as its text.
fn root_text(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Response<'a> {
        #[serde(borrow)]
        data: std::collections::BTreeMap<String, &'a RawValue>,
    }
    let response: Response = serde_json::from_str(body).unwrap();
    response.data.values().next().unwrap().get().to_owned()
}

/// One case: the document twice and its general twin (or the general read
/// of what the mutation wrote); returns whether the compiled path answered.
async fn one_case(server: &TestServer, doc: &Doc) -> bool {
    let (text, variables) = doc.render(false);
    let (general_text, _) = doc.render(true);
    let before = compiled_count(server).await;
    let (first, _) = body(server, &text, &variables).await;
    let (second, failed) = body(server, &text, &variables).await;
    let compiled = compiled_count(server).await > before;
    assert!(
        failed || compiled,
        "the compiled path did not answer {text}: {second}"
    );
    if doc.operation == "query" {
        let (general, _) = body(server, &general_text, &variables).await;
        assert_eq!(
            parse(&second),
            parse(&general),
            "compiled and general answers differ for {text} {variables}:\n{second}\n{general}"
        );
        assert_eq!(
            parse(&first),
            parse(&general),
            "two answers differ for {text}"
        );
        return compiled;
    }
    // A mutation: each answer against the general path's read of the row
    // (of a state save, the last: the first save's row is overwritten).
    let answers = if doc.field == "publishEvent" {
        vec![first, second]
    } else {
        vec![second]
    };
    for answer in answers {
        let parsed: Value = serde_json::from_str(&answer).unwrap();
        if parsed.get("errors").is_some() {
            let (general, _) = body(server, &general_text, &variables).await;
            let general: Value = serde_json::from_str(&general).unwrap();
            assert_eq!(
                parsed["errors"][0]["extensions"]["code"],
                general["errors"][0]["extensions"]["code"]
            );
            continue;
        }
        let read = if doc.field == "publishEvent" {
            let id = root_text(&answer);
            let id: Value = serde_json::from_str(&id).unwrap();
            let query = format!(
                "query($x: UUID!) {{ root: event(id: $x) {{ {} }} }}",
                doc.selection
            );
            body(server, &query, &json!({ "x": id["pubid"] }).to_string())
                .await
                .0
        } else {
            let query = format!(
                "query($x: UUID!) {{ root: engine(engineId: $x) {{ {} }} }}",
                doc.selection
            );
            body(
                server,
                &query,
                &json!({ "x": saved_engine(doc) }).to_string(),
            )
            .await
            .0
        };
        assert_eq!(
            parse(&root_text(&answer)),
            parse(&root_text(&read)),
            "the answer to {text} differs from the general read of its row"
        );
        if doc.field == "saveEngineState" {
            // The state as each path read the same variables' text.
            let compiled_state = stored_state(server, doc).await;
            let (general, failed) = body(server, &general_text, &variables).await;
            assert!(!failed || general.contains("VERSION_CONFLICT"), "{general}");
            if !failed {
                assert_eq!(
                    compiled_state,
                    stored_state(server, doc).await,
                    "{text} {variables} saved a state the general path reads otherwise"
                );
            }
        }
    }
    compiled
}

/// The engine id a save document names.
fn saved_engine(doc: &Doc) -> &Value {
    let Arg::Variable(_, engine) = &doc.args[0].1 else {
        unreachable!("the engine id is a variable")
    };
    engine
}

/// The state of the engine a save document names, as stored.
async fn stored_state(server: &TestServer, doc: &Doc) -> Value {
    server
        .gql(
            "query($x: UUID!) { engine(engineId: $x) { state } }",
            json!({ "x": saved_engine(doc) }),
        )
        .await["engine"]["state"]
        .clone()
}

/// Runs `case` on `cases` documents of `strategy` (proptest on a blocking
/// thread, each case on the test's runtime) and returns how many the
/// compiled path answered; panics with the smallest failing input.
pub(crate) async fn run_cases<T, F>(
    cases: u32,
    max_shrink_iters: u32,
    strategy: impl Strategy<Value = T> + Send + 'static,
    case: impl Fn(T) -> F + Send + 'static,
) -> usize
where
    T: std::fmt::Debug,
    F: std::future::Future<Output = bool>,
{
    let handle = tokio::runtime::Handle::current();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases,
            max_shrink_iters,
            failure_persistence: None,
            ..Config::default()
        });
        let compiled = std::cell::Cell::new(0);
        runner
            .run(&strategy, |doc| {
                if handle.block_on(case(doc)) {
                    compiled.set(compiled.get() + 1);
                }
                Ok(())
            })
            .map(|()| compiled.get())
            .map_err(|failure| failure.to_string())
    })
    .await
    .unwrap();
    outcome.unwrap_or_else(|failure| panic!("property failed; smallest input found: {failure}"))
}

/// The event types the documents use: `typed` (a schema, priority 3,
/// two attempts) and `free`.
async fn event_types(server: &TestServer) {
    event_type(
        server,
        "typed",
        json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}),
        3,
        2,
    )
    .await;
    event_type(server, "free", json!(null), 0, 1).await;
}

async fn compiled_answers_match_the_general_path(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "compiled").await;
    event_types(&server).await;
    let engine = register(&server, &s.run, "ActorEngine").await;
    // Events with every optional field, and payloads that need escaping.
    for i in 0..30i64 {
        let mut input = json!({
            "runId": s.run, "eventType": if i % 3 == 0 { "typed" } else { "free" },
            "priority": (i * 7) % 5,
            "payload": {"n": i, "text": format!("line {i}\n\"quoted\" caf\u{e9} \u{1F600}"), "nested": {"b": [i, 1.5, null], "a": true}},
        });
        if i % 4 == 0 {
            input["targetEngineType"] = json!("ActorEngine");
            input["idempotencyKey"] = json!(format!("k{i}"));
        }
        if i % 5 == 0 {
            input["partitionKey"] = json!("p");
            input["sourceEngineId"] = json!(engine);
            input["deliverAt"] = json!("2030-01-02T03:04:05.678Z");
        }
        publish(&server, input).await;
    }
    // Cursors of both orders, for `after`.
    let mut cursors = Vec::new();
    for order in ["SEQUENCE", "PRIORITY"] {
        let page = server
            .gql(
                &format!("query($r: UUID!) {{ events(runId: $r, orderBy: {order}, first: 12) {{ edges {{ cursor }} }} }}"),
                json!({ "r": s.run }),
            )
            .await;
        for edge in page["events"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .step_by(5)
        {
            cursors.push(edge["cursor"].as_str().unwrap().to_owned());
        }
    }
    let setting = Setting {
        run: s.run.clone(),
        engine,
        cursors,
    };

    let strategy = prop_oneof![
        4 => events_doc(&setting),
        2 => publish_doc(&setting),
        1 => save_doc(&setting),
    ];
    let server = std::sync::Arc::new(server);
    let compiled = run_cases(96, 100, strategy, move |doc| {
        let server = server.clone();
        async move { one_case(&server, &doc).await }
    })
    .await;
    // Each case already requires the compiled path wherever the general one
    // succeeds; this says the run was not all refusals (a quarter to a half
    // of the cases succeed).
    assert!(
        compiled >= 10,
        "only {compiled} of 96 cases took the compiled path"
    );
}

fn subscription_doc(run: &str) -> impl Strategy<Value = Doc> + use<> {
    let run = run.to_owned();
    let run_id = prop_oneof![
        6 => Just(Arg::Variable("UUID!", json!(run))),
        1 => Just(Arg::Literal(format!("\"{run}\""))),
        1 => Just(Arg::Variable("UUID!", json!(uuid::Uuid::new_v4().to_string()))),
        1 => Just(Arg::Variable("UUID!", json!("not-a-uuid"))),
    ];
    let event_types = prop_oneof![
        3 => Just(Arg::Absent),
        1 => Just(Arg::Variable("[String!]", json!(["free"]))),
        // A single value where a list is expected is a list of one.
        1 => Just(Arg::Variable("[String!]", json!("typed"))),
        1 => Just(Arg::Literal("[\"typed\", \"free\"]".into())),
        1 => Just(Arg::Variable("[String!]", Value::Null)),
        1 => Just(Arg::Variable("[String!]", json!(["free", null]))),
    ];
    let min_priority = prop_oneof![
        3 => Just(Arg::Absent),
        1 => Just(Arg::Literal("2".into())),
        1 => Just(Arg::Variable("Int", json!(3))),
        1 => Just(Arg::Variable("Int", json!("x"))),
    ];
    let after_sequence = prop_oneof![
        2 => Just(Arg::Absent),
        1 => Just(Arg::Variable("Int", json!(0))),
        1 => Just(Arg::Literal("3".into())),
    ];
    let engine_id = prop_oneof![
        4 => Just(Arg::Absent),
        1 => Just(Arg::Variable("UUID", Value::Null)),
    ];
    let max_in_flight = prop_oneof![
        6 => Just(Arg::Absent),
        1 => Just(Arg::Literal("2".into())),
    ];
    (
        run_id,
        event_types,
        min_priority,
        after_sequence,
        engine_id,
        max_in_flight,
        any::<bool>(),
        pick(&EVENT_FIELDS),
    )
        .prop_map(
            |(run_id, types, min, after, engine, max, alias, fields)| Doc {
                operation: "subscription",
                field: "events",
                alias,
                args: vec![
                    ("runId", run_id),
                    ("eventTypes", types),
                    ("minPriority", min),
                    ("afterSequence", after),
                    ("engineId", engine),
                    ("maxInFlight", max),
                ],
                selection: fields.join(" "),
            },
        )
}

/// Publishes an event of each kind into `run`.
async fn publish_some(server: &TestServer, run: &str, from: i64) {
    for i in from..from + 3 {
        let (event_type, payload) = if i % 2 == 0 {
            ("typed", json!({"n": i, "text": "caf\u{e9} \"q\"\n"}))
        } else {
            ("free", json!({"i": i}))
        };
        publish(
            server,
            json!({"runId": run, "eventType": event_type, "priority": i % 5, "payload": payload}),
        )
        .await;
    }
}

/// Every message of operation `id` in `messages` until its last, without the id.
fn of(messages: &[Value], id: &str) -> Vec<String> {
    let mut out: Vec<String> = messages
        .iter()
        .filter(|m| m["id"] == id)
        .map(|m| json!({"type": m["type"], "payload": m["payload"]}).to_string())
        .collect();
    // A slow reader's queue may reorder live events by priority; which
    // events and how each is written is what must agree.
    out.sort();
    out
}

/// One subscription case: the document on the general path twice (once
/// with a directive that keeps it off the compiled path) and, once the first
/// has proven it, on the compiled path; all three must send the same
/// messages. Returns whether the compiled path answered.
async fn one_subscription_case(server: &TestServer, template: &str, doc: &Doc) -> bool {
    let run = create_run(server, template, "RUNNING").await;
    let mut doc = doc.clone();
    for (_, arg) in &mut doc.args {
        // The strategy's run stands for this case's own run.
        match arg {
            Arg::Variable("UUID!", value) if value.as_str() == Some(PLACEHOLDER) => {
                *value = json!(run)
            }
            Arg::Literal(text) if text.contains(PLACEHOLDER) => {
                *text = text.replace(PLACEHOLDER, &run)
            }
            _ => {}
        }
    }
    publish_some(server, &run, 0).await;
    let (text, variables) = doc.render(false);
    let variables: Value = serde_json::from_str(&variables).unwrap();
    let (general_text, _) = doc.render(true);
    let mut ws = WsClient::ready(server.addr).await;
    ws.subscribe("general", &general_text, variables.clone())
        .await;
    ws.subscribe("first", &text, variables.clone()).await;
    let compiled = subscribe_compiled(server, &mut ws, "try", &text, &variables).await;
    publish_some(server, &run, 3).await;
    server
        .gql(
            "mutation($r: UUID!) { setRunStatus(runId: $r, status: COMPLETED) { id } }",
            json!({ "r": run }),
        )
        .await;
    let mut ids = vec!["general".to_owned(), "first".to_owned()];
    ids.extend(compiled.clone());
    let mut messages = Vec::new();
    let mut open = ids.clone();
    while !open.is_empty() {
        let message = ws.message().await;
        let id = message["id"].as_str().unwrap_or_default().to_owned();
        if matches!(message["type"].as_str(), Some("complete" | "error")) {
            open.retain(|o| *o != id);
        }
        messages.push(message);
    }
    let general = of(&messages, "general");
    assert!(!general.is_empty(), "{text}: no message");
    assert_eq!(of(&messages, "first"), general, "{text} {variables}");
    let failed = general
        .iter()
        .any(|m| m.contains("\"errors\"") || m.contains("\"error\""));
    match &compiled {
        Some(id) => assert_eq!(
            of(&messages, id),
            general,
            "compiled and general messages differ for {text} {variables}"
        ),
        None => assert!(
            failed,
            "the compiled path did not answer {text} {variables}"
        ),
    }
    compiled.is_some()
}

/// The run id in generated documents, replaced by each case's own run.
const PLACEHOLDER: &str = "00000000-0000-4000-8000-00000000cafe";

async fn compiled_subscriptions_match_the_general_path(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "compiled-subscriptions").await;
    event_types(&server).await;
    let server = std::sync::Arc::new(server);
    let template = s.template;
    let compiled = run_cases(16, 20, subscription_doc(PLACEHOLDER), move |doc| {
        let (server, template) = (server.clone(), template.clone());
        async move { one_subscription_case(&server, &template, &doc).await }
    })
    .await;
    // Each case that the compiled path did not answer was checked to be an
    // error on the general path too; most generated documents are answerable.
    assert!(
        compiled >= 3,
        "only {compiled} of 16 subscriptions took the compiled path"
    );
}
