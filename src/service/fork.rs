//! Forks: a new run that starts as a copy of another at one sequence, with
//! the event log up to it, the processing records made by then, each
//! engine's state as of then (`history::state_at`), the relationships as of
//! then, and so the backlog each engine had then. One transaction; events
//! and records are copied set-based (one statement each, whatever the run's
//! size), engines and groups (a few per run) one by one.

use std::collections::BTreeMap;

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait,
    QueryFilter, QueryOrder,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth::{Access, Principal};
use super::event_type::RELATIONSHIP_UPDATED;
use super::history::{StateAt, keep_current, state_at};
use super::{Ctx, check_name, now};
use crate::db::execute_sql;
use crate::entity::scenario_run::RunStatus;
use crate::entity::{
    engine_group, engine_state, engine_state_version, event_instance, run_relationship,
    scenario_run,
};
use crate::error::{AppError, AppResult};

/// What to fork.
#[derive(Debug, Clone)]
pub struct ForkRun {
    /// The run forked.
    pub run_id: Uuid,
    /// The last sequence the fork keeps (0 keeps no event).
    pub at_sequence: i64,
    /// The fork's name; by default the source's, with the sequence.
    pub name: Option<String>,
    /// The fork's parameters; by default the source's.
    pub parameters: Option<Value>,
}

/// One engine of the source run, as it stood at the fork's sequence.
#[derive(Debug)]
struct SourceEngine {
    engine_id: Uuid,
    group_id: Option<Uuid>,
    /// Its state then: a version of it, or of the engine it was forked from.
    state: engine_state_version::Model,
}

/// Forks `input.run_id` at `input.at_sequence` (admin only).
pub async fn fork(
    ctx: &Ctx,
    principal: &Principal,
    input: ForkRun,
) -> AppResult<scenario_run::Model> {
    principal.require(Access::Admin)?;
    if let Some(parameters) = &input.parameters {
        super::check_json("input.parameters", parameters)?;
    }
    let name = input
        .name
        .as_deref()
        .map(|n| check_name("input.name", n))
        .transpose()?;
    let at = input.at_sequence;
    let source = super::run::get(ctx, input.run_id).await?.ok_or_else(|| {
        AppError::not_found(
            "input.runId",
            format!("scenario run {} not found", input.run_id),
        )
    })?;
    if at < 0 || at > source.last_sequence {
        return Err(AppError::bad_input(
            "input.atSequence",
            format!(
                "atSequence must be between 0 and the run's last sequence, {}",
                source.last_sequence
            ),
        ));
    }
    let txn = ctx.db.begin_write().await?;
    let conn = &*txn;
    let engines = engines_at(conn, source.id, at).await?;

    let fork = scenario_run::ActiveModel {
        id: Set(Uuid::now_v7()),
        template_id: Set(source.template_id),
        name: Set(name.unwrap_or_else(|| format!("{} (fork at {at})", source.name))),
        status: Set(RunStatus::Pending),
        parameters: Set(input.parameters.unwrap_or(source.parameters.clone())),
        last_sequence: Set(at),
        created_at: Set(now()),
        started_at: Set(None),
        ended_at: Set(None),
        parent_run_id: Set(Some(source.id)),
        forked_at_sequence: Set(Some(at)),
    }
    .insert(conn)
    .await?;

    let groups = copy_groups(conn, &engines, fork.id).await?;
    for engine in &engines {
        let group = engine.group_id.and_then(|g| groups.get(&g).copied());
        let copy = Uuid::now_v7();
        execute_sql(
            conn,
            "INSERT INTO engine_states (engine_id, run_id, engine_type, state, version,
                     registered_at, updated_at, last_seen_at, registered_by, group_id,
                     subscribed_until, forked_from)
                 SELECT $1, $2, s.engine_type, v.state, 1, $3, v.saved_at, v.saved_at,
                        s.registered_by, $4, NULL, s.engine_id
                 FROM engine_states s, engine_state_versions v
                 WHERE s.engine_id = $5 AND v.engine_id = $6 AND v.version = $7",
            [
                copy.into(),
                fork.id.into(),
                now().into(),
                group.into(),
                engine.engine_id.into(),
                engine.state.engine_id.into(),
                engine.state.version.into(),
            ],
        )
        .await?;
        keep_current(conn, copy, ctx.limits.state_history).await?;
    }

    copy_events(conn, source.id, &fork, at).await?;
    copy_records(conn, source.id, fork.id, at).await?;
    rebuild_deliveries(conn, fork.id).await?;
    super::metric::rebuild_in(conn, &fork).await?;
    copy_relationships(conn, source.id, fork.id, at).await?;
    txn.commit().await?;
    Ok(fork)
}

/// The source's engines with their state at `at`; `BAD_USER_INPUT` when
/// `STATE_HISTORY` dropped the version an engine had then. Engines that
/// registered after `at` are not forked.
async fn engines_at<C: ConnectionTrait>(
    conn: &C,
    run_id: Uuid,
    at: i64,
) -> AppResult<Vec<SourceEngine>> {
    let mut engines = Vec::new();
    for engine in engine_state::Entity::find()
        .filter(engine_state::Column::RunId.eq(run_id))
        .order_by_asc(engine_state::Column::RegisteredAt)
        .order_by_asc(engine_state::Column::EngineId)
        .all(conn)
        .await?
    {
        match state_at(conn, engine.engine_id, at).await? {
            StateAt::Version(state) => engines.push(SourceEngine {
                engine_id: engine.engine_id,
                group_id: engine.group_id,
                state,
            }),
            StateAt::Before => {}
            StateAt::Dropped => {
                return Err(AppError::bad_input(
                    "input.atSequence",
                    format!(
                        "the state history of engine {} no longer reaches sequence {at} \
                         (STATE_HISTORY)",
                        engine.engine_id
                    ),
                ));
            }
        }
    }
    Ok(engines)
}

/// New groups in the fork for the groups of the forked engines, by source id.
async fn copy_groups<C: ConnectionTrait>(
    conn: &C,
    engines: &[SourceEngine],
    fork_id: Uuid,
) -> AppResult<BTreeMap<Uuid, Uuid>> {
    let ids: Vec<Uuid> = engines.iter().filter_map(|e| e.group_id).collect();
    let mut copies = BTreeMap::new();
    for group in engine_group::Entity::find()
        .filter(engine_group::Column::Id.is_in(ids))
        .order_by_asc(engine_group::Column::CreatedAt)
        .all(conn)
        .await?
    {
        let copy = Uuid::now_v7();
        engine_group::ActiveModel {
            id: Set(copy),
            run_id: Set(fork_id),
            name: Set(group.name),
            engine_type: Set(group.engine_type),
            created_at: Set(now()),
        }
        .insert(conn)
        .await?;
        copies.insert(group.id, copy);
    }
    Ok(copies)
}

/// The SQL of the id a fork gives its copy of the event at `sequence`: the
/// first half of the fork's own id, then the sequence (with the RFC 9562
/// variant bits). Ids stay unique and are computed by the database, so the
/// copy is one statement, and parent links follow by sequence.
fn copied_id(backend: DbBackend, fork: &scenario_run::Model, sequence: &str) -> String {
    let prefix: String = fork.id.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    match backend {
        DbBackend::Postgres => format!(
            "CAST('{prefix}' || lpad(to_hex({sequence} | (CAST(1 AS bigint) << 63)), 16, '0') AS uuid)"
        ),
        _ => format!("unhex('{prefix}' || printf('%016x', {sequence} | (1 << 63)))"),
    }
}

/// Copies the source's events up to `at` (same sequences, types,
/// priorities, payloads, keys and times), with parents linked to the copies
/// and engine targets and sources to the engines' copies.
async fn copy_events<C: ConnectionTrait>(
    conn: &C,
    source_id: Uuid,
    fork: &scenario_run::Model,
    at: i64,
) -> AppResult<()> {
    let backend = conn.get_database_backend();
    let id = copied_id(backend, fork, "e.sequence");
    let parent = copied_id(backend, fork, "p.sequence");
    let sql = format!(
        "INSERT INTO event_instances (id, run_id, sequence, event_type, priority, payload,
             source_engine_id, parent_event_id, target_engine_id, target_engine_type,
             idempotency_key, created_at, deliver_at, partition_key)
         SELECT {id}, $2, e.sequence, e.event_type, e.priority, e.payload,
                COALESCE(se.engine_id, e.source_engine_id),
                CASE WHEN p.id IS NULL THEN NULL ELSE {parent} END,
                COALESCE(te.engine_id, e.target_engine_id), e.target_engine_type,
                e.idempotency_key, e.created_at, e.deliver_at, e.partition_key
         FROM event_instances e
         LEFT JOIN event_instances p ON p.id = e.parent_event_id
         LEFT JOIN engine_states se ON se.run_id = $2 AND se.forked_from = e.source_engine_id
         LEFT JOIN engine_states te ON te.run_id = $2 AND te.forked_from = e.target_engine_id
         WHERE e.run_id = $1 AND e.sequence <= $3"
    );
    execute_sql(conn, &sql, [source_id.into(), fork.id.into(), at.into()]).await?;
    Ok(())
}

/// Copies the records made at or before `at`, each to its engine's copy.
async fn copy_records<C: ConnectionTrait>(
    conn: &C,
    source_id: Uuid,
    fork_id: Uuid,
    at: i64,
) -> AppResult<()> {
    execute_sql(
        conn,
        "INSERT INTO event_processings (event_id, engine_id, status, error, attempts,
                 processed_at, run_sequence)
             SELECT c.id, f.engine_id, p.status, p.error, p.attempts, p.processed_at,
                    p.run_sequence
             FROM event_processings p
             JOIN event_instances e ON e.id = p.event_id
             JOIN event_instances c ON c.run_id = $2 AND c.sequence = e.sequence
             JOIN engine_states f ON f.run_id = $2 AND f.forked_from = p.engine_id
             WHERE e.run_id = $1 AND e.sequence <= $3 AND p.run_sequence <= $3",
        [source_id.into(), fork_id.into(), at.into()],
    )
    .await?;
    Ok(())
}

/// Delivery rows of a new run (a fork, an import) from its records, per
/// recipient (the engine, or its group): done once PROCESSED or failed
/// `maxAttempts` times, with the failures counted. No lease is held in a
/// new run.
pub(crate) async fn rebuild_deliveries<C: ConnectionTrait>(
    conn: &C,
    run_id: Uuid,
) -> AppResult<()> {
    execute_sql(
        conn,
        "INSERT INTO event_deliveries (event_id, recipient_id, attempt, done, failures)
             SELECT x.event_id, x.recipient_id, SUM(x.attempts),
                    MAX(x.processed) = 1 OR SUM(x.failed) >= MAX(x.max_attempts),
                    SUM(x.failed)
             FROM (
                 SELECT p.event_id, p.attempts, t.max_attempts,
                        CASE WHEN p.status = 'PROCESSED' THEN 1 ELSE 0 END AS processed,
                        CASE WHEN p.status = 'FAILED' THEN p.attempts ELSE 0 END AS failed,
                        CASE WHEN f.group_id IS NOT NULL
                                  AND (e.target_engine_id IS NULL
                                       OR e.target_engine_id <> f.engine_id)
                             THEN f.group_id ELSE f.engine_id END AS recipient_id
                 FROM event_processings p
                 JOIN event_instances e ON e.id = p.event_id
                 JOIN engine_states f ON f.engine_id = p.engine_id
                 JOIN event_types t ON t.name = e.event_type
                 WHERE e.run_id = $1
             ) x
             GROUP BY x.event_id, x.recipient_id",
        [run_id.into()],
    )
    .await?;
    Ok(())
}

/// The relationships as of `at`: every change published a
/// `relationship_updated` event with the whole relationship, so the latest
/// such event of each pair up to `at` is the pair's value then.
async fn copy_relationships<C: ConnectionTrait>(
    conn: &C,
    source_id: Uuid,
    fork_id: Uuid,
    at: i64,
) -> AppResult<()> {
    use event_instance::Column as E;
    let changes = event_instance::Entity::find()
        .filter(E::RunId.eq(source_id))
        .filter(E::EventType.eq(RELATIONSHIP_UPDATED))
        .filter(E::Sequence.lte(at))
        .order_by_asc(E::Sequence)
        .all(conn)
        .await?;
    let mut latest = BTreeMap::new();
    for change in changes {
        let payload = change.payload.value();
        let text = |key: &str| payload.get(key).and_then(Value::as_str).map(str::to_owned);
        let (Some(source_role), Some(target_role), Some(kind)) =
            (text("sourceRole"), text("targetRole"), text("kind"))
        else {
            continue;
        };
        let row = run_relationship::ActiveModel {
            run_id: Set(fork_id),
            source_role: Set(source_role.clone()),
            target_role: Set(target_role.clone()),
            kind: Set(kind),
            strength: Set(payload
                .get("strength")
                .and_then(Value::as_f64)
                .unwrap_or(0.0)),
            data: Set(payload.get("data").cloned().unwrap_or_else(|| json!({}))),
            updated_at: Set(change.created_at),
        };
        latest.insert((source_role, target_role), row);
    }
    if !latest.is_empty() {
        run_relationship::Entity::insert_many(latest.into_values())
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}

/// The forks of each of `run_ids`, oldest first, in one statement.
pub async fn forks_of(
    ctx: &Ctx,
    run_ids: &[Uuid],
) -> AppResult<BTreeMap<Uuid, Vec<scenario_run::Model>>> {
    let mut out: BTreeMap<Uuid, Vec<scenario_run::Model>> =
        run_ids.iter().map(|id| (*id, Vec::new())).collect();
    for fork in scenario_run::Entity::find()
        .filter(scenario_run::Column::ParentRunId.is_in(run_ids.iter().copied()))
        .order_by_asc(scenario_run::Column::Id)
        .all(&ctx.db.conn)
        .await?
    {
        if let Some(parent) = fork.parent_run_id {
            out.entry(parent).or_default().push(fork);
        }
    }
    Ok(out)
}
