//! Engine instances and their state.

use async_graphql::{Context, InputObject, Lookahead, Object, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::event::Delivery;
use super::json::RawJson;
use super::loader;
use super::run::ScenarioRun;
use crate::entity::engine_state;
use crate::graphql::loaders::{GroupId, InFlightOf, PendingCountOf, RunId};
use crate::service::engine as svc;

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
