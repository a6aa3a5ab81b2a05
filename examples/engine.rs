//! An example engine: the loop every scenario-hub engine runs.
//!
//! It registers (getting its stored state back when it restarts), subscribes
//! to its run's events with its `engineId` (so it first gets every event it
//! has not completed yet, most urgent first), and completes each event with
//! `completeEvent`: the processing record, a follow-up event and its new
//! state, in one transaction. Kill it at any point and start it again with
//! the same `--engine-id`: it picks up exactly where it stopped.
//!
//! ```sh
//! cargo run --example engine -- --run RUN_ID --engine-id 6f1c7b5e-0000-4000-8000-000000000001
//! ```

use std::time::Duration;

use clap::Parser;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
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
}

/// A tiny GraphQL-over-HTTP client.
struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    async fn call(&self, query: &str, variables: Value) -> Result<Value, String> {
        let response: Value = self
            .http
            .post(format!("{}/graphql", self.url))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match response.get("errors") {
            Some(errors) => Err(errors.to_string()),
            None => Ok(response["data"].clone()),
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

    // Subscribe with our engineId: the backlog first, then live events.
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
            "query": "subscription($run: UUID!, $engine: UUID!, $types: [String!]) {
                events(runId: $run, engineId: $engine, eventTypes: $types) { id sequence priority payload } }",
            "variables": {"run": args.run, "engine": args.engine_id, "types": [args.handles]}
        }})))
        .await
        .map_err(|e| e.to_string())?;

    let mut handled_now = 0;
    while let Some(frame) = socket.next().await {
        let Message::Text(text) = frame.map_err(|e| e.to_string())? else {
            continue;
        };
        let message: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        match message["type"].as_str() {
            Some("ping") => {
                socket
                    .send(send(json!({"type": "pong"})))
                    .await
                    .map_err(|e| e.to_string())?;
                continue;
            }
            Some("next") => {}
            Some("complete") => {
                println!("the run is over");
                break;
            }
            Some("error") => return Err(format!("subscription failed: {}", message["payload"])),
            _ => continue,
        }
        let event = &message["payload"]["data"]["events"];

        // The engine's own work.
        tokio::time::sleep(Duration::from_millis(args.work_ms)).await;
        let handled = state["handled"].as_i64().unwrap_or(0) + 1;
        let new_state = json!({"handled": handled, "lastSequence": event["sequence"]});

        // Record, reply and checkpoint in one transaction.
        let done = api
            .call(
                "mutation($input: CompleteEventInput!) { completeEvent(input: $input) { engine { state version } } }",
                json!({ "input": {
                    "eventId": event["id"], "engineId": args.engine_id, "status": "PROCESSED",
                    "emit": [{"runId": args.run, "eventType": args.replies,
                              "payload": {"repliedTo": event["sequence"]},
                              "idempotencyKey": format!("reply-to-{}", event["id"].as_str().unwrap_or(""))}],
                    "state": new_state, "expectedVersion": version
                }}),
            )
            .await?;
        state = done["completeEvent"]["engine"]["state"].clone();
        version = done["completeEvent"]["engine"]["version"]
            .as_i64()
            .ok_or("no version")?;
        println!(
            "completed sequence {} (handled {handled})",
            event["sequence"]
        );

        handled_now += 1;
        if args.max_events.is_some_and(|max| handled_now >= max) {
            break;
        }
    }
    Ok(())
}
