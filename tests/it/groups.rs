//! Engine groups (competing consumers): several engines of one type share a
//! run's work, each event handled by exactly one member whatever dies, with
//! attempts counted across the group and partition keys kept in order on
//! one member. Members are real websocket clients that read eagerly and
//! handle each event with a delay.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scenario_hub::entity::{event_instance, event_processing};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::both_backends;
use crate::common::process::{Client, ProcessServer};
use crate::common::ws::{ENGINE_EVENTS, EagerReader, WsClient};
use crate::common::{
    Backend, TestDb, TestServer, event_type, publish, register, register_in_group, scenario,
};

both_backends!(
    groups_share_one_type_and_show_their_members,
    each_event_goes_to_one_member_whatever_dies,
    a_hung_member_loses_its_event_and_its_late_completion,
    failures_count_across_the_group,
    partition_keys_keep_order_and_stay_on_one_member,
);

const RECORD: &str = "mutation($ev: UUID!, $e: UUID!, $l: UUID, $s: ProcessingStatus!) {
    recordProcessing(input: {eventId: $ev, engineId: $e, status: $s, leaseId: $l, error: \"no\"}) { attempts } }";

/// Subscribes `engine` on a new connection with `max_in_flight` and reads eagerly.
async fn subscribe(addr: SocketAddr, run: &str, engine: &str, window: Value) -> EagerReader {
    let mut ws = WsClient::ready(addr).await;
    let mut variables = json!({"run": run, "engine": engine, "types": ["job"]});
    for (k, v) in window.as_object().unwrap() {
        variables[k] = v.clone();
    }
    ws.subscribe("e", ENGINE_EVENTS, variables).await;
    ws.eager()
}

/// Publishes `n` jobs from `tasks` concurrent publishers; `input(i)` adds fields.
async fn publish_jobs(
    addr: SocketAddr,
    run: &str,
    n: usize,
    tasks: usize,
    input: impl Fn(usize) -> Value,
) {
    let per_task = n / tasks;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let client = Client::new(addr);
        let inputs: Vec<Value> = (t * per_task..(t + 1) * per_task)
            .map(|i| {
                let mut e = json!({"runId": run, "eventType": "job", "payload": {"i": i}});
                for (k, v) in input(i).as_object().unwrap() {
                    e[k] = v.clone();
                }
                e
            })
            .collect();
        handles.push(tokio::spawn(async move {
            for chunk in inputs.chunks(25) {
                client
                    .gql(
                        "mutation($i: [EventInput!]!) { publishEvents(inputs: $i) { id } }",
                        json!({ "i": chunk }),
                    )
                    .await;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

async fn groups_share_one_type_and_show_their_members(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "groups").await;
    event_type(&server, "job", json!(null), 0, 1).await;
    let a = register_in_group(&server, &s.run, "NarratorEngine", "tellers").await;
    let b = register_in_group(&server, &s.run, "NarratorEngine", "tellers").await;
    let solo = register(&server, &s.run, "NarratorEngine").await;

    // Another type in the group, or another group on resume: refused, nothing stored.
    let before = server.digest().await;
    let refused = server
        .gql_raw(
            "mutation($r: UUID!) { registerEngine(input: {runId: $r, engineType: \"ActorEngine\", group: \"tellers\"}) { engineId } }",
            json!({"r": s.run}),
        )
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{refused}"
    );
    assert_eq!(
        refused["errors"][0]["extensions"]["field"], "input.group",
        "{refused}"
    );
    let moved = server
        .gql_raw(
            "mutation($r: UUID!, $e: UUID!) { registerEngine(input: {engineId: $e, runId: $r, engineType: \"NarratorEngine\", group: \"others\"}) { engineId } }",
            json!({"r": s.run, "e": a}),
        )
        .await;
    assert_eq!(
        moved["errors"][0]["extensions"]["code"], "CONFLICT",
        "{moved}"
    );
    let blank = server
        .gql_raw(
            "mutation($r: UUID!) { registerEngine(input: {runId: $r, engineType: \"NarratorEngine\", group: \"\"}) { engineId } }",
            json!({"r": s.run}),
        )
        .await;
    assert_eq!(
        blank["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{blank}"
    );
    assert_eq!(server.digest().await, before);
    // The same registration again resumes the member.
    let again = server
        .gql(
            "mutation($r: UUID!, $e: UUID!) { registerEngine(input: {engineId: $e, runId: $r, engineType: \"NarratorEngine\", group: \"tellers\"}) { engineId group } }",
            json!({"r": s.run, "e": a}),
        )
        .await;
    assert_eq!(again["registerEngine"]["group"], "tellers");

    // Three events for the group: each pending for both members, once.
    for _ in 0..3 {
        publish(&server, json!({"runId": s.run, "eventType": "job"})).await;
    }
    let mut member = subscribe(server.addr, &s.run, &a, json!({"max": 1})).await;
    let first = member.next_event("e").await;
    assert_eq!(first["delivery"]["engineId"], a.as_str());
    let engines = server
        .gql(
            "query($r: UUID!) { scenarioRun(id: $r) { engines { engineId group online pendingCount inFlight { eventId } } } }",
            json!({"r": s.run}),
        )
        .await;
    let by_id: HashMap<String, Value> = engines["scenarioRun"]["engines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["engineId"].as_str().unwrap().to_owned(), e.clone()))
        .collect();
    assert_eq!(by_id[&a]["group"], "tellers");
    assert_eq!(by_id[&b]["group"], "tellers");
    assert_eq!(by_id[&solo]["group"], Value::Null);
    assert_eq!(by_id[&a]["online"], true, "a is subscribed");
    assert_eq!(by_id[&b]["online"], true, "b registered just now");
    // The run's status change and the three jobs, for everyone.
    assert_eq!(by_id[&a]["pendingCount"], by_id[&solo]["pendingCount"]);
    assert_eq!(by_id[&a]["pendingCount"], by_id[&b]["pendingCount"]);
    assert_eq!(by_id[&a]["inFlight"].as_array().unwrap().len(), 1);
    assert_eq!(by_id[&b]["inFlight"].as_array().unwrap().len(), 0);

    // A record by one member ends the event for its group, not for others.
    let done = server
        .gql(
            RECORD,
            json!({"ev": first["id"], "e": a, "l": first["delivery"]["leaseId"], "s": "PROCESSED"}),
        )
        .await;
    assert_eq!(done["recordProcessing"]["attempts"], 1);
    let pending = |engine: &str| {
        let engine = engine.to_owned();
        let server = &server;
        let run = s.run.clone();
        async move {
            server
                .gql(
                    "query($r: UUID!, $e: UUID!) { events(runId: $r, filter: {pendingFor: $e, eventTypes: [\"job\"]}) { nodes { id } } }",
                    json!({"r": run, "e": engine}),
                )
                .await["events"]["nodes"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(pending(&a).await, 2);
    assert_eq!(
        pending(&b).await,
        2,
        "pendingFor a member means for its group"
    );
    assert_eq!(pending(&solo).await, 3);

    // `engines` with per-engine counts costs the same for 3 engines as for 9.
    let query = "query($r: UUID!) { scenarioRun(id: $r) { engines { engineId group online pendingCount inFlight { leaseId } } } }";
    // The fewest of three tries: the subscribed member's presence and
    // timers may send a statement of their own meanwhile, never fewer.
    let cost = || async {
        let mut fewest = u64::MAX;
        for _ in 0..3 {
            let before = server.statements();
            server.gql(query, json!({"r": s.run})).await;
            fewest = fewest.min(server.statements() - before);
        }
        fewest
    };
    let few = cost().await;
    for i in 0..6 {
        if i % 2 == 0 {
            register_in_group(&server, &s.run, "NarratorEngine", "tellers").await;
        } else {
            register(&server, &s.run, "ActorEngine").await;
        }
    }
    let many = cost().await;
    assert_eq!(few, many, "no statement per engine");
    drop(member);
}

/// One member's life: handles what it gets with a delay and records it,
/// logging when each event arrived and when its record was sent.
struct Member {
    engine: String,
    handled: Arc<Mutex<Vec<(String, i64)>>>,
    /// Delivered but not recorded yet.
    holding: Arc<Mutex<HashSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// One event handled by a member.
#[derive(Clone)]
struct Handled {
    member: String,
    event: Value,
    /// When it came off the socket.
    arrived: std::time::Instant,
    /// When its record was sent.
    recording: std::time::Instant,
}

fn start_member(
    addr: SocketAddr,
    engine: String,
    mut reader: EagerReader,
    delay: Duration,
    log: Arc<Mutex<Vec<Handled>>>,
) -> Member {
    let client = Client::new(addr);
    let handled = Arc::new(Mutex::new(Vec::new()));
    let holding = Arc::new(Mutex::new(HashSet::new()));
    let (h, held, e) = (handled.clone(), holding.clone(), engine.clone());
    let task = tokio::spawn(async move {
        loop {
            let Some(event) = reader
                .next_event_within("e", Duration::from_secs(3600))
                .await
            else {
                return;
            };
            let arrived = reader.last_arrival().unwrap();
            let id = event["id"].as_str().unwrap().to_owned();
            held.lock().unwrap().insert(id.clone());
            tokio::time::sleep(delay).await;
            log.lock().unwrap().push(Handled {
                member: e.clone(),
                event: event.clone(),
                arrived,
                recording: std::time::Instant::now(),
            });
            client
                .gql(
                    RECORD,
                    json!({"ev": id, "e": e, "l": event["delivery"]["leaseId"], "s": "PROCESSED"}),
                )
                .await;
            held.lock().unwrap().remove(&id);
            h.lock()
                .unwrap()
                .push((id, event["delivery"]["attempt"].as_i64().unwrap()));
        }
    });
    Member {
        engine,
        handled,
        holding,
        task,
    }
}

/// The records of the run's jobs: (event, engine, status), read from the database.
async fn job_records(conn: &DatabaseConnection, run: &str) -> Vec<(Uuid, Uuid, String)> {
    let run: Uuid = run.parse().unwrap();
    let jobs: Vec<Uuid> = event_instance::Entity::find()
        .filter(event_instance::Column::RunId.eq(run))
        .filter(event_instance::Column::EventType.eq("job"))
        .all(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    event_processing::Entity::find()
        .filter(event_processing::Column::EventId.is_in(jobs))
        .all(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.event_id, p.engine_id, p.status.as_str().to_owned()))
        .collect()
}

/// Waits until the run's jobs have `n` records.
async fn wait_processed(conn: &DatabaseConnection, run: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done = job_records(conn, run).await.len();
        if done >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {n} processed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn each_event_goes_to_one_member_whatever_dies(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "exactly-once").await;
    event_type(&server, "job", json!(null), 0, 1).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut members = Vec::new();
    for _ in 0..3 {
        let engine = register_in_group(&server, &s.run, "NarratorEngine", "tellers").await;
        let reader = subscribe(server.addr, &s.run, &engine, json!({"max": 2})).await;
        members.push(start_member(
            server.addr,
            engine,
            reader,
            Duration::from_millis(2),
            log.clone(),
        ));
    }
    let publisher = async { publish_jobs(server.addr, &s.run, 1000, 8, |_| json!({})).await };
    let chaos = async {
        // Mid-run, the third member dies without a word, with events in hand.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let victim = &members[2];
            if victim.handled.lock().unwrap().len() >= 50
                && !victim.holding.lock().unwrap().is_empty()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the victim got work"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let victim = members.pop().unwrap();
        victim.task.abort();
        let orphans = victim.holding.lock().unwrap().clone();
        let victim_engine = victim.engine.clone();
        let victim_handled: Vec<String> = victim
            .handled
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        // And another joins late.
        let late = register_in_group(&server, &s.run, "NarratorEngine", "tellers").await;
        let reader = subscribe(server.addr, &s.run, &late, json!({"max": 2})).await;
        (
            orphans,
            victim_engine,
            victim_handled,
            start_member(
                server.addr,
                late,
                reader,
                Duration::from_millis(2),
                log.clone(),
            ),
        )
    };
    let ((), (orphans, victim, victim_handled, late)) = tokio::join!(publisher, chaos);
    members.push(late);
    assert!(!orphans.is_empty());
    wait_processed(&server.ctx().db.conn, &s.run, 1000).await;

    // Every job PROCESSED by exactly one member.
    let records = job_records(&server.ctx().db.conn, &s.run).await;
    assert_eq!(records.len(), 1000, "one record per job");
    let events: HashSet<Uuid> = records.iter().map(|r| r.0).collect();
    assert_eq!(events.len(), 1000);
    assert!(records.iter().all(|r| r.2 == "PROCESSED"));
    // What the victim held went to the others, as a second attempt.
    let mut seen: HashMap<String, (String, i64)> = HashMap::new();
    for m in &members {
        for (id, attempt) in m.handled.lock().unwrap().iter() {
            assert!(
                seen.insert(id.clone(), (m.engine.clone(), *attempt))
                    .is_none(),
                "{id} handled twice"
            );
        }
    }
    for id in &victim_handled {
        assert!(
            !seen.contains_key(id),
            "{id} handled by the victim and another"
        );
    }
    for orphan in &orphans {
        let (by, attempt) = &seen[orphan];
        assert_ne!(by, &victim);
        assert_eq!(*attempt, 2, "{orphan} redelivered as attempt 2");
    }
    let late_engine = &members.last().unwrap().engine;
    assert!(
        !members.last().unwrap().handled.lock().unwrap().is_empty(),
        "the late member {late_engine} got a share"
    );
    for m in members {
        m.task.abort();
    }
}

async fn a_hung_member_loses_its_event_and_its_late_completion(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "hung").await;
    event_type(&server, "job", json!(null), 0, 1).await;
    let a = register_in_group(&server, &s.run, "NarratorEngine", "tellers").await;
    let b = register_in_group(&server, &s.run, "NarratorEngine", "tellers").await;
    let mut ra = subscribe(server.addr, &s.run, &a, json!({"max": 1, "lease": 1})).await;
    let event = publish(&server, json!({"runId": s.run, "eventType": "job"})).await;
    let first = ra.next_event("e").await;
    assert_eq!(first["id"], event["id"]);
    // `a` hangs with its socket open; `b` joins and gets the event once the
    // lease runs out.
    let mut rb = subscribe(server.addr, &s.run, &b, json!({"max": 1, "lease": 30})).await;
    let second = rb.next_event("e").await;
    assert_eq!(second["id"], event["id"]);
    assert_eq!(second["delivery"]["attempt"], 2);
    assert_eq!(second["delivery"]["engineId"], b.as_str());

    let complete = "mutation($ev: UUID!, $e: UUID!, $l: UUID, $run: UUID!) {
        completeEvent(input: {eventId: $ev, engineId: $e, status: PROCESSED, leaseId: $l,
                              state: {done: true}, emit: [{runId: $run, eventType: \"job\"}]}) { engine { version } } }";
    let before = server.digest().await;
    let late = server
        .gql_raw(
            complete,
            json!({"ev": event["id"], "e": a, "l": first["delivery"]["leaseId"], "run": s.run}),
        )
        .await;
    assert_eq!(
        late["errors"][0]["extensions"]["code"], "LEASE_LOST",
        "{late}"
    );
    assert_eq!(
        server.digest().await,
        before,
        "the late completion changed nothing"
    );
    let taken = server
        .gql(
            complete,
            json!({"ev": event["id"], "e": b, "l": second["delivery"]["leaseId"], "run": s.run}),
        )
        .await;
    assert_eq!(taken["completeEvent"]["engine"]["version"], 2);
    // The emitted job goes to one of them; the hung one never gets the first again.
    let next = tokio::select! {
        e = ra.next_event("e") => e,
        e = rb.next_event("e") => e,
    };
    assert_ne!(next["id"], event["id"]);
}

async fn failures_count_across_the_group(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "failures").await;
    event_type(&server, "job", json!(null), 0, 3).await;
    let mut members = Vec::new();
    for _ in 0..3 {
        let engine = register_in_group(&server, &s.run, "NarratorEngine", "tellers").await;
        let reader = subscribe(server.addr, &s.run, &engine, json!({"max": 1})).await;
        members.push((engine, Some(reader)));
    }
    let event = publish(&server, json!({"runId": s.run, "eventType": "job"})).await;
    // Whoever gets it fails it and leaves; the next attempt goes to another.
    let mut failed_by = Vec::new();
    for attempt in 1..=3 {
        let (i, delivered) = loop {
            let mut got = None;
            for (i, (_, reader)) in members.iter_mut().enumerate() {
                if let Some(reader) = reader
                    && let Some(e) = reader
                        .next_event_within("e", Duration::from_millis(50))
                        .await
                {
                    got = Some((i, e));
                    break;
                }
            }
            if let Some(got) = got {
                break got;
            }
        };
        assert_eq!(delivered["id"], event["id"]);
        assert_eq!(delivered["delivery"]["attempt"], attempt);
        let engine = members[i].0.clone();
        // Held back a moment, so that it leaves before the event is back.
        let answer = server
            .gql(
                "mutation($ev: UUID!, $e: UUID!, $l: UUID) {
                    recordProcessing(input: {eventId: $ev, engineId: $e, status: FAILED, leaseId: $l,
                                             error: \"no\", retryAfterSeconds: 1}) { attempts } }",
                json!({"ev": event["id"], "e": engine, "l": delivered["delivery"]["leaseId"]}),
            )
            .await;
        assert_eq!(
            answer["recordProcessing"]["attempts"], 1,
            "each member failed once"
        );
        failed_by.push(engine);
        members[i].1.take().unwrap().kill();
    }
    let distinct: HashSet<&String> = failed_by.iter().collect();
    assert_eq!(distinct.len(), 3);
    let errors = server
        .gql(
            "query($r: UUID!) { events(runId: $r, filter: {eventTypes: [\"error_occurred\"]}) { nodes { payload parentEventId } } }",
            json!({"r": s.run}),
        )
        .await;
    let errors = errors["events"]["nodes"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "one error_occurred for the group");
    assert_eq!(errors[0]["payload"]["attempts"], 3);
    assert_eq!(errors[0]["parentEventId"], event["id"]);
    for engine in &failed_by {
        let pending = server
            .gql(
                "query($r: UUID!, $e: UUID!) { events(runId: $r, filter: {pendingFor: $e, eventTypes: [\"job\"]}) { nodes { id } } }",
                json!({"r": s.run, "e": engine}),
            )
            .await;
        assert_eq!(pending["events"]["nodes"], json!([]), "done for the group");
    }
}

async fn partition_keys_keep_order_and_stay_on_one_member(backend: Backend) {
    let server = TestServer::start(backend).await;
    let s = scenario(&server, "keys").await;
    event_type(&server, "job", json!(null), 0, 1).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut members = Vec::new();
    for _ in 0..3 {
        let engine = register_in_group(&server, &s.run, "NarratorEngine", "tellers").await;
        let reader = subscribe(server.addr, &s.run, &engine, json!({"max": 4})).await;
        members.push(start_member(
            server.addr,
            engine,
            reader,
            Duration::from_millis(3),
            log.clone(),
        ));
    }
    // Priorities mixed in, so keys and urgency interleave.
    publish_jobs(
        server.addr,
        &s.run,
        400,
        4,
        |i| json!({"partitionKey": format!("agent-{}", i % 20), "priority": (i % 3) as i64}),
    )
    .await;
    wait_processed(&server.ctx().db.conn, &s.run, 400).await;
    for m in &members {
        m.task.abort();
    }

    // Per key, in handling order: sequence order, each arriving only after
    // the record of the one before it was sent, all on one member.
    let log = log.lock().unwrap().clone();
    let mut by_key: BTreeMap<String, Vec<Handled>> = BTreeMap::new();
    for h in log {
        let key = h.event["partitionKey"].as_str().unwrap().to_owned();
        by_key.entry(key).or_default().push(h);
    }
    assert_eq!(by_key.len(), 20);
    let mut owners = HashSet::new();
    for (key, handled) in &by_key {
        assert_eq!(handled.len(), 20, "{key}");
        let sequences: Vec<i64> = handled
            .iter()
            .map(|h| h.event["sequence"].as_i64().unwrap())
            .collect();
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {sequences:?}"
        );
        for pair in handled.windows(2) {
            assert!(
                pair[1].arrived >= pair[0].recording,
                "two events of {key} in flight at once"
            );
        }
        let members: HashSet<&String> = handled.iter().map(|h| &h.member).collect();
        assert_eq!(members.len(), 1, "{key} moved while no member left");
        owners.extend(members.into_iter().cloned());
    }
    assert!(owners.len() > 1, "keys spread over members: {owners:?}");
}

/// Members spread over two replicas of one PostgreSQL database, and the
/// replica that holds one of them killed with SIGKILL mid-run: its member's
/// unrecorded events come back when their (short) leases run out and go to
/// the members on the other replica; every job ends PROCESSED exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pg_tests),
    ignore = "TEST_DATABASE_URL is not set: PostgreSQL test skipped"
)]
async fn a_group_over_two_replicas_survives_one_killed() {
    let db = TestDb::new(Backend::Postgres).await;
    let a = ProcessServer::spawn(&db.url, &[]).await;
    let b = ProcessServer::spawn(&db.url, &[]).await;
    let via_a = Client::new(a.addr);
    let run = via_a.job_run("groups").await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let window = json!({"max": 2, "lease": 2});
    let mut members = Vec::new();
    for replica in [a.addr, a.addr, b.addr] {
        let engine = via_a
            .gql(
                "mutation($r: UUID!) { registerEngine(input: {runId: $r, engineType: \"NarratorEngine\", group: \"tellers\"}) { engineId } }",
                json!({"r": run}),
            )
            .await["registerEngine"]["engineId"]
            .as_str()
            .unwrap()
            .to_owned();
        let reader = subscribe(replica, &run, &engine, window.clone()).await;
        let delay = Duration::from_millis(2);
        members.push(start_member(replica, engine, reader, delay, log.clone()));
    }
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    // Published through both replicas while the members work.
    tokio::join!(
        publish_jobs(a.addr, &run, 300, 2, |_| json!({})),
        publish_jobs(b.addr, &run, 300, 2, |_| json!({})),
    );
    // Once the member on B is at work, B dies with its events unrecorded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while members[2].handled.lock().unwrap().len() < 30
        || members[2].holding.lock().unwrap().is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B's member got work"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    b.kill();
    let published = 600;
    wait_processed(&conn, &run, published).await;
    let records = job_records(&conn, &run).await;
    assert_eq!(records.len(), published, "one record per job");
    let events: HashSet<Uuid> = records.iter().map(|r| r.0).collect();
    assert_eq!(events.len(), published);
    assert!(records.iter().all(|r| r.2 == "PROCESSED"));
    let survivors: HashSet<String> = members[..2].iter().map(|m| m.engine.clone()).collect();
    let redelivered = members[..2]
        .iter()
        .flat_map(|m| m.handled.lock().unwrap().clone())
        .filter(|(_, attempt)| *attempt > 1)
        .count();
    assert!(redelivered > 0, "B's member's events went to {survivors:?}");
    for m in members {
        m.task.abort();
    }
    a.kill();
}
