//! The GraphQL websocket on `/graphql`: `graphql-transport-ws` to the letter
//! (close codes 4400, 4401, 4408, 4409, 4429; ping and pong), and the legacy
//! `graphql-ws` subprotocol for older clients.
//!
//! One task reads the socket and runs the protocol; each subscription runs
//! in a task of its own and hands its messages to one writer task through a
//! bounded channel. Tokio's channel serves waiting senders in order, so a
//! busy subscription cannot starve the others, and a slow client slows its
//! subscriptions down (their queues then hold the most urgent events first)
//! instead of growing memory here.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::channel::mpsc;
use futures::stream::{SplitSink, SplitStream};
use futures::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::Instrument;

use super::{AppState, render};
use crate::config::{Limits, Realtime};
use crate::graphql::RequestLoader;
use crate::graphql::error::internal_error;
use crate::graphql::subscription::LastEvent;
use crate::metrics::Metrics;
use crate::service::auth::{self, Principal};

/// Websocket settings and the count of open connections.
pub struct WsSettings {
    init_timeout: Duration,
    ping_interval: Duration,
    pong_timeout: Duration,
    max_connections: usize,
    max_subscriptions: usize,
    /// Open connections, against `max_connections`.
    open: AtomicUsize,
}

impl WsSettings {
    /// Settings from the configuration.
    pub fn new(realtime: &Realtime, limits: &Limits) -> Self {
        WsSettings {
            init_timeout: Duration::from_millis(realtime.ws_init_timeout_ms),
            ping_interval: Duration::from_millis(realtime.ws_ping_interval_ms),
            pong_timeout: Duration::from_millis(realtime.ws_pong_timeout_ms),
            max_connections: limits.max_ws_connections,
            max_subscriptions: limits.max_subscriptions_per_connection,
            open: AtomicUsize::new(0),
        }
    }
}

/// Most messages written before one flush.
const WRITE_BATCH: usize = 64;

/// Read buffer of each websocket, allocated when it opens: clients send
/// small messages (`subscribe` is a few hundred bytes); a larger one is read
/// in more chunks.
const WS_READ_BUFFER_BYTES: usize = 512;

/// Bytes buffered before a write goes to the socket (a threshold; the
/// buffer grows only as messages need it).
const WS_WRITE_BUFFER_BYTES: usize = 4 * 1024;

/// Numbers connections in the logs.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Holds one of the `max_connections` places while a connection is open.
struct ConnectionSlot(Arc<WsSettings>, Arc<Metrics>);

impl ConnectionSlot {
    fn take(settings: &Arc<WsSettings>, metrics: &Arc<Metrics>) -> Option<Self> {
        let taken = settings.open.fetch_add(1, Ordering::SeqCst);
        if taken >= settings.max_connections {
            settings.open.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        metrics.connections(1.0);
        Some(ConnectionSlot(settings.clone(), metrics.clone()))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.1.connections(-1.0);
    }
}

/// Counts a running operation for its lifetime, aborted or not.
struct Running(Arc<Metrics>);

impl Running {
    fn start(metrics: &Arc<Metrics>) -> Self {
        metrics.subscriptions(1.0);
        Running(metrics.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.subscriptions(-1.0);
    }
}

/// The two subprotocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `graphql-transport-ws` (the graphql-ws library).
    TransportWs,
    /// `graphql-ws` (the legacy subscriptions-transport-ws).
    Legacy,
}

impl Protocol {
    fn next_type(self) -> &'static str {
        match self {
            Protocol::TransportWs => "next",
            Protocol::Legacy => "data",
        }
    }
}

/// Upgrades `GET /graphql` to the GraphQL websocket.
pub fn upgrade(state: AppState, ws: WebSocketUpgrade) -> Response {
    let Some(slot) = ConnectionSlot::take(&state.ws, &state.ctx.metrics) else {
        let body = json!({"errors": [{"message": "too many websocket connections",
                                       "extensions": {"code": "LIMIT_EXCEEDED"}}]});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    };
    // tungstenite's default 128 KiB read buffer per connection (zero-filled
    // on the first read) would be most of an idle subscription's memory.
    let ws = ws
        .protocols(["graphql-transport-ws", "graphql-ws"])
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES);
    let protocol = match ws.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some("graphql-ws") => Protocol::Legacy,
        _ => Protocol::TransportWs,
    };
    // A root span: the connection outlives the upgrade request.
    let span = tracing::info_span!(
        parent: None,
        "websocket",
        connection = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
        protocol = ?protocol,
    );
    // Captured as an Arc and split outside any future: an async block keeps
    // what it captures for its whole life, so a captured state or socket
    // would stay in every connection's task beside the copy in use.
    let state = Arc::new(state);
    ws.on_upgrade(move |socket| {
        let (sink, incoming) = socket.split();
        async move {
            tracing::debug!("websocket opened");
            Connection::new(state, protocol).run(sink, incoming).await;
            tracing::debug!("websocket closed");
            drop(slot);
        }
        .instrument(span)
    })
}

/// What goes to the writer task.
enum Outgoing {
    Text(String),
    Ping,
    Close(u16, &'static str),
}

/// A message from the client, in either protocol.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Ping {
        #[serde(default)]
        payload: Option<Value>,
    },
    Pong {},
    Subscribe {
        id: String,
        payload: OperationPayload,
    },
    Complete {
        id: String,
    },
    /// Legacy `start`.
    Start {
        id: String,
        payload: OperationPayload,
    },
    /// Legacy `stop`.
    Stop {
        id: String,
    },
    /// Legacy `connection_terminate`.
    ConnectionTerminate {},
}

/// The operation of a `subscribe` (or legacy `start`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OperationPayload {
    query: String,
    #[serde(default)]
    variables: Option<Value>,
    #[serde(default)]
    operation_name: Option<String>,
}

/// Why the reader stops.
enum Stop {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The client went away.
    Gone,
}

struct Connection {
    /// Shared with the connection's operations: one copy per connection.
    state: Arc<AppState>,
    protocol: Protocol,
    /// Who `connection_init` authenticated; none before it.
    principal: Option<Principal>,
    /// When the key was last found active.
    validated_at: Instant,
    /// Running operations by id; the task is aborted when the client completes it.
    operations: HashMap<String, tokio::task::JoinHandle<()>>,
    out: mpsc::Sender<Outgoing>,
    out_rx: Option<mpsc::Receiver<Outgoing>>,
}

impl Connection {
    fn new(state: Arc<AppState>, protocol: Protocol) -> Self {
        // futures' channel, not tokio's: tokio's allocates its first block of
        // 32 slots up front, ~1.5 KiB per idle connection; this one allocates
        // per queued message.
        let (out, out_rx) = mpsc::channel(64);
        Connection {
            state,
            protocol,
            principal: None,
            validated_at: Instant::now(),
            operations: HashMap::new(),
            out,
            out_rx: Some(out_rx),
        }
    }

    async fn run(
        mut self,
        mut sink: SplitSink<WebSocket, Message>,
        mut incoming: SplitStream<WebSocket>,
    ) {
        let mut out_rx = self.out_rx.take().expect("run once");
        let writer = tokio::spawn(async move {
            // Whatever is already queued goes out with one flush: a
            // connection that fell behind catches up in fewer syscalls.
            'connection: while let Some(first) = out_rx.next().await {
                let mut next = Some(first);
                let mut fed = 0;
                while let Some(message) = next.take() {
                    let frame = match message {
                        Outgoing::Text(text) => Message::Text(Utf8Bytes::from(text)),
                        Outgoing::Ping => Message::Ping(Default::default()),
                        Outgoing::Close(code, reason) => {
                            let frame = CloseFrame {
                                code,
                                reason: Utf8Bytes::from_static(reason),
                            };
                            // `send` flushes what was fed before it too.
                            let _ = sink.send(Message::Close(Some(frame))).await;
                            break 'connection;
                        }
                    };
                    if sink.feed(frame).await.is_err() {
                        break 'connection;
                    }
                    fed += 1;
                    if fed < WRITE_BATCH {
                        next = out_rx.try_recv().ok();
                    }
                }
                if sink.flush().await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });

        let settings = self.state.ws.clone();
        let shutdown = self.state.shutdown.clone();
        let init_deadline = Instant::now() + settings.init_timeout;
        let mut last_heard = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let mut tick = tokio::time::interval(
            (settings.ping_interval.min(settings.init_timeout) / 4).min(Duration::from_secs(1)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let stop = loop {
            tokio::select! {
                frame = incoming.next() => {
                    last_heard = Instant::now();
                    ping_sent = None;
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            // Boxed, like `revalidate` below: their database
                            // futures are large, and an idle connection should
                            // not carry their space in its own task.
                            if let Err(stop) = Box::pin(self.on_text(text.as_str())).await {
                                break stop;
                            }
                        }
                        Some(Ok(Message::Binary(_))) => break Stop::Close(4400, "binary messages are not part of the protocol"),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break Stop::Gone,
                    }
                }
                _ = tick.tick() => {
                    self.prune_finished();
                    let now = Instant::now();
                    if self.principal.is_none() && now >= init_deadline {
                        break Stop::Close(4408, "Connection initialisation timeout");
                    }
                    if let Err(stop) = Box::pin(self.revalidate()).await {
                        break stop;
                    }
                    match ping_sent {
                        Some(sent) if now - sent >= settings.pong_timeout => {
                            break Stop::Close(1011, "no answer to ping");
                        }
                        None if now - last_heard >= settings.ping_interval => {
                            ping_sent = Some(now);
                            let ping = match self.protocol {
                                Protocol::TransportWs => Outgoing::Text(json!({"type": "ping"}).to_string()),
                                // The legacy protocol has no ping message: use a websocket ping.
                                Protocol::Legacy => Outgoing::Ping,
                            };
                            let _ = self.out.send(ping).await;
                        }
                        _ => {}
                    }
                }
                () = shutdown.cancelled() => break Stop::Close(1001, "server shutting down"),
            }
        };

        for (_, operation) in self.operations.drain() {
            operation.abort();
        }
        if let Stop::Close(code, reason) = stop {
            let _ = self.out.send(Outgoing::Close(code, reason)).await;
        }
        drop(self.out);
        // A client that stopped reading must not hold the connection open:
        // give the writer a moment to flush, then drop the socket.
        let abort = writer.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .is_err()
        {
            abort.abort();
        }
    }

    /// Forgets operations that ended on their own: a finished task keeps its
    /// allocation until its handle is dropped, and it no longer counts
    /// against the connection's limit.
    fn prune_finished(&mut self) {
        self.operations.retain(|_, op| !op.is_finished());
    }

    /// Closes the connection (4403) once its key is revoked; checks every
    /// couple of seconds.
    async fn revalidate(&mut self) -> Result<(), Stop> {
        let Some(key_id) = self.principal.and_then(|p| p.key_id) else {
            return Ok(());
        };
        if self.validated_at.elapsed() < auth::REVALIDATE_EVERY {
            return Ok(());
        }
        match auth::is_active(&self.state.ctx, key_id).await {
            Ok(true) => {
                self.validated_at = Instant::now();
                Ok(())
            }
            Ok(false) => Err(Stop::Close(4403, "Forbidden: the API key was revoked")),
            // A database hiccup is not a revocation: check again next tick.
            Err(_) => Ok(()),
        }
    }

    async fn send(&mut self, message: Value) {
        let _ = self.out.send(Outgoing::Text(message.to_string())).await;
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Stop> {
        let message: ClientMessage =
            serde_json::from_str(text).map_err(|_| Stop::Close(4400, "invalid message"))?;
        match message {
            ClientMessage::ConnectionInit { payload } => {
                if self.principal.is_some() {
                    return Err(Stop::Close(4429, "Too many initialisation requests"));
                }
                let authorization = payload.as_ref().and_then(|p| {
                    p.get("Authorization")
                        .or_else(|| p.get("authorization"))
                        .and_then(Value::as_str)
                });
                match auth::principal(&self.state.ctx, authorization).await {
                    Ok(principal) => self.principal = Some(principal),
                    Err(_) => return Err(Stop::Close(4403, "Forbidden")),
                }
                self.validated_at = Instant::now();
                self.send(json!({"type": "connection_ack"})).await;
                if self.protocol == Protocol::Legacy {
                    self.send(json!({"type": "ka"})).await;
                }
            }
            ClientMessage::Ping { payload } => {
                let mut pong = json!({"type": "pong"});
                if let Some(payload) = payload {
                    pong["payload"] = payload;
                }
                self.send(pong).await;
            }
            ClientMessage::Pong {} => {}
            ClientMessage::Subscribe { id, payload } | ClientMessage::Start { id, payload } => {
                let Some(principal) = self.principal else {
                    return Err(Stop::Close(4401, "Unauthorized"));
                };
                if self.operations.get(&id).is_some_and(|op| !op.is_finished()) {
                    // graphql-transport-ws: "Subscriber for <id> already exists".
                    return Err(Stop::Close(4409, "Subscriber for this id already exists"));
                }
                self.prune_finished();
                if self.operations.len() >= self.state.ws.max_subscriptions {
                    let error = json!([{"message": format!(
                        "at most {} subscriptions per connection", self.state.ws.max_subscriptions),
                        "extensions": {"code": "LIMIT_EXCEEDED"}}]);
                    self.send(json!({"id": id, "type": "error", "payload": error}))
                        .await;
                    return Ok(());
                }
                // `operation` is filled in from the document once it is parsed.
                let span = tracing::info_span!(
                    "operation",
                    id = %id,
                    operation = tracing::field::Empty
                );
                let task = tokio::spawn(
                    operation(
                        self.state.clone(),
                        principal,
                        self.protocol,
                        id.clone(),
                        payload,
                        self.out.clone(),
                    )
                    .instrument(span),
                );
                self.operations.insert(id, task);
            }
            ClientMessage::Complete { id } | ClientMessage::Stop { id } => {
                if let Some(operation) = self.operations.remove(&id) {
                    operation.abort();
                }
            }
            ClientMessage::ConnectionTerminate {} => return Err(Stop::Close(1000, "terminated")),
        }
        Ok(())
    }
}

/// Runs one operation: its responses as `next`, then `complete`; an operation
/// that fails before its first result gets a single `error`.
async fn operation(
    state: Arc<AppState>,
    principal: Principal,
    protocol: Protocol,
    id: String,
    payload: OperationPayload,
    mut out: mpsc::Sender<Outgoing>,
) {
    let _running = Running::start(&state.ctx.metrics);
    // The executor parses the query once and keeps it; the shape reads that.
    let shape = state.graphql.document(&payload.query).and_then(|document| {
        render::shape_of(&document, &payload.query, payload.operation_name.as_deref())
    });
    let last_event = LastEvent::default();
    let mut request = async_graphql::Request::new(payload.query)
        .data(RequestLoader::uncached())
        .data(principal)
        .data(last_event.clone());
    if let Some(variables) = payload.variables {
        request = request.variables(async_graphql::Variables::from_json(variables));
    }
    if let Some(name) = payload.operation_name {
        request = request.operation_name(name);
    }
    let mut responses = state.graphql.execute_stream(request);
    let mut first = true;
    loop {
        // A panic while producing the next response ends this operation with
        // an INTERNAL error; the connection and its other operations go on.
        let next = std::panic::AssertUnwindSafe(responses.next())
            .catch_unwind()
            .await;
        let response = match next {
            Ok(Some(response)) => response,
            Ok(None) => break,
            Err(_) => {
                tracing::error!(operation = %id, "a subscription panicked");
                let error = json!({"id": id, "type": "error", "payload": [internal_error()]});
                let _ = out.send(Outgoing::Text(error.to_string())).await;
                return;
            }
        };
        let failed_at_start =
            first && response.is_err() && response.data == async_graphql::Value::Null;
        let event = last_event.take();
        let created_at = event.as_ref().map(|event| event.created_at);
        let message = match (&shape, event) {
            (Some(shape), Some(event)) if response.errors.is_empty() => {
                let payload = state.renders.payload(event.id, shape, || {
                    serde_json::to_string(&response).expect("responses serialize")
                });
                let id = serde_json::to_string(&id).expect("strings serialize");
                format!(
                    r#"{{"id":{id},"type":"{}","payload":{payload}}}"#,
                    protocol.next_type()
                )
            }
            _ if failed_at_start => {
                json!({"id": id, "type": "error", "payload": response.errors}).to_string()
            }
            _ => json!({"id": id, "type": protocol.next_type(), "payload": response}).to_string(),
        };
        if out.send(Outgoing::Text(message)).await.is_err() {
            return;
        }
        if let Some(created_at) = created_at {
            let lag = (chrono::Utc::now() - created_at)
                .to_std()
                .unwrap_or_default();
            state.ctx.metrics.delivered(lag);
        }
        if failed_at_start {
            return;
        }
        first = false;
    }
    tracing::debug!("operation complete");
    let _ = out
        .send(Outgoing::Text(
            json!({"id": id, "type": "complete"}).to_string(),
        ))
        .await;
}
