//! An engine's `events` subscription: flow-controlled and leased.
//!
//! At most `maxInFlight` delivered events are unrecorded at once. Whenever
//! the window has room and something may have become deliverable (a new
//! event, a record, a released or expired lease, a delayed event or a
//! backoff coming due), the stream asks the service layer for the most
//! urgent deliverable events (`service::pending`, one rule) and leases them
//! (`service::lease::claim`, one conditional upsert). Engine clients read
//! the socket eagerly, so the order that counts is the order in which the
//! server lets events go; with `maxInFlight: 1` that is exactly priority
//! order at the moment the engine records its previous event.
//!
//! The feed only wakes the stream here: what to send is always read from
//! the database, so a missed doorbell costs latency (until the periodic
//! check), never an event. In-flight leases are re-read when one of them
//! is due to expire and every `poll_interval`, which also catches a record
//! whose doorbell was lost.
//!
//! The reads go forward: the stream keeps a scan position in priority
//! order, before which everything deliverable is already in its hands, so
//! a backlog is read once, not once per record (done events stay in the
//! priority index). What becomes deliverable before that position and is
//! known by id (a more urgent live event, an own lease that expired, an
//! own failure to retry) waits in `urgent`; anything else (released
//! leases, a timer, a missed batch) starts the scan over.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::Stream;
use tokio::sync::broadcast::{self, error::TryRecvError};
use uuid::Uuid;

use super::subscription::{AbortOnDrop, Delivered, closes_run, keep_present, selected};
use super::{FeedBatch, Hub, LeaseNews};
use crate::entity::{engine_state, event_instance};
use crate::error::AppResult;
use crate::service::event::{EventCursor, EventFilter, EventOrder};
use crate::service::lease::{self, Wanted};
use crate::service::page::PageRequest;
use crate::service::pending::{self, Scope};
use crate::service::{self, Ctx};

/// What an engine subscription asks for, checked.
#[derive(Debug, Clone)]
pub struct EngineRequest {
    /// The engine, registered on the run.
    pub engine: engine_state::Model,
    /// Only these event types.
    pub event_types: Option<Vec<String>>,
    /// Only events of at least this priority.
    pub min_priority: Option<i32>,
    /// Most unrecorded deliveries at once.
    pub max_in_flight: usize,
    /// Lease length for every event, instead of each event type's.
    pub lease_seconds: Option<i32>,
}

/// A delivery the engine has not recorded yet.
#[derive(Debug, Clone, Copy)]
struct Held {
    lease_id: Uuid,
    expires: DateTime<Utc>,
    at: Position,
    /// It has a partition key: its record lets the key's next event go.
    keyed: bool,
}

/// An event's place in priority order (most urgent first), with its id.
type Position = (Reverse<i32>, i64, Uuid);

fn position(event: &event_instance::Model) -> Position {
    (Reverse(event.priority), event.sequence, event.id)
}

struct EngineStream {
    ctx: Ctx,
    hub: Arc<Hub>,
    request: EngineRequest,
    types: Option<HashSet<String>>,
    /// Lease length by event type, read once per type.
    lease_seconds: HashMap<String, i32>,
    in_flight: HashMap<Uuid, Held>,
    /// Leases of a claim under way: if the stream is dropped before it
    /// knows what it got, these are released with the rest.
    claiming: Vec<Uuid>,
    /// `in_flight.len()` as last added to the server's in-flight gauge.
    counted: usize,
    /// Leased, not yet handed to the client.
    ready: VecDeque<Delivered>,
    /// Something may be deliverable: read the database when there is room.
    dirty: bool,
    /// Where the next read in priority order starts (none: at the top).
    /// Everything deliverable before it is in flight, or in `urgent`.
    scan_after: Option<(i32, i64)>,
    /// Deliverable events before `scan_after`, known by id, most urgent first.
    urgent: BTreeSet<Position>,
    /// The next time something may come due on its own, when known.
    next_due: Option<DateTime<Utc>>,
    /// `next_due` must be read again.
    timers_stale: bool,
    /// When in-flight leases are next re-read.
    next_check: Option<tokio::time::Instant>,
    /// A group member's events whose lease ran out here: left to the other
    /// members until then (a member that hung once may hang again), after
    /// which this one may take them back.
    yielded: HashMap<Uuid, tokio::time::Instant>,
    feed: broadcast::Receiver<Arc<FeedBatch>>,
    leases: broadcast::Receiver<LeaseNews>,
    /// The highest sequence the feed brought.
    live_cursor: i64,
    /// The run is in a terminal status.
    closed: bool,
    finished: bool,
    _presence: AbortOnDrop,
    /// Declared last: dropped after `drop` has started the lease release,
    /// so shutdown, which waits for it, also waits for that release.
    _open: tokio_util::task::task_tracker::TaskTrackerToken,
}

/// Starts an engine subscription: takes over the engine's own unrecorded
/// deliveries (a restarted engine gets them again at once), then leases
/// what is most urgent as the window allows.
pub async fn events(
    ctx: &Ctx,
    hub: &Arc<Hub>,
    run: &crate::entity::scenario_run::Model,
    request: EngineRequest,
) -> AppResult<impl Stream<Item = AppResult<Delivered>> + use<>> {
    let engine_id = request.engine.engine_id;
    // Feed receivers first: nothing said after this is missed.
    let receiver = hub.subscribe(run.id, run.last_sequence);
    if lease::take_over(ctx, engine_id).await? > 0 {
        ctx.announce_released(run.id);
    }
    // Subscribed before the first lease: the partition keys it takes stick.
    service::engine::touch(ctx, engine_id).await?;
    let presence = AbortOnDrop(tokio::spawn(keep_present(
        ctx.clone(),
        hub.config.presence_interval,
        engine_id,
    )));
    let state = EngineStream {
        ctx: ctx.clone(),
        hub: hub.clone(),
        types: request.event_types.clone().map(|t| t.into_iter().collect()),
        request,
        lease_seconds: HashMap::new(),
        in_flight: HashMap::new(),
        claiming: Vec::new(),
        counted: 0,
        ready: VecDeque::new(),
        dirty: true,
        scan_after: None,
        urgent: BTreeSet::new(),
        next_due: None,
        timers_stale: true,
        next_check: None,
        yielded: HashMap::new(),
        feed: receiver.batches,
        leases: receiver.leases,
        live_cursor: run.last_sequence,
        closed: run.status.is_terminal(),
        finished: false,
        _presence: presence,
        _open: hub.track_stream(),
    };
    // Boxed, as in `subscription::events`.
    Ok(futures::stream::unfold(
        Box::new(state),
        |mut state| async move {
            let item = state.next().await?;
            if item.is_err() {
                state.finished = true;
            }
            Some((item, state))
        },
    ))
}

impl EngineStream {
    async fn next(&mut self) -> Option<AppResult<Delivered>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(delivered) = self.ready.pop_front() {
                return Some(Ok(delivered));
            }
            self.absorb();
            let stepped = Box::pin(self.step()).await;
            self.count_in_flight();
            if let Err(err) = stepped {
                return Some(Err(err));
            }
            if !self.ready.is_empty() {
                continue;
            }
            // A closed run's stream ends once nothing more can go out: what
            // is still in flight is released, and can be recorded all the same.
            if self.closed && !self.dirty && self.in_flight.len() < self.request.max_in_flight {
                self.finished = true;
                return None;
            }
            if self.dirty && self.in_flight.len() < self.request.max_in_flight {
                continue;
            }
            let wake = self.wake_at();
            let shutdown = self.hub.shutdown_token().clone();
            tokio::select! {
                received = self.feed.recv() => match received {
                    Ok(batch) => self.take_batch(&batch),
                    Err(broadcast::error::RecvError::Lagged(_)) => self.missed(),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                news = self.leases.recv() => match news {
                    Ok(news) => self.take_news(news),
                    Err(broadcast::error::RecvError::Lagged(_)) => self.missed(),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                () = sleep_until(wake) => {}
                () = shutdown.cancelled() => return None,
            }
        }
    }

    /// Reads the database as far as there is reason to: in-flight leases
    /// that are due for a look, timers, then the next deliverable events.
    async fn step(&mut self) -> AppResult<()> {
        let now = tokio::time::Instant::now();
        let expiring = self
            .in_flight
            .values()
            .map(|h| h.expires)
            .min()
            .is_some_and(|t| t <= Utc::now());
        if expiring || self.next_check.is_some_and(|t| t <= now) {
            self.check_in_flight().await?;
        }
        if self.next_due.is_some_and(|t| t <= Utc::now()) {
            self.next_due = None;
            self.rescan();
            self.timers_stale = true;
        }
        let yielded = self.yielded.len();
        self.yielded.retain(|_, until| *until > now);
        if self.yielded.len() < yielded {
            self.rescan();
        }
        if self.dirty && self.in_flight.len() < self.request.max_in_flight {
            self.refill().await?;
        }
        if self.timers_stale && !self.dirty {
            self.next_due = lease::next_due(&self.ctx, &self.request.engine, Utc::now()).await?;
            self.timers_stale = false;
        }
        Ok(())
    }

    /// Brings the server's in-flight gauge up to date with this window.
    fn count_in_flight(&mut self) {
        let now = self.in_flight.len();
        self.ctx.metrics.in_flight(now as f64 - self.counted as f64);
        self.counted = now;
    }

    /// When to wake without news: a lease due to expire, the next timer,
    /// the next look at in-flight leases.
    fn wake_at(&self) -> Option<tokio::time::Instant> {
        let now_utc = Utc::now();
        let now = tokio::time::Instant::now();
        let instant = |t: DateTime<Utc>| now + (t - now_utc).to_std().unwrap_or_default();
        let expiry = self.in_flight.values().map(|h| h.expires).min();
        [expiry, self.next_due]
            .into_iter()
            .flatten()
            .map(instant)
            .chain(self.next_check)
            .chain(self.yielded.values().copied())
            .min()
    }

    /// Takes what the feed and the lease news already hold, without waiting.
    fn absorb(&mut self) {
        loop {
            match self.feed.try_recv() {
                Ok(batch) => self.take_batch(&batch),
                Err(TryRecvError::Lagged(_)) => self.missed(),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        loop {
            match self.leases.try_recv() {
                Ok(news) => self.take_news(news),
                Err(TryRecvError::Lagged(_)) => self.missed(),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
    }

    /// Something was missed: read everything again.
    fn missed(&mut self) {
        self.rescan();
        self.timers_stale = true;
        self.next_check = Some(tokio::time::Instant::now());
    }

    /// Something unknown may be deliverable anywhere: scan from the top.
    fn rescan(&mut self) {
        self.scan_after = None;
        self.urgent.clear();
        self.dirty = true;
    }

    /// Notes that the event at `at` may be deliverable: if the scan has
    /// passed it, it waits in `urgent`.
    fn reopen(&mut self, at: Position) {
        let (Reverse(priority), sequence, _) = at;
        let passed = self
            .scan_after
            .is_some_and(|(p, s)| priority > p || (priority == p && sequence <= s));
        if passed {
            self.urgent.insert(at);
        }
        self.dirty = true;
    }

    fn take_batch(&mut self, batch: &FeedBatch) {
        if batch.after > self.live_cursor {
            // A gap: its events are in the database, where the refill reads.
            self.missed();
        }
        for event in &batch.events {
            if event.sequence <= self.live_cursor {
                continue;
            }
            self.live_cursor = event.sequence;
            if closes_run(event) {
                self.closed = true;
                self.dirty = true;
            }
            if self.wants(event) {
                if event.deliver_at.is_some() {
                    // Due later: the timer rescans then.
                    self.timers_stale = true;
                } else {
                    self.reopen(position(event));
                }
            }
        }
    }

    fn take_news(&mut self, news: LeaseNews) {
        match news {
            LeaseNews::Recorded {
                engine_id,
                event_ids,
                again,
            } if engine_id == self.request.engine.engine_id => {
                self.dirty = true;
                for event_id in event_ids.iter() {
                    let held = self.in_flight.remove(event_id);
                    if held.is_some_and(|h| h.keyed) {
                        // The key's next event may lie before the scan position.
                        self.rescan();
                    }
                    if again {
                        // Back now, or after a backoff (then the timer rescans).
                        match held {
                            Some(held) => self.reopen(held.at),
                            None => self.rescan(),
                        }
                        self.timers_stale = true;
                    }
                }
            }
            LeaseNews::Recorded { again: true, .. } if self.request.engine.group_id.is_some() => {
                // Another member's failure: the event comes back to the group.
                self.rescan();
                self.timers_stale = true;
            }
            LeaseNews::Recorded { .. } => {}
            LeaseNews::Released => self.rescan(),
        }
    }

    fn wants(&self, event: &event_instance::Model) -> bool {
        pending::is_routed(event, &self.request.engine)
            && selected(event, self.types.as_ref(), self.request.min_priority)
    }

    /// Re-reads the in-flight leases: recorded, taken over, expired or extended.
    async fn check_in_flight(&mut self) -> AppResult<()> {
        let ids: Vec<Uuid> = self.in_flight.keys().copied().collect();
        let rows = lease::of_events(&self.ctx, self.request.engine.engine_id, &ids).await?;
        let rows: HashMap<Uuid, _> = rows.into_iter().map(|r| (r.event_id, r)).collect();
        let now = Utc::now();
        let expired: Vec<Position> = self
            .in_flight
            .iter()
            .filter(|(event_id, held)| {
                rows.get(event_id).is_some_and(|row| {
                    row.lease_id == Some(held.lease_id)
                        && !row.done
                        && row.lease_expires_at.is_some_and(|t| t <= now)
                })
            })
            .map(|(_, held)| held.at)
            .collect();
        self.ctx.metrics.leases_expired(expired.len());
        let grouped = self.request.engine.group_id.is_some();
        let until = tokio::time::Instant::now() + self.hub.config.poll_interval;
        for at in expired {
            if grouped {
                self.yielded.insert(at.2, until);
                // The other members' timers see the expiry; nothing to read here.
                self.dirty = true;
            } else {
                self.reopen(at);
            }
        }
        self.in_flight.retain(|event_id, held| {
            let current = rows.get(event_id).filter(|row| {
                row.lease_id == Some(held.lease_id)
                    && !row.done
                    && row.lease_expires_at.is_some_and(|t| t > now)
            });
            match current.and_then(|row| row.lease_expires_at) {
                Some(expires) => {
                    held.expires = expires;
                    true
                }
                None => false,
            }
        });
        if self.in_flight.len() < ids.len() {
            self.dirty = true;
            self.timers_stale = true;
        }
        self.next_check = (!self.in_flight.is_empty())
            .then(|| tokio::time::Instant::now() + self.hub.config.poll_interval);
        Ok(())
    }

    /// Leases the most urgent deliverable events into the window's room:
    /// first those known to wait before the scan position, then the next
    /// ones after it.
    async fn refill(&mut self) -> AppResult<()> {
        let room = self.request.max_in_flight - self.in_flight.len();
        if !self.urgent.is_empty() {
            let mut ids = Vec::new();
            while ids.len() < room
                && let Some((_, _, id)) = self.urgent.pop_first()
            {
                ids.push(id);
            }
            // Known by id, but the rule (a key's turn, a lease elsewhere)
            // is checked again, as for a scan.
            let mut events = service::event::pending_among(
                &self.ctx,
                &self.request.engine,
                Scope::Deliverable,
                &ids,
            )
            .await?;
            events.sort_by_key(position);
            self.lease(events).await?;
            return Ok(());
        }
        let filter = EventFilter {
            event_types: self.request.event_types.clone(),
            min_priority: self.request.min_priority,
            ..Default::default()
        };
        let page = service::event::read_page(
            &self.ctx,
            self.request.engine.run_id,
            &filter,
            Some((&self.request.engine, Scope::Deliverable)),
            EventOrder::Priority,
            PageRequest {
                first: room,
                after: self
                    .scan_after
                    .map(|(priority, sequence)| EventCursor::Priority(priority, sequence)),
            },
        )
        .await?;
        let events: Vec<event_instance::Model> = page.rows.into_iter().map(|(_, e)| e).collect();
        if let Some(last) = events.last() {
            self.scan_after = Some((last.priority, last.sequence));
        }
        if events.len() < room {
            // Read to the end: the next news or timer says when to look again.
            self.dirty = false;
        }
        self.lease(events).await
    }

    /// Leases `events` (deliverable when read, most urgent first) and queues
    /// those it got; one that another subscription took meanwhile is skipped.
    async fn lease(&mut self, mut events: Vec<event_instance::Model>) -> AppResult<()> {
        events.retain(|e| !self.yielded.contains_key(&e.id));
        if events.is_empty() {
            return Ok(());
        }
        self.learn_types(&events).await?;
        let wanted: Vec<Wanted> = events
            .iter()
            .map(|e| Wanted {
                event_id: e.id,
                recipient_id: pending::recipient(e, &self.request.engine),
                lease_id: Uuid::now_v7(),
                seconds: self
                    .request
                    .lease_seconds
                    .or_else(|| self.lease_seconds.get(&e.event_type).copied())
                    .unwrap_or(300),
            })
            .collect();
        self.claiming = wanted.iter().map(|w| w.lease_id).collect();
        let claimed = lease::claim(&self.ctx, self.request.engine.engine_id, &wanted).await;
        self.claiming.clear();
        let claimed = claimed?;
        let mut claimed: HashMap<Uuid, _> = claimed.into_iter().map(|d| (d.event_id, d)).collect();
        let asked = events.len();
        for event in events {
            let Some(delivery) = claimed.remove(&event.id) else {
                continue;
            };
            let held = Held {
                lease_id: delivery.lease_id.unwrap_or_default(),
                expires: delivery.lease_expires_at.unwrap_or_else(Utc::now),
                at: position(&event),
                keyed: event.partition_key.is_some(),
            };
            self.in_flight.insert(event.id, held);
            self.ready.push_back(Delivered {
                event: Arc::new(event),
                delivery: Some(Arc::new(delivery)),
            });
        }
        if self.ready.len() < asked {
            // Held elsewhere, or backing off: the end of that is a timer.
            self.timers_stale = true;
        }
        self.next_check
            .get_or_insert_with(|| tokio::time::Instant::now() + self.hub.config.poll_interval);
        Ok(())
    }

    /// Reads the lease length of event types not seen yet.
    async fn learn_types(&mut self, events: &[event_instance::Model]) -> AppResult<()> {
        let missing: Vec<String> = events
            .iter()
            .map(|e| &e.event_type)
            .filter(|t| !self.lease_seconds.contains_key(*t))
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        for t in service::event_type::get_many(&self.ctx, &missing).await? {
            self.lease_seconds.insert(t.name.clone(), t.lease_seconds);
        }
        Ok(())
    }
}

impl Drop for EngineStream {
    /// A subscription that ends (socket closed, client completed, server
    /// stopping) releases what it holds, so the events go out again at once;
    /// a group member's partition keys go to the other members.
    fn drop(&mut self) {
        self.ctx.metrics.in_flight(-(self.counted as f64));
        let leases: Vec<Uuid> = (self.in_flight.values().map(|h| h.lease_id))
            .chain(self.claiming.iter().copied())
            .collect();
        let grouped = self.request.engine.group_id.is_some();
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let ctx = self.ctx.clone();
        let engine_id = self.request.engine.engine_id;
        let run_id = self.request.engine.run_id;
        self.hub.release(async move {
            if let Err(err) = service::engine::unsubscribed(&ctx, engine_id).await {
                tracing::warn!(%engine_id, error = %err, "ending the subscription failed");
            }
            match lease::release(&ctx, engine_id, &leases).await {
                Ok(0) if !grouped => {}
                Ok(_) => ctx.announce_released(run_id),
                Err(err) => tracing::warn!(%engine_id, error = %err, "releasing leases failed"),
            }
        });
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
