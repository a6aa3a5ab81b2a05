//! Export of a run as JSON Lines: one record per line, each with a `kind`,
//! read in one snapshot and streamed from the database's cursors, so a
//! run of a million events takes no more memory than one of ten.
//!
//! Lines come in the order an import needs them: the `run` (with the count
//! of each kind of record that follows, so a file cut at a line boundary
//! is still seen to be short), its `agent_template`s, `scenario_template`
//! and `event_type`s, then `engine`, `event`, `processing`,
//! `engine_state_version` and `relationship` records.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    AccessMode, ColumnTrait, DatabaseTransaction, EntityTrait, ExprTrait, IsolationLevel,
    PaginatorTrait, QueryFilter, QueryOrder, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use uuid::Uuid;

use super::Ctx;
use crate::entity::json_text::JsonText;
use crate::entity::{
    agent_template, engine_group, engine_state, engine_state_version, event_instance,
    event_processing, event_type, run_relationship, scenario_run, scenario_template,
};
use crate::error::{AppError, AppResult};

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// The run itself; first.
    Run(RunRecord),
    /// An agent template its scenario template casts.
    AgentTemplate(AgentTemplateRecord),
    /// Its scenario template.
    ScenarioTemplate(ScenarioTemplateRecord),
    /// An event type its events use.
    EventType(EventTypeRecord),
    /// An engine instance and its current state.
    Engine(EngineRecord),
    /// An event.
    Event(EventRecord),
    /// A processing record.
    Processing(ProcessingRecord),
    /// A saved state of an engine.
    EngineStateVersion(VersionRecord),
    /// A relationship changed during the run.
    Relationship(RelationshipRecord),
}

/// How many records of each kind follow the `run` record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// `engine` records.
    pub engines: u64,
    /// `event` records.
    pub events: u64,
    /// `processing` records.
    pub processings: u64,
    /// `engine_state_version` records.
    pub engine_state_versions: u64,
    /// `relationship` records.
    pub relationships: u64,
}

/// A `run` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub id: Uuid,
    pub template_id: Uuid,
    pub name: String,
    pub status: String,
    pub parameters: Value,
    pub last_sequence: i64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub parent_run_id: Option<Uuid>,
    pub forked_at_sequence: Option<i64>,
    /// What the rest of the file holds.
    pub counts: Counts,
}

/// An `agent_template` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentTemplateRecord {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub config: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A `scenario_template` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioTemplateRecord {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub config: Value,
    pub agent_roles: Value,
    pub event_flow: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An `event_type` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeRecord {
    pub name: String,
    pub category: String,
    pub engine_type: Option<String>,
    pub description: String,
    pub payload_schema: Option<Value>,
    pub default_priority: i32,
    pub max_attempts: i32,
    pub lease_seconds: i32,
    pub retry_delay_seconds: i32,
}

/// An `engine` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineRecord {
    pub engine_id: Uuid,
    pub run_id: Uuid,
    pub engine_type: String,
    /// The name of its group, if any.
    pub group: Option<String>,
    pub state: Value,
    pub version: i64,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub forked_from: Option<Uuid>,
}

/// An `event` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    pub id: Uuid,
    pub run_id: Uuid,
    pub sequence: i64,
    pub event_type: String,
    pub priority: i32,
    #[serde(deserialize_with = "JsonText::deserialize_value")]
    pub payload: JsonText,
    pub source_engine_id: Option<Uuid>,
    pub parent_event_id: Option<Uuid>,
    pub target_engine_id: Option<Uuid>,
    pub target_engine_type: Option<String>,
    pub idempotency_key: Option<String>,
    pub partition_key: Option<String>,
    pub deliver_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A `processing` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessingRecord {
    pub event_id: Uuid,
    pub engine_id: Uuid,
    pub status: String,
    pub error: Option<String>,
    pub attempts: i32,
    pub processed_at: DateTime<Utc>,
    pub run_sequence: i64,
}

/// An `engine_state_version` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionRecord {
    pub engine_id: Uuid,
    pub version: i64,
    pub state: Value,
    pub saved_at: DateTime<Utc>,
    pub run_sequence: i64,
}

/// A `relationship` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelationshipRecord {
    pub run_id: Uuid,
    pub source_role: String,
    pub target_role: String,
    /// The relationship's kind (`kind` names the record's).
    pub relationship_kind: String,
    pub strength: f64,
    pub data: Value,
    pub updated_at: DateTime<Utc>,
}

impl From<agent_template::Model> for AgentTemplateRecord {
    fn from(m: agent_template::Model) -> Self {
        AgentTemplateRecord {
            id: m.id,
            name: m.name,
            description: m.description,
            config: m.config,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

impl From<scenario_template::Model> for ScenarioTemplateRecord {
    fn from(m: scenario_template::Model) -> Self {
        ScenarioTemplateRecord {
            id: m.id,
            name: m.name,
            description: m.description,
            config: m.config,
            agent_roles: m.agent_roles,
            event_flow: m.event_flow,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

impl From<event_type::Model> for EventTypeRecord {
    fn from(m: event_type::Model) -> Self {
        EventTypeRecord {
            name: m.name,
            category: m.category,
            engine_type: m.engine_type,
            description: m.description,
            payload_schema: m.payload_schema,
            default_priority: m.default_priority,
            max_attempts: m.max_attempts,
            lease_seconds: m.lease_seconds,
            retry_delay_seconds: m.retry_delay_seconds,
        }
    }
}

impl From<event_instance::Model> for EventRecord {
    fn from(m: event_instance::Model) -> Self {
        EventRecord {
            id: m.id,
            run_id: m.run_id,
            sequence: m.sequence,
            event_type: m.event_type,
            priority: m.priority,
            payload: m.payload,
            source_engine_id: m.source_engine_id,
            parent_event_id: m.parent_event_id,
            target_engine_id: m.target_engine_id,
            target_engine_type: m.target_engine_type,
            idempotency_key: m.idempotency_key,
            partition_key: m.partition_key,
            deliver_at: m.deliver_at,
            created_at: m.created_at,
        }
    }
}

impl From<event_processing::Model> for ProcessingRecord {
    fn from(m: event_processing::Model) -> Self {
        ProcessingRecord {
            event_id: m.event_id,
            engine_id: m.engine_id,
            status: m.status.as_str().to_owned(),
            error: m.error,
            attempts: m.attempts,
            processed_at: m.processed_at,
            run_sequence: m.run_sequence,
        }
    }
}

impl From<engine_state_version::Model> for VersionRecord {
    fn from(m: engine_state_version::Model) -> Self {
        VersionRecord {
            engine_id: m.engine_id,
            version: m.version,
            state: m.state,
            saved_at: m.saved_at,
            run_sequence: m.run_sequence,
        }
    }
}

impl From<run_relationship::Model> for RelationshipRecord {
    fn from(m: run_relationship::Model) -> Self {
        RelationshipRecord {
            run_id: m.run_id,
            source_role: m.source_role,
            target_role: m.target_role,
            relationship_kind: m.kind,
            strength: m.strength,
            data: m.data,
            updated_at: m.updated_at,
        }
    }
}

/// Starts a read transaction that sees one snapshot of the database.
pub(crate) async fn snapshot(ctx: &Ctx) -> AppResult<DatabaseTransaction> {
    let conn = &ctx.db.conn;
    if conn.get_database_backend() == sea_orm::DbBackend::Postgres {
        return Ok(conn
            .begin_with_config(
                Some(IsolationLevel::RepeatableRead),
                Some(AccessMode::ReadOnly),
            )
            .await?);
    }
    // SQLite in WAL mode: a read transaction reads one snapshot.
    Ok(conn.begin().await?)
}

/// Checks that `run_id` exists (before a response starts streaming it).
pub async fn require_run(ctx: &Ctx, run_id: Uuid) -> AppResult<scenario_run::Model> {
    super::run::get(ctx, run_id)
        .await?
        .ok_or_else(|| AppError::not_found("run_id", format!("scenario run {run_id} not found")))
}

/// Writes run `run_id` to `out` as JSON Lines; returns what it wrote.
pub async fn export<W: AsyncWrite + Unpin>(ctx: &Ctx, run_id: Uuid, out: W) -> AppResult<Counts> {
    let txn = snapshot(ctx).await?;
    let mut out = Lines(BufWriter::with_capacity(64 * 1024, out));
    let run = scenario_run::Entity::find_by_id(run_id)
        .one(&txn)
        .await?
        .ok_or_else(|| AppError::not_found("run_id", format!("scenario run {run_id} not found")))?;
    let counts = count(&txn, run_id).await?;
    out.write(&Record::Run(RunRecord {
        id: run.id,
        template_id: run.template_id,
        name: run.name,
        status: run.status.as_str().to_owned(),
        parameters: run.parameters,
        last_sequence: run.last_sequence,
        created_at: run.created_at,
        started_at: run.started_at,
        ended_at: run.ended_at,
        parent_run_id: run.parent_run_id,
        forked_at_sequence: run.forked_at_sequence,
        counts,
    }))
    .await?;

    let template = scenario_template::Entity::find_by_id(run.template_id)
        .one(&txn)
        .await?
        .ok_or_else(|| AppError::internal("run without template"))?;
    let cast: Vec<Uuid> = template
        .agent_roles
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|role| role.get("agentTemplateId")?.as_str()?.parse().ok())
        .collect();
    for agent in agent_template::Entity::find()
        .filter(agent_template::Column::Id.is_in(cast))
        .order_by_asc(agent_template::Column::Id)
        .all(&txn)
        .await?
    {
        out.write(&Record::AgentTemplate(agent.into())).await?;
    }
    out.write(&Record::ScenarioTemplate(template.into()))
        .await?;
    let used = Query::select()
        .distinct()
        .column(event_instance::Column::EventType)
        .from(event_instance::Entity)
        .and_where(Expr::col(event_instance::Column::RunId).eq(run_id))
        .to_owned();
    for etype in event_type::Entity::find()
        .filter(event_type::Column::Name.in_subquery(used))
        .order_by_asc(event_type::Column::Name)
        .all(&txn)
        .await?
    {
        out.write(&Record::EventType(etype.into())).await?;
    }

    let groups: HashMap<Uuid, String> = engine_group::Entity::find()
        .filter(engine_group::Column::RunId.eq(run_id))
        .all(&txn)
        .await?
        .into_iter()
        .map(|g| (g.id, g.name))
        .collect();
    let mut engines = engines_of(run_id).stream(&txn).await?;
    while let Some(e) = engines.try_next().await? {
        let group = e.group_id.and_then(|g| groups.get(&g).cloned());
        out.write(&Record::Engine(EngineRecord {
            engine_id: e.engine_id,
            run_id: e.run_id,
            engine_type: e.engine_type,
            group,
            state: e.state,
            version: e.version,
            registered_at: e.registered_at,
            updated_at: e.updated_at,
            last_seen_at: e.last_seen_at,
            forked_from: e.forked_from,
        }))
        .await?;
    }
    drop(engines);

    let mut events = events_of(run_id).stream(&txn).await?;
    while let Some(event) = events.try_next().await? {
        out.write(&Record::Event(event.into())).await?;
    }
    drop(events);
    let mut records = processings_of(run_id).stream(&txn).await?;
    while let Some(record) = records.try_next().await? {
        out.write(&Record::Processing(record.into())).await?;
    }
    drop(records);
    let mut versions = versions_of(run_id).stream(&txn).await?;
    while let Some(version) = versions.try_next().await? {
        out.write(&Record::EngineStateVersion(version.into()))
            .await?;
    }
    drop(versions);
    for relationship in run_relationship::Entity::find()
        .filter(run_relationship::Column::RunId.eq(run_id))
        .order_by_asc(run_relationship::Column::SourceRole)
        .order_by_asc(run_relationship::Column::TargetRole)
        .all(&txn)
        .await?
    {
        out.write(&Record::Relationship(relationship.into()))
            .await?;
    }
    out.0.flush().await.map_err(write_failed)?;
    txn.commit().await?;
    Ok(counts)
}

/// A JSON Lines writer.
struct Lines<W>(BufWriter<W>);

impl<W: AsyncWrite + Unpin> Lines<W> {
    async fn write(&mut self, record: &Record) -> AppResult<()> {
        let mut line = serde_json::to_vec(record)
            .map_err(|e| AppError::internal(format!("a record did not serialize: {e}")))?;
        line.push(b'\n');
        self.0.write_all(&line).await.map_err(write_failed)
    }
}

fn write_failed(err: std::io::Error) -> AppError {
    AppError::internal(format!("the export could not be written: {err}"))
}

fn engines_of(run_id: Uuid) -> sea_orm::Select<engine_state::Entity> {
    engine_state::Entity::find()
        .filter(engine_state::Column::RunId.eq(run_id))
        .order_by_asc(engine_state::Column::RegisteredAt)
        .order_by_asc(engine_state::Column::EngineId)
}

fn events_of(run_id: Uuid) -> sea_orm::Select<event_instance::Entity> {
    event_instance::Entity::find()
        .filter(event_instance::Column::RunId.eq(run_id))
        .order_by_asc(event_instance::Column::Sequence)
}

fn event_ids_of(run_id: Uuid) -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(event_instance::Column::Id)
        .from(event_instance::Entity)
        .and_where(Expr::col(event_instance::Column::RunId).eq(run_id))
        .to_owned()
}

fn processings_of(run_id: Uuid) -> sea_orm::Select<event_processing::Entity> {
    event_processing::Entity::find()
        .filter(event_processing::Column::EventId.in_subquery(event_ids_of(run_id)))
        .order_by_asc(event_processing::Column::EventId)
        .order_by_asc(event_processing::Column::EngineId)
}

fn versions_of(run_id: Uuid) -> sea_orm::Select<engine_state_version::Entity> {
    let engines = Query::select()
        .column(engine_state::Column::EngineId)
        .from(engine_state::Entity)
        .and_where(Expr::col(engine_state::Column::RunId).eq(run_id))
        .to_owned();
    engine_state_version::Entity::find()
        .filter(engine_state_version::Column::EngineId.in_subquery(engines))
        .order_by_asc(engine_state_version::Column::EngineId)
        .order_by_asc(engine_state_version::Column::Version)
}

/// The number of records of each kind the export of `run_id` holds.
async fn count(txn: &DatabaseTransaction, run_id: Uuid) -> AppResult<Counts> {
    Ok(Counts {
        engines: engines_of(run_id).count(txn).await?,
        events: events_of(run_id).count(txn).await?,
        processings: processings_of(run_id).count(txn).await?,
        engine_state_versions: versions_of(run_id).count(txn).await?,
        relationships: run_relationship::Entity::find()
            .filter(run_relationship::Column::RunId.eq(run_id))
            .count(txn)
            .await?,
    })
}
