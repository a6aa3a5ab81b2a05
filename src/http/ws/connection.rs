//! One websocket connection: the task that reads the socket and runs the
//! protocol (init and its timeout, ping and pong, subscribe and complete,
//! key revalidation), starting each operation in a task of its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures::StreamExt;
use futures::stream::{SplitSink, SplitStream};
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::Instrument;

use super::operation::operation;
use super::protocol::{ClientMessage, Protocol};
use super::writer::{self, Outbox, Outgoing};
use crate::http::AppState;
use crate::service::auth::{self, Principal};

/// Why the reader stops.
enum Stop {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The client went away.
    Gone,
}

pub(super) struct Connection {
    /// Shared with the connection's operations: one copy per connection.
    state: Arc<AppState>,
    protocol: Protocol,
    /// Who `connection_init` authenticated; none before it.
    principal: Option<Principal>,
    /// When the key was last found active.
    validated_at: Instant,
    /// Running operations by id; the task is aborted when the client completes it.
    operations: HashMap<String, tokio::task::JoinHandle<()>>,
    out: Outbox,
    out_rx: Option<futures::channel::mpsc::UnboundedReceiver<Outgoing>>,
}

impl Connection {
    pub(super) fn new(state: Arc<AppState>, protocol: Protocol) -> Self {
        let (out, out_rx) = Outbox::new(state.ws.send_buffer_bytes);
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

    pub(super) async fn run(
        mut self,
        sink: SplitSink<WebSocket, Message>,
        mut incoming: SplitStream<WebSocket>,
    ) {
        let out_rx = self.out_rx.take().expect("run once");
        let writer = tokio::spawn(writer::run(sink, out_rx));

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
                                Protocol::TransportWs => Outgoing::Text(json!({"type": "ping"}).to_string(), None),
                                // The legacy protocol has no ping message: use a websocket ping.
                                Protocol::Legacy => Outgoing::Ping,
                            };
                            let _ = self.out.control(ping);
                        }
                        _ => {}
                    }
                }
                () = shutdown.cancelled() => break Stop::Close(1001, "server shutting down"),
            }
        };

        for (_, operation) in self.operations.drain() {
            operation.abort();
            // Dropped before the connection ends: an engine stream releases
            // its leases on drop, and shutdown waits for those releases.
            let _ = operation.await;
        }
        if let Stop::Close(code, reason) = stop {
            let _ = self.out.control(Outgoing::Close(code, reason));
        }
        self.out.close();
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
        let _ = self.out.text(message.to_string()).await;
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
