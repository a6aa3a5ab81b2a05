//! State history: every saved state of an engine is a row of
//! `engine_state_versions`, dated with the run's `last_sequence` when the
//! save committed, so the state of every engine at any point of its run can
//! be read back (`stateAt`) and forked from. Processing records carry the
//! same date.

use sea_orm::sea_query::{Expr, Query, SubQueryStatement};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::Ctx;
use super::page::{CursorKey, Page, PageRequest, into_page};
use crate::config::StateHistory;
use crate::db::execute_sql;
use crate::entity::{engine_state, engine_state_version, scenario_run};
use crate::error::AppResult;

/// The run's `last_sequence` as this statement sees it: the date of a
/// version or a record written by it. Inside a publishing transaction it
/// counts that transaction's own events, so a completion's record and state
/// are dated after the events it emitted.
pub fn run_sequence_of(run_id: Uuid) -> Expr {
    let select = Query::select()
        .column(scenario_run::Column::LastSequence)
        .from(scenario_run::Entity)
        .and_where(Expr::col(scenario_run::Column::Id).eq(run_id))
        .to_owned();
    Expr::SubQuery(None, Box::new(SubQueryStatement::SelectStatement(select)))
}

/// Keeps the engine's current row as a version (its registration, a fork's
/// copy), and drops versions past `keep`.
pub(crate) async fn keep_current<C: ConnectionTrait>(
    conn: &C,
    engine_id: Uuid,
    keep: StateHistory,
) -> AppResult<()> {
    execute_sql(
        conn,
        "INSERT INTO engine_state_versions (engine_id, version, state, saved_at, run_sequence)
         SELECT s.engine_id, s.version, s.state, s.updated_at, r.last_sequence
         FROM engine_states s JOIN scenario_runs r ON r.id = s.run_id
         WHERE s.engine_id = $1",
        [engine_id.into()],
    )
    .await?;
    prune(conn, engine_id, keep).await
}

/// Drops the engine's versions older than the newest `keep`.
pub(crate) async fn prune<C: ConnectionTrait>(
    conn: &C,
    engine_id: Uuid,
    keep: StateHistory,
) -> AppResult<()> {
    let StateHistory::Last(n) = keep else {
        return Ok(());
    };
    execute_sql(
        conn,
        "DELETE FROM engine_state_versions WHERE engine_id = $1 AND version <= (
             SELECT version FROM engine_states WHERE engine_id = $1) - $2",
        [engine_id.into(), i64::from(n.get()).into()],
    )
    .await?;
    Ok(())
}

/// A version's cursor: its number.
impl CursorKey for i64 {
    fn to_text(&self) -> String {
        format!("v:{self}")
    }
    fn from_text(text: &str) -> Option<Self> {
        text.strip_prefix("v:")?.parse().ok()
    }
}

/// The engine's saved states, newest first.
pub async fn versions(
    ctx: &Ctx,
    engine_id: Uuid,
    page: PageRequest<i64>,
) -> AppResult<Page<i64, engine_state_version::Model>> {
    use engine_state_version::Column as V;
    let mut query = engine_state_version::Entity::find()
        .filter(V::EngineId.eq(engine_id))
        .order_by_desc(V::Version);
    if let Some(after) = page.after {
        query = query.filter(V::Version.lt(after));
    }
    let rows = query.limit(page.first as u64 + 1).all(&ctx.db.conn).await?;
    Ok(into_page(
        rows.into_iter().map(|v| (v.version, v)).collect(),
        page.first,
    ))
}

/// What an engine's state was at one run sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum StateAt {
    /// This version (of the engine, or of the engine it was forked from
    /// when the sequence is at or before the fork).
    Version(engine_state_version::Model),
    /// The engine was not registered yet.
    Before,
    /// `STATE_HISTORY` dropped the versions old enough.
    Dropped,
}

/// The engine's latest version saved at or before run sequence `sequence`.
/// A fork shares its run's past with its parent: before its first
/// version, a forked engine's state is its source's.
pub async fn state_at<C: ConnectionTrait>(
    conn: &C,
    engine_id: Uuid,
    sequence: i64,
) -> AppResult<StateAt> {
    use engine_state_version::Column as V;
    let mut engine_id = engine_id;
    loop {
        let found = engine_state_version::Entity::find()
            .filter(V::EngineId.eq(engine_id))
            .filter(V::RunSequence.lte(sequence))
            .order_by_desc(V::Version)
            .one(conn)
            .await?;
        if let Some(version) = found {
            return Ok(StateAt::Version(version));
        }
        let oldest: Option<i64> = engine_state_version::Entity::find()
            .select_only()
            .column_as(V::Version.min(), "oldest")
            .filter(V::EngineId.eq(engine_id))
            .into_tuple()
            .one(conn)
            .await?
            .flatten();
        if oldest.is_some_and(|v| v > 1) {
            return Ok(StateAt::Dropped);
        }
        let Some(engine) = engine_state::Entity::find_by_id(engine_id)
            .one(conn)
            .await?
        else {
            return Ok(StateAt::Before);
        };
        let fork_point = scenario_run::Entity::find_by_id(engine.run_id)
            .one(conn)
            .await?
            .and_then(|run| run.forked_at_sequence);
        match (engine.forked_from, fork_point) {
            (Some(source), Some(at)) if sequence <= at => engine_id = source,
            _ => return Ok(StateAt::Before),
        }
    }
}
