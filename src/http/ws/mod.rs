//! The GraphQL websocket on `/graphql`: `graphql-transport-ws` to the letter
//! (close codes 4400, 4401, 4403, 4408, 4409, 4429; ping and pong), and the
//! legacy `graphql-ws` subprotocol for older clients.
//!
//! Why not async-graphql-axum's `GraphQLWebSocket`: it runs every operation
//! of a connection inside one stream and writes whatever comes next, so one
//! busy subscription delays the others and nothing bounds what waits for a
//! slow client; it has no hook to re-check a revoked key, no per-connection
//! subscription limit, no way to render one event once for many
//! subscribers, and no 1001 close at shutdown. Here:
//!
//! - `connection.rs`: one task reads the socket and runs the protocol;
//! - `operation.rs`: each operation runs in a task of its own;
//! - `writer.rs`: one writer task per connection, fed through a queue
//!   bounded in bytes (`WS_SEND_BUFFER_BYTES`): a slow client slows its
//!   subscriptions down, whose priority queues then hold the most urgent
//!   events first, and the subscriptions of one connection take turns;
//! - `protocol.rs`: the messages of both subprotocols.

mod connection;
mod operation;
mod protocol;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::AppState;
use crate::config::{Limits, Realtime};
use crate::metrics::Metrics;
use connection::Connection;
use protocol::Protocol;
pub use writer::socket_send_buffer;

/// Websocket settings and the count of open connections.
pub struct WsSettings {
    init_timeout: Duration,
    ping_interval: Duration,
    pong_timeout: Duration,
    max_subscriptions: usize,
    /// Bytes queued for the writer of one connection at most.
    send_buffer_bytes: usize,
    /// One permit per connection that may be open (`MAX_WS_CONNECTIONS`).
    places: Arc<Semaphore>,
}

impl WsSettings {
    /// Settings from the configuration.
    pub fn new(realtime: &Realtime, limits: &Limits) -> Self {
        WsSettings {
            init_timeout: Duration::from_millis(realtime.ws_init_timeout_ms),
            ping_interval: Duration::from_millis(realtime.ws_ping_interval_ms),
            pong_timeout: Duration::from_millis(realtime.ws_pong_timeout_ms),
            max_subscriptions: limits.max_subscriptions_per_connection,
            send_buffer_bytes: writer::queue_bytes(limits.ws_send_buffer_bytes),
            places: Arc::new(Semaphore::new(limits.max_ws_connections)),
        }
    }
}

/// Read buffer of each websocket, allocated when it opens: clients send
/// small messages (`subscribe` is a few hundred bytes); a larger one is read
/// in more chunks.
const WS_READ_BUFFER_BYTES: usize = 512;

/// Bytes buffered before a write goes to the socket (a threshold; the
/// buffer grows only as messages need it).
const WS_WRITE_BUFFER_BYTES: usize = 4 * 1024;

/// Numbers connections in the logs.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Holds one of the `MAX_WS_CONNECTIONS` places while a connection is open,
/// and counts it in the connections gauge.
struct ConnectionSlot {
    /// Given back when the slot drops.
    _place: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl ConnectionSlot {
    fn take(settings: &WsSettings, metrics: &Arc<Metrics>) -> Option<Self> {
        let permit = settings.places.clone().try_acquire_owned().ok()?;
        metrics.connections(1.0);
        Some(ConnectionSlot {
            _place: permit,
            metrics: metrics.clone(),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.metrics.connections(-1.0);
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
