//! The one rule that says whether an event waits for an engine, as an SQL
//! condition and its in-memory twin side by side (tested against each
//! other). Delivery, the `pendingFor` filter and `EngineInstance.pendingCount`
//! call these and never restate them.
//!
//! An event waits on a *recipient*: the engine itself when the event names
//! it in `targetEngineId`, else the engine's group when it has one (the
//! group is one recipient: done once, leased to one member at a time), else
//! the engine. The recipient's row in `event_deliveries` says whether it is
//! done, leased or backing off.
//!
//! Two scopes of one rule:
//! - *outstanding*: routed to the engine and not done by its recipient (no
//!   PROCESSED record, fewer failures than the type's `maxAttempts` when
//!   they were recorded): what tooling calls pending, in flight or not;
//! - *deliverable*: outstanding, due (`deliverAt` passed), not held by a
//!   live lease or a failed attempt's backoff, its turn among the events of
//!   its partition key (every earlier one routed to the engine is done),
//!   and, for a group, not a key that another subscribed member has: what a
//!   subscription may send next.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Asterisk, Expr, Order, Query, SelectStatement, SubQueryStatement};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, ExprTrait};
use uuid::Uuid;

use crate::entity::{engine_state, event_delivery, event_instance};

/// Which part of the rule a reader asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Routed and not done, whether in flight, held back or not yet due.
    Outstanding,
    /// Outstanding, due, in its key's turn, and neither leased nor backing
    /// off: sendable now.
    Deliverable,
}

/// What the rule reads about one event and one engine.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The event.
    pub event: &'a event_instance::Model,
    /// The engine.
    pub engine: &'a engine_state::Model,
    /// Delivery rows by (event, recipient).
    pub deliveries: &'a HashMap<(Uuid, Uuid), event_delivery::Model>,
    /// The run's events with the event's partition key and a lower sequence.
    pub earlier: &'a [&'a event_instance::Model],
    /// The engines with an open subscription.
    pub subscribed: &'a HashSet<Uuid>,
}

/// The recipient `event` waits on when it is routed to `engine`: the engine
/// when the event targets it, else its group, else the engine.
pub fn recipient(event: &event_instance::Model, engine: &engine_state::Model) -> Uuid {
    recipient_of(event.target_engine_id, engine.engine_id, engine.group_id)
}

/// [`recipient`] from the event's target and the engine's id and group.
pub fn recipient_of(target: Option<Uuid>, engine_id: Uuid, group_id: Option<Uuid>) -> Uuid {
    match group_id {
        Some(group) if target != Some(engine_id) => group,
        _ => engine_id,
    }
}

/// The recipients an event routed to `engine` may wait on: the engine and
/// its group, if any (which one, the event's target decides: [`recipient`]).
pub fn recipients(engine: &engine_state::Model) -> Vec<Uuid> {
    std::iter::once(engine.engine_id)
        .chain(engine.group_id)
        .collect()
}

/// The in-memory twin of [`condition`].
pub fn holds(scope: Scope, facts: &Facts<'_>, now: DateTime<Utc>) -> bool {
    let engine = facts.engine;
    let row =
        |event: &event_instance::Model| facts.deliveries.get(&(event.id, recipient(event, engine)));
    let outstanding = |event: &event_instance::Model| {
        is_routed(event, engine) && row(event).is_none_or(|d| !d.done)
    };
    let event = facts.event;
    if !outstanding(event) {
        return false;
    }
    match scope {
        Scope::Outstanding => true,
        Scope::Deliverable => {
            let keyed = event.partition_key.is_some();
            let in_turn = !keyed || !facts.earlier.iter().any(|p| outstanding(p));
            let grouped = recipient(event, engine) != engine.engine_id;
            let holder = facts
                .earlier
                .iter()
                .rev()
                .find_map(|p| facts.deliveries.get(&(p.id, recipient(event, engine))))
                .and_then(|d| d.engine_id);
            let sticks = !keyed
                || !grouped
                || holder.is_none_or(|h| h == engine.engine_id || !facts.subscribed.contains(&h));
            event.deliver_at.is_none_or(|at| at <= now)
                && row(event).is_none_or(|d| !is_held(d, now))
                && in_turn
                && sticks
        }
    }
}

/// Whether a delivery row keeps its event from being sent at `now`: the
/// recipient is done with it, a lease holds it, or a failed attempt backs off.
pub fn is_held(delivery: &event_delivery::Model, now: DateTime<Utc>) -> bool {
    delivery.done
        || delivery.lease_expires_at.is_some_and(|t| t > now)
        || delivery.not_before.is_some_and(|t| t > now)
}

/// Whether `event` is routed to `engine`: targeted at it, at its type, or at
/// nobody in particular. The twin of [`routed_to`].
pub fn is_routed(event: &event_instance::Model, engine: &engine_state::Model) -> bool {
    match (event.target_engine_id, &event.target_engine_type) {
        (Some(target), _) => target == engine.engine_id,
        (None, Some(engine_type)) => *engine_type == engine.engine_type,
        (None, None) => true,
    }
}

/// The SQL of [`holds`], over `event_instances` rows.
pub fn condition(scope: Scope, engine: &engine_state::Model, now: DateTime<Utc>) -> Condition {
    let outstanding = Condition::all()
        .add(routed_to(engine))
        .add(not_done(engine, event_instance::Entity));
    match scope {
        Scope::Outstanding => outstanding,
        Scope::Deliverable => outstanding
            .add(
                Condition::any()
                    .add(event_instance::Column::DeliverAt.is_null())
                    .add(event_instance::Column::DeliverAt.lte(now)),
            )
            .add(not_held(engine, now))
            .add(in_turn(engine))
            .add(sticks(engine, now)),
    }
}

/// Events routed to `engine` (of its run).
pub fn routed_to(engine: &engine_state::Model) -> Condition {
    routed_in(engine, event_instance::Entity)
}

/// [`routed_to`] over the `event_instances` rows named `table`.
fn routed_in<T: sea_orm::sea_query::IntoIden + Clone>(
    engine: &engine_state::Model,
    table: T,
) -> Condition {
    use event_instance::Column as E;
    let col = |c: E| Expr::col((table.clone(), c));
    Condition::any()
        .add(col(E::TargetEngineId).eq(engine.engine_id))
        .add(
            Condition::all().add(col(E::TargetEngineId).is_null()).add(
                Condition::any()
                    .add(col(E::TargetEngineType).is_null())
                    .add(col(E::TargetEngineType).eq(engine.engine_type.clone())),
            ),
        )
}

/// The delivery row of the event named `table` for its recipient (the SQL
/// of [`recipient`]).
fn rows_of<T: sea_orm::sea_query::IntoIden + Clone>(
    engine: &engine_state::Model,
    table: T,
) -> SelectStatement {
    use event_delivery::Column as D;
    let recipient = match engine.group_id {
        None => Expr::val(engine.engine_id),
        Some(group) => Expr::case(
            Expr::col((table.clone(), event_instance::Column::TargetEngineId)).eq(engine.engine_id),
            engine.engine_id,
        )
        .finally(group)
        .into(),
    };
    Query::select()
        .expr(Expr::val(1))
        .from(event_delivery::Entity)
        .and_where(
            Expr::col((event_delivery::Entity, D::EventId))
                .equals((table, event_instance::Column::Id)),
        )
        .and_where(Expr::col((event_delivery::Entity, D::RecipientId)).eq(recipient))
        .to_owned()
}

/// Events of `table` that the engine's recipient is not done with.
fn not_done<T: sea_orm::sea_query::IntoIden + Clone>(
    engine: &engine_state::Model,
    table: T,
) -> Condition {
    let done = rows_of(engine, table)
        .and_where(Expr::col((event_delivery::Entity, event_delivery::Column::Done)).eq(true))
        .to_owned();
    Condition::all().add(Expr::exists(done).not())
}

/// Events whose delivery row does not hold them at `now` (the SQL of
/// [`is_held`], negated).
fn not_held(engine: &engine_state::Model, now: DateTime<Utc>) -> Condition {
    use event_delivery::Column as D;
    let held = rows_of(engine, event_instance::Entity)
        .and_where(
            Expr::col((event_delivery::Entity, D::Done))
                .eq(true)
                .or(Expr::col((event_delivery::Entity, D::LeaseExpiresAt)).gt(now))
                .or(Expr::col((event_delivery::Entity, D::NotBefore)).gt(now)),
        )
        .to_owned();
    Condition::all().add(Expr::exists(held).not())
}

/// The earlier events of the outer event's partition key, as `earlier`.
fn earlier_of_key() -> SelectStatement {
    use event_instance::Column as E;
    let earlier = Alias::new("earlier");
    let outer = |c: E| Expr::col((event_instance::Entity, c));
    Query::select()
        .from_as(event_instance::Entity, earlier.clone())
        .and_where(
            Expr::col((earlier.clone(), E::RunId)).equals((event_instance::Entity, E::RunId)),
        )
        .and_where(
            Expr::col((earlier.clone(), E::PartitionKey))
                .equals((event_instance::Entity, E::PartitionKey)),
        )
        .and_where(Expr::col((earlier, E::Sequence)).lt(outer(E::Sequence)))
        .to_owned()
}

/// Keyed events whose earlier events of the key, routed to the engine, are
/// all done: one event of a key at a time, in sequence order.
fn in_turn(engine: &engine_state::Model) -> Condition {
    let earlier = Alias::new("earlier");
    let waiting = earlier_of_key()
        .expr(Expr::val(1))
        .cond_where(routed_in(engine, earlier.clone()))
        .cond_where(not_done(engine, earlier))
        .to_owned();
    Condition::any()
        .add(event_instance::Column::PartitionKey.is_null())
        .add(Expr::exists(waiting).not())
}

/// For a group member: keyed group events whose key was last delivered to
/// this member, to nobody yet, or to a member that is not subscribed any
/// more. A key stays with the member that has it while it stays.
fn sticks(engine: &engine_state::Model, now: DateTime<Utc>) -> Condition {
    use engine_state::Column as S;
    use event_delivery::Column as D;
    let Some(group) = engine.group_id else {
        return Condition::all();
    };
    let earlier = Alias::new("earlier");
    let last_holder = earlier_of_key()
        .column((event_delivery::Entity, D::EngineId))
        .inner_join(
            event_delivery::Entity,
            Expr::col((event_delivery::Entity, D::EventId))
                .equals((earlier.clone(), event_instance::Column::Id))
                .and(Expr::col((event_delivery::Entity, D::RecipientId)).eq(group)),
        )
        .order_by((earlier, event_instance::Column::Sequence), Order::Desc)
        .limit(1)
        .to_owned();
    let taken = Query::select()
        .expr(Expr::val(1))
        .from(engine_state::Entity)
        .and_where(Expr::col((engine_state::Entity, S::EngineId)).ne(engine.engine_id))
        .and_where(Expr::col((engine_state::Entity, S::SubscribedUntil)).gt(now))
        .and_where(Expr::col((engine_state::Entity, S::EngineId)).in_subquery(last_holder))
        .to_owned();
    Condition::any()
        .add(event_instance::Column::PartitionKey.is_null())
        .add(event_instance::Column::TargetEngineId.eq(engine.engine_id))
        .add(Expr::exists(taken).not())
}

/// How many events are outstanding for each of `engines` (their
/// `pendingCount`), in one statement: a count per engine, side by side.
pub async fn counts(
    ctx: &super::Ctx,
    engines: &[engine_state::Model],
) -> crate::error::AppResult<HashMap<Uuid, i64>> {
    if engines.is_empty() {
        return Ok(HashMap::new());
    }
    let now = super::now();
    let mut select = Query::select();
    for (i, engine) in engines.iter().enumerate() {
        let count = Query::select()
            .expr(Expr::col(Asterisk).count())
            .from(event_instance::Entity)
            .and_where(event_instance::Column::RunId.eq(engine.run_id))
            .cond_where(condition(Scope::Outstanding, engine, now))
            .to_owned();
        select.expr_as(
            Expr::SubQuery(None, Box::new(SubQueryStatement::SelectStatement(count))),
            Alias::new(format!("c{i}")),
        );
    }
    let conn = &ctx.db.conn;
    let row = conn
        .query_one(&select)
        .await?
        .ok_or_else(|| crate::error::AppError::internal("a count returned no row"))?;
    engines
        .iter()
        .enumerate()
        .map(|(i, e)| Ok((e.engine_id, row.try_get::<i64>("", &format!("c{i}"))?)))
        .collect()
}
