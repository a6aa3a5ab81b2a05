//! Reading events: by id, by sequence for feeds and readers, and pages with
//! filters, both orders and cursors (`pendingFor` through
//! `service::pending`). Publishing is `service::publish`.

use std::collections::HashMap;

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use uuid::Uuid;

use super::page::{CursorKey, Page, PageRequest, into_page};
use super::pending::Scope;
use super::{Ctx, now};
use crate::entity::event_instance::Row;
use crate::entity::{engine_state, event_instance, event_processing};
use crate::error::{AppError, AppResult};

/// The event `id`, if it exists.
pub async fn get(ctx: &Ctx, id: Uuid) -> AppResult<Option<event_instance::Model>> {
    Ok(event_instance::Entity::find_by_id(id)
        .one(&ctx.db.conn)
        .await?)
}

/// The events among `ids`.
pub async fn get_many(ctx: &Ctx, ids: &[Uuid]) -> AppResult<Vec<event_instance::Model>> {
    Ok(event_instance::Entity::find()
        .filter(event_instance::Column::Id.is_in(ids.iter().copied()))
        .all(&ctx.db.conn)
        .await?)
}

/// The first page (`first` events in `order`, no filter) of each of
/// `run_ids`, in one statement: one index-ordered, limited read per run,
/// joined with UNION ALL, so a long run costs its page, not its length.
pub async fn first_pages(
    ctx: &Ctx,
    run_ids: &[Uuid],
    order: EventOrder,
    first: usize,
) -> AppResult<HashMap<Uuid, Page<EventCursor, event_instance::Model>>> {
    use event_instance::Column as E;
    use sea_orm::sea_query::{Alias, Asterisk, Query, UnionType};
    let mut union: Option<sea_orm::sea_query::SelectStatement> = None;
    for (i, run_id) in run_ids.iter().enumerate() {
        let mut page = Query::select();
        page.column(Asterisk)
            .from(event_instance::Entity)
            .and_where(E::RunId.eq(*run_id))
            .limit(first as u64 + 1);
        if order == EventOrder::Priority {
            page.order_by(E::Priority, sea_orm::Order::Desc);
        }
        page.order_by(E::Sequence, sea_orm::Order::Asc);
        // Wrapped: a compound SELECT takes no ORDER BY or LIMIT of its own parts.
        let wrapped = Query::select()
            .column(Asterisk)
            .from_subquery(page, Alias::new(format!("page{i}")))
            .to_owned();
        match &mut union {
            None => union = Some(wrapped),
            Some(u) => {
                u.union(UnionType::All, wrapped);
            }
        }
    }
    let mut pages: HashMap<Uuid, Vec<event_instance::Model>> =
        run_ids.iter().map(|id| (*id, Vec::new())).collect();
    if let Some(union) = union {
        let conn = &ctx.db.conn;
        let statement = sea_orm::StatementBuilder::build(&union, &conn.get_database_backend());
        for event in event_instance::Entity::find()
            .from_raw_sql(statement)
            .all(conn)
            .await?
        {
            pages.entry(event.run_id).or_default().push(event);
        }
    }
    Ok(pages
        .into_iter()
        .map(|(run, mut rows)| {
            rows.sort_by_key(|e| match order {
                EventOrder::Priority => (-i64::from(e.priority), e.sequence),
                EventOrder::Sequence => (0, e.sequence),
            });
            let rows = rows
                .into_iter()
                .map(|e| (EventCursor::of(&e, order), e))
                .collect();
            (run, into_page(rows, first))
        })
        .collect())
}

/// The events among `ids` that are pending for `engine` in `scope`: an
/// engine's known candidates, checked against the one rule before a lease.
pub async fn pending_among(
    ctx: &Ctx,
    engine: &engine_state::Model,
    scope: Scope,
    ids: &[Uuid],
) -> AppResult<Vec<event_instance::Model>> {
    Ok(event_instance::Entity::find()
        .filter(event_instance::Column::Id.is_in(ids.iter().copied()))
        .filter(event_instance::Column::RunId.eq(engine.run_id))
        .filter(super::pending::condition(scope, engine, now()))
        .all(&ctx.db.conn)
        .await?)
}

/// At most `limit` events of `run_id` after sequence `after`, in sequence
/// order: what a run's feed reads on each doorbell, and what a reader that
/// fell behind reads to fill its gap.
pub async fn after_sequence<C: ConnectionTrait>(
    conn: &C,
    run_id: Uuid,
    after: i64,
    limit: u64,
) -> AppResult<Vec<event_instance::Model>> {
    let select = event_instance::Entity::find()
        .filter(event_instance::Column::RunId.eq(run_id))
        .filter(event_instance::Column::Sequence.gt(after))
        .order_by_asc(event_instance::Column::Sequence)
        .limit(limit);
    Ok(event_instance::fetch(select, conn).await?)
}

/// The processing records of the events among `ids`, oldest first (a
/// batch's records share their time: then by engine).
pub async fn processings_of(ctx: &Ctx, ids: &[Uuid]) -> AppResult<Vec<event_processing::Model>> {
    Ok(event_processing::Entity::find()
        .filter(event_processing::Column::EventId.is_in(ids.iter().copied()))
        .order_by_asc(event_processing::Column::ProcessedAt)
        .order_by_asc(event_processing::Column::EngineId)
        .all(&ctx.db.conn)
        .await?)
}

/// Which events of a run to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events of these types.
    pub event_types: Option<Vec<String>>,
    /// Only events of at least this priority.
    pub min_priority: Option<i32>,
    /// Only events after this sequence.
    pub after_sequence: Option<i64>,
    /// Only events up to this sequence.
    pub until_sequence: Option<i64>,
    /// Only events routed to this engine and not yet recorded by it for good.
    pub pending_for: Option<Uuid>,
    /// Only events emitted by this engine.
    pub source_engine_id: Option<Uuid>,
}

/// The order of an event list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventOrder {
    /// By sequence, ascending.
    Sequence,
    /// By priority descending, then sequence ascending.
    Priority,
}

/// The position of an event in one of the two orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventCursor {
    /// In sequence order.
    Sequence(i64),
    /// In priority order.
    Priority(i32, i64),
}

impl EventCursor {
    /// The cursor of `event` in `order`.
    pub fn of(event: &impl Row, order: EventOrder) -> Self {
        match order {
            EventOrder::Sequence => EventCursor::Sequence(event.sequence()),
            EventOrder::Priority => EventCursor::Priority(event.priority(), event.sequence()),
        }
    }
}

impl CursorKey for EventCursor {
    fn to_text(&self) -> String {
        match self {
            EventCursor::Sequence(s) => format!("s:{s}"),
            EventCursor::Priority(p, s) => format!("p:{p}:{s}"),
        }
    }
    fn from_text(text: &str) -> Option<Self> {
        if let Some(s) = text.strip_prefix("s:") {
            return Some(EventCursor::Sequence(s.parse().ok()?));
        }
        let (p, s) = text.strip_prefix("p:")?.split_once(':')?;
        Some(EventCursor::Priority(p.parse().ok()?, s.parse().ok()?))
    }
}

fn other_order() -> AppError {
    AppError::bad_input("after", "after is a cursor of the other order")
}

/// A page of the events of `run_id`, whole or as their heads (`R`).
pub async fn list<R: Row>(
    ctx: &Ctx,
    run_id: Uuid,
    filter: EventFilter,
    order: EventOrder,
    page: PageRequest<EventCursor>,
) -> AppResult<Page<EventCursor, R>> {
    let run_not_found = || AppError::not_found("runId", format!("scenario run {run_id} not found"));
    let pending_for = match filter.pending_for {
        None => None,
        Some(engine_id) => {
            if super::run::get(ctx, run_id).await?.is_none() {
                return Err(run_not_found());
            }
            Some(super::engine::get_in_run(ctx, engine_id, run_id, "filter.pendingFor").await?)
        }
    };
    let pending = pending_for.as_ref().map(|e| (e, Scope::Outstanding));
    let page = read_page(ctx, run_id, &filter, pending, order, page).await?;
    // Events belong to their run (a foreign key): only an empty page leaves
    // the run's existence open, and only then is it looked up.
    if page.rows.is_empty() && super::run::get(ctx, run_id).await?.is_none() {
        return Err(run_not_found());
    }
    Ok(page)
}

/// A page of the events of `run_id`, the run and the engine of `pending`
/// already checked (only events pending for it, in that scope of the rule):
/// what a subscription reads page after page without checking them again.
pub async fn read_page<R: Row>(
    ctx: &Ctx,
    run_id: Uuid,
    filter: &EventFilter,
    pending: Option<(&engine_state::Model, Scope)>,
    order: EventOrder,
    page: PageRequest<EventCursor>,
) -> AppResult<Page<EventCursor, R>> {
    use event_instance::Column as E;
    let mut query = event_instance::Entity::find().filter(E::RunId.eq(run_id));
    if let Some(types) = &filter.event_types {
        query = query.filter(E::EventType.is_in(types.iter().cloned()));
    }
    if let Some(min) = filter.min_priority {
        query = query.filter(E::Priority.gte(min));
    }
    if let Some(after) = filter.after_sequence {
        query = query.filter(E::Sequence.gt(after));
    }
    if let Some(until) = filter.until_sequence {
        query = query.filter(E::Sequence.lte(until));
    }
    if let Some(source) = filter.source_engine_id {
        query = query.filter(E::SourceEngineId.eq(source));
    }
    if let Some((engine, scope)) = pending {
        query = query.filter(super::pending::condition(scope, engine, now()));
    }
    let limit = page.first as u64 + 1;
    let after = page.after;
    let rows = if pending.is_some()
        && order == EventOrder::Priority
        && ctx.db.backend() == DatabaseBackend::Postgres
    {
        // The pending rule costs a few index probes per event read: the
        // rows must come in index order and stop at the limit.
        let txn = ctx.db.conn.begin().await?;
        crate::db::plan(&txn, crate::db::Plans::IndexOrder).await?;
        let rows = read_rows(&txn, query, order, after, limit).await?;
        txn.commit().await?;
        rows
    } else {
        read_rows(&ctx.db.hot(), query, order, after, limit).await?
    };
    Ok(into_page(
        rows.into_iter()
            .map(|e| (EventCursor::of(&e, order), e))
            .collect(),
        page.first,
    ))
}

/// The rows of a page of `query` in `order` after `after`, at most `limit`.
async fn read_rows<R: Row, C: ConnectionTrait>(
    conn: &C,
    mut query: sea_orm::Select<event_instance::Entity>,
    order: EventOrder,
    after: Option<EventCursor>,
    limit: u64,
) -> AppResult<Vec<R>> {
    use event_instance::Column as E;
    let rows = match (order, after) {
        (EventOrder::Sequence, after) => {
            if let Some(EventCursor::Priority(..)) = after {
                return Err(other_order());
            }
            if let Some(EventCursor::Sequence(s)) = after {
                query = query.filter(E::Sequence.gt(s));
            }
            let query = query.order_by_asc(E::Sequence).limit(limit);
            event_instance::fetch(query, conn).await?
        }
        (EventOrder::Priority, Some(EventCursor::Sequence(_))) => return Err(other_order()),
        (EventOrder::Priority, None) => {
            let query = query
                .order_by_desc(E::Priority)
                .order_by_asc(E::Sequence)
                .limit(limit);
            event_instance::fetch(query, conn).await?
        }
        (EventOrder::Priority, Some(EventCursor::Priority(p, s))) => {
            // Two index range scans instead of one `priority < p OR (priority
            // = p AND sequence > s)`, which neither backend can bound: the
            // rest of priority `p`, then the lower priorities. A deep page
            // of a long backlog costs the same as the first.
            let rest_of_p = query
                .clone()
                .filter(E::Priority.eq(p))
                .filter(E::Sequence.gt(s))
                .order_by_asc(E::Sequence)
                .limit(limit);
            let mut rows = event_instance::fetch(rest_of_p, conn).await?;
            let missing = limit - rows.len() as u64;
            if missing > 0 {
                let lower = query
                    .filter(E::Priority.lt(p))
                    .order_by_desc(E::Priority)
                    .order_by_asc(E::Sequence)
                    .limit(missing);
                rows.extend(event_instance::fetch(lower, conn).await?);
            }
            rows
        }
    };
    Ok(rows)
}
