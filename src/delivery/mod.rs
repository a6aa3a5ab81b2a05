//! Event delivery: the per-run feeds that read new events once per run and
//! fan them out in memory, the doorbells that wake them, and the
//! subscription streams that put each engine's events in priority order.
//!
//! A doorbell carries no data, only "run R has committed up to sequence N".
//! Whatever rings it (a local publisher, a PostgreSQL NOTIFY from another
//! replica, the periodic check) may drop or lag: the feed reads what is new
//! from the database by sequence, and a subscriber that misses a batch
//! reads the gap from the database too. The one exception is a publisher
//! of this process holding its rows as stored: it hands them to the feed,
//! which sends them without the read when they follow on its cursor.

mod engine;
mod feed;
mod pg;
pub mod subscription;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::db::Db;
use crate::service::CommitListener;
use crate::service::event_type::EventTypeCache;
pub use feed::{FeedBatch, FeedReceiver, LeaseNews};

/// How delivery is tuned.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// How often every watched run's `last_sequence` is checked, so that a
    /// lost doorbell delays delivery by at most this long.
    pub poll_interval: Duration,
    /// Batches a run feed keeps for slow subscribers before they must read
    /// the gap from the database.
    pub feed_capacity: usize,
    /// Events a subscription holds in memory before it stops taking live
    /// batches and reads them later from the database.
    pub queue_capacity: usize,
    /// How often an engine's `lastSeenAt` is refreshed while it is subscribed.
    pub presence_interval: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            poll_interval: Duration::from_secs(2),
            feed_capacity: 256,
            queue_capacity: 10_000,
            presence_interval: Duration::from_secs(5),
        }
    }
}

/// The delivery hub of one server process.
pub struct Hub {
    /// The database, for feeds and checks.
    db: Db,
    /// Tuning.
    pub config: DeliveryConfig,
    /// The feeds of runs that have subscribers. A std Mutex: held only to
    /// look up, insert or prune, never across an await.
    feeds: Mutex<HashMap<Uuid, Arc<feed::RunFeed>>>,
    /// Doorbells to send to other replicas (PostgreSQL only).
    notify: Option<mpsc::UnboundedSender<Doorbell>>,
    /// Stops the background tasks.
    shutdown: CancellationToken,
    /// Tags this process's NOTIFYs, so that its listener skips them: what
    /// happened here was already rung here.
    replica_id: Uuid,
    /// Open engine streams and the lease releases of ended ones, waited for
    /// at shutdown so that a stopped server's engines' events go out again
    /// at once elsewhere. Upgraded websockets outlive axum's graceful
    /// shutdown, so their streams are counted here, not there.
    releases: TaskTracker,
    /// The services' event type cache: cleared when another replica changes
    /// a type, trusted only while this replica hears of such changes.
    event_types: Arc<EventTypeCache>,
    /// True once the LISTEN connection's first attempt has ended (at once
    /// on SQLite): see [`Hub::listening`].
    listening: watch::Receiver<bool>,
}

impl Hub {
    /// Starts the hub and its background tasks: the periodic check and, on
    /// PostgreSQL, the NOTIFY sender and the LISTEN connection.
    pub fn start(
        db: Db,
        database_url: &str,
        config: DeliveryConfig,
        event_types: Arc<EventTypeCache>,
        shutdown: CancellationToken,
    ) -> Arc<Hub> {
        let is_postgres = database_url.starts_with("postgres");
        let (listened, listening) = watch::channel(!is_postgres);
        let (notify, notify_rx) = if is_postgres {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let hub = Arc::new(Hub {
            db,
            config,
            feeds: Mutex::new(HashMap::new()),
            notify,
            shutdown: shutdown.clone(),
            replica_id: Uuid::new_v4(),
            releases: TaskTracker::new(),
            event_types,
            listening,
        });
        tokio::spawn(periodic_check(hub.clone()));
        if let Some(rx) = notify_rx {
            tokio::spawn(pg::send_notifications(
                database_url.to_owned(),
                hub.replica_id,
                rx,
                shutdown.clone(),
            ));
            tokio::spawn(pg::listen(
                database_url.to_owned(),
                Arc::downgrade(&hub),
                listened,
                shutdown,
            ));
        }
        hub
    }

    /// Returns once this replica hears other replicas' changes, or has
    /// tried to and goes on trying in the background. Until then event types
    /// are read around the cache, a statement per request: a server waits
    /// for this before it serves.
    pub async fn listening(&self) {
        let mut listening = self.listening.clone();
        // An error means the sender is gone: the listener stopped (shutdown).
        let _ = listening.wait_for(|done| *done).await;
    }

    /// The event type cache, which the LISTEN connection vouches for.
    pub(crate) fn event_types(&self) -> &EventTypeCache {
        &self.event_types
    }

    /// The database of the hub.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// A receiver of the run's new events, for a subscriber that has read
    /// the run up to `seen`, and the sequence after which the receiver gets
    /// every event: if that is past `seen`, the subscriber reads the gap from
    /// the database. The feed starts (from `seen`) with the run's first subscriber.
    pub fn subscribe(self: &Arc<Self>, run_id: Uuid, seen: i64) -> FeedReceiver {
        let mut feeds = self.feeds.lock().expect("feeds lock poisoned");
        if let Some(feed) = feeds.get(&run_id) {
            return feed.subscribe();
        }
        let (feed, receiver) = feed::RunFeed::start(run_id, seen, self.clone());
        feeds.insert(run_id, feed);
        receiver
    }

    /// Rings the run's doorbell in this process: it has committed up to `sequence`.
    pub fn ring(&self, run_id: Uuid, sequence: i64) {
        if let Some(feed) = self.feed(run_id) {
            feed.ring(sequence);
        }
    }

    /// The run's feed in this process, if it has subscribers.
    fn feed(&self, run_id: Uuid) -> Option<Arc<feed::RunFeed>> {
        self.feeds
            .lock()
            .expect("feeds lock poisoned")
            .get(&run_id)
            .cloned()
    }

    /// Rings every watched run with its stored `last_sequence`: the periodic
    /// check, and the catch-up after a lost LISTEN connection.
    pub async fn check_all(&self) {
        let runs: Vec<Uuid> = {
            let mut feeds = self.feeds.lock().expect("feeds lock poisoned");
            feeds.retain(|_, feed| feed.has_subscribers());
            feeds.keys().copied().collect()
        };
        if runs.is_empty() {
            return;
        }
        let heads = crate::service::run::last_sequences(&self.db.conn, runs).await;
        match heads {
            Ok(heads) => {
                for (run_id, sequence) in heads {
                    self.ring(run_id, sequence);
                }
            }
            Err(err) => tracing::warn!(error = %err, "periodic delivery check failed"),
        }
    }

    /// The tag of this process's NOTIFYs.
    pub fn replica_id(&self) -> Uuid {
        self.replica_id
    }

    /// Runs a lease release in the background, tracked for shutdown.
    pub fn release(&self, release: impl Future<Output = ()> + Send + 'static) {
        self.releases.spawn(release);
    }

    /// Counts an engine stream as open until the token is dropped.
    pub fn track_stream(&self) -> tokio_util::task::task_tracker::TaskTrackerToken {
        self.releases.token()
    }

    /// Waits, at most `timeout`, for open engine streams to end and for the
    /// lease releases under way.
    pub async fn settle(&self, timeout: Duration) {
        self.releases.close();
        if tokio::time::timeout(timeout, self.releases.wait())
            .await
            .is_err()
        {
            tracing::warn!("lease releases still running at shutdown");
        }
    }

    /// Cancelled when the server shuts down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }
}

/// What one replica tells the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Doorbell {
    /// The run has committed events up to this sequence.
    Committed {
        /// The run.
        run_id: Uuid,
        /// Its highest committed sequence.
        sequence: i64,
    },
    /// The engine recorded the events: its window has room again.
    Recorded {
        /// The run.
        run_id: Uuid,
        /// The engine.
        engine_id: Uuid,
        /// The events.
        event_ids: Arc<[Uuid]>,
        /// They failed with attempts left: pending again, maybe after a backoff.
        again: bool,
    },
    /// Leases of the run were released early: their events are pending again.
    Released {
        /// The run.
        run_id: Uuid,
    },
    /// An event type changed: cached event types are stale.
    EventTypesChanged,
}

impl Hub {
    /// Acts on a doorbell in this process.
    pub fn ring_local(&self, doorbell: Doorbell) {
        match doorbell {
            Doorbell::Committed { run_id, sequence } => self.ring(run_id, sequence),
            Doorbell::Recorded {
                run_id,
                engine_id,
                event_ids,
                again,
            } => self.tell(
                run_id,
                LeaseNews::Recorded {
                    engine_id,
                    event_ids,
                    again,
                },
            ),
            Doorbell::Released { run_id } => self.tell(run_id, LeaseNews::Released),
            Doorbell::EventTypesChanged => self.event_types.clear(),
        }
    }

    fn tell(&self, run_id: Uuid, news: LeaseNews) {
        if let Some(feed) = self.feed(run_id) {
            feed.tell(news);
        }
    }

    fn ring_everywhere(&self, doorbell: Doorbell) {
        self.ring_replicas(&doorbell);
        self.ring_local(doorbell);
    }

    /// Sends the doorbell to the other replicas (PostgreSQL's NOTIFY).
    fn ring_replicas(&self, doorbell: &Doorbell) {
        if let Some(notify) = &self.notify {
            let _ = notify.send(doorbell.clone());
        }
    }
}

impl CommitListener for Hub {
    fn committed(
        &self,
        run_id: Uuid,
        sequence: i64,
        stored: Option<Vec<crate::entity::event_instance::Model>>,
    ) {
        let doorbell = Doorbell::Committed { run_id, sequence };
        let Some(stored) = stored else {
            return self.ring_everywhere(doorbell);
        };
        self.ring_replicas(&doorbell);
        if let Some(feed) = self.feed(run_id) {
            feed.hand(stored);
        }
    }

    fn recorded(&self, run_id: Uuid, engine_id: Uuid, event_ids: &[Uuid], again: bool) {
        self.ring_everywhere(Doorbell::Recorded {
            run_id,
            engine_id,
            event_ids: event_ids.into(),
            again,
        });
    }

    fn released(&self, run_id: Uuid) {
        self.ring_everywhere(Doorbell::Released { run_id });
    }

    fn event_types_changed(&self) {
        self.ring_everywhere(Doorbell::EventTypesChanged);
    }

    fn watches(&self, run_id: Uuid) -> bool {
        self.feed(run_id).is_some()
    }
}

async fn periodic_check(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(hub.config.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => hub.check_all().await,
            () = hub.shutdown.cancelled() => return,
        }
    }
}
