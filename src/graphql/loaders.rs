//! DataLoaders of nested fields: one per request, each batching the keys
//! asked for by one level of the query into one SQL statement.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use uuid::Uuid;

use super::error::LoadError;
use crate::entity::{
    agent_template, engine_group, engine_state, event_delivery, event_instance, event_processing,
    event_type, scenario_run, scenario_template,
};
use crate::service::{self, Ctx};

/// Loads rows by key for one request, through the services.
pub struct Loaders {
    /// The service context of the request.
    pub ctx: Ctx,
}

/// A run by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunId(pub Uuid);
/// A scenario template by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScenarioTemplateId(pub Uuid);
/// An agent template by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AgentTemplateId(pub Uuid);
/// An event by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventId(pub Uuid);
/// The processing records of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessingsOf(pub Uuid);
/// An event type by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventTypeName(pub String);
/// The live leases of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InFlightOf(pub Uuid);
/// The engines of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnginesOf(pub Uuid);
/// The metrics and evaluation of a run (with its template).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetricsOf {
    /// The run.
    pub run: Uuid,
    /// Its template.
    pub template: Uuid,
}
/// The forks of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ForksOf(pub Uuid);
/// The relationships of a run (with its template).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelationshipsOf {
    /// The run.
    pub run: Uuid,
    /// Its template.
    pub template: Uuid,
}
/// The first page of a run's events, unfiltered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FirstEventsOf {
    /// The run.
    pub run: Uuid,
    /// The page's order.
    pub order: service::event::EventOrder,
    /// Its size.
    pub first: usize,
}
/// An engine group by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupId(pub Uuid);
/// How many events are outstanding for an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PendingCountOf(pub Uuid);

impl Loader<RunId> for Loaders {
    type Value = scenario_run::Model;
    type Error = LoadError;

    async fn load(&self, keys: &[RunId]) -> Result<HashMap<RunId, Self::Value>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let rows = service::run::get_many(&self.ctx, &ids).await?;
        Ok(rows.into_iter().map(|r| (RunId(r.id), r)).collect())
    }
}

impl Loader<ScenarioTemplateId> for Loaders {
    type Value = scenario_template::Model;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[ScenarioTemplateId],
    ) -> Result<HashMap<ScenarioTemplateId, Self::Value>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let rows = service::scenario_template::get_many(&self.ctx, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|r| (ScenarioTemplateId(r.id), r))
            .collect())
    }
}

impl Loader<AgentTemplateId> for Loaders {
    type Value = agent_template::Model;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[AgentTemplateId],
    ) -> Result<HashMap<AgentTemplateId, Self::Value>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let rows = service::agent_template::get_many(&self.ctx, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|r| (AgentTemplateId(r.id), r))
            .collect())
    }
}

impl Loader<EventId> for Loaders {
    type Value = event_instance::Model;
    type Error = LoadError;

    async fn load(&self, keys: &[EventId]) -> Result<HashMap<EventId, Self::Value>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let rows = service::event::get_many(&self.ctx, &ids).await?;
        Ok(rows.into_iter().map(|r| (EventId(r.id), r)).collect())
    }
}

impl Loader<ProcessingsOf> for Loaders {
    type Value = Vec<event_processing::Model>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[ProcessingsOf],
    ) -> Result<HashMap<ProcessingsOf, Self::Value>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let rows = service::event::processings_of(&self.ctx, &ids).await?;
        // Every key gets an entry, so that an event without records is not "missing".
        let mut out: HashMap<ProcessingsOf, Self::Value> =
            keys.iter().map(|k| (*k, Vec::new())).collect();
        for row in rows {
            out.entry(ProcessingsOf(row.event_id))
                .or_default()
                .push(row);
        }
        Ok(out)
    }
}

impl Loader<EventTypeName> for Loaders {
    /// Shared: every event of a page asks for its type, and the loader hands
    /// each a clone of the cached value.
    type Value = Arc<event_type::Model>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[EventTypeName],
    ) -> Result<HashMap<EventTypeName, Self::Value>, Self::Error> {
        let names: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let rows = service::event_type::get_many(&self.ctx, &names).await?;
        Ok(rows
            .into_iter()
            .map(|r| (EventTypeName(r.name.clone()), r))
            .collect())
    }
}

impl Loader<InFlightOf> for Loaders {
    type Value = Vec<event_delivery::Model>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[InFlightOf],
    ) -> Result<HashMap<InFlightOf, Self::Value>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let rows = service::lease::in_flight(&self.ctx, &ids).await?;
        let mut out: HashMap<InFlightOf, Self::Value> =
            keys.iter().map(|k| (*k, Vec::new())).collect();
        for row in rows {
            if let Some(engine_id) = row.engine_id {
                out.entry(InFlightOf(engine_id)).or_default().push(row);
            }
        }
        Ok(out)
    }
}

impl Loader<EnginesOf> for Loaders {
    type Value = Vec<engine_state::Model>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[EnginesOf],
    ) -> Result<HashMap<EnginesOf, Self::Value>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let engines = service::engine::list_of_runs(&self.ctx, &ids).await?;
        Ok(engines
            .into_iter()
            .map(|(run, e)| (EnginesOf(run), e))
            .collect())
    }
}

impl Loader<MetricsOf> for Loaders {
    type Value = (Vec<service::metric::RunMetric>, service::metric::Evaluation);
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[MetricsOf],
    ) -> Result<HashMap<MetricsOf, Self::Value>, Self::Error> {
        let runs: Vec<(Uuid, Uuid)> = keys.iter().map(|k| (k.run, k.template)).collect();
        let mut found = service::metric::of_runs(&self.ctx.db.conn, &runs).await?;
        Ok(keys
            .iter()
            .filter_map(|k| found.remove(&k.run).map(|v| (*k, v)))
            .collect())
    }
}

impl Loader<ForksOf> for Loaders {
    type Value = Vec<scenario_run::Model>;
    type Error = LoadError;

    async fn load(&self, keys: &[ForksOf]) -> Result<HashMap<ForksOf, Self::Value>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let forks = service::fork::forks_of(&self.ctx, &ids).await?;
        Ok(forks
            .into_iter()
            .map(|(run, f)| (ForksOf(run), f))
            .collect())
    }
}

impl Loader<RelationshipsOf> for Loaders {
    type Value = Vec<service::relationship::Relationship>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[RelationshipsOf],
    ) -> Result<HashMap<RelationshipsOf, Self::Value>, Self::Error> {
        let runs: Vec<(Uuid, Uuid)> = keys.iter().map(|k| (k.run, k.template)).collect();
        let mut found = service::relationship::for_runs(&self.ctx, &runs).await?;
        Ok(keys
            .iter()
            .map(|k| (*k, found.remove(&k.run).unwrap_or_default()))
            .collect())
    }
}

impl Loader<FirstEventsOf> for Loaders {
    type Value = service::page::Page<service::event::EventCursor, event_instance::Model>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[FirstEventsOf],
    ) -> Result<HashMap<FirstEventsOf, Self::Value>, Self::Error> {
        // One statement per page shape asked for (aliases may differ).
        let mut shapes: HashMap<(service::event::EventOrder, usize), Vec<Uuid>> = HashMap::new();
        for k in keys {
            shapes.entry((k.order, k.first)).or_default().push(k.run);
        }
        let mut out = HashMap::new();
        for ((order, first), runs) in shapes {
            let pages = service::event::first_pages(&self.ctx, &runs, order, first).await?;
            for (run, page) in pages {
                out.insert(FirstEventsOf { run, order, first }, page);
            }
        }
        Ok(out)
    }
}

impl Loader<GroupId> for Loaders {
    type Value = engine_group::Model;
    type Error = LoadError;

    async fn load(&self, keys: &[GroupId]) -> Result<HashMap<GroupId, Self::Value>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let rows = service::engine::groups(&self.ctx, &ids).await?;
        Ok(rows.into_iter().map(|g| (GroupId(g.id), g)).collect())
    }
}

impl Loader<PendingCountOf> for Loaders {
    type Value = i64;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[PendingCountOf],
    ) -> Result<HashMap<PendingCountOf, Self::Value>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let engines = service::engine::get_many(&self.ctx, &ids).await?;
        let counts = service::pending::counts(&self.ctx, &engines).await?;
        Ok(counts
            .into_iter()
            .map(|(id, n)| (PendingCountOf(id), n))
            .collect())
    }
}
