//! A run feed: one task per watched run that, each time the doorbell rings,
//! reads the run's new events from the database once and broadcasts them
//! to every subscriber of the run in this process. A publisher of this
//! process that holds its events as stored hands them over instead
//! ([`RunFeed::hand`]): they go out without the read, when they follow
//! what the feed sent last.

use std::sync::{Arc, Mutex};

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
    sent: Arc<Sent>,
    /// Records and released leases.
    leases: broadcast::Sender<LeaseNews>,
}

/// The broadcast of a run's events and the last sequence it carried, under
/// one lock: the feed's reads and the publishers' hand-overs both send
/// here, and a new receiver learns exactly where its batches start.
struct Sent {
    tx: broadcast::Sender<Arc<FeedBatch>>,
    cursor: Mutex<i64>,
}

impl Sent {
    fn cursor(&self) -> i64 {
        *self.cursor.lock().expect("feed cursor lock poisoned")
    }

    /// Sends the events of `events` (consecutive, in sequence order) that
    /// are past the cursor; `false`, sending nothing, when they do not
    /// start right after it (an earlier commit's events are still to come).
    fn send(&self, mut events: Vec<Arc<event_instance::Model>>) -> bool {
        let mut cursor = self.cursor.lock().expect("feed cursor lock poisoned");
        events.retain(|e| e.sequence > *cursor);
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return true;
        };
        if first.sequence != *cursor + 1 {
            return false;
        }
        let after = *cursor;
        *cursor = last.sequence;
        // No receiver is fine: the hub prunes this feed on its next check.
        let _ = self.tx.send(Arc::new(FeedBatch { after, events }));
        true
    }
}

impl RunFeed {
    /// Starts the feed of `run_id` from sequence `start`, with a first receiver.
    pub fn start(run_id: Uuid, start: i64, hub: Arc<Hub>) -> (Arc<RunFeed>, FeedReceiver) {
        let (bell, bell_rx) = watch::channel(start);
        let (tx, _) = broadcast::channel(hub.config.feed_capacity);
        let (leases, _) = broadcast::channel(hub.config.feed_capacity);
        let sent = Arc::new(Sent {
            tx,
            cursor: Mutex::new(start),
        });
        let feed = Arc::new(RunFeed {
            bell,
            sent: sent.clone(),
            leases,
        });
        let receiver = feed.subscribe();
        tokio::spawn(run(run_id, hub, bell_rx, sent));
        (feed, receiver)
    }

    /// Another receiver of the run's new events and lease news.
    pub fn subscribe(&self) -> FeedReceiver {
        let leases = self.leases.subscribe();
        let cursor = self.sent.cursor.lock().expect("feed cursor lock poisoned");
        FeedReceiver {
            batches: self.sent.tx.subscribe(),
            leases,
            from: *cursor,
        }
    }

    /// Tells the run's subscriptions about its leases.
    pub fn tell(&self, news: LeaseNews) {
        let _ = self.leases.send(news);
    }

    /// Whether anyone still listens.
    pub fn has_subscribers(&self) -> bool {
        self.sent.tx.receiver_count() > 0
    }

    /// Sends events this process committed, as stored, consecutive and in
    /// sequence order, without reading them back; when an earlier commit's
    /// events have not gone out yet, rings the doorbell instead (the read
    /// brings both, in order).
    pub fn hand(&self, events: Vec<event_instance::Model>) {
        let Some(last) = events.last().map(|e| e.sequence) else {
            return;
        };
        if self.sent.send(events.into_iter().map(Arc::new).collect()) {
            // Known, and nothing to read for it.
            self.bell.send_if_modified(|known| {
                *known = (*known).max(last);
                false
            });
        } else {
            self.ring(last);
        }
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
async fn run(run_id: Uuid, hub: Arc<Hub>, mut bell: watch::Receiver<i64>, sent: Arc<Sent>) {
    let db = hub.db().conn.clone();
    let shutdown = hub.shutdown_token().clone();
    drop(hub);
    // The first pass reads what committed between the first subscriber's
    // read of the run and the feed's start, whose doorbells nobody heard.
    let mut first_pass = true;
    loop {
        while first_pass || *bell.borrow_and_update() > sent.cursor() {
            first_pass = false;
            let cursor = sent.cursor();
            let page = service::event::after_sequence(&db, run_id, cursor, PAGE).await;
            let events = match page {
                Ok(events) => events,
                Err(err) => {
                    tracing::warn!(%run_id, error = %err, "run feed read failed, retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            if events.is_empty() {
                // Rung ahead of the commit being visible: the next ring or
                // the periodic check brings it.
                break;
            }
            // What committed is a prefix of the run's sequences, so a read
            // from `cursor` follows on whatever was handed over meanwhile.
            if !sent.send(events.into_iter().map(Arc::new).collect()) {
                tracing::warn!(%run_id, cursor, "run feed read left a gap, reading again");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                first_pass = true;
            }
        }
        tokio::select! {
            changed = bell.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}
