//! A run feed: one task per watched run that, each time the doorbell rings,
//! reads the run's new events from the database once and broadcasts them
//! to every subscriber of the run in this process.

use std::sync::Arc;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use super::Hub;
use crate::entity::{event_instance, scenario_run};

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

/// The doorbell and the broadcast of one run.
pub struct RunFeed {
    /// The highest committed sequence anyone told us of.
    bell: watch::Sender<i64>,
    /// New events, to every subscriber of the run.
    tx: broadcast::Sender<Arc<FeedBatch>>,
}

impl RunFeed {
    /// Starts the feed of `run_id` and returns it with a first receiver.
    pub fn start(
        run_id: Uuid,
        hub: Arc<Hub>,
    ) -> (Arc<RunFeed>, broadcast::Receiver<Arc<FeedBatch>>) {
        let (bell, bell_rx) = watch::channel(0);
        let (tx, rx) = broadcast::channel(hub.config.feed_capacity);
        let feed = Arc::new(RunFeed {
            bell,
            tx: tx.clone(),
        });
        tokio::spawn(run(run_id, hub, bell_rx, tx));
        (feed, rx)
    }

    /// Another receiver of the run's new events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedBatch>> {
        self.tx.subscribe()
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
) {
    let db = hub.db().conn.clone();
    let shutdown = hub.shutdown_token().clone();
    drop(hub);
    // Start from what is committed now; subscribers read anything older
    // themselves (their backlog, or the gap a batch's `after` reveals).
    let mut cursor = loop {
        match scenario_run::Entity::find_by_id(run_id).one(&db).await {
            Ok(run) => break run.map_or(0, |r| r.last_sequence),
            Err(err) => {
                tracing::warn!(%run_id, error = %err, "run feed cannot start, retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    loop {
        while *bell.borrow_and_update() > cursor {
            let page = event_instance::Entity::find()
                .filter(event_instance::Column::RunId.eq(run_id))
                .filter(event_instance::Column::Sequence.gt(cursor))
                .order_by_asc(event_instance::Column::Sequence)
                .limit(PAGE)
                .all(&db)
                .await;
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
            // No receiver is fine: the hub prunes this feed on its next check.
            let _ = tx.send(Arc::new(batch));
        }
        tokio::select! {
            changed = bell.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}
