//! Publishing events: validation, then inserts with gapless per-run
//! sequences, and the rule that a closed run takes no events.
//!
//! Publishing takes the run's row lock first (an UPDATE of
//! `scenario_runs.last_sequence`), so publishers of one run commit one after
//! the other and sequences are handed out in commit order: a reader that has
//! seen N and asks for "after N" never misses an event that commits later.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, ExprTrait, QueryFilter,
    QuerySelect,
};
use serde_json::Value;
use uuid::Uuid;

use super::auth::{Access, Principal};
use super::{Ctx, json_size, now};
use crate::entity::json_text::JsonText;
use crate::entity::{event_instance, event_type, scenario_run};
use crate::error::{AppError, AppResult};

/// Refuses a run in a terminal status (`RUN_CLOSED`): it takes no events,
/// relationships or engines.
pub fn require_open(run: &scenario_run::Model) -> AppResult<()> {
    if run.status.is_terminal() {
        return Err(AppError::RunClosed {
            run_id: run.id,
            status: run.status.as_str().to_owned(),
        });
    }
    Ok(())
}

/// An event to publish.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    /// The run it belongs to.
    pub run_id: Uuid,
    /// Its event type's name.
    pub event_type: String,
    /// Priority; the type's default when absent.
    pub priority: Option<i32>,
    /// Payload, checked against the type's schema; `{}` when absent.
    pub payload: Option<Value>,
    /// The engine that emitted it.
    pub source_engine_id: Option<Uuid>,
    /// The event it answers.
    pub parent_event_id: Option<Uuid>,
    /// Deliver only to this engine.
    pub target_engine_id: Option<Uuid>,
    /// Deliver only to engines of this type.
    pub target_engine_type: Option<String>,
    /// Publishing again with the same key in the same run returns the first event.
    pub idempotency_key: Option<String>,
    /// Pending for engines only from this time.
    pub deliver_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Events of one key go to a recipient one at a time, in sequence order.
    pub partition_key: Option<String>,
}

/// Checks an idempotency or partition key: 1 to 200 bytes, no NUL.
fn check_key(field: &str, key: Option<&str>) -> AppResult<()> {
    if let Some(key) = key
        && (key.is_empty() || key.len() > 200 || key.contains('\0'))
    {
        let name = field.rsplit('.').next().unwrap_or(field);
        return Err(AppError::bad_input(
            field,
            format!("{name} must be 1 to 200 bytes"),
        ));
    }
    Ok(())
}

/// An event that passed validation and waits to be inserted.
#[derive(Debug, Clone)]
pub struct Prepared {
    input: NewEvent,
    payload: Value,
    priority: i32,
}

impl Prepared {
    /// The event to store, with a new id, at `sequence`.
    fn event(&self, sequence: i64, created_at: DateTime<Utc>) -> event_instance::Model {
        event_instance::Model {
            id: Uuid::now_v7(),
            run_id: self.input.run_id,
            sequence,
            event_type: self.input.event_type.clone(),
            priority: self.priority,
            payload: JsonText::of(&self.payload),
            source_engine_id: self.input.source_engine_id,
            parent_event_id: self.input.parent_event_id,
            target_engine_id: self.input.target_engine_id,
            target_engine_type: self.input.target_engine_type.clone(),
            idempotency_key: self.input.idempotency_key.clone(),
            created_at,
            deliver_at: self.input.deliver_at.map(|at| at.trunc_subsecs(6)),
            partition_key: self.input.partition_key.clone(),
        }
    }
}

/// Checks events before their transaction: batch size, event types, payload
/// sizes and schemas, parents. `field(i)` names input `i` in errors.
pub async fn prepare<C: ConnectionTrait>(
    ctx: &Ctx,
    conn: &C,
    inputs: Vec<NewEvent>,
    batch_field: &str,
    field: impl Fn(usize) -> String,
) -> AppResult<Vec<Prepared>> {
    if inputs.len() > ctx.limits.max_batch {
        return Err(AppError::limit(
            batch_field,
            format!("at most {} events per call", ctx.limits.max_batch),
        ));
    }
    if inputs.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = inputs
        .iter()
        .map(|i| i.event_type.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let types: HashMap<String, std::sync::Arc<event_type::Model>> =
        super::event_type::get_many_on(ctx, conn, &names)
            .await?
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
    let parents: Vec<Uuid> = inputs.iter().filter_map(|i| i.parent_event_id).collect();
    let parent_runs: HashMap<Uuid, Uuid> = if parents.is_empty() {
        HashMap::new()
    } else {
        event_instance::Entity::find()
            .select_only()
            .column(event_instance::Column::Id)
            .column(event_instance::Column::RunId)
            .filter(event_instance::Column::Id.is_in(parents))
            .into_tuple::<(Uuid, Uuid)>()
            .all(conn)
            .await?
            .into_iter()
            .collect()
    };

    let mut prepared = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let at = field(i);
        let Some(etype) = types.get(&input.event_type) else {
            return Err(AppError::bad_input(
                format!("{at}.eventType"),
                format!("event type {:?} does not exist", input.event_type),
            ));
        };
        let payload = input
            .payload
            .clone()
            .unwrap_or_else(|| serde_json::json!({}));
        if json_size(&payload) > ctx.limits.max_payload_bytes {
            return Err(AppError::limit(
                format!("{at}.payload"),
                format!(
                    "payload is larger than {} bytes",
                    ctx.limits.max_payload_bytes
                ),
            ));
        }
        super::check_json(&format!("{at}.payload"), &payload)?;
        if let Some(schema) = &etype.payload_schema {
            ctx.schemas
                .validate(&etype.name, schema, &payload, &format!("{at}.payload"))?;
        }
        check_key(
            &format!("{at}.idempotencyKey"),
            input.idempotency_key.as_deref(),
        )?;
        check_key(
            &format!("{at}.partitionKey"),
            input.partition_key.as_deref(),
        )?;
        if let Some(engine_type) = &input.target_engine_type {
            super::check_name(&format!("{at}.targetEngineType"), engine_type)?;
        }
        if let Some(parent) = input.parent_event_id
            && parent_runs.get(&parent) != Some(&input.run_id)
        {
            return Err(AppError::bad_input(
                format!("{at}.parentEventId"),
                format!("event {parent} is not an event of run {}", input.run_id),
            ));
        }
        prepared.push(Prepared {
            priority: input.priority.unwrap_or(etype.default_priority),
            payload,
            input,
        });
    }
    Ok(prepared)
}

/// Adds `delta` to the run's `last_sequence` and returns the run. The UPDATE
/// takes the run's row lock (PostgreSQL) or is inside the one write
/// transaction (SQLite) until commit, which orders publishers of one run.
pub(crate) async fn bump_sequence(
    txn: &DatabaseTransaction,
    run_id: Uuid,
    delta: i64,
) -> AppResult<Option<scenario_run::Model>> {
    let rows = scenario_run::Entity::update_many()
        .col_expr(
            scenario_run::Column::LastSequence,
            Expr::col(scenario_run::Column::LastSequence).add(delta),
        )
        .filter(scenario_run::Column::Id.eq(run_id))
        .exec_with_returning(txn)
        .await?;
    Ok(rows.into_iter().next())
}

/// Inserts prepared events inside `txn`, returning them in input order (an
/// event whose idempotency key was used before comes back as stored).
/// `allow_closed` lets the status change that closes a run publish its event.
pub(crate) async fn insert_prepared(
    txn: &DatabaseTransaction,
    prepared: Vec<Prepared>,
    allow_closed: bool,
) -> AppResult<Vec<event_instance::Model>> {
    // Runs are locked in id order so that two batches never wait on each other.
    let mut by_run: BTreeMap<Uuid, Vec<usize>> = BTreeMap::new();
    for (i, p) in prepared.iter().enumerate() {
        by_run.entry(p.input.run_id).or_default().push(i);
    }
    let mut out: Vec<Option<event_instance::Model>> = vec![None; prepared.len()];
    let mut new_rows = Vec::new();
    // Each run with the range of `new_rows` that is its new events.
    let mut runs = Vec::new();
    let created_at = now();
    for (run_id, indexes) in by_run {
        let keys: Vec<String> = indexes
            .iter()
            .filter_map(|&i| prepared[i].input.idempotency_key.clone())
            .collect();
        // Without keys every input is new: take all its sequences in one UPDATE.
        let delta = if keys.is_empty() {
            indexes.len() as i64
        } else {
            0
        };
        let run = bump_sequence(txn, run_id, delta).await?.ok_or_else(|| {
            AppError::not_found("runId", format!("scenario run {run_id} not found"))
        })?;
        if !allow_closed {
            require_open(&run)?;
        }
        let mut by_key: HashMap<String, event_instance::Model> = if keys.is_empty() {
            HashMap::new()
        } else {
            event_instance::Entity::find()
                .filter(event_instance::Column::RunId.eq(run_id))
                .filter(event_instance::Column::IdempotencyKey.is_in(keys))
                .all(txn)
                .await?
                .into_iter()
                .filter_map(|e| e.idempotency_key.clone().map(|k| (k, e)))
                .collect()
        };
        let first_free = run.last_sequence - delta + 1;
        let mut next = first_free;
        let first_row = new_rows.len();
        for i in indexes {
            let p = &prepared[i];
            if let Some(existing) = p.input.idempotency_key.as_ref().and_then(|k| by_key.get(k)) {
                out[i] = Some(existing.clone());
                continue;
            }
            let model = p.event(next, created_at);
            next += 1;
            if let Some(key) = &model.idempotency_key {
                by_key.insert(key.clone(), model.clone());
            }
            new_rows.push(model.clone());
            out[i] = Some(model);
        }
        if delta == 0 && next > first_free {
            bump_sequence(txn, run_id, next - first_free).await?;
        }
        runs.push((run, first_row..new_rows.len()));
    }
    // 13 parameters a row: 1,000 rows stay under both backends' bind limits.
    for chunk in new_rows.chunks(1000) {
        event_instance::Entity::insert_many(
            chunk
                .iter()
                .cloned()
                .map(sea_orm::IntoActiveModel::into_active_model),
        )
        .exec_without_returning(txn)
        .await?;
    }
    // Metric samples update their run's aggregates in this transaction,
    // under the run's row lock taken above.
    for (run, rows) in runs {
        super::metric::aggregate_in(txn, &run, &new_rows[rows]).await?;
    }
    Ok(out
        .into_iter()
        .map(|e| e.expect("every input placed"))
        .collect())
}

/// Publishes `inputs` in one transaction; `field(i)` names input `i` in errors.
pub async fn publish(
    ctx: &Ctx,
    principal: &Principal,
    inputs: Vec<NewEvent>,
    batch_field: &str,
    field: impl Fn(usize) -> String,
) -> AppResult<Vec<event_instance::Model>> {
    principal.require(Access::Engine)?;
    let prepared = prepare(ctx, &ctx.db.conn, inputs, batch_field, field).await?;
    if prepared.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(written) = publish_in_one_statement(ctx, &prepared).await? {
        match written.stored {
            Some(stored) => ctx.announce_stored(stored),
            None => ctx.announce(&written.events),
        }
        return Ok(written.events);
    }
    let txn = ctx.db.begin_write().await?;
    let events = insert_prepared(&txn, prepared, false).await?;
    txn.commit().await?;
    ctx.announce(&events);
    Ok(events)
}

/// PostgreSQL: publishes new events of one open run in one autocommitted
/// statement, the sequence bump and the insert in one CTE: one round trip
/// where the transaction takes four (BEGIN, UPDATE, INSERT, COMMIT). The
/// UPDATE's row lock orders publishers as in [`insert_prepared`].
///
/// `None` when the inputs need the general path (idempotency keys, several
/// runs, metric samples, which update aggregates, SQLite, which has no
/// writing CTEs) or when the UPDATE matched no
/// open run: then nothing happened, no sequence was used, and the general
/// path says why (`NOT_FOUND`, `RUN_CLOSED`).
async fn publish_in_one_statement(ctx: &Ctx, prepared: &[Prepared]) -> AppResult<Option<Written>> {
    use sea_orm::{DatabaseBackend, Statement};
    let Some(first) = prepared.first() else {
        return Ok(Some(Written {
            events: Vec::new(),
            stored: None,
        }));
    };
    let run_id = first.input.run_id;
    if ctx.db.conn.get_database_backend() != DatabaseBackend::Postgres
        || prepared.iter().any(|p| {
            p.input.run_id != run_id
                || p.input.idempotency_key.is_some()
                || p.input.event_type == super::event_type::METRIC_RECORDED
        })
    {
        return Ok(None);
    }
    let n = prepared.len() as i64;
    let created_at = now();
    // Sequences are known once the statement has run.
    let models: Vec<event_instance::Model> =
        prepared.iter().map(|p| p.event(0, created_at)).collect();
    let mut values: Vec<sea_orm::Value> = vec![run_id.into(), n.into(), created_at.into()];
    let mut rows = Vec::with_capacity(models.len());
    for (ord, model) in models.iter().enumerate() {
        let at = values.len();
        rows.push(format!(
            "(${}::bigint, ${}::uuid, ${}::text, ${}::int, ${}::jsonb, ${}::uuid, \
             ${}::uuid, ${}::uuid, ${}::text, ${}::timestamptz, ${}::text)",
            at + 1,
            at + 2,
            at + 3,
            at + 4,
            at + 5,
            at + 6,
            at + 7,
            at + 8,
            at + 9,
            at + 10,
            at + 11,
        ));
        values.extend([
            (ord as i64 + 1).into(),
            model.id.into(),
            model.event_type.clone().into(),
            model.priority.into(),
            // Bound as text, cast by the statement: no parse on the way.
            model.payload.as_str().to_owned().into(),
            model.source_engine_id.into(),
            model.parent_event_id.into(),
            model.target_engine_id.into(),
            model.target_engine_type.clone().into(),
            model.deliver_at.into(),
            model.partition_key.clone().into(),
        ]);
    }
    let closed: Vec<String> = super::run::RunStatus::TERMINAL
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    // Whole rows only for subscribers here: jsonb's text output costs
    // PostgreSQL a tenth of a publish.
    let watched = ctx.watched(run_id);
    let sql = format!(
        "WITH run AS (
            UPDATE scenario_runs SET last_sequence = last_sequence + $2
            WHERE id = $1 AND status NOT IN ({closed})
            RETURNING last_sequence
        )
        INSERT INTO event_instances (id, run_id, sequence, event_type, priority, payload,
            source_engine_id, parent_event_id, target_engine_id, target_engine_type,
            idempotency_key, created_at, deliver_at, partition_key)
        SELECT v.id, $1, run.last_sequence - $2 + v.ord, v.event_type, v.priority, v.payload,
            v.source, v.parent, v.target, v.target_type, NULL, $3, v.deliver_at, v.partition_key
        FROM run, (VALUES {rows}) AS v(ord, id, event_type, priority, payload, source, parent,
            target, target_type, deliver_at, partition_key)
        RETURNING {columns}",
        closed = closed.join(", "),
        rows = rows.join(", "),
        columns = if watched {
            event_instance::COLUMNS
        } else {
            "id, sequence"
        },
    );
    let returned = ctx
        .db
        .hot()
        .query_all_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            sql,
            values,
        ))
        .await?;
    if returned.is_empty() {
        return Ok(None);
    }
    let mut sequences = HashMap::with_capacity(returned.len());
    let mut stored = Vec::new();
    for row in &returned {
        if watched {
            let event =
                <event_instance::ByPosition as sea_orm::FromQueryResult>::from_query_result(
                    row, "",
                )?
                .0;
            sequences.insert(event.id, event.sequence);
            stored.push(event);
        } else {
            sequences.insert(
                row.try_get::<Uuid>("", "id")?,
                row.try_get::<i64>("", "sequence")?,
            );
        }
    }
    let mut events = models;
    for event in &mut events {
        event.sequence = *sequences.get(&event.id).ok_or_else(|| {
            AppError::internal("an inserted event came back without its sequence")
        })?;
    }
    // RETURNING promises no order; the feed takes events in sequence order.
    stored.sort_by_key(|e| e.sequence);
    Ok(Some(Written {
        events,
        stored: watched.then_some(stored),
    }))
}

/// What [`publish_in_one_statement`] wrote.
struct Written {
    /// The events as the publisher gave them, with their sequences.
    events: Vec<event_instance::Model>,
    /// The same events as stored (the payload as jsonb gives it back), when
    /// this process has subscribers of the run: what they would otherwise
    /// read back.
    stored: Option<Vec<event_instance::Model>>,
}
