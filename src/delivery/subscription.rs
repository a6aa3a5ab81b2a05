//! The streams behind `subscription { events }` and `runUpdated`.
//!
//! With an `engineId`, `events` is an engine's flow-controlled, leased
//! stream (`delivery::engine`). Otherwise it is a reader's: with
//! `afterSequence` it first sends everything after it in sequence order,
//! then live events from the run's feed through a priority queue: whenever
//! the client reads slower than events arrive, the most urgent one goes
//! next. A reader that falls behind the feed, or whose queue is full, reads
//! the gap from the database by sequence: nothing is dropped.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::sync::Arc;

use futures::Stream;
use tokio::sync::broadcast::{self, error::TryRecvError};
use uuid::Uuid;

use super::engine::{self, EngineRequest};
use super::{FeedBatch, Hub};
use crate::entity::{event_delivery, event_instance, scenario_run};
use crate::error::{AppError, AppResult};
use crate::service::event::{EventCursor, EventFilter, EventOrder};
use crate::service::event_type::{METRIC_RECORDED, RELATIONSHIP_UPDATED, RUN_STATUS_CHANGED};
use crate::service::page::PageRequest;
use crate::service::run::RunStatus;
use crate::service::{self, Ctx};

/// Events read from the database in one statement by a subscription.
const PAGE: usize = 500;

/// What an `events` subscription asks for.
#[derive(Debug, Clone, Default)]
pub struct EventsRequest {
    /// The run.
    pub run_id: Uuid,
    /// The subscribing engine: its backlog first, then what is routed to it.
    pub engine_id: Option<Uuid>,
    /// Only these event types.
    pub event_types: Option<Vec<String>>,
    /// Only events of at least this priority.
    pub min_priority: Option<i32>,
    /// Everything after this sequence first (without `engine_id`).
    pub after_sequence: Option<i64>,
    /// With `engine_id`: most unrecorded deliveries at once (default 1).
    pub max_in_flight: Option<i32>,
    /// With `engine_id`: lease length, instead of each event type's.
    pub lease_seconds: Option<i32>,
}

/// An event as a subscription sends it: with its lease when it went to an
/// engine.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The event, shared among subscribers.
    pub event: Arc<event_instance::Model>,
    /// The engine's lease of it; none for readers.
    pub delivery: Option<Arc<event_delivery::Model>>,
}

/// A live event waiting in a subscription's queue: most urgent first, then
/// oldest first.
struct Queued(Arc<event_instance::Model>);

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .priority
            .cmp(&other.0.priority)
            .then(other.0.sequence.cmp(&self.0.sequence))
    }
}

/// Where the backlog stands.
enum Backlog {
    /// Still to read: the next page starts after `after` (None: from the start).
    Reading {
        buffer: VecDeque<event_instance::Model>,
        after: Option<EventCursor>,
        more: bool,
    },
    /// All sent.
    Done,
}

/// Aborts a background task when dropped: the presence refresher lives as
/// long as the subscription.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct EventStream {
    ctx: Ctx,
    hub: Arc<Hub>,
    request: EventsRequest,
    types: Option<HashSet<String>>,
    order: EventOrder,
    /// The run's last sequence when the subscription started: the backlog
    /// covers up to it, the live part everything after.
    start: i64,
    backlog: Backlog,
    /// The highest sequence taken from the feed or read to fill a gap.
    live_cursor: i64,
    /// Whether events after `live_cursor` were skipped and must be read from the database.
    behind: bool,
    queue: BinaryHeap<Queued>,
    feed: broadcast::Receiver<Arc<FeedBatch>>,
    /// The sequence of the event that closed the run, once known.
    closed_at: Option<i64>,
    finished: bool,
}

/// Starts an `events` subscription; errors (unknown run or engine, bad
/// window) come before the first event.
pub async fn events(
    ctx: &Ctx,
    hub: &Arc<Hub>,
    request: EventsRequest,
) -> AppResult<impl Stream<Item = AppResult<Delivered>> + use<>> {
    let run = service::run::get(ctx, request.run_id)
        .await?
        .ok_or_else(|| {
            AppError::not_found(
                "runId",
                format!("scenario run {} not found", request.run_id),
            )
        })?;
    let Some(engine_id) = request.engine_id else {
        for (field, given) in [
            ("maxInFlight", request.max_in_flight.is_some()),
            ("leaseSeconds", request.lease_seconds.is_some()),
        ] {
            if given {
                return Err(AppError::bad_input(
                    field,
                    format!("{field} applies to an engine's subscription: give engineId"),
                ));
            }
        }
        return Ok(futures::future::Either::Left(reader(
            ctx, hub, request, &run,
        )));
    };
    let engine = service::engine::get_in_run(ctx, engine_id, run.id, "engineId").await?;
    let max = ctx.limits.max_in_flight;
    let max_in_flight = request.max_in_flight.unwrap_or(1);
    if max_in_flight < 1 || max_in_flight as usize > max {
        return Err(AppError::bad_input(
            "maxInFlight",
            format!("maxInFlight must be between 1 and {max}"),
        ));
    }
    let lease_seconds = request
        .lease_seconds
        .map(|s| service::lease::check_seconds("leaseSeconds", s))
        .transpose()?;
    let request = EngineRequest {
        engine,
        event_types: request.event_types,
        min_priority: request.min_priority,
        max_in_flight: max_in_flight as usize,
        lease_seconds,
    };
    let stream = engine::events(ctx, hub, &run, request).await?;
    Ok(futures::future::Either::Right(stream))
}

/// A reader's stream (no engine): backlog by sequence, then live events.
fn reader(
    ctx: &Ctx,
    hub: &Arc<Hub>,
    request: EventsRequest,
    run: &scenario_run::Model,
) -> impl Stream<Item = AppResult<Delivered>> + use<> {
    let closed = run.status.is_terminal();
    let backlog = match request.after_sequence {
        Some(_) => reading(),
        None => Backlog::Done,
    };
    // Everything up to `run.last_sequence` is the backlog's; the feed brings
    // what follows, and a feed already past it leaves a gap to read.
    let receiver = hub.subscribe(run.id, run.last_sequence);
    let state = EventStream {
        ctx: ctx.clone(),
        hub: hub.clone(),
        types: request.event_types.clone().map(|t| t.into_iter().collect()),
        request,
        order: EventOrder::Sequence,
        start: run.last_sequence,
        backlog,
        live_cursor: run.last_sequence,
        behind: receiver.from > run.last_sequence,
        queue: BinaryHeap::new(),
        feed: receiver.batches,
        closed_at: closed.then_some(run.last_sequence),
        finished: false,
    };
    // Boxed: `unfold` keeps a slot for its state beside the future that
    // holds it, so an unboxed stream state would take its space twice in
    // every idle subscription.
    futures::stream::unfold(Box::new(state), |mut state| async move {
        let item = state.next().await?;
        if item.is_err() {
            state.finished = true;
        }
        let item = item.map(|event| Delivered {
            event,
            delivery: None,
        });
        Some((item, state))
    })
}

fn reading() -> Backlog {
    Backlog::Reading {
        buffer: VecDeque::new(),
        after: None,
        more: true,
    }
}

impl EventStream {
    async fn next(&mut self) -> Option<AppResult<Arc<event_instance::Model>>> {
        loop {
            if self.finished {
                return None;
            }
            // The database reads are boxed: their futures are large, and an
            // idle subscription waits below without carrying their space.
            match Box::pin(self.next_from_backlog()).await {
                Ok(Some(event)) => return Some(Ok(Arc::new(event))),
                Ok(None) => {}
                Err(err) => return Some(Err(err)),
            }
            if let Err(err) = Box::pin(self.take_ready()).await {
                return Some(Err(err));
            }
            if let Some(Queued(event)) = self.queue.pop() {
                return Some(Ok(event));
            }
            if self
                .closed_at
                .is_some_and(|closed| self.live_cursor >= closed)
                && !self.behind
            {
                self.finished = true;
                return None;
            }
            let shutdown = self.hub.shutdown_token().clone();
            tokio::select! {
                received = self.feed.recv() => match received {
                    Ok(batch) => self.take_batch(&batch),
                    Err(broadcast::error::RecvError::Lagged(_)) => self.behind = true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                () = shutdown.cancelled() => return None,
            }
        }
    }

    /// The next backlog event, reading a page when the buffer is empty.
    async fn next_from_backlog(&mut self) -> AppResult<Option<event_instance::Model>> {
        let Backlog::Reading {
            buffer,
            after,
            more,
        } = &mut self.backlog
        else {
            return Ok(None);
        };
        if buffer.is_empty() && *more {
            let filter = EventFilter {
                event_types: self.request.event_types.clone(),
                min_priority: self.request.min_priority,
                after_sequence: self.request.after_sequence,
                until_sequence: Some(self.start),
                pending_for: None,
                source_engine_id: None,
            };
            // Run and engine were checked when the subscription started.
            let page = service::event::read_page(
                &self.ctx,
                self.request.run_id,
                &filter,
                None,
                self.order,
                PageRequest {
                    first: PAGE,
                    after: *after,
                },
            )
            .await?;
            *more = page.has_next;
            if let Some((cursor, _)) = page.rows.last() {
                *after = Some(*cursor);
            }
            buffer.extend(page.rows.into_iter().map(|(_, event)| event));
        }
        match buffer.pop_front() {
            Some(event) => Ok(Some(event)),
            None => {
                self.backlog = Backlog::Done;
                Ok(None)
            }
        }
    }

    /// Moves what the feed already has into the queue, and fills gaps from
    /// the database, as far as the queue has room.
    async fn take_ready(&mut self) -> AppResult<()> {
        loop {
            if self.queue.len() >= self.hub.config.queue_capacity {
                return Ok(());
            }
            if self.behind {
                self.read_gap().await?;
                continue;
            }
            match self.feed.try_recv() {
                Ok(batch) => self.take_batch(&batch),
                Err(TryRecvError::Lagged(_)) => self.behind = true,
                Err(TryRecvError::Empty | TryRecvError::Closed) => return Ok(()),
            }
        }
    }

    /// Reads the events after `live_cursor` from the database, one page.
    async fn read_gap(&mut self) -> AppResult<()> {
        let room = self
            .hub
            .config
            .queue_capacity
            .saturating_sub(self.queue.len())
            .clamp(1, PAGE);
        let events = service::event::after_sequence(
            &self.ctx.db.conn,
            self.request.run_id,
            self.live_cursor,
            room as u64,
        )
        .await?;
        if events.len() < room {
            // Caught up: the feed's batches after this overlap, and are deduplicated.
            self.behind = false;
        }
        for event in events {
            self.take(Arc::new(event));
        }
        Ok(())
    }

    fn take_batch(&mut self, batch: &FeedBatch) {
        if batch.after > self.live_cursor {
            self.behind = true;
            return;
        }
        for event in &batch.events {
            if self.queue.len() >= self.hub.config.queue_capacity {
                self.behind = true;
                return;
            }
            self.take(event.clone());
        }
    }

    /// Takes the next live event (in sequence order) into the queue if it is for us.
    fn take(&mut self, event: Arc<event_instance::Model>) {
        if event.sequence <= self.live_cursor {
            return;
        }
        self.live_cursor = event.sequence;
        if closes_run(&event) {
            self.closed_at = Some(event.sequence);
        }
        if self.wants(&event) {
            self.queue.push(Queued(event));
        }
    }

    fn wants(&self, event: &event_instance::Model) -> bool {
        selected(event, self.types.as_ref(), self.request.min_priority)
    }
}

/// Whether `event` passes a subscription's `eventTypes` and `minPriority`.
pub(super) fn selected(
    event: &event_instance::Model,
    types: Option<&HashSet<String>>,
    min_priority: Option<i32>,
) -> bool {
    types.is_none_or(|t| t.contains(&event.event_type))
        && min_priority.is_none_or(|p| event.priority >= p)
}

/// Whether `event` is the status change that puts its run into a terminal status.
pub(super) fn closes_run(event: &event_instance::Model) -> bool {
    event.event_type == RUN_STATUS_CHANGED
        && event.payload.value()["to"]
            .as_str()
            .and_then(RunStatus::parse)
            .is_some_and(RunStatus::is_terminal)
}

/// Refreshes the engine's `lastSeenAt` while it holds a subscription.
pub(super) async fn keep_present(ctx: Ctx, every: std::time::Duration, engine_id: Uuid) {
    // The subscription touched the engine as it started.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        if let Err(err) = service::engine::touch(&ctx, engine_id).await {
            tracing::warn!(%engine_id, error = %err, "presence refresh failed");
        }
    }
}

/// Starts a `runUpdated` subscription: the run as it is, then the run after
/// each status or relationship change and each change of its evaluation,
/// until a terminal status. The first item is read after the feed's
/// position is taken, so no change falls between a subscriber's first view
/// and the changes it is sent.
pub async fn run_updates(
    ctx: &Ctx,
    hub: &Arc<Hub>,
    run_id: Uuid,
) -> AppResult<impl Stream<Item = AppResult<scenario_run::Model>> + use<>> {
    let run = service::run::get(ctx, run_id)
        .await?
        .ok_or_else(|| AppError::not_found("runId", format!("scenario run {run_id} not found")))?;
    let (_, evaluation) = service::metric::of_run(&ctx.db.conn, &run).await?;
    // A change between the read above and the feed's position is announced
    // by the first batch's gap.
    let feed = hub.subscribe(run_id, run.last_sequence).batches;
    let state = RunWatch {
        ctx: ctx.clone(),
        hub: hub.clone(),
        feed,
        cursor: run.last_sequence,
        done: run.status.is_terminal(),
        evaluation,
    };
    let first = futures::stream::once(std::future::ready(AppResult::Ok(run)));
    Ok(futures::StreamExt::chain(
        first,
        futures::stream::unfold(state, move |mut watch| async move {
            if watch.done {
                return None;
            }
            loop {
                let shutdown = watch.hub.shutdown_token().clone();
                let (changed, samples) = tokio::select! {
                    received = watch.feed.recv() => match received {
                        Ok(batch) => {
                            let cursor = watch.cursor;
                            let gap = batch.after > cursor;
                            let new = || batch.events.iter().filter(|e| e.sequence > cursor);
                            let relevant = new().any(|e| {
                                e.event_type == RUN_STATUS_CHANGED
                                    || e.event_type == RELATIONSHIP_UPDATED
                            });
                            let samples = new().any(|e| e.event_type == METRIC_RECORDED);
                            watch.cursor =
                                cursor.max(batch.events.last().map_or(cursor, |e| e.sequence));
                            (relevant || gap, samples)
                        }
                        // Missed batches may hold a change: send the run as it is.
                        Err(broadcast::error::RecvError::Lagged(_)) => (true, false),
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    () = shutdown.cancelled() => return None,
                };
                if !changed && !samples {
                    continue;
                }
                let run = match service::run::get(&watch.ctx, run_id).await {
                    Ok(Some(run)) => run,
                    Ok(None) => return None,
                    Err(err) => {
                        watch.done = true;
                        return Some((Err(err), watch));
                    }
                };
                // Samples matter only when they move the evaluation.
                match service::metric::of_run(&watch.ctx.db.conn, &run).await {
                    Ok((_, evaluation)) => {
                        let moved = evaluation != watch.evaluation;
                        watch.evaluation = evaluation;
                        if !changed && !moved {
                            continue;
                        }
                    }
                    Err(err) => {
                        watch.done = true;
                        return Some((Err(err), watch));
                    }
                }
                watch.done = run.status.is_terminal();
                watch.cursor = watch.cursor.max(run.last_sequence);
                return Some((Ok(run), watch));
            }
        }),
    ))
}

/// What a `runUpdated` stream keeps between items.
struct RunWatch {
    ctx: Ctx,
    hub: Arc<Hub>,
    feed: broadcast::Receiver<Arc<FeedBatch>>,
    cursor: i64,
    done: bool,
    /// The evaluation last seen, to tell when samples change it.
    evaluation: service::metric::Evaluation,
}
