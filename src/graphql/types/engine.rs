//! Engine instances and their state.

use async_graphql::connection::Connection;
use async_graphql::{Context, InputObject, Lookahead, Object, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::event::Delivery;
use super::json::RawJson;
use super::run::ScenarioRun;
use super::{connection, loader, service_ctx};
use crate::entity::{engine_state, engine_state_version};
use crate::graphql::loaders::{GroupId, InFlightOf, PendingCountOf, RunId};
use crate::service::engine as svc;
use crate::service::history;
use crate::service::page::{CursorKey, PageRequest, page_size};

/// One running engine (an instance, never a type) and its checkpointed state.
pub struct EngineInstance(pub engine_state::Model);

/// Loads the per-engine fields selected under `engines` for all of them at
/// once, before they resolve one by one (as `event::prefetch_relations`).
pub async fn prefetch(
    ctx: &Context<'_>,
    look: &Lookahead<'_>,
    engines: &[engine_state::Model],
) -> Result<()> {
    let loader = loader(ctx);
    if look.field("pendingCount").exists() {
        loader
            .load_many(engines.iter().map(|e| PendingCountOf(e.engine_id)))
            .await?;
    }
    if look.field("inFlight").exists() {
        loader
            .load_many(engines.iter().map(|e| InFlightOf(e.engine_id)))
            .await?;
    }
    if look.field("group").exists() {
        loader
            .load_many(engines.iter().filter_map(|e| e.group_id.map(GroupId)))
            .await?;
    }
    Ok(())
}

#[Object]
impl EngineInstance {
    /// Its id.
    async fn engine_id(&self) -> Uuid {
        self.0.engine_id
    }
    /// The run it works on.
    async fn run_id(&self) -> Uuid {
        self.0.run_id
    }
    /// The run it works on.
    async fn run(&self, ctx: &Context<'_>) -> Result<Option<ScenarioRun>> {
        Ok(loader(ctx)
            .load_one(RunId(self.0.run_id))
            .await?
            .map(ScenarioRun))
    }
    /// Its type (ActorEngine, NarratorEngine, AnalystEngine, ...).
    async fn engine_type(&self) -> &str {
        &self.0.engine_type
    }
    /// Its last saved state.
    async fn state(&self) -> RawJson {
        RawJson::of(&self.0.state)
    }
    /// Grows by one on every save; give it back as `expectedVersion`.
    async fn version(&self) -> i64 {
        self.0.version
    }
    /// When it first registered.
    async fn registered_at(&self) -> DateTime<Utc> {
        self.0.registered_at
    }
    /// When its state last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Its last sign of life.
    async fn last_seen_at(&self) -> DateTime<Utc> {
        self.0.last_seen_at
    }
    /// Whether it was seen in the last 30 seconds.
    async fn online(&self) -> bool {
        svc::is_online(&self.0)
    }
    /// How many events are routed to it and not done by it, or by its
    /// group (in flight, waiting, delayed or backing off).
    async fn pending_count(&self, ctx: &Context<'_>) -> Result<i64> {
        Ok(loader(ctx)
            .load_one(PendingCountOf(self.0.engine_id))
            .await?
            .unwrap_or_default())
    }
    /// The group of engines of its type it shares the run's work with.
    async fn group(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        let Some(id) = self.0.group_id else {
            return Ok(None);
        };
        Ok(loader(ctx).load_one(GroupId(id)).await?.map(|g| g.name))
    }
    /// The engine of the parent run this one was forked from.
    async fn forked_from(&self, ctx: &Context<'_>) -> Result<Option<EngineInstance>> {
        let Some(id) = self.0.forked_from else {
            return Ok(None);
        };
        Ok(svc::get(service_ctx(ctx), id).await?.map(EngineInstance))
    }
    /// Its saved states, newest first (as many as `STATE_HISTORY` keeps).
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, EngineStateVersion>> {
        let service = service_ctx(ctx);
        let page = PageRequest {
            first: page_size(first, service.limits.max_page_size)?,
            after: after.as_deref().map(i64::decode).transpose()?,
        };
        let had_cursor = page.after.is_some();
        let rows = history::versions(service, self.0.engine_id, page).await?;
        Ok(connection(rows, had_cursor, EngineStateVersion))
    }
    /// Its state as of run sequence `sequence`: the latest version saved at
    /// or before it (for a forked engine before the fork, its source's
    /// version); null before its registration or past the kept history.
    async fn state_at(
        &self,
        ctx: &Context<'_>,
        sequence: i64,
    ) -> Result<Option<EngineStateVersion>> {
        let conn = &service_ctx(ctx).db.conn;
        Ok(
            match history::state_at(conn, self.0.engine_id, sequence).await? {
                history::StateAt::Version(version) => Some(EngineStateVersion(version)),
                history::StateAt::Before | history::StateAt::Dropped => None,
            },
        )
    }
    /// The deliveries it holds unrecorded, with their leases.
    async fn in_flight(&self, ctx: &Context<'_>) -> Result<Vec<Delivery>> {
        let found = loader(ctx).load_one(InFlightOf(self.0.engine_id)).await?;
        Ok(found
            .unwrap_or_default()
            .into_iter()
            .map(|d| Delivery(std::sync::Arc::new(d)))
            .collect())
    }
}

/// One saved state of an engine.
pub struct EngineStateVersion(pub engine_state_version::Model);

#[Object]
impl EngineStateVersion {
    /// The engine's `version` after this save.
    async fn version(&self) -> i64 {
        self.0.version
    }
    /// The state saved.
    async fn state(&self) -> RawJson {
        RawJson::of(&self.0.state)
    }
    /// When it was saved.
    async fn saved_at(&self) -> DateTime<Utc> {
        self.0.saved_at
    }
    /// The run's `lastSequence` when the save committed.
    async fn run_sequence(&self) -> i64 {
        self.0.run_sequence
    }
}

/// An engine announcing itself; an existing engine gets its stored state back.
#[derive(InputObject)]
pub struct RegisterEngineInput {
    /// Its id; generated when absent. Give the same id after a restart.
    pub engine_id: Option<Uuid>,
    /// The run it works on.
    pub run_id: Uuid,
    /// Its type (ActorEngine, NarratorEngine, ...).
    pub engine_type: String,
    /// Initial state, used only when the engine is new; `{}` when null or
    /// left out.
    pub state: Option<Value>,
    /// Share the run's work with the other engines registered with this
    /// group (all of one engine type): each event goes to one of them.
    pub group: Option<String>,
}

impl From<RegisterEngineInput> for svc::Registration {
    fn from(input: RegisterEngineInput) -> Self {
        svc::Registration {
            engine_id: input.engine_id,
            run_id: input.run_id,
            engine_type: input.engine_type,
            state: input.state,
            group: input.group,
        }
    }
}
