//! Processing records and atomic completion. Recording again updates the
//! row and counts the attempt; the failure that reaches the event type's
//! `maxAttempts` is final and publishes `error_occurred` in the same
//! transaction. `complete` records, emits and checkpoints all or nothing.

use std::collections::{HashMap, HashSet};

use chrono::TimeDelta;
use sea_orm::sea_query::{Expr, InsertStatement, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, ExprTrait, FromQueryResult,
    QueryFilter, QuerySelect,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth::{Access, Principal};
use super::event_type::ERROR_OCCURRED;
use super::publish::{NewEvent, insert_prepared, prepare};
use super::{Ctx, now};
use crate::entity::{engine_state, event_instance, event_processing, scenario_run};
use crate::error::{AppError, AppResult};

/// Longest error text kept on a processing record, in bytes.
pub const MAX_ERROR_BYTES: usize = 64 * 1024;

pub use crate::entity::event_processing::ProcessingStatus;

/// A processing record to write.
#[derive(Debug, Clone)]
pub struct Record {
    /// The event.
    pub event_id: Uuid,
    /// The engine that handled it.
    pub engine_id: Uuid,
    /// The outcome.
    pub status: ProcessingStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// The lease the engine was given with the event; a stale one fails
    /// with `LEASE_LOST` and changes nothing.
    pub lease_id: Option<Uuid>,
    /// After a failure: deliver again no sooner than this (else the event
    /// type's `retryDelaySeconds`, doubled per attempt).
    pub retry_after_seconds: Option<i32>,
}

/// Records processing in its own transaction.
pub async fn record(
    ctx: &Ctx,
    principal: &Principal,
    input: Record,
) -> AppResult<event_processing::Model> {
    principal.require(Access::Engine)?;
    check_error(&input)?;
    let txn = ctx.db.begin_write().await?;
    let recorded = record_in(ctx, &txn, &input).await?;
    txn.commit().await?;
    recorded.announce(ctx, &[]);
    Ok(recorded.processing)
}

/// Records several events in one transaction, all or nothing: the first
/// error rolls the others back and is returned. A request's aliased
/// `recordProcessing` fields come here (the compiled path), so an engine
/// that records a batch pays one commit for it, not one per event; a batch
/// of successes, each of another event, takes one statement per step for
/// all its records (`record_done_in`).
pub async fn record_all(
    ctx: &Ctx,
    principal: &Principal,
    inputs: &[Record],
) -> AppResult<Vec<event_processing::Model>> {
    principal.require(Access::Engine)?;
    for input in inputs {
        check_error(input)?;
    }
    let txn = ctx.db.begin_write().await?;
    crate::db::plan(&*txn, crate::db::Plans::KeyLookups).await?;
    let recorded = match record_done_in(&txn, inputs).await? {
        Some(recorded) => recorded,
        None => {
            let mut recorded = Vec::with_capacity(inputs.len());
            for input in inputs {
                recorded.push(record_in(ctx, &txn, input).await?);
            }
            recorded
        }
    };
    txn.commit().await?;
    announce_all(ctx, &recorded);
    Ok(recorded.into_iter().map(|r| r.processing).collect())
}

/// Tells delivery what a batch of records changed: one piece of news per
/// run, engine and outcome, however many events (a window holding a
/// thousand events hears of a hundred records at once, not a hundred times).
fn announce_all(ctx: &Ctx, recorded: &[Recorded]) {
    let mut published = Vec::new();
    let mut news: HashMap<(Uuid, Uuid, bool), Vec<Uuid>> = HashMap::new();
    for one in recorded {
        published.extend(one.published.iter().cloned());
        news.entry((one.run_id, one.processing.engine_id, one.again))
            .or_default()
            .push(one.processing.event_id);
    }
    ctx.announce(&published);
    for ((run_id, engine_id, again), event_ids) in news {
        ctx.announce_recorded(run_id, engine_id, &event_ids, again);
    }
}

/// [`record_in`] for a batch of PROCESSED records, each of another event
/// for its recipient: the events and the engines read in one statement
/// each, the records written in one, the leases settled in one per engine.
/// None (nothing written) for any other batch, which goes record by record.
async fn record_done_in(
    txn: &DatabaseTransaction,
    inputs: &[Record],
) -> AppResult<Option<Vec<Recorded>>> {
    let mut pairs = HashSet::with_capacity(inputs.len());
    if inputs.iter().any(|i| {
        i.status != ProcessingStatus::Processed || !pairs.insert((i.event_id, i.engine_id))
    }) {
        return Ok(None);
    }
    let event_ids: HashSet<Uuid> = inputs.iter().map(|i| i.event_id).collect();
    // The runs' sequences come with the events, bound into the records'
    // INSERT as values: a subquery per row there made PostgreSQL plan a
    // hundred of them per batch. Nothing is published in this transaction,
    // so the sequence read here is the one the records belong after.
    let events = {
        use event_instance::Column as E;
        let select = Query::select()
            .columns([
                (event_instance::Entity, E::Id),
                (event_instance::Entity, E::RunId),
                (event_instance::Entity, E::TargetEngineId),
            ])
            .column((scenario_run::Entity, scenario_run::Column::LastSequence))
            .from(event_instance::Entity)
            .inner_join(
                scenario_run::Entity,
                Expr::col((scenario_run::Entity, scenario_run::Column::Id))
                    .equals((event_instance::Entity, E::RunId)),
            )
            .and_where(Expr::col((event_instance::Entity, E::Id)).is_in(event_ids))
            .to_owned();
        let mut events: HashMap<Uuid, (Uuid, Option<Uuid>, i64)> = HashMap::new();
        for row in txn.query_all(&select).await? {
            let (id, run, target, sequence) = row.try_get_many_by_index()?;
            events.insert(id, (run, target, sequence));
        }
        events
    };
    let engine_ids: HashSet<Uuid> = inputs.iter().map(|i| i.engine_id).collect();
    let engines: HashMap<Uuid, (Uuid, Option<Uuid>)> = engine_state::Entity::find()
        .select_only()
        .column(engine_state::Column::EngineId)
        .column(engine_state::Column::RunId)
        .column(engine_state::Column::GroupId)
        .filter(engine_state::Column::EngineId.is_in(engine_ids))
        .into_tuple::<(Uuid, Uuid, Option<Uuid>)>()
        .all(txn)
        .await?
        .into_iter()
        .map(|(id, run, group)| (id, (run, group)))
        .collect();
    let mut runs = Vec::with_capacity(inputs.len());
    let mut settlements = Vec::with_capacity(inputs.len());
    let mut recipients = HashSet::with_capacity(inputs.len());
    for input in inputs {
        let &(run_id, target, run_sequence) = events
            .get(&input.event_id)
            .ok_or_else(|| event_not_found(input.event_id))?;
        let engine = engines.get(&input.engine_id);
        super::engine::in_run(
            input.engine_id,
            engine.map(|e| e.0),
            run_id,
            "input.engineId",
        )?;
        let recipient =
            super::pending::recipient_of(target, input.engine_id, engine.and_then(|e| e.1));
        // Two members of a group recording one event settle one row: in turn.
        if !recipients.insert((input.event_id, recipient)) {
            return Ok(None);
        }
        runs.push((run_id, run_sequence));
        settlements.push(super::lease::Settlement {
            event_id: input.event_id,
            recipient_id: recipient,
            engine_id: input.engine_id,
            lease_id: input.lease_id,
            done: true,
            not_before: None,
            failures: None,
        });
    }
    let rows = txn
        .query_all(&upsert(
            inputs
                .iter()
                .zip(runs.iter().map(|&(_, sequence)| Expr::val(sequence))),
        ))
        .await?;
    let mut written = HashMap::with_capacity(rows.len());
    for row in &rows {
        let processing = event_processing::Model::from_query_result(row, "")?;
        written.insert((processing.event_id, processing.engine_id), processing);
    }
    super::lease::settle_done_in(txn, &settlements).await?;
    inputs
        .iter()
        .zip(runs)
        .map(|(input, (run_id, _))| {
            let processing = written
                .remove(&(input.event_id, input.engine_id))
                .ok_or_else(|| AppError::internal("a record's INSERT returned no row"))?;
            Ok(Recorded {
                processing,
                published: Vec::new(),
                run_id,
                again: false,
            })
        })
        .collect::<AppResult<Vec<_>>>()
        .map(Some)
}

fn check_error(input: &Record) -> AppResult<()> {
    if let Some(seconds) = input.retry_after_seconds {
        let max = super::lease::MAX_RETRY_DELAY.num_seconds();
        if !(0..=max).contains(&i64::from(seconds)) {
            return Err(AppError::bad_input(
                "input.retryAfterSeconds",
                format!("retryAfterSeconds must be between 0 and {max}"),
            ));
        }
    }
    if let Some(error) = &input.error {
        super::check_text("input.error", error)?;
    }
    if input
        .error
        .as_ref()
        .is_some_and(|e| e.len() > MAX_ERROR_BYTES)
    {
        return Err(AppError::limit(
            "input.error",
            format!("error is longer than {MAX_ERROR_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Loads the event of a record, checks that its engine is registered in
/// the event's run, and says who the event waits on: the engine, or its
/// group (`pending::recipient`).
async fn load_event<C: ConnectionTrait>(
    conn: &C,
    input: &Record,
) -> AppResult<(event_instance::Model, Uuid)> {
    let event = event_instance::Entity::find_by_id(input.event_id)
        .one(conn)
        .await?
        .ok_or_else(|| event_not_found(input.event_id))?;
    let group =
        super::engine::require_in_run(conn, input.engine_id, event.run_id, "input.engineId")
            .await?;
    let recipient = super::pending::recipient_of(event.target_engine_id, input.engine_id, group);
    Ok((event, recipient))
}

fn event_not_found(event_id: Uuid) -> AppError {
    AppError::not_found("input.eventId", format!("event {event_id} not found"))
}

/// What writing a record did, besides the record.
struct Recorded {
    processing: event_processing::Model,
    /// The `error_occurred` event, when this failure was final.
    published: Vec<event_instance::Model>,
    /// The event's run.
    run_id: Uuid,
    /// The failure left attempts: the event comes back to the engine.
    again: bool,
}

impl Recorded {
    /// Tells delivery, after the commit, what this record changed: the
    /// engine's window has room again, and a failure may be sent again.
    fn announce(&self, ctx: &Ctx, more: &[event_instance::Model]) {
        let mut published = self.published.clone();
        published.extend(more.iter().cloned());
        ctx.announce(&published);
        ctx.announce_recorded(
            self.run_id,
            self.processing.engine_id,
            &[self.processing.event_id],
            self.again,
        );
    }
}

/// Writes the record inside `txn`, ends the engine's lease (fenced by
/// `lease_id`), and publishes `error_occurred` when this failure is final.
/// Failures count per recipient: across a group, whichever member failed.
async fn record_in(ctx: &Ctx, txn: &DatabaseTransaction, input: &Record) -> AppResult<Recorded> {
    let (event, recipient) = load_event(txn, input).await?;
    let row = txn
        .query_one(&upsert([(
            input,
            super::history::run_sequence_of(event.run_id),
        )]))
        .await?
        .ok_or_else(|| AppError::internal("a record's INSERT returned no row"))?;
    let processing = event_processing::Model::from_query_result(&row, "")?;
    let failed = input.status == ProcessingStatus::Failed;
    // Only a failure asks about attempts and backoff: the common record
    // (PROCESSED, SKIPPED) saves the statement, one of about six.
    let etype = if failed {
        super::event_type::get_many_on(ctx, txn, std::slice::from_ref(&event.event_type))
            .await?
            .pop()
    } else {
        None
    };
    // A failure after the recipient is done (another member processed it,
    // or it failed for good) is recorded but reopens nothing.
    let (failures, was_done) = if failed {
        let (failures, done) = super::lease::failures_in(txn, input.event_id, recipient).await?;
        (Some(failures + 1), done)
    } else {
        (None, false)
    };
    let max_attempts = etype.as_ref().map_or(1, |t| t.max_attempts);
    let retry = !was_done && failures.is_some_and(|f| f < max_attempts);
    let not_before = match failures {
        Some(failures) if retry => {
            let delay = match input.retry_after_seconds {
                Some(seconds) => TimeDelta::seconds(seconds.into()),
                None => backoff(
                    etype.as_ref().map_or(0, |t| t.retry_delay_seconds),
                    failures,
                ),
            };
            Some(now() + delay)
        }
        _ => None,
    };
    super::lease::settle_in(
        txn,
        super::lease::Settlement {
            event_id: input.event_id,
            recipient_id: recipient,
            engine_id: input.engine_id,
            lease_id: input.lease_id,
            done: !retry,
            not_before,
            failures,
        },
    )
    .await?;
    // Only the failure that reaches the limit is final; later ones are not news.
    let published = match failures {
        Some(failures) if failures == max_attempts && !was_done => {
            publish_error(ctx, txn, &event, &processing, failures).await?
        }
        _ => Vec::new(),
    };
    let mut processing = processing;
    redate(txn, &mut processing, &published).await?;
    Ok(Recorded {
        processing,
        published,
        run_id: event.run_id,
        again: retry,
    })
}

/// The upsert of processing records, each with its run's sequence to date
/// it by: a first record counts attempt 1, a repeated one adds an attempt.
/// Returns the rows.
fn upsert<'a>(records: impl IntoIterator<Item = (&'a Record, Expr)>) -> InsertStatement {
    use event_processing::Column as P;
    let mut insert = Query::insert();
    insert.into_table(event_processing::Entity).columns([
        P::EventId,
        P::EngineId,
        P::Status,
        P::Error,
        P::Attempts,
        P::ProcessedAt,
        P::RunSequence,
    ]);
    let at = now();
    for (input, run_sequence) in records {
        insert.values_panic([
            Expr::val(input.event_id),
            Expr::val(input.engine_id),
            Expr::val(input.status.as_str()),
            Expr::val(input.error.clone()),
            Expr::val(1),
            Expr::val(at),
            run_sequence,
        ]);
    }
    insert
        .on_conflict(
            OnConflict::columns([P::EventId, P::EngineId])
                .update_columns([P::Status, P::Error, P::ProcessedAt, P::RunSequence])
                .value(
                    P::Attempts,
                    Expr::col((event_processing::Entity, P::Attempts)).add(1),
                )
                .to_owned(),
        )
        .returning_all();
    insert
}

/// Dates the record after the events its transaction published (a final
/// failure's `error_occurred`, a completion's emits): they commit with it,
/// and a fork between them must not hold the record without them.
async fn redate(
    txn: &DatabaseTransaction,
    processing: &mut event_processing::Model,
    published: &[event_instance::Model],
) -> AppResult<()> {
    use event_processing::Column as P;
    let Some(last) = published.iter().map(|e| e.sequence).max() else {
        return Ok(());
    };
    if last <= processing.run_sequence {
        return Ok(());
    }
    event_processing::Entity::update_many()
        .col_expr(P::RunSequence, Expr::value(last))
        .filter(P::EventId.eq(processing.event_id))
        .filter(P::EngineId.eq(processing.engine_id))
        .exec(txn)
        .await?;
    processing.run_sequence = last;
    Ok(())
}

/// The wait before attempt `failures + 1`: the type's delay doubled per
/// failure so far, at most [`super::lease::MAX_RETRY_DELAY`].
pub fn backoff(retry_delay_seconds: i32, failures: i32) -> TimeDelta {
    let max = super::lease::MAX_RETRY_DELAY.num_seconds();
    let doublings = Ord::min(u32::try_from(failures.saturating_sub(1)).unwrap_or(0), 32);
    let seconds = i64::from(Ord::max(retry_delay_seconds, 0)).saturating_mul(1_i64 << doublings);
    TimeDelta::seconds(Ord::min(seconds, max))
}

async fn publish_error(
    ctx: &Ctx,
    txn: &DatabaseTransaction,
    event: &event_instance::Model,
    processing: &event_processing::Model,
    failures: i32,
) -> AppResult<Vec<event_instance::Model>> {
    // A closed run takes no events, not even this one: the record still stands.
    let run = scenario_run::Entity::find_by_id(event.run_id)
        .one(txn)
        .await?;
    if run.is_none_or(|r| r.status.is_terminal()) {
        return Ok(Vec::new());
    }
    let error_event = NewEvent {
        run_id: event.run_id,
        event_type: ERROR_OCCURRED.into(),
        payload: Some(json!({
            "eventId": event.id,
            "engineId": processing.engine_id,
            "error": processing.error,
            "attempts": failures,
        })),
        source_engine_id: Some(processing.engine_id),
        parent_event_id: Some(event.id),
        ..Default::default()
    };
    let prepared = prepare(ctx, txn, vec![error_event], "input", |_| "input".into()).await?;
    insert_prepared(txn, prepared, false).await
}

/// A completion: record, emit and checkpoint at once.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The processing record.
    pub record: Record,
    /// Events to publish; their source defaults to the engine and their
    /// parent to the completed event.
    pub emit: Vec<NewEvent>,
    /// The engine's new state, if it saves one.
    pub state: Option<Value>,
    /// The state version the engine last saw.
    pub expected_version: Option<i64>,
}

/// What a completion wrote.
#[derive(Debug, Clone)]
pub struct Completed {
    /// The processing record.
    pub processing: event_processing::Model,
    /// The emitted events, in input order.
    pub emitted: Vec<event_instance::Model>,
    /// The engine after the save.
    pub engine: engine_state::Model,
}

/// Records processing, publishes the emitted events and saves the engine's
/// state in ONE transaction: any failure leaves everything as it was.
pub async fn complete(ctx: &Ctx, principal: &Principal, input: Completion) -> AppResult<Completed> {
    principal.require(Access::Engine)?;
    check_error(&input.record)?;
    let state = match input.state {
        Some(state) => {
            let checked = super::engine::check_state(ctx, "input.state", &state)?;
            super::engine::require_owner(ctx, principal, input.record.engine_id, "input.engineId")
                .await?;
            Some((state, checked))
        }
        None => None,
    };
    let record = input.record;
    let emit: Vec<NewEvent> = input
        .emit
        .into_iter()
        .map(|mut e| {
            e.source_engine_id.get_or_insert(record.engine_id);
            e.parent_event_id.get_or_insert(record.event_id);
            e
        })
        .collect();
    let prepared = prepare(ctx, &ctx.db.conn, emit, "input.emit", |i| {
        format!("input.emit.{i}")
    })
    .await?;

    let txn = ctx.db.begin_write().await?;
    let mut recorded = record_in(ctx, &txn, &record).await?;
    let emitted = insert_prepared(&txn, prepared, false).await?;
    redate(&txn, &mut recorded.processing, &emitted).await?;
    let engine = match state {
        Some((state, checked)) => super::engine::save_in(
            &*txn,
            record.engine_id,
            checked,
            input.expected_version,
            ctx.limits.state_history,
        )
        .await?
        .with_state(state),
        None => {
            let engine = engine_state::Entity::find_by_id(record.engine_id)
                .one(&*txn)
                .await?
                .ok_or_else(|| AppError::internal("engine vanished inside its transaction"))?;
            if input.expected_version.is_some_and(|v| v != engine.version) {
                return super::engine::conflict_or_missing(
                    &*txn,
                    record.engine_id,
                    input.expected_version,
                )
                .await;
            }
            engine
        }
    };
    txn.commit().await?;
    recorded.announce(ctx, &emitted);
    Ok(Completed {
        processing: recorded.processing,
        emitted,
        engine,
    })
}
