//! Import of a run exported by [`super::export`], into either backend, in
//! one transaction: every record keeps its ids, sequences, versions and
//! times. The file is read a line at a time and written in batches, so its
//! size does not bound memory. Anything wrong (a malformed or misplaced
//! line, a file cut short, a run that exists) is refused with the line it
//! was found at, and the database is left as it was.

use std::collections::HashMap;

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, QueryFilter};
use sea_orm::{ColumnTrait, DatabaseTransaction};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use uuid::Uuid;

use super::auth::{Access, Principal};
use super::export::{Counts, Record, RunRecord};
use super::{Ctx, now};
use crate::entity::scenario_run::RunStatus;
use crate::entity::{
    agent_template, engine_group, engine_state, engine_state_version, event_instance,
    event_processing, event_type, run_relationship, scenario_run, scenario_template,
};
use crate::error::{AppError, AppResult};

/// Rows written per INSERT.
const BATCH: usize = 500;

/// What an import loaded.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The run, as stored.
    pub run: scenario_run::Model,
    /// The records of each kind.
    pub counts: Counts,
}

/// The place of each kind in an export; records come in this order.
fn rank(record: &Record) -> u8 {
    match record {
        Record::Run(_) => 0,
        Record::AgentTemplate(_) => 1,
        Record::ScenarioTemplate(_) => 2,
        Record::EventType(_) => 3,
        Record::Engine(_) => 4,
        Record::Event(_) => 5,
        Record::Processing(_) => 6,
        Record::EngineStateVersion(_) => 7,
        Record::Relationship(_) => 8,
    }
}

/// The `kind` of a record, as written in the file.
fn kind(record: &Record) -> &'static str {
    match record {
        Record::Run(_) => "run",
        Record::AgentTemplate(_) => "agent_template",
        Record::ScenarioTemplate(_) => "scenario_template",
        Record::EventType(_) => "event_type",
        Record::Engine(_) => "engine",
        Record::Event(_) => "event",
        Record::Processing(_) => "processing",
        Record::EngineStateVersion(_) => "engine_state_version",
        Record::Relationship(_) => "relationship",
    }
}

/// An error about line `line` of the file.
fn at_line(line: u64, message: impl std::fmt::Display) -> AppError {
    AppError::bad_input("file", format!("line {line}: {message}"))
}

/// Imports the run in `input` (admin only).
pub async fn import<R: AsyncBufRead + Unpin>(
    ctx: &Ctx,
    principal: &Principal,
    input: R,
) -> AppResult<Imported> {
    principal.require(Access::Admin)?;
    let txn = ctx.db.begin_write().await?;
    let mut loader = Loader {
        txn: &txn,
        run: None,
        run_stored: false,
        groups: HashMap::new(),
        seen: Counts::default(),
        types_added: false,
        batch: Batch::default(),
        line: 0,
    };
    let mut lines = input.lines();
    let mut last_rank = 0;
    loop {
        let text = lines
            .next_line()
            .await
            .map_err(|e| at_line(loader.line + 1, format!("cannot be read: {e}")))?;
        let Some(text) = text else { break };
        loader.line += 1;
        let line = loader.line;
        if text.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(&text)
            .map_err(|e| at_line(line, format!("not a record of an export: {e}")))?;
        let rank = rank(&record);
        match (&loader.run, &record) {
            (None, Record::Run(_)) => {}
            (None, _) => return Err(at_line(line, "the first record must be the `run`")),
            (Some(_), Record::Run(_)) => {
                return Err(at_line(line, "a second `run` record: one run per file"));
            }
            _ if rank < last_rank => {
                return Err(at_line(
                    line,
                    format!(
                        "`{}` record out of order (an export's order is run, \
                         agent_template, scenario_template, event_type, engine, event, \
                         processing, engine_state_version, relationship)",
                        kind(&record)
                    ),
                ));
            }
            _ => {}
        }
        last_rank = rank;
        loader.load(record).await?;
    }
    let Some(run) = loader.run.clone() else {
        return Err(AppError::bad_input(
            "file",
            "the file holds no `run` record",
        ));
    };
    loader.flush().await?;
    loader.store_run().await?;
    if loader.seen != run.counts {
        return Err(AppError::bad_input(
            "file",
            format!(
                "the file ends at line {} with {:?} where its run record announces {:?}: \
                 it is incomplete",
                loader.line, loader.seen, run.counts
            ),
        ));
    }
    super::fork::rebuild_deliveries(&*txn, run.id).await?;
    let types_added = loader.types_added;
    let stored = scenario_run::Entity::find_by_id(run.id)
        .one(&*txn)
        .await?
        .ok_or_else(|| AppError::internal("imported run not found"))?;
    super::metric::rebuild_in(&*txn, &stored).await?;
    txn.commit().await?;
    if types_added {
        ctx.event_types_changed();
    }
    Ok(Imported {
        run: stored,
        counts: run.counts,
    })
}

/// Rows waiting for their INSERT.
#[derive(Default)]
struct Batch {
    events: Vec<event_instance::ActiveModel>,
    processings: Vec<event_processing::ActiveModel>,
    versions: Vec<engine_state_version::ActiveModel>,
}

/// The state of one import.
struct Loader<'a> {
    txn: &'a DatabaseTransaction,
    run: Option<RunRecord>,
    run_stored: bool,
    /// The run's groups by name.
    groups: HashMap<String, Uuid>,
    seen: Counts,
    types_added: bool,
    batch: Batch,
    /// The line being read.
    line: u64,
}

impl Loader<'_> {
    async fn load(&mut self, record: Record) -> AppResult<()> {
        let line = self.line;
        let run_id = self.run.as_ref().map(|r| r.id);
        let check_run = |id: Uuid| -> AppResult<()> {
            if Some(id) != run_id {
                return Err(at_line(line, format!("run {id} is not the file's run")));
            }
            Ok(())
        };
        match record {
            Record::Run(run) => {
                if scenario_run::Entity::find_by_id(run.id)
                    .one(self.txn)
                    .await?
                    .is_some()
                {
                    return Err(AppError::Conflict(format!(
                        "scenario run {} exists already in this database",
                        run.id
                    )));
                }
                RunStatus::parse(&run.status)
                    .ok_or_else(|| at_line(line, format!("unknown run status {:?}", run.status)))?;
                self.run = Some(run);
            }
            Record::AgentTemplate(t) => {
                if agent_template::Entity::find_by_id(t.id)
                    .one(self.txn)
                    .await?
                    .is_some()
                {
                    return Ok(());
                }
                self.require_free_name::<agent_template::Entity>(
                    agent_template::Column::Name,
                    &t.name,
                    "agent template",
                )
                .await?;
                agent_template::ActiveModel {
                    id: Set(t.id),
                    name: Set(t.name),
                    description: Set(t.description),
                    config: Set(t.config),
                    created_at: Set(t.created_at),
                    updated_at: Set(t.updated_at),
                }
                .insert(self.txn)
                .await?;
            }
            Record::ScenarioTemplate(t) => {
                if scenario_template::Entity::find_by_id(t.id)
                    .one(self.txn)
                    .await?
                    .is_some()
                {
                    return Ok(());
                }
                self.require_free_name::<scenario_template::Entity>(
                    scenario_template::Column::Name,
                    &t.name,
                    "scenario template",
                )
                .await?;
                scenario_template::ActiveModel {
                    id: Set(t.id),
                    name: Set(t.name),
                    description: Set(t.description),
                    config: Set(t.config),
                    agent_roles: Set(t.agent_roles),
                    event_flow: Set(t.event_flow),
                    created_at: Set(t.created_at),
                    updated_at: Set(t.updated_at),
                }
                .insert(self.txn)
                .await?;
            }
            Record::EventType(t) => {
                // A type of that name here already is the one the events use.
                let added = event_type::Entity::insert(event_type::ActiveModel {
                    name: Set(t.name),
                    category: Set(t.category),
                    engine_type: Set(t.engine_type),
                    description: Set(t.description),
                    payload_schema: Set(t.payload_schema),
                    default_priority: Set(t.default_priority),
                    max_attempts: Set(t.max_attempts),
                    lease_seconds: Set(t.lease_seconds),
                    retry_delay_seconds: Set(t.retry_delay_seconds),
                })
                .on_conflict(
                    OnConflict::column(event_type::Column::Name)
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(self.txn)
                .await?;
                self.types_added |= added > 0;
            }
            Record::Engine(e) => {
                check_run(e.run_id)?;
                self.store_run().await?;
                let group_id = match e.group {
                    Some(name) => Some(self.group(&name, &e.engine_type).await?),
                    None => None,
                };
                engine_state::ActiveModel {
                    engine_id: Set(e.engine_id),
                    run_id: Set(e.run_id),
                    engine_type: Set(e.engine_type),
                    state: Set(e.state),
                    version: Set(e.version),
                    registered_at: Set(e.registered_at),
                    updated_at: Set(e.updated_at),
                    last_seen_at: Set(e.last_seen_at),
                    registered_by: Set(None),
                    group_id: Set(group_id),
                    subscribed_until: Set(None),
                    forked_from: Set(e.forked_from),
                }
                .insert(self.txn)
                .await?;
                self.seen.engines += 1;
            }
            Record::Event(e) => {
                check_run(e.run_id)?;
                self.store_run().await?;
                self.batch.events.push(event_instance::ActiveModel {
                    id: Set(e.id),
                    run_id: Set(e.run_id),
                    sequence: Set(e.sequence),
                    event_type: Set(e.event_type),
                    priority: Set(e.priority),
                    payload: Set(e.payload),
                    source_engine_id: Set(e.source_engine_id),
                    parent_event_id: Set(e.parent_event_id),
                    target_engine_id: Set(e.target_engine_id),
                    target_engine_type: Set(e.target_engine_type),
                    idempotency_key: Set(e.idempotency_key),
                    created_at: Set(e.created_at),
                    deliver_at: Set(e.deliver_at),
                    partition_key: Set(e.partition_key),
                });
                self.seen.events += 1;
            }
            Record::Processing(p) => {
                self.store_run().await?;
                let status = super::processing::ProcessingStatus::parse(&p.status)
                    .ok_or_else(|| at_line(line, format!("unknown status {:?}", p.status)))?;
                self.batch.processings.push(event_processing::ActiveModel {
                    event_id: Set(p.event_id),
                    engine_id: Set(p.engine_id),
                    status: Set(status),
                    error: Set(p.error),
                    attempts: Set(p.attempts),
                    processed_at: Set(p.processed_at),
                    run_sequence: Set(p.run_sequence),
                });
                self.seen.processings += 1;
            }
            Record::EngineStateVersion(v) => {
                self.store_run().await?;
                self.batch.versions.push(engine_state_version::ActiveModel {
                    engine_id: Set(v.engine_id),
                    version: Set(v.version),
                    state: Set(v.state),
                    saved_at: Set(v.saved_at),
                    run_sequence: Set(v.run_sequence),
                });
                self.seen.engine_state_versions += 1;
            }
            Record::Relationship(r) => {
                check_run(r.run_id)?;
                self.store_run().await?;
                self.flush().await?;
                run_relationship::ActiveModel {
                    run_id: Set(r.run_id),
                    source_role: Set(r.source_role),
                    target_role: Set(r.target_role),
                    kind: Set(r.relationship_kind),
                    strength: Set(r.strength),
                    data: Set(r.data),
                    updated_at: Set(r.updated_at),
                }
                .insert(self.txn)
                .await?;
                self.seen.relationships += 1;
            }
        }
        if self.batch.events.len() + self.batch.processings.len() + self.batch.versions.len()
            >= BATCH
        {
            self.flush().await?;
        }
        Ok(())
    }

    /// `CONFLICT` when another record of `what` has `name` here.
    async fn require_free_name<E: EntityTrait>(
        &self,
        column: E::Column,
        name: &str,
        what: &str,
    ) -> AppResult<()> {
        if E::find()
            .filter(column.eq(name))
            .one(self.txn)
            .await?
            .is_some()
        {
            return Err(AppError::Conflict(format!(
                "line {}: another {what} is named {name:?} in this database",
                self.line
            )));
        }
        Ok(())
    }

    /// Stores the run once the templates it needs are in.
    async fn store_run(&mut self) -> AppResult<()> {
        if self.run_stored {
            return Ok(());
        }
        let Some(run) = self.run.clone() else {
            return Ok(());
        };
        if scenario_template::Entity::find_by_id(run.template_id)
            .one(self.txn)
            .await?
            .is_none()
        {
            return Err(at_line(
                self.line,
                format!(
                    "the run's scenario template {} is neither in the file nor in this database",
                    run.template_id
                ),
            ));
        }
        let status = RunStatus::parse(&run.status)
            .ok_or_else(|| AppError::internal("run status checked but unknown"))?;
        scenario_run::ActiveModel {
            id: Set(run.id),
            template_id: Set(run.template_id),
            name: Set(run.name),
            status: Set(status),
            parameters: Set(run.parameters),
            last_sequence: Set(run.last_sequence),
            created_at: Set(run.created_at),
            started_at: Set(run.started_at),
            ended_at: Set(run.ended_at),
            parent_run_id: Set(run.parent_run_id),
            forked_at_sequence: Set(run.forked_at_sequence),
        }
        .insert(self.txn)
        .await?;
        self.run_stored = true;
        Ok(())
    }

    /// The id of the run's group `name`, made on first use.
    async fn group(&mut self, name: &str, engine_type: &str) -> AppResult<Uuid> {
        if let Some(id) = self.groups.get(name) {
            return Ok(*id);
        }
        let run_id = self
            .run
            .as_ref()
            .map(|r| r.id)
            .ok_or_else(|| AppError::internal("a group before the run"))?;
        let id = Uuid::now_v7();
        engine_group::ActiveModel {
            id: Set(id),
            run_id: Set(run_id),
            name: Set(name.to_owned()),
            engine_type: Set(engine_type.to_owned()),
            created_at: Set(now()),
        }
        .insert(self.txn)
        .await?;
        self.groups.insert(name.to_owned(), id);
        Ok(id)
    }

    /// Writes the rows waiting, kind by kind in the file's order.
    async fn flush(&mut self) -> AppResult<()> {
        let line = self.line;
        let failed = |e: sea_orm::DbErr| {
            let err = AppError::from(e);
            match err {
                AppError::Internal(_) => err,
                other => at_line(line, format!("a record up to this line: {other}")),
            }
        };
        let events = std::mem::take(&mut self.batch.events);
        if !events.is_empty() {
            event_instance::Entity::insert_many(events)
                .exec_without_returning(self.txn)
                .await
                .map_err(failed)?;
        }
        let processings = std::mem::take(&mut self.batch.processings);
        if !processings.is_empty() {
            event_processing::Entity::insert_many(processings)
                .exec_without_returning(self.txn)
                .await
                .map_err(failed)?;
        }
        let versions = std::mem::take(&mut self.batch.versions);
        if !versions.is_empty() {
            engine_state_version::Entity::insert_many(versions)
                .exec_without_returning(self.txn)
                .await
                .map_err(failed)?;
        }
        Ok(())
    }
}
