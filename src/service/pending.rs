//! The one rule that says whether an event waits for an engine, as an SQL
//! condition and its in-memory twin side by side (tested against each
//! other). Delivery, the `pendingFor` filter and `EngineInstance.pendingCount`
//! call these and never restate them.
//!
//! Two scopes of one rule:
//! - *outstanding*: routed to the engine and not done by it (no PROCESSED
//!   record, fewer FAILED attempts than the type's `maxAttempts`): what
//!   tooling calls pending, in flight or not;
//! - *deliverable*: outstanding, due (`deliverAt` passed), not held by a
//!   live lease or a failed attempt's backoff: what a subscription may send
//!   next.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{ColumnTrait, Condition, EntityTrait, ExprTrait, PaginatorTrait, QueryFilter};
use uuid::Uuid;

use super::processing::ProcessingStatus;
use crate::entity::{engine_state, event_delivery, event_instance, event_processing, event_type};

/// Which part of the rule a reader asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Routed and not done, whether in flight, held back or not yet due.
    Outstanding,
    /// Outstanding, due, and neither leased nor backing off: sendable now.
    Deliverable,
}

/// What the rule reads about one event and one engine.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The event.
    pub event: &'a event_instance::Model,
    /// The engine.
    pub engine: &'a engine_state::Model,
    /// The engine's processing record of the event, if any.
    pub processing: Option<&'a event_processing::Model>,
    /// The engine's delivery row of the event, if any.
    pub delivery: Option<&'a event_delivery::Model>,
    /// The event type's `maxAttempts`.
    pub max_attempts: i32,
}

/// The in-memory twin of [`condition`].
pub fn holds(scope: Scope, facts: &Facts<'_>, now: DateTime<Utc>) -> bool {
    let outstanding = is_routed(facts.event, facts.engine)
        && facts.processing.is_none_or(|p| {
            p.status != ProcessingStatus::Processed && p.attempts < facts.max_attempts
        });
    match scope {
        Scope::Outstanding => outstanding,
        Scope::Deliverable => {
            outstanding
                && facts.event.deliver_at.is_none_or(|at| at <= now)
                && facts.delivery.is_none_or(|d| !is_held(d, now))
        }
    }
}

/// Whether a delivery row keeps its event from being sent at `now`: the
/// engine is done with it, a lease holds it, or a failed attempt backs off.
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
        .add(not_done_by(engine.engine_id));
    match scope {
        Scope::Outstanding => outstanding,
        Scope::Deliverable => outstanding
            .add(
                Condition::any()
                    .add(event_instance::Column::DeliverAt.is_null())
                    .add(event_instance::Column::DeliverAt.lte(now)),
            )
            .add(not_held(engine.engine_id, now)),
    }
}

/// Events routed to `engine` (of its run).
pub fn routed_to(engine: &engine_state::Model) -> Condition {
    use event_instance::Column as E;
    Condition::any()
        .add(E::TargetEngineId.eq(engine.engine_id))
        .add(
            Condition::all().add(E::TargetEngineId.is_null()).add(
                Condition::any()
                    .add(E::TargetEngineType.is_null())
                    .add(E::TargetEngineType.eq(engine.engine_type.clone())),
            ),
        )
}

/// Events that `engine_id` has not recorded for good: no record, or a FAILED
/// record with fewer attempts than the event type's `maxAttempts`.
fn not_done_by(engine_id: Uuid) -> Condition {
    use event_processing::Column as P;
    let done = Query::select()
        .expr(Expr::val(1))
        .from(event_processing::Entity)
        .inner_join(
            event_type::Entity,
            Expr::col((event_type::Entity, event_type::Column::Name))
                .equals((event_instance::Entity, event_instance::Column::EventType)),
        )
        .and_where(
            Expr::col((event_processing::Entity, P::EventId))
                .equals((event_instance::Entity, event_instance::Column::Id)),
        )
        .and_where(Expr::col((event_processing::Entity, P::EngineId)).eq(engine_id))
        .and_where(
            Expr::col((event_processing::Entity, P::Status))
                .eq(ProcessingStatus::Processed)
                .or(
                    Expr::col((event_processing::Entity, P::Attempts)).gte(Expr::col((
                        event_type::Entity,
                        event_type::Column::MaxAttempts,
                    ))),
                ),
        )
        .to_owned();
    Condition::all().add(Expr::exists(done).not())
}

/// Events whose delivery row for `engine_id` does not hold them at `now`
/// (the SQL of [`is_held`], negated).
fn not_held(engine_id: Uuid, now: DateTime<Utc>) -> Condition {
    use event_delivery::Column as D;
    let held = Query::select()
        .expr(Expr::val(1))
        .from(event_delivery::Entity)
        .and_where(
            Expr::col((event_delivery::Entity, D::EventId))
                .equals((event_instance::Entity, event_instance::Column::Id)),
        )
        .and_where(Expr::col((event_delivery::Entity, D::EngineId)).eq(engine_id))
        .and_where(
            Expr::col((event_delivery::Entity, D::Done))
                .eq(true)
                .or(Expr::col((event_delivery::Entity, D::LeaseExpiresAt)).gt(now))
                .or(Expr::col((event_delivery::Entity, D::NotBefore)).gt(now)),
        )
        .to_owned();
    Condition::all().add(Expr::exists(held).not())
}

/// How many events are outstanding for `engine` (its `pendingCount`).
pub async fn count(ctx: &super::Ctx, engine: &engine_state::Model) -> crate::error::AppResult<u64> {
    Ok(event_instance::Entity::find()
        .filter(event_instance::Column::RunId.eq(engine.run_id))
        .filter(condition(Scope::Outstanding, engine, super::now()))
        .count(&ctx.db.conn)
        .await?)
}
