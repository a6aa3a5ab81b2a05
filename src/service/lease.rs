//! Leases: each delivery to an engine leases the event for a while, so a
//! crashed or hung engine's events come back. A claim is one conditional
//! upsert on `event_deliveries`, keyed by the event's recipient (the engine,
//! or its group), so two subscriptions never hold one event for one
//! recipient at once, whichever members they serve; records and extensions
//! that name a lease which is no longer current are fenced off with
//! `LEASE_LOST`.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait, QueryFilter, QuerySelect,
    StatementBuilder,
};
use uuid::Uuid;

use super::auth::{Access, Principal};
use super::{Ctx, now};
use crate::entity::{engine_state, event_delivery, event_instance};
use crate::error::{AppError, AppResult};

/// Shortest and longest lease, in seconds.
pub const LEASE_SECONDS: std::ops::RangeInclusive<i32> = 1..=86_400;

/// The longest backoff after a failed attempt.
pub const MAX_RETRY_DELAY: TimeDelta = TimeDelta::hours(1);

/// Checks a lease length given by a client.
pub fn check_seconds(field: &str, seconds: i32) -> AppResult<i32> {
    if !LEASE_SECONDS.contains(&seconds) {
        return Err(AppError::bad_input(
            field,
            format!(
                "{field} must be between {} and {} seconds",
                LEASE_SECONDS.start(),
                LEASE_SECONDS.end()
            ),
        ));
    }
    Ok(seconds)
}

/// One event to lease, for how long.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    /// The event.
    pub event_id: Uuid,
    /// Who it waits on: the engine, or its group (`pending::recipient`).
    pub recipient_id: Uuid,
    /// The new lease's id, chosen by the caller: a subscription that is
    /// dropped while its claim runs can still release what it took.
    pub lease_id: Uuid,
    /// The lease's length.
    pub seconds: i32,
}

/// Leases `wanted` to `engine_id` where nothing holds them for their
/// recipient (no live lease, no backoff, not done), in one statement;
/// returns the deliveries taken, each with a new `lease_id` and its
/// `attempt` counted across the recipient. An event that another
/// subscription took meanwhile is left out.
pub async fn claim(
    ctx: &Ctx,
    engine_id: Uuid,
    wanted: &[Wanted],
) -> AppResult<Vec<event_delivery::Model>> {
    use event_delivery::Column as D;
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let at = now();
    let mut insert = Query::insert();
    insert.into_table(event_delivery::Entity).columns([
        D::EventId,
        D::RecipientId,
        D::EngineId,
        D::LeaseId,
        D::Attempt,
        D::LeaseExpiresAt,
        D::Done,
        D::DeliveredAt,
    ]);
    for w in wanted {
        insert.values_panic([
            w.event_id.into(),
            w.recipient_id.into(),
            engine_id.into(),
            w.lease_id.into(),
            1.into(),
            (at + TimeDelta::seconds(w.seconds.into())).into(),
            false.into(),
            at.into(),
        ]);
    }
    let existing = |column: D| Expr::col((event_delivery::Entity, column));
    insert
        .on_conflict(
            OnConflict::columns([D::EventId, D::RecipientId])
                .update_columns([D::EngineId, D::LeaseId, D::LeaseExpiresAt, D::DeliveredAt])
                .value(D::Attempt, existing(D::Attempt).add(1))
                .action_and_where(
                    existing(D::Done)
                        .eq(false)
                        .and(
                            existing(D::LeaseExpiresAt)
                                .is_null()
                                .or(existing(D::LeaseExpiresAt).lte(at)),
                        )
                        .and(
                            existing(D::NotBefore)
                                .is_null()
                                .or(existing(D::NotBefore).lte(at)),
                        ),
                )
                .to_owned(),
        )
        .returning_all();
    let conn = &ctx.db.conn;
    let statement = StatementBuilder::build(&insert, &conn.get_database_backend());
    // Claims run beside records (several statements under one lock): in
    // the same queue as they, not in SQLite's busy handler.
    let _turn = ctx.db.write_turn().await;
    Ok(event_delivery::Entity::find()
        .from_raw_sql(statement)
        .all(conn)
        .await?)
}

/// What an engine says when it records an event it may hold a lease on.
#[derive(Debug, Clone, Copy)]
pub struct Settlement {
    /// The event.
    pub event_id: Uuid,
    /// Who the event waits on: the engine, or its group.
    pub recipient_id: Uuid,
    /// The engine that records.
    pub engine_id: Uuid,
    /// The lease the engine holds, when it says which.
    pub lease_id: Option<Uuid>,
    /// The recipient is done with the event for good.
    pub done: bool,
    /// A failed attempt's backoff: the event is not sent again before this.
    pub not_before: Option<DateTime<Utc>>,
    /// After a failure: the recipient's failures, this one counted.
    pub failures: Option<i32>,
}

/// The failures so far of `recipient_id` with the event and whether it is
/// done with it, the row locked until the transaction ends (PostgreSQL;
/// SQLite's writer is alone), so two members failing one event at once
/// count both.
pub async fn failures_in<C: ConnectionTrait>(
    conn: &C,
    event_id: Uuid,
    recipient_id: Uuid,
) -> AppResult<(i32, bool)> {
    use event_delivery::Column as D;
    let row: Option<(i32, bool)> = event_delivery::Entity::find()
        .select_only()
        .column(D::Failures)
        .column(D::Done)
        .filter(D::EventId.eq(event_id))
        .filter(D::RecipientId.eq(recipient_id))
        .lock_exclusive()
        .into_tuple()
        .one(conn)
        .await?;
    Ok(row.unwrap_or((0, false)))
}

/// Ends the engine's lease of the event inside a recording transaction,
/// marking it done or backing off. With a `lease_id` that is not the
/// current one, fails with `LEASE_LOST` (the caller's transaction then
/// rolls back, so nothing of the record stays).
pub async fn settle_in<C: ConnectionTrait>(conn: &C, settlement: Settlement) -> AppResult<()> {
    use event_delivery::Column as D;
    match settlement.lease_id {
        Some(lease_id) => {
            // An UPDATE, so PostgreSQL locks the row and checks the lease
            // against the latest committed claim.
            let mut update = event_delivery::Entity::update_many()
                .col_expr(D::EngineId, Expr::value(settlement.engine_id))
                .col_expr(D::LeaseExpiresAt, Expr::value(None::<DateTime<Utc>>))
                .col_expr(D::NotBefore, Expr::value(settlement.not_before))
                .col_expr(D::Done, Expr::value(settlement.done));
            if let Some(failures) = settlement.failures {
                update = update.col_expr(D::Failures, Expr::value(failures));
            }
            let updated = update
                .filter(D::EventId.eq(settlement.event_id))
                .filter(D::RecipientId.eq(settlement.recipient_id))
                .filter(D::LeaseId.eq(lease_id))
                .exec(conn)
                .await?;
            if updated.rows_affected == 0 {
                return Err(AppError::LeaseLost {
                    event_id: settlement.event_id,
                    lease_id,
                });
            }
        }
        None => settle_unleased(conn, &[&settlement]).await?,
    }
    Ok(())
}

/// Settles records that name no lease: the recipients' rows are written
/// whatever lease they hold (created if the event was never delivered).
/// The failure counts are written only when every settlement has one.
async fn settle_unleased<C: ConnectionTrait>(
    conn: &C,
    settlements: &[&Settlement],
) -> AppResult<()> {
    use event_delivery::Column as D;
    let rows = settlements.iter().map(|s| event_delivery::ActiveModel {
        event_id: sea_orm::Set(s.event_id),
        recipient_id: sea_orm::Set(s.recipient_id),
        engine_id: sea_orm::Set(Some(s.engine_id)),
        lease_id: sea_orm::Set(None),
        attempt: sea_orm::Set(0),
        lease_expires_at: sea_orm::Set(None),
        not_before: sea_orm::Set(s.not_before),
        done: sea_orm::Set(s.done),
        delivered_at: sea_orm::Set(None),
        failures: sea_orm::Set(s.failures.unwrap_or(0)),
    });
    let mut updated = vec![D::EngineId, D::LeaseExpiresAt, D::NotBefore, D::Done];
    if settlements.iter().all(|s| s.failures.is_some()) {
        updated.push(D::Failures);
    }
    event_delivery::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([D::EventId, D::RecipientId])
                .update_columns(updated)
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// [`settle_in`] for many records that end their events for good (no
/// failure, no backoff), each of another `(event, recipient)`: one UPDATE
/// per engine for the leased ones, one upsert for the rest, however many
/// there are. A lease that is not current fails with `LEASE_LOST` (the
/// first such, in `settlements` order), possibly after settling rows of
/// the batch: `conn` is a transaction that the error rolls back.
pub async fn settle_done_in<C: ConnectionTrait>(
    conn: &C,
    settlements: &[Settlement],
) -> AppResult<()> {
    use event_delivery::Column as D;
    let mut leased: BTreeMap<Uuid, Vec<&Settlement>> = BTreeMap::new();
    let mut unleased = Vec::new();
    for settlement in settlements {
        debug_assert!(settlement.done && settlement.not_before.is_none());
        debug_assert!(settlement.failures.is_none());
        match settlement.lease_id {
            Some(_) => leased
                .entry(settlement.engine_id)
                .or_default()
                .push(settlement),
            None => unleased.push(settlement),
        }
    }
    for (engine_id, group) in leased {
        // Matched by lists, not by a chain of ORs of (event, recipient,
        // lease): PostgreSQL planned a hundred such terms in ~15 ms per
        // batch. A lease id is issued for one row only, so a row that
        // matches the lists and holds none of the batch's exact triples
        // means a lease named with the wrong event: the first triple not
        // returned fails the batch (and the transaction with it). No
        // condition on the recipient: with the statistics of a young table
        // PostgreSQL read all of the recipient's rows by its index instead
        // of probing the primary key.
        let settled = Query::update()
            .table(event_delivery::Entity)
            .value(D::EngineId, engine_id)
            .value(D::LeaseExpiresAt, None::<DateTime<Utc>>)
            .value(D::NotBefore, None::<DateTime<Utc>>)
            .value(D::Done, true)
            .and_where(D::EventId.is_in(group.iter().map(|s| s.event_id)))
            .and_where(D::LeaseId.is_in(group.iter().filter_map(|s| s.lease_id)))
            .returning(Query::returning().columns([D::EventId, D::RecipientId, D::LeaseId]))
            .to_owned();
        let statement = StatementBuilder::build(&settled, &conn.get_database_backend());
        let settled: HashSet<(Uuid, Uuid, Option<Uuid>)> = conn
            .query_all_raw(statement)
            .await?
            .iter()
            .map(|row| row.try_get_many_by_index())
            .collect::<Result<_, _>>()?;
        if let Some(lost) = group
            .iter()
            .find(|s| !settled.contains(&(s.event_id, s.recipient_id, s.lease_id)))
        {
            return Err(AppError::LeaseLost {
                event_id: lost.event_id,
                lease_id: lost.lease_id.unwrap_or_default(),
            });
        }
    }
    if unleased.is_empty() {
        return Ok(());
    }
    settle_unleased(conn, &unleased).await
}

/// An engine's request to keep a lease longer.
#[derive(Debug, Clone, Copy)]
pub struct Extension {
    /// The event.
    pub event_id: Uuid,
    /// The engine holding it.
    pub engine_id: Uuid,
    /// The lease it holds.
    pub lease_id: Uuid,
    /// The new lease runs this long from now.
    pub seconds: i32,
}

/// Renews a lease (a heartbeat of an engine working long on one event);
/// `LEASE_LOST` when the lease is not live any more: expired, released (a
/// restarted engine took its events over), replaced, or the event is done.
/// A lapsed lease is not revived: its event may be on its way elsewhere.
pub async fn extend(
    ctx: &Ctx,
    principal: &Principal,
    input: Extension,
) -> AppResult<event_delivery::Model> {
    use event_delivery::Column as D;
    principal.require(Access::Engine)?;
    check_seconds("input.seconds", input.seconds)?;
    let at = now();
    let expires = at + TimeDelta::seconds(input.seconds.into());
    let rows = event_delivery::Entity::update_many()
        .col_expr(D::LeaseExpiresAt, Expr::value(expires))
        .filter(D::EventId.eq(input.event_id))
        .filter(D::EngineId.eq(input.engine_id))
        .filter(D::LeaseId.eq(input.lease_id))
        .filter(D::LeaseExpiresAt.gt(at))
        .filter(D::Done.eq(false))
        .exec_with_returning(&ctx.db.conn)
        .await?;
    if let Some(row) = rows.into_iter().next() {
        return Ok(row);
    }
    if event_instance::Entity::find_by_id(input.event_id)
        .one(&ctx.db.conn)
        .await?
        .is_none()
    {
        return Err(AppError::not_found(
            "input.eventId",
            format!("event {} not found", input.event_id),
        ));
    }
    if engine_state::Entity::find_by_id(input.engine_id)
        .one(&ctx.db.conn)
        .await?
        .is_none()
    {
        return Err(AppError::not_found(
            "input.engineId",
            format!("engine {} is not registered", input.engine_id),
        ));
    }
    Err(AppError::LeaseLost {
        event_id: input.event_id,
        lease_id: input.lease_id,
    })
}

/// Ends the live leases among `lease_ids` of `engine_id` (a subscription
/// that ended): their events are pending again at once. Returns how many.
pub async fn release(ctx: &Ctx, engine_id: Uuid, lease_ids: &[Uuid]) -> AppResult<u64> {
    use event_delivery::Column as D;
    if lease_ids.is_empty() {
        return Ok(0);
    }
    let result = event_delivery::Entity::update_many()
        .col_expr(D::LeaseExpiresAt, Expr::value(None::<DateTime<Utc>>))
        .filter(D::EngineId.eq(engine_id))
        .filter(D::LeaseId.is_in(lease_ids.iter().copied()))
        .filter(D::LeaseExpiresAt.is_not_null())
        .exec(&ctx.db.conn)
        .await?;
    Ok(result.rows_affected)
}

/// Ends every live lease of `engine_id`: a new subscription of the engine
/// (a restarted process) takes over what its previous one held.
pub async fn take_over(ctx: &Ctx, engine_id: Uuid) -> AppResult<u64> {
    use event_delivery::Column as D;
    let result = event_delivery::Entity::update_many()
        .col_expr(D::LeaseExpiresAt, Expr::value(None::<DateTime<Utc>>))
        .filter(D::EngineId.eq(engine_id))
        .filter(D::LeaseExpiresAt.is_not_null())
        .exec(&ctx.db.conn)
        .await?;
    Ok(result.rows_affected)
}

/// The delivery rows of `engine_id` for `event_ids`.
pub async fn of_events(
    ctx: &Ctx,
    engine_id: Uuid,
    event_ids: &[Uuid],
) -> AppResult<Vec<event_delivery::Model>> {
    use event_delivery::Column as D;
    Ok(event_delivery::Entity::find()
        .filter(D::EngineId.eq(engine_id))
        .filter(D::EventId.is_in(event_ids.iter().copied()))
        .all(&ctx.db.conn)
        .await?)
}

/// The live leases of the engines among `engine_ids`.
pub async fn in_flight(ctx: &Ctx, engine_ids: &[Uuid]) -> AppResult<Vec<event_delivery::Model>> {
    use event_delivery::Column as D;
    Ok(event_delivery::Entity::find()
        .filter(D::EngineId.is_in(engine_ids.iter().copied()))
        .filter(D::LeaseExpiresAt.gt(now()))
        .filter(D::Done.eq(false))
        .all(&ctx.db.conn)
        .await?)
}

/// The earliest time after `at` at which an event of `engine`'s run may
/// become deliverable to it without anyone saying so: a delayed event's
/// `deliverAt`, a backoff's end, the end of a lease held elsewhere (by
/// another member of its group, too), or, in a group, the end of another
/// member's subscription (its partition keys free up).
pub async fn next_due(
    ctx: &Ctx,
    engine: &engine_state::Model,
    at: DateTime<Utc>,
) -> AppResult<Option<DateTime<Utc>>> {
    use engine_state::Column as S;
    use event_delivery::Column as D;
    use event_instance::Column as E;
    let conn = &ctx.db.conn;
    let delayed: Option<DateTime<Utc>> = event_instance::Entity::find()
        .select_only()
        .column_as(E::DeliverAt.min(), "at")
        .filter(E::RunId.eq(engine.run_id))
        .filter(E::DeliverAt.gt(at))
        .filter(super::pending::routed_to(engine))
        .into_tuple::<Option<DateTime<Utc>>>()
        .one(conn)
        .await?
        .flatten();
    let recipients = super::pending::recipients(engine);
    type Times = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let rows: Vec<Times> = event_delivery::Entity::find()
        .select_only()
        .column(D::NotBefore)
        .column(D::LeaseExpiresAt)
        .filter(D::RecipientId.is_in(recipients))
        .filter(D::Done.eq(false))
        .filter(D::NotBefore.gt(at).or(D::LeaseExpiresAt.gt(at)))
        .into_tuple()
        .all(conn)
        .await?;
    let held = rows
        .into_iter()
        .flat_map(|(a, b)| [a, b])
        .flatten()
        .filter(|t| *t > at)
        .min();
    let members = match engine.group_id {
        Some(group) => engine_state::Entity::find()
            .select_only()
            .column_as(S::SubscribedUntil.min(), "at")
            .filter(S::GroupId.eq(group))
            .filter(S::EngineId.ne(engine.engine_id))
            .filter(S::SubscribedUntil.gt(at))
            .into_tuple::<Option<DateTime<Utc>>>()
            .one(conn)
            .await?
            .flatten(),
        None => None,
    };
    Ok([delayed, held, members].into_iter().flatten().min())
}
