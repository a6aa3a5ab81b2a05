//! A run feed: one task per watched run that, each time the doorbell rings,
//! reads the run's new events from the database once and broadcasts them
//! to every subscriber of the run in this process.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use super::Hub;
use crate::entity::event_instance;
use crate::service;

/// Events read in one statement.
const PAGE: u64 = 1000;

/// Consecutive events of a run, as the feed read them.
#[derive(Debug)]
pub struct FeedBatch {
    /// The sequence right before the first event: a subscriber whose cursor
    /// is below it missed events and reads them from the database.
    pub after: i64,
    /// The events, in sequence order.
    pub events: Vec<Arc<event_instance::Model>>,
}

/// News about the leases of a run: what opens an engine's window or makes
/// an event pending again, besides new events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseNews {
    /// The engine recorded the events (a request's batch is one piece of
    /// news, so that a burst of records does not overrun the channel).
    Recorded {
        /// The engine.
        engine_id: Uuid,
        /// The events.
        event_ids: Arc<[Uuid]>,
        /// They failed with attempts left: pending again, maybe after a backoff.
        again: bool,
    },
    /// Some leases ended early (a subscription ended): their events are
    /// pending again.
    Released,
}

/// What a subscriber of a run receives.
pub struct FeedReceiver {
    /// New events.
    pub batches: broadcast::Receiver<Arc<FeedBatch>>,
    /// Records and released leases of the run.
    pub leases: broadcast::Receiver<LeaseNews>,
    /// `batches` brings every event after this sequence.
    pub from: i64,
}

/// The doorbell and the broadcast of one run.
pub struct RunFeed {
    /// The highest committed sequence anyone told us of.
    bell: watch::Sender<i64>,
    /// New events, to every subscriber of the run.
    tx: broadcast::Sender<Arc<FeedBatch>>,
    /// The last sequence read, stored before its batch is sent: a receiver
    /// taken before reading it gets every event after it.
    cursor: Arc<AtomicI64>,
    /// Records and released leases.
    leases: broadcast::Sender<LeaseNews>,
}

impl RunFeed {
    /// Starts the feed of `run_id` from sequence `start`, with a first receiver.
    pub fn start(run_id: Uuid, start: i64, hub: Arc<Hub>) -> (Arc<RunFeed>, FeedReceiver) {
        let (bell, bell_rx) = watch::channel(start);
        let (tx, _) = broadcast::channel(hub.config.feed_capacity);
        let (leases, _) = broadcast::channel(hub.config.feed_capacity);
        let cursor = Arc::new(AtomicI64::new(start));
        let feed = Arc::new(RunFeed {
            bell,
            tx: tx.clone(),
            cursor: cursor.clone(),
            leases,
        });
        let receiver = feed.subscribe();
        tokio::spawn(run(run_id, hub, bell_rx, tx, cursor));
        (feed, receiver)
    }

    /// Another receiver of the run's new events and lease news.
    pub fn subscribe(&self) -> FeedReceiver {
        let batches = self.tx.subscribe();
        let leases = self.leases.subscribe();
        FeedReceiver {
            batches,
            leases,
            from: self.cursor.load(Ordering::SeqCst),
        }
    }

    /// Tells the run's subscriptions about its leases.
    pub fn tell(&self, news: LeaseNews) {
        let _ = self.leases.send(news);
    }

    /// Whether anyone still listens.
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Wakes the feed if `sequence` is news.
    pub fn ring(&self, sequence: i64) {
        self.bell.send_if_modified(|known| {
            if sequence > *known {
                *known = sequence;
                true
            } else {
                false
            }
        });
    }
}

/// The feed's task: ends when the hub drops the feed (no subscribers left)
/// or the server shuts down.
async fn run(
    run_id: Uuid,
    hub: Arc<Hub>,
    mut bell: watch::Receiver<i64>,
    tx: broadcast::Sender<Arc<FeedBatch>>,
    shared_cursor: Arc<AtomicI64>,
) {
    let db = hub.db().conn.clone();
    let shutdown = hub.shutdown_token().clone();
    drop(hub);
    let mut cursor = shared_cursor.load(Ordering::SeqCst);
    // The first pass reads what committed between the first subscriber's
    // read of the run and the feed's start, whose doorbells nobody heard.
    let mut first_pass = true;
    loop {
        while first_pass || *bell.borrow_and_update() > cursor {
            first_pass = false;
            let page = service::event::after_sequence(&db, run_id, cursor, PAGE).await;
            let events = match page {
                Ok(events) => events,
                Err(err) => {
                    tracing::warn!(%run_id, error = %err, "run feed read failed, retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(last) = events.last().map(|e| e.sequence) else {
                // Rung ahead of the commit being visible: the next ring or
                // the periodic check brings it.
                break;
            };
            let batch = FeedBatch {
                after: cursor,
                events: events.into_iter().map(Arc::new).collect(),
            };
            cursor = last;
            shared_cursor.store(cursor, Ordering::SeqCst);
            // No receiver is fine: the hub prunes this feed on its next check.
            let _ = tx.send(Arc::new(batch));
        }
        tokio::select! {
            changed = bell.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}
