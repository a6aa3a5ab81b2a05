//! The queries of DESIGN.md. Single-object queries answer null for an
//! unknown id; lists are Relay connections.

use async_graphql::connection::Connection;
use async_graphql::{Context, Object, Result};
use uuid::Uuid;

use super::types::engine::EngineInstance;
use super::types::event::{Event, EventFilter, EventOrder, EventType, list_events};
use super::types::run::{RunStatus, ScenarioRun};
use super::types::template::{AgentTemplate, ScenarioTemplate};
use super::types::{connection, service_ctx};
use crate::service::page::{CursorKey, PageRequest, page_size};
use crate::service::{self, Ctx};

/// The root of every query.
pub struct QueryRoot;

fn id_page(ctx: &Ctx, first: Option<i32>, after: Option<String>) -> Result<PageRequest<Uuid>> {
    Ok(PageRequest {
        first: page_size(first, ctx.limits.max_page_size)?,
        after: after.as_deref().map(Uuid::decode).transpose()?,
    })
}

#[Object]
impl QueryRoot {
    /// Agent templates, oldest first.
    async fn agent_templates(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, AgentTemplate>> {
        let service = service_ctx(ctx);
        let page = id_page(service, first, after)?;
        let had_cursor = page.after.is_some();
        let rows = service::agent_template::list(service, page).await?;
        Ok(connection(rows, had_cursor, AgentTemplate))
    }

    /// One agent template.
    async fn agent_template(&self, ctx: &Context<'_>, id: Uuid) -> Result<Option<AgentTemplate>> {
        Ok(service::agent_template::get(service_ctx(ctx), id)
            .await?
            .map(AgentTemplate))
    }

    /// Scenario templates, oldest first.
    async fn scenario_templates(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, ScenarioTemplate>> {
        let service = service_ctx(ctx);
        let page = id_page(service, first, after)?;
        let had_cursor = page.after.is_some();
        let rows = service::scenario_template::list(service, page).await?;
        Ok(connection(rows, had_cursor, ScenarioTemplate))
    }

    /// One scenario template.
    async fn scenario_template(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> Result<Option<ScenarioTemplate>> {
        Ok(service::scenario_template::get(service_ctx(ctx), id)
            .await?
            .map(ScenarioTemplate))
    }

    /// Scenario runs, oldest first, optionally of one status or template.
    async fn scenario_runs(
        &self,
        ctx: &Context<'_>,
        status: Option<RunStatus>,
        template_id: Option<Uuid>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, ScenarioRun>> {
        let service = service_ctx(ctx);
        let page = id_page(service, first, after)?;
        let had_cursor = page.after.is_some();
        let rows = service::run::list(service, status.map(Into::into), template_id, page).await?;
        let runs: Vec<_> = rows.rows.iter().map(|(_, r)| r.clone()).collect();
        super::types::run::prefetch(ctx, &ctx.look_ahead(), &runs).await?;
        Ok(connection(rows, had_cursor, ScenarioRun))
    }

    /// One scenario run.
    async fn scenario_run(&self, ctx: &Context<'_>, id: Uuid) -> Result<Option<ScenarioRun>> {
        Ok(service::run::get(service_ctx(ctx), id)
            .await?
            .map(ScenarioRun))
    }

    /// Event types by name, optionally of one category or engine type.
    async fn event_types(
        &self,
        ctx: &Context<'_>,
        category: Option<String>,
        engine_type: Option<String>,
    ) -> Result<Vec<EventType>> {
        let types = service::event_type::list(service_ctx(ctx), category, engine_type).await?;
        Ok(types.into_iter().map(EventType::from).collect())
    }

    /// One event type.
    async fn event_type(&self, ctx: &Context<'_>, name: String) -> Result<Option<EventType>> {
        Ok(service::event_type::get(service_ctx(ctx), &name)
            .await?
            .map(EventType::from))
    }

    /// The events of a run: filtered, by sequence or by priority (highest
    /// first, ties by sequence), a page at a time.
    async fn events(
        &self,
        ctx: &Context<'_>,
        run_id: Uuid,
        filter: Option<EventFilter>,
        #[graphql(default_with = "EventOrder::Sequence")] order_by: EventOrder,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Event>> {
        list_events(ctx, run_id, filter, order_by, first, after).await
    }

    /// One event.
    async fn event(&self, ctx: &Context<'_>, id: Uuid) -> Result<Option<Event>> {
        Ok(service::event::get(service_ctx(ctx), id)
            .await?
            .map(Event::from))
    }

    /// One engine instance.
    async fn engine(&self, ctx: &Context<'_>, engine_id: Uuid) -> Result<Option<EngineInstance>> {
        Ok(service::engine::get(service_ctx(ctx), engine_id)
            .await?
            .map(EngineInstance))
    }

    /// The engine instances of a run, optionally of one type.
    async fn engines(
        &self,
        ctx: &Context<'_>,
        run_id: Uuid,
        engine_type: Option<String>,
    ) -> Result<Vec<EngineInstance>> {
        let engines = service::engine::list(service_ctx(ctx), run_id, engine_type).await?;
        Ok(engines.into_iter().map(EngineInstance).collect())
    }
}
