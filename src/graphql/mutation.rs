//! The mutations of DESIGN.md: arguments in, one service call, types out.
//! A failed mutation changes nothing.

use async_graphql::{Context, MaybeUndefined, Object, Result};
use serde_json::Value;
use uuid::Uuid;

use super::types::engine::{EngineInstance, RegisterEngineInput};
use super::types::event::{
    CompleteEventInput, CompleteEventPayload, CreateEventTypeInput, Delivery, Event, EventInput,
    EventType, EventTypePatch, ExtendLeaseInput, Processing, RecordProcessingInput,
};
use super::types::run::{
    CreateScenarioRunInput, ForkRunInput, RunRelationship, RunStatus, ScenarioRun,
    SetRelationshipInput,
};
use super::types::template::{
    AgentTemplate, AgentTemplatePatch, CreateAgentTemplateInput, CreateScenarioTemplateInput,
    ScenarioTemplate, ScenarioTemplatePatch,
};
use super::types::{principal, service_ctx};
use crate::service::{self, agent_template::NewAgentTemplate, run::NewRun};

/// The root of every mutation.
pub struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Creates an agent template.
    async fn create_agent_template(
        &self,
        ctx: &Context<'_>,
        input: CreateAgentTemplateInput,
    ) -> Result<AgentTemplate> {
        let input = NewAgentTemplate {
            name: input.name,
            description: input.description,
            config: input.config,
        };
        Ok(AgentTemplate(
            service::agent_template::create(service_ctx(ctx), &principal(ctx)?, input).await?,
        ))
    }

    /// Changes an agent template.
    async fn update_agent_template(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        patch: AgentTemplatePatch,
    ) -> Result<AgentTemplate> {
        let patch = service::agent_template::AgentTemplatePatch {
            name: patch.name,
            description: patch.description,
            config: match patch.config {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(serde_json::json!({})),
                MaybeUndefined::Value(config) => Some(config),
            },
        };
        Ok(AgentTemplate(
            service::agent_template::update(service_ctx(ctx), &principal(ctx)?, id, patch).await?,
        ))
    }

    /// Deletes an agent template no scenario template uses; returns it.
    async fn delete_agent_template(&self, ctx: &Context<'_>, id: Uuid) -> Result<AgentTemplate> {
        Ok(AgentTemplate(
            service::agent_template::delete(service_ctx(ctx), &principal(ctx)?, id).await?,
        ))
    }

    /// Creates a scenario template.
    async fn create_scenario_template(
        &self,
        ctx: &Context<'_>,
        input: CreateScenarioTemplateInput,
    ) -> Result<ScenarioTemplate> {
        Ok(ScenarioTemplate(
            service::scenario_template::create(service_ctx(ctx), &principal(ctx)?, input.into())
                .await?,
        ))
    }

    /// Changes a scenario template.
    async fn update_scenario_template(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        patch: ScenarioTemplatePatch,
    ) -> Result<ScenarioTemplate> {
        Ok(ScenarioTemplate(
            service::scenario_template::update(
                service_ctx(ctx),
                &principal(ctx)?,
                id,
                patch.into(),
            )
            .await?,
        ))
    }

    /// Deletes a scenario template no run uses; returns it.
    async fn delete_scenario_template(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> Result<ScenarioTemplate> {
        Ok(ScenarioTemplate(
            service::scenario_template::delete(service_ctx(ctx), &principal(ctx)?, id).await?,
        ))
    }

    /// Creates an event type.
    async fn create_event_type(
        &self,
        ctx: &Context<'_>,
        input: CreateEventTypeInput,
    ) -> Result<EventType> {
        Ok(EventType::from(
            service::event_type::create(service_ctx(ctx), &principal(ctx)?, input.into()).await?,
        ))
    }

    /// Changes an event type (not a built-in one).
    async fn update_event_type(
        &self,
        ctx: &Context<'_>,
        name: String,
        patch: EventTypePatch,
    ) -> Result<EventType> {
        Ok(EventType::from(
            service::event_type::update(service_ctx(ctx), &principal(ctx)?, &name, patch.into())
                .await?,
        ))
    }

    /// Creates a PENDING run of a scenario template.
    async fn create_scenario_run(
        &self,
        ctx: &Context<'_>,
        input: CreateScenarioRunInput,
    ) -> Result<ScenarioRun> {
        let input = NewRun {
            template_id: input.template_id,
            name: input.name,
            parameters: input.parameters,
        };
        Ok(ScenarioRun(
            service::run::create(service_ctx(ctx), &principal(ctx)?, input).await?,
        ))
    }

    /// Moves a run to another status and publishes `run_status_changed`.
    async fn set_run_status(
        &self,
        ctx: &Context<'_>,
        run_id: Uuid,
        status: RunStatus,
    ) -> Result<ScenarioRun> {
        Ok(ScenarioRun(
            service::run::set_status(service_ctx(ctx), &principal(ctx)?, run_id, status.into())
                .await?,
        ))
    }

    /// Makes a new PENDING run from another one as it stood at a sequence:
    /// its events, records, engine states and relationships then (admin).
    async fn fork_run(&self, ctx: &Context<'_>, input: ForkRunInput) -> Result<ScenarioRun> {
        Ok(ScenarioRun(
            service::fork::fork(service_ctx(ctx), &principal(ctx)?, input.into()).await?,
        ))
    }

    /// Registers an engine instance; an existing one gets its stored state back.
    async fn register_engine(
        &self,
        ctx: &Context<'_>,
        input: RegisterEngineInput,
    ) -> Result<EngineInstance> {
        Ok(EngineInstance(
            service::engine::register(service_ctx(ctx), &principal(ctx)?, input.into()).await?,
        ))
    }

    /// Saves an engine's state; with `expectedVersion`, only if it is still current.
    async fn save_engine_state(
        &self,
        ctx: &Context<'_>,
        engine_id: Uuid,
        state: Value,
        expected_version: Option<i64>,
    ) -> Result<EngineInstance> {
        Ok(EngineInstance(
            service::engine::save_state(
                service_ctx(ctx),
                &principal(ctx)?,
                engine_id,
                state,
                expected_version,
            )
            .await?,
        ))
    }

    /// Publishes one event.
    async fn publish_event(&self, ctx: &Context<'_>, input: EventInput) -> Result<Event> {
        let events = service::publish::publish(
            service_ctx(ctx),
            &principal(ctx)?,
            vec![input.into()],
            "input",
            |_| "input".into(),
        )
        .await?;
        Ok(Event::from(
            events.into_iter().next().expect("one input, one event"),
        ))
    }

    /// Publishes up to 1,000 events in one transaction, returned in input order.
    async fn publish_events(
        &self,
        ctx: &Context<'_>,
        inputs: Vec<EventInput>,
    ) -> Result<Vec<Event>> {
        let inputs = inputs.into_iter().map(Into::into).collect();
        let events =
            service::publish::publish(service_ctx(ctx), &principal(ctx)?, inputs, "inputs", |i| {
                format!("inputs.{i}")
            })
            .await?;
        Ok(events.into_iter().map(Event::from).collect())
    }

    /// Records that an engine processed or failed an event.
    async fn record_processing(
        &self,
        ctx: &Context<'_>,
        input: RecordProcessingInput,
    ) -> Result<Processing> {
        Ok(Processing(
            service::processing::record(service_ctx(ctx), &principal(ctx)?, input.into()).await?,
        ))
    }

    /// Renews an engine's lease of an event it is still working on (a
    /// heartbeat); `LEASE_LOST` when the lease is no longer current.
    async fn extend_lease(&self, ctx: &Context<'_>, input: ExtendLeaseInput) -> Result<Delivery> {
        let delivery =
            service::lease::extend(service_ctx(ctx), &principal(ctx)?, input.into()).await?;
        Ok(Delivery(std::sync::Arc::new(delivery)))
    }

    /// Records processing, publishes the emitted events and saves the
    /// engine's state in one transaction: all or nothing.
    async fn complete_event(
        &self,
        ctx: &Context<'_>,
        input: CompleteEventInput,
    ) -> Result<CompleteEventPayload> {
        let done =
            service::processing::complete(service_ctx(ctx), &principal(ctx)?, input.into()).await?;
        Ok(CompleteEventPayload {
            processing: Processing(done.processing),
            emitted: done.emitted.into_iter().map(Event::from).collect(),
            engine: EngineInstance(done.engine),
        })
    }

    /// Sets a relationship between two roles of a run and publishes
    /// `relationship_updated`.
    async fn set_relationship(
        &self,
        ctx: &Context<'_>,
        input: SetRelationshipInput,
    ) -> Result<RunRelationship> {
        Ok(RunRelationship(
            service::relationship::set(service_ctx(ctx), &principal(ctx)?, input.into()).await?,
        ))
    }
}
