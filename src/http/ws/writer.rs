//! The writer of one websocket connection and the queue that feeds it.
//!
//! The queue is bounded in bytes, not messages: an operation waits for room
//! before it queues a message (tokio's semaphore serves waiters in order, so
//! the subscriptions of a connection take turns), and the room comes back
//! once the writer has handed the message to the socket. With 150 KB
//! payloads a bound of 64 messages would hold 9.6 MB in front of an urgent
//! event; a bound in bytes holds as much for large events as for small.
//! The socket's send buffer is bounded too (`socket_send_buffer`), since on
//! loopback the kernel would otherwise let it grow to megabytes.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::channel::mpsc;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most messages written before one flush.
const WRITE_BATCH: usize = 64;

/// The part of `WS_SEND_BUFFER_BYTES` that the writer's queue may hold; the
/// socket's send buffer holds the rest.
pub(super) fn queue_bytes(total: usize) -> usize {
    (total / 2).max(1)
}

/// The socket send buffer (`SO_SNDBUF`) for a connection bound to
/// `total` bytes past its queues.
pub fn socket_send_buffer(total: usize) -> usize {
    total - queue_bytes(total)
}

/// What goes to the writer task.
pub(super) enum Outgoing {
    /// A text message, with the queue room it holds until it is written.
    Text(String, Option<OwnedSemaphorePermit>),
    /// A websocket ping (the legacy protocol has no ping message).
    Ping,
    /// Close with this code and reason, then stop.
    Close(u16, &'static str),
}

/// The writer went away: the connection is closing.
#[derive(Debug)]
pub(super) struct Closed;

/// The sending side of a connection's queue, shared by its operations.
#[derive(Clone)]
pub(super) struct Outbox {
    // futures' channel, not tokio's: tokio's allocates its first block of
    // 32 slots up front, ~1.5 KiB per idle connection; this one allocates
    // per queued message. Unbounded: `room` bounds it.
    tx: mpsc::UnboundedSender<Outgoing>,
    room: Arc<Semaphore>,
    capacity: usize,
}

impl Outbox {
    /// A queue of `capacity` bytes and its receiving end.
    pub(super) fn new(capacity: usize) -> (Outbox, mpsc::UnboundedReceiver<Outgoing>) {
        let (tx, rx) = mpsc::unbounded();
        let outbox = Outbox {
            tx,
            room: Arc::new(Semaphore::new(capacity)),
            capacity,
        };
        (outbox, rx)
    }

    /// Queues a text message once there is room for it (a message larger
    /// than the whole queue waits until the queue is empty).
    pub(super) async fn text(&self, text: String) -> Result<(), Closed> {
        let bytes = text.len().clamp(1, self.capacity);
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        let permit = self
            .room
            .clone()
            .acquire_many_owned(bytes)
            .await
            .map_err(|_| Closed)?;
        self.tx
            .unbounded_send(Outgoing::Text(text, Some(permit)))
            .map_err(|_| Closed)
    }

    /// Queues a control message at once, past the byte bound.
    pub(super) fn control(&self, message: Outgoing) -> Result<(), Closed> {
        self.tx.unbounded_send(message).map_err(|_| Closed)
    }

    /// Stops taking messages; the writer ends when the queue is drained.
    pub(super) fn close(&self) {
        self.tx.close_channel();
        self.room.close();
    }
}

/// Writes what the queue brings until a close or the end of the queue.
/// Whatever is already queued goes out with one flush: a connection that
/// fell behind catches up in fewer syscalls.
pub(super) async fn run(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut written: Vec<OwnedSemaphorePermit> = Vec::new();
    'connection: while let Some(first) = queue.next().await {
        let mut next = Some(first);
        let mut fed = 0;
        while let Some(message) = next.take() {
            let frame = match message {
                Outgoing::Text(text, permit) => {
                    written.extend(permit);
                    Message::Text(Utf8Bytes::from(text))
                }
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
                next = queue.try_recv().ok();
            }
        }
        if sink.flush().await.is_err() {
            break;
        }
        // In the socket now: the room goes back to the operations.
        written.clear();
    }
    let _ = sink.close().await;
}
