//! An example engine: the loop every scenario-hub engine runs.
//!
//! It registers (getting its stored state back when it restarts), subscribes
//! to its run's events with its `engineId` (so it gets every event it has not
//! completed yet, most urgent first), and completes each event with
//! `completeEvent`: the processing record, a follow-up event and its new
//! state, in one transaction. Kill it at any point and start it again with
//! the same `--engine-id`: it picks up exactly where it stopped.
//!
//! Flow control and leases: the server sends at most `--max-in-flight`
//! events that the engine has not completed yet, and leases each one to it
//! for `--lease-seconds`. The engine works on them side by side, extends each
//! lease every third of that while the work lasts (a heartbeat, so that an
//! event which takes minutes stays its own), and names the lease when it
//! completes. `LEASE_LOST` means the event went to another delivery (the
//! lease ran out, or a restarted instance took it over): someone else has it
//! now, so the engine drops it and goes on.
//!
//! ```sh
//! cargo run --example engine -- --run RUN_ID --engine-id 6f1c7b5e-0000-4000-8000-000000000001
//! ```

use std::time::Duration;

use clap::Parser;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::{Instant, interval_at};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Message;
use uuid::Uuid;

/// Command line of the example engine.
#[derive(Parser)]
struct Args {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// The run to work on.
    #[arg(long)]
    run: Uuid,
    /// This engine instance; give the same id after a restart.
    #[arg(long)]
    engine_id: Uuid,
    /// Its type.
    #[arg(long, default_value = "ActorEngine")]
    engine_type: String,
    /// The event type it handles.
    #[arg(long, default_value = "job")]
    handles: String,
    /// The event type it emits in reply.
    #[arg(long, default_value = "job_done")]
    replies: String,
    /// Stop after handling this many events (default: run until the run closes).
    #[arg(long)]
    max_events: Option<usize>,
    /// Pretend each event takes this long to handle.
    #[arg(long, default_value_t = 0)]
    work_ms: u64,
    /// How many events it works on at once (the subscription's `maxInFlight`).
    #[arg(long, default_value_t = 1)]
    max_in_flight: u32,
    /// How long each delivery is leased; the engine extends the lease every
    /// third of this while it works on the event.
    #[arg(long, default_value_t = 30)]
    lease_seconds: u32,
}

/// Why a call failed.
#[derive(Debug)]
enum CallError {
    /// `LEASE_LOST`: the event went to another delivery; someone else has it.
    LeaseLost,
    /// Anything else: the server's errors, or the network's.
    Other(String),
}

impl From<CallError> for String {
    fn from(error: CallError) -> String {
        match error {
            CallError::LeaseLost => "LEASE_LOST".to_owned(),
            CallError::Other(message) => message,
        }
    }
}

/// A tiny GraphQL-over-HTTP client.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    async fn call(&self, query: &str, variables: Value) -> Result<Value, CallError> {
        let other = |e: reqwest::Error| CallError::Other(e.to_string());
        let response: Value = self
            .http
            .post(format!("{}/graphql", self.url))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .map_err(other)?
            .json()
            .await
            .map_err(other)?;
        let Some(errors) = response.get("errors") else {
            return Ok(response["data"].clone());
        };
        let mut each = errors.as_array().into_iter().flatten();
        if each.any(|e| e["extensions"]["code"] == "LEASE_LOST") {
            return Err(CallError::LeaseLost);
        }
        Err(CallError::Other(errors.to_string()))
    }
}

/// The engine's own work on one event: here it pretends to think for
/// `work_ms`, then writes a reply.
async fn work(event: &Value, work_ms: u64) -> Value {
    tokio::time::sleep(Duration::from_millis(work_ms)).await;
    json!({"repliedTo": event["sequence"]})
}

/// Works on one delivered event, extending its lease every third of
/// `lease_seconds` until the work is done (a heartbeat). `None`: the lease
/// was lost, someone else has the event now.
async fn work_leased(
    api: &Api,
    engine_id: Uuid,
    lease_seconds: u32,
    work_ms: u64,
    event: &Value,
) -> Option<Value> {
    let every = Duration::from_millis(u64::from(lease_seconds) * 1000 / 3);
    let mut heartbeat = interval_at(Instant::now() + every, every);
    let work = work(event, work_ms);
    tokio::pin!(work);
    loop {
        tokio::select! {
            reply = &mut work => return Some(reply),
            _ = heartbeat.tick() => {
                let extended = api
                    .call(
                        "mutation($input: ExtendLeaseInput!) { extendLease(input: $input) { leaseExpiresAt } }",
                        json!({ "input": {
                            "eventId": event["id"], "engineId": engine_id,
                            "leaseId": event["delivery"]["leaseId"], "seconds": lease_seconds
                        }}),
                    )
                    .await;
                match extended {
                    Ok(_) => {}
                    Err(CallError::LeaseLost) => return None,
                    // Two thirds of the lease are left: try again at the next beat.
                    Err(CallError::Other(e)) => eprintln!(
                        "could not extend the lease of sequence {}: {e}",
                        event["sequence"]
                    ),
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let api = Api {
        http: reqwest::Client::new(),
        url: args.url.trim_end_matches('/').to_owned(),
    };

    // The reply type may exist already (another engine, an earlier start).
    let _ = api
        .call(
            "mutation($n: String!) { createEventType(input: {name: $n, category: \"example\"}) { name } }",
            json!({ "n": args.replies }),
        )
        .await;

    // Register, or get the stored state back after a restart.
    let engine = api
        .call(
            "mutation($input: RegisterEngineInput!) { registerEngine(input: $input) { state version } }",
            json!({ "input": {
                "engineId": args.engine_id, "runId": args.run, "engineType": args.engine_type,
                "state": {"handled": 0}
            }}),
        )
        .await?["registerEngine"]
        .clone();
    let mut state = engine["state"].clone();
    let mut version = engine["version"].as_i64().ok_or("no version")?;
    println!(
        "registered: handled {} so far, state version {version}",
        state["handled"]
    );

    // Subscribe with our engineId: what is pending for us, most urgent first,
    // at most `max_in_flight` at once, each leased for `lease_seconds`.
    let ws_url = format!("{}/graphql", api.url.replacen("http", "ws", 1));
    let mut request = ws_url.into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| e.to_string())?;
    let send = |message: Value| Message::Text(message.to_string().into());
    socket
        .send(send(json!({"type": "connection_init"})))
        .await
        .map_err(|e| e.to_string())?;
    socket
        .send(send(json!({"id": "events", "type": "subscribe", "payload": {
            "query": "subscription($run: UUID!, $engine: UUID!, $types: [String!], $window: Int, $lease: Int) {
                events(runId: $run, engineId: $engine, eventTypes: $types, maxInFlight: $window, leaseSeconds: $lease) {
                    id sequence priority payload delivery { leaseId attempt } } }",
            "variables": {"run": args.run, "engine": args.engine_id, "types": [args.handles],
                          "window": args.max_in_flight, "lease": args.lease_seconds}
        }})))
        .await
        .map_err(|e| e.to_string())?;

    // Read the socket (and answer its pings) while the work goes on.
    let mut working = JoinSet::new();
    let mut handled_now = 0;
    loop {
        tokio::select! {
            frame = socket.next() => {
                let Some(frame) = frame else { break };
                let Message::Text(text) = frame.map_err(|e| e.to_string())? else {
                    continue;
                };
                let message: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                match message["type"].as_str() {
                    Some("ping") => socket
                        .send(send(json!({"type": "pong"})))
                        .await
                        .map_err(|e| e.to_string())?,
                    Some("next") => {
                        let event = message["payload"]["data"]["events"].clone();
                        println!(
                            "working on sequence {} (attempt {})",
                            event["sequence"], event["delivery"]["attempt"]
                        );
                        let (api, engine_id) = (api.clone(), args.engine_id);
                        let (lease_seconds, work_ms) = (args.lease_seconds, args.work_ms);
                        working.spawn(async move {
                            let reply =
                                work_leased(&api, engine_id, lease_seconds, work_ms, &event).await;
                            (event, reply)
                        });
                    }
                    Some("complete") => {
                        println!("the run is over");
                        break;
                    }
                    Some("error") => {
                        return Err(format!("subscription failed: {}", message["payload"]));
                    }
                    _ => {}
                }
            }
            Some(finished) = working.join_next() => {
                let (event, reply) = finished.map_err(|e| e.to_string())?;
                let lost = || println!(
                    "lease lost on sequence {}: someone else has it now, moving on",
                    event["sequence"]
                );
                let Some(reply) = reply else {
                    lost();
                    continue;
                };
                let handled = state["handled"].as_i64().unwrap_or(0) + 1;
                let new_state = json!({"handled": handled, "lastSequence": event["sequence"]});

                // Record, reply and checkpoint in one transaction, under our lease.
                let done = api
                    .call(
                        "mutation($input: CompleteEventInput!) { completeEvent(input: $input) { engine { state version } } }",
                        json!({ "input": {
                            "eventId": event["id"], "engineId": args.engine_id,
                            "leaseId": event["delivery"]["leaseId"], "status": "PROCESSED",
                            "emit": [{"runId": args.run, "eventType": args.replies, "payload": reply,
                                      "idempotencyKey": format!("reply-to-{}", event["id"].as_str().unwrap_or(""))}],
                            "state": new_state, "expectedVersion": version
                        }}),
                    )
                    .await;
                let done = match done {
                    Ok(done) => done,
                    Err(CallError::LeaseLost) => {
                        lost();
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                state = done["completeEvent"]["engine"]["state"].clone();
                version = done["completeEvent"]["engine"]["version"]
                    .as_i64()
                    .ok_or("no version")?;
                println!(
                    "completed sequence {} (handled {handled}), attempt {}",
                    event["sequence"], event["delivery"]["attempt"]
                );

                handled_now += 1;
                if args.max_events.is_some_and(|max| handled_now >= max) {
                    break;
                }
            }
        }
    }
    Ok(())
}
