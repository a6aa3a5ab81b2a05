//! Engine instances: registration (idempotent, returns stored state) and
//! JSON state checkpoints with optimistic concurrency on `version`.

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, ExprTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth::{Access, Principal};
use super::compact::CompactError;
use super::{Ctx, now};
use crate::config::StateHistory;
use crate::entity::{engine_group, engine_state};
use crate::error::{AppError, AppResult};

/// An engine is online while its last sign of life is younger than this.
pub const ONLINE_WINDOW: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// Whether the engine is there: while it has a subscription (renewed as it
/// lives, ended when it closes, lapsing [`ONLINE_WINDOW`] after a crash);
/// an engine that never subscribed, while it was seen within the window.
pub fn is_online(engine: &engine_state::Model) -> bool {
    let now = chrono::Utc::now();
    match engine.subscribed_until {
        Some(until) => until > now,
        None => now - engine.last_seen_at < ONLINE_WINDOW,
    }
}

/// An engine announcing itself.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Its id; generated when absent.
    pub engine_id: Option<Uuid>,
    /// The run it works on.
    pub run_id: Uuid,
    /// Its type (ActorEngine, NarratorEngine, ...).
    pub engine_type: String,
    /// Its initial state, used only when the engine is new.
    pub state: Option<Value>,
    /// The group of engines of its type it shares the run's work with.
    pub group: Option<String>,
}

/// A state that passed [`check_state`] or [`check_state_text`]: its compact
/// JSON text, measured against the limit once and then bound as it is.
pub struct CheckedState(String);

/// Checks a state against the size limit (and for NUL characters).
pub fn check_state(ctx: &Ctx, field: &str, state: &Value) -> AppResult<CheckedState> {
    super::check_json(field, state)?;
    let text = serde_json::to_string(state)
        .map_err(|err| AppError::internal(format!("a JSON value did not serialize: {err}")))?;
    within_limit(ctx, field, text)
}

/// [`check_state`] for a state given as JSON text: made compact in one
/// pass ([`super::compact`]), without the value tree a parse would build
/// and drop. The text is the one [`check_state`] gives for the value it
/// parses to but for the order of keys and repeated keys, which both
/// backends' readers undo (keys are read back sorted and a repeated key's
/// last value is kept, as PostgreSQL's `jsonb` and `serde_json` do). A
/// repeated key counts against the limit, since it is stored.
pub fn check_state_text(ctx: &Ctx, field: &str, state: &RawValue) -> AppResult<CheckedState> {
    let text = super::compact::compact(state).map_err(|err| match err {
        CompactError::Nul => {
            AppError::bad_input(field, format!("{field} must not contain NUL (\\u0000)"))
        }
        CompactError::Json(err) => AppError::bad_input(field, format!("{field}: {err}")),
    })?;
    within_limit(ctx, field, text)
}

/// `LIMIT_EXCEEDED` when a state's text is larger than the limit.
fn within_limit(ctx: &Ctx, field: &str, text: String) -> AppResult<CheckedState> {
    if text.len() > ctx.limits.max_state_bytes {
        return Err(AppError::limit(
            field,
            format!("state is larger than {} bytes", ctx.limits.max_state_bytes),
        ));
    }
    Ok(CheckedState(text))
}

/// Registers an engine, or returns the stored one (with its state) when it
/// exists already: the way a restarted engine loads its state.
pub async fn register(
    ctx: &Ctx,
    principal: &Principal,
    input: Registration,
) -> AppResult<engine_state::Model> {
    principal.require(Access::Engine)?;
    let engine_type = super::check_name("input.engineType", &input.engine_type)?;
    let group_name = match &input.group {
        Some(name) => Some(super::check_name("input.group", name)?),
        None => None,
    };
    if let Some(id) = input.engine_id
        && let Some(existing) = get(ctx, id).await?
    {
        // Refused now rather than at its first save: an engine key resumes
        // only the engines it registered.
        principal.require_owner(existing.registered_by)?;
        let group = group_of(ctx, &existing).await?;
        return existing_matches(existing, group, &input, &engine_type);
    }
    let state = input.state.clone().unwrap_or_else(|| json!({}));
    check_state(ctx, "input.state", &state)?;
    let run = super::run::get(ctx, input.run_id).await?.ok_or_else(|| {
        AppError::not_found(
            "input.runId",
            format!("scenario run {} not found", input.run_id),
        )
    })?;
    super::publish::require_open(&run)?;
    let group = match &group_name {
        Some(name) => Some(join_group(ctx, run.id, name, &engine_type).await?),
        None => None,
    };
    let engine_id = input.engine_id.unwrap_or_else(Uuid::new_v4);
    let at = now();
    let model = engine_state::ActiveModel {
        engine_id: Set(engine_id),
        run_id: Set(input.run_id),
        engine_type: Set(engine_type.clone()),
        state: Set(state),
        version: Set(1),
        registered_at: Set(at),
        updated_at: Set(at),
        last_seen_at: Set(at),
        registered_by: Set(principal.key_id),
        group_id: Set(group.as_ref().map(|g| g.id)),
        subscribed_until: Set(None),
        forked_from: Set(None),
    };
    // Two registrations of one new id may race: the loser reads the winner's
    // row. The winner's first state is version 1 of its history.
    let txn = ctx.db.begin_write().await?;
    let inserted = engine_state::Entity::insert(model)
        .on_conflict(
            OnConflict::column(engine_state::Column::EngineId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&*txn)
        .await?;
    if inserted == 1 {
        super::history::keep_current(&*txn, engine_id, ctx.limits.state_history).await?;
    }
    txn.commit().await?;
    let stored = get(ctx, engine_id)
        .await?
        .ok_or_else(|| AppError::internal("registered engine not found"))?;
    let group = group_of(ctx, &stored).await?;
    existing_matches(stored, group, &input, &engine_type)
}

/// The group of `run_id` named `name`, made on its first member's
/// registration; `BAD_USER_INPUT` when its members are of another type.
async fn join_group(
    ctx: &Ctx,
    run_id: Uuid,
    name: &str,
    engine_type: &str,
) -> AppResult<engine_group::Model> {
    use engine_group::Column as G;
    let model = engine_group::ActiveModel {
        id: Set(Uuid::now_v7()),
        run_id: Set(run_id),
        name: Set(name.to_owned()),
        engine_type: Set(engine_type.to_owned()),
        created_at: Set(now()),
    };
    // Two first members may race: the loser reads the winner's group.
    engine_group::Entity::insert(model)
        .on_conflict(
            OnConflict::columns([G::RunId, G::Name])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&ctx.db.conn)
        .await?;
    let group = engine_group::Entity::find()
        .filter(G::RunId.eq(run_id))
        .filter(G::Name.eq(name))
        .one(&ctx.db.conn)
        .await?
        .ok_or_else(|| AppError::internal("engine group not found after insert"))?;
    if group.engine_type != engine_type {
        return Err(AppError::bad_input(
            "input.group",
            format!(
                "group {name} is a group of {} engines, not {engine_type}",
                group.engine_type
            ),
        ));
    }
    Ok(group)
}

/// The group of `engine`, if it has one.
async fn group_of(
    ctx: &Ctx,
    engine: &engine_state::Model,
) -> AppResult<Option<engine_group::Model>> {
    match engine.group_id {
        Some(id) => Ok(engine_group::Entity::find_by_id(id)
            .one(&ctx.db.conn)
            .await?),
        None => Ok(None),
    }
}

/// The engines of each of `run_ids`, in registration order, in one statement.
pub async fn list_of_runs(
    ctx: &Ctx,
    run_ids: &[Uuid],
) -> AppResult<HashMap<Uuid, Vec<engine_state::Model>>> {
    let mut out: HashMap<Uuid, Vec<engine_state::Model>> =
        run_ids.iter().map(|id| (*id, Vec::new())).collect();
    for engine in engine_state::Entity::find()
        .filter(engine_state::Column::RunId.is_in(run_ids.iter().copied()))
        .order_by_asc(engine_state::Column::RegisteredAt)
        .order_by_asc(engine_state::Column::EngineId)
        .all(&ctx.db.conn)
        .await?
    {
        out.entry(engine.run_id).or_default().push(engine);
    }
    Ok(out)
}

/// The engines among `ids`.
pub async fn get_many(ctx: &Ctx, ids: &[Uuid]) -> AppResult<Vec<engine_state::Model>> {
    Ok(engine_state::Entity::find()
        .filter(engine_state::Column::EngineId.is_in(ids.iter().copied()))
        .all(&ctx.db.conn)
        .await?)
}

/// The groups among `ids`, by id.
pub async fn groups(ctx: &Ctx, ids: &[Uuid]) -> AppResult<Vec<engine_group::Model>> {
    Ok(engine_group::Entity::find()
        .filter(engine_group::Column::Id.is_in(ids.iter().copied()))
        .all(&ctx.db.conn)
        .await?)
}

fn existing_matches(
    existing: engine_state::Model,
    group: Option<engine_group::Model>,
    input: &Registration,
    engine_type: &str,
) -> AppResult<engine_state::Model> {
    let group_name = group.as_ref().map(|g| g.name.as_str());
    if existing.run_id != input.run_id
        || existing.engine_type != engine_type
        || group_name != input.group.as_deref()
    {
        let in_group = group_name.map_or(String::new(), |g| format!(" in group {g}"));
        return Err(AppError::Conflict(format!(
            "engine {} is registered as a {}{in_group} of run {}",
            existing.engine_id, existing.engine_type, existing.run_id
        )));
    }
    Ok(existing)
}

/// Saves `state`, with `expected_version` as a compare-and-set when given.
pub async fn save_state(
    ctx: &Ctx,
    principal: &Principal,
    engine_id: Uuid,
    state: Value,
    expected_version: Option<i64>,
) -> AppResult<engine_state::Model> {
    let checked = check_state(ctx, "state", &state)?;
    Ok(
        save_checked(ctx, principal, engine_id, checked, expected_version)
            .await?
            .with_state(state),
    )
}

/// [`save_state`] for a state already checked (as text, [`check_state_text`]):
/// the engine without its state, which the caller has.
pub async fn save_checked(
    ctx: &Ctx,
    principal: &Principal,
    engine_id: Uuid,
    state: CheckedState,
    expected_version: Option<i64>,
) -> AppResult<SavedEngine> {
    require_owner(ctx, principal, engine_id, "engineId").await?;
    // One statement writes the state and its version on either backend: no
    // transaction (and on SQLite no write turn) is needed.
    save_in(
        &ctx.db.hot(),
        engine_id,
        state,
        expected_version,
        ctx.limits.state_history,
    )
    .await
}

/// `FORBIDDEN` unless `principal` may save the state of `engine_id`;
/// `NOT_FOUND` (about `field`) when the engine is not registered.
pub async fn require_owner(
    ctx: &Ctx,
    principal: &Principal,
    engine_id: Uuid,
    field: &str,
) -> AppResult<()> {
    principal.require(Access::Engine)?;
    if principal.role != super::auth::Role::Engine {
        return Ok(());
    }
    let engine = get(ctx, engine_id)
        .await?
        .ok_or_else(|| AppError::not_found(field, format!("engine {engine_id} not found")))?;
    principal.require_owner(engine.registered_by)
}

/// Saves state and keeps it as a version of the engine's history. The
/// version check and the write are one UPDATE, so of two saves with the
/// same expected version exactly one wins, and the version is written by
/// the same statement: a CTE on PostgreSQL, the timeline migration's
/// trigger on SQLite. Pruning past `STATE_HISTORY=N` is a second statement
/// on SQLite; a crash between the two leaves one version too many, which
/// the next save prunes.
pub(crate) async fn save_in<C: ConnectionTrait>(
    conn: &C,
    engine_id: Uuid,
    state: CheckedState,
    expected_version: Option<i64>,
    keep: StateHistory,
) -> AppResult<SavedEngine> {
    use engine_state::Column as S;
    let at = now();
    if conn.get_database_backend() == DbBackend::Postgres {
        return save_with_version(conn, engine_id, state, expected_version, keep, at).await;
    }
    let mut update = sea_orm::sea_query::Query::update();
    update
        .table(engine_state::Entity)
        .value(S::State, state.0)
        .value(S::Version, Expr::col(S::Version).add(1))
        .value(S::UpdatedAt, at)
        .value(S::LastSeenAt, at)
        .and_where(Expr::col(S::EngineId).eq(engine_id));
    if let Some(version) = expected_version {
        update.and_where(Expr::col(S::Version).eq(version));
    }
    // Every column but the state, which is what was just written: the
    // database need not send it back, nor the server decode it again.
    update.returning(sea_orm::sea_query::Query::returning().columns([
        S::RunId,
        S::EngineType,
        S::Version,
        S::RegisteredAt,
        S::RegisteredBy,
        S::GroupId,
        S::SubscribedUntil,
        S::ForkedFrom,
    ]));
    let Some(row) = conn.query_one(&update).await? else {
        return conflict_or_missing(conn, engine_id, expected_version).await;
    };
    super::history::prune(conn, engine_id, keep).await?;
    saved_engine(&row, engine_id, at)
}

/// The PostgreSQL form of [`save_in`]: the UPDATE, the version's INSERT and
/// the pruning as one statement, one round trip.
async fn save_with_version<C: ConnectionTrait>(
    conn: &C,
    engine_id: Uuid,
    state: CheckedState,
    expected_version: Option<i64>,
    keep: StateHistory,
    at: chrono::DateTime<chrono::Utc>,
) -> AppResult<SavedEngine> {
    let CheckedState(text) = state;
    // The text is bound as text and cast by PostgreSQL: sqlx would
    // serialize a JSON value again.
    let mut values: Vec<sea_orm::Value> = vec![engine_id.into(), text.into(), at.into()];
    let check = match expected_version {
        Some(version) => {
            values.push(version.into());
            "AND version = $4"
        }
        None => "",
    };
    let prune = match keep {
        StateHistory::All => String::new(),
        StateHistory::Last(n) => format!(
            ", pruned AS (DELETE FROM engine_state_versions
                 WHERE engine_id = $1 AND version <= (SELECT version FROM saved) - {n})"
        ),
    };
    // The history row takes the state from the UPDATE's RETURNING: a second
    // `$2::jsonb` would parse the text again. The last SELECT leaves it out:
    // the server has it already.
    let sql = format!(
        "WITH saved AS (
             UPDATE engine_states
             SET state = $2::jsonb, version = version + 1, updated_at = $3, last_seen_at = $3
             WHERE engine_id = $1 {check}
             RETURNING run_id, engine_type, version, registered_at, registered_by, group_id,
                       subscribed_until, forked_from, state
         ), kept AS (
             INSERT INTO engine_state_versions (engine_id, version, state, saved_at, run_sequence)
             SELECT $1, saved.version, saved.state, $3, r.last_sequence
             FROM saved JOIN scenario_runs r ON r.id = saved.run_id
         ){prune}
         SELECT run_id, engine_type, version, registered_at, registered_by, group_id,
                subscribed_until, forked_from
         FROM saved"
    );
    let statement = Statement::from_sql_and_values(DbBackend::Postgres, sql, values);
    let Some(row) = conn.query_one_raw(statement).await? else {
        return conflict_or_missing(conn, engine_id, expected_version).await;
    };
    saved_engine(&row, engine_id, at)
}

/// An engine as a save leaves it: every column but the state, which the
/// saver has (and which the database need not send back).
#[derive(Clone, Debug, PartialEq)]
pub struct SavedEngine {
    /// Its id.
    pub engine_id: Uuid,
    /// Its run.
    pub run_id: Uuid,
    /// Its type.
    pub engine_type: String,
    /// The version the save wrote.
    pub version: i64,
    /// When it registered.
    pub registered_at: chrono::DateTime<chrono::Utc>,
    /// When the save happened.
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// When the save happened, as its last sign of life.
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
    /// The API key that registered it.
    pub registered_by: Option<Uuid>,
    /// Its group.
    pub group_id: Option<Uuid>,
    /// Until when its subscription holds its partition keys.
    pub subscribed_until: Option<chrono::DateTime<chrono::Utc>>,
    /// The engine of the parent run it was forked from.
    pub forked_from: Option<Uuid>,
}

impl SavedEngine {
    /// The engine's row, with the state that was saved.
    pub fn with_state(self, state: Value) -> engine_state::Model {
        engine_state::Model {
            engine_id: self.engine_id,
            run_id: self.run_id,
            engine_type: self.engine_type,
            state,
            version: self.version,
            registered_at: self.registered_at,
            updated_at: self.updated_at,
            last_seen_at: self.last_seen_at,
            registered_by: self.registered_by,
            group_id: self.group_id,
            subscribed_until: self.subscribed_until,
            forked_from: self.forked_from,
        }
    }
}

/// The engine after a save, from the columns the save returned.
fn saved_engine(
    row: &sea_orm::QueryResult,
    engine_id: Uuid,
    at: chrono::DateTime<chrono::Utc>,
) -> AppResult<SavedEngine> {
    use engine_state::Column as S;
    use sea_orm::IdenStatic;
    Ok(SavedEngine {
        engine_id,
        run_id: row.try_get("", S::RunId.as_str())?,
        engine_type: row.try_get("", S::EngineType.as_str())?,
        version: row.try_get("", S::Version.as_str())?,
        registered_at: row.try_get("", S::RegisteredAt.as_str())?,
        updated_at: at,
        last_seen_at: at,
        registered_by: row.try_get("", S::RegisteredBy.as_str())?,
        group_id: row.try_get("", S::GroupId.as_str())?,
        subscribed_until: row.try_get("", S::SubscribedUntil.as_str())?,
        forked_from: row.try_get("", S::ForkedFrom.as_str())?,
    })
}

/// Explains why an engine's version check failed.
pub(crate) async fn conflict_or_missing<C: ConnectionTrait, T>(
    conn: &C,
    engine_id: Uuid,
    expected_version: Option<i64>,
) -> AppResult<T> {
    match engine_state::Entity::find_by_id(engine_id)
        .one(conn)
        .await?
    {
        None => Err(AppError::not_found(
            "engineId",
            format!("engine {engine_id} not found"),
        )),
        Some(stored) => Err(AppError::VersionConflict {
            expected: expected_version.unwrap_or_default(),
            actual: stored.version,
        }),
    }
}

/// The engine `engine_id`, if registered.
pub async fn get(ctx: &Ctx, engine_id: Uuid) -> AppResult<Option<engine_state::Model>> {
    Ok(engine_state::Entity::find_by_id(engine_id)
        .one(&ctx.db.conn)
        .await?)
}

/// The engine `engine_id`, which must be registered on `run_id`;
/// `field` names it in errors (NOT_FOUND, or BAD_USER_INPUT for another run).
pub async fn get_in_run(
    ctx: &Ctx,
    engine_id: Uuid,
    run_id: Uuid,
    field: &str,
) -> AppResult<engine_state::Model> {
    let engine = get(ctx, engine_id).await?;
    in_run(engine_id, engine.as_ref().map(|e| e.run_id), run_id, field)?;
    engine.ok_or_else(|| AppError::internal("engine checked but absent"))
}

/// Checks inside `conn` (a transaction) that the engine is registered in
/// `run_id`, reading only its run and group (its state can be a mebibyte
/// of JSON); returns its group.
pub async fn require_in_run<C: ConnectionTrait>(
    conn: &C,
    engine_id: Uuid,
    run_id: Uuid,
    field: &str,
) -> AppResult<Option<Uuid>> {
    let row: Option<(Uuid, Option<Uuid>)> = engine_state::Entity::find_by_id(engine_id)
        .select_only()
        .column(engine_state::Column::RunId)
        .column(engine_state::Column::GroupId)
        .into_tuple()
        .one(conn)
        .await?;
    in_run(engine_id, row.map(|r| r.0), run_id, field)?;
    Ok(row.and_then(|r| r.1))
}

/// The errors of an engine that is missing or registered in another run.
pub(crate) fn in_run(
    engine_id: Uuid,
    engine_run: Option<Uuid>,
    run_id: Uuid,
    field: &str,
) -> AppResult<()> {
    match engine_run {
        None => Err(AppError::not_found(
            field,
            format!("engine {engine_id} is not registered"),
        )),
        Some(r) if r != run_id => Err(AppError::bad_input(
            field,
            format!("engine {engine_id} belongs to another run"),
        )),
        Some(_) => Ok(()),
    }
}

/// Notes a sign of life of the engine's subscription (`lastSeenAt`, and
/// subscribed for [`ONLINE_WINDOW`] more), as it does every few seconds.
pub async fn touch(ctx: &Ctx, engine_id: Uuid) -> AppResult<()> {
    let at = now();
    engine_state::Entity::update_many()
        .col_expr(engine_state::Column::LastSeenAt, Expr::value(at))
        .col_expr(
            engine_state::Column::SubscribedUntil,
            Expr::value(at + ONLINE_WINDOW),
        )
        .filter(engine_state::Column::EngineId.eq(engine_id))
        .exec(&ctx.db.conn)
        .await?;
    Ok(())
}

/// Notes that the engine's subscription ended, now: it is offline, and
/// the partition keys it had may go to other members of its group at once.
pub async fn unsubscribed(ctx: &Ctx, engine_id: Uuid) -> AppResult<()> {
    engine_state::Entity::update_many()
        .col_expr(engine_state::Column::SubscribedUntil, Expr::value(now()))
        .filter(engine_state::Column::EngineId.eq(engine_id))
        .exec(&ctx.db.conn)
        .await?;
    Ok(())
}

/// The engines of a run, optionally of one type, in registration order.
pub async fn list(
    ctx: &Ctx,
    run_id: Uuid,
    engine_type: Option<String>,
) -> AppResult<Vec<engine_state::Model>> {
    let mut query = engine_state::Entity::find()
        .filter(engine_state::Column::RunId.eq(run_id))
        .order_by_asc(engine_state::Column::RegisteredAt)
        .order_by_asc(engine_state::Column::EngineId);
    if let Some(engine_type) = engine_type {
        query = query.filter(engine_state::Column::EngineType.eq(engine_type));
    }
    Ok(query.all(&ctx.db.conn).await?)
}
