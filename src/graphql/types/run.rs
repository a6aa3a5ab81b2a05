//! Scenario runs, their status and their relationships.

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, InputObject, Lookahead, Object, Result, Value as GqlValue};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::engine::EngineInstance;
use super::event::{Event, EventFilter, EventOrder};
use super::json::RawJson;
use super::template::{ComparisonOperator, MetricAggregation, ScenarioTemplate};
use super::{loader, service_ctx};
use crate::entity::scenario_run;
use crate::error::AppError;
use crate::graphql::loaders::{
    EnginesOf, FirstEventsOf, ForksOf, MetricsOf, RelationshipsOf, RunId, ScenarioTemplateId,
};
use crate::service::page::page_size;
use crate::service::{self, metric, relationship};

/// Loads what a list of runs selects under each run (engines and their
/// fields, relationships, the first page of events and what it selects on
/// them) with one `load_many` per field for all the runs, before they
/// resolve one by one: batching then does not depend on the DataLoader's
/// delay catching every run. `look` is the list's selection.
pub async fn prefetch(
    ctx: &Context<'_>,
    look: &Lookahead<'_>,
    runs: &[scenario_run::Model],
) -> Result<()> {
    for node in [look.field("nodes"), look.field("edges").field("node")] {
        if node.exists() {
            prefetch_nodes(ctx, &node, runs).await?;
        }
    }
    Ok(())
}

async fn prefetch_nodes(
    ctx: &Context<'_>,
    node: &Lookahead<'_>,
    runs: &[scenario_run::Model],
) -> Result<()> {
    let loader = loader(ctx);
    let engines = node.field("engines");
    if engines.exists() {
        let found = loader
            .load_many(runs.iter().map(|r| EnginesOf(r.id)))
            .await?;
        let all: Vec<_> = found.into_values().flatten().collect();
        super::engine::prefetch(ctx, &engines, &all).await?;
    }
    if node.field("metrics").exists() || node.field("evaluation").exists() {
        loader
            .load_many(runs.iter().map(|r| MetricsOf {
                run: r.id,
                template: r.template_id,
            }))
            .await?;
    }
    if node.field("relationships").exists() {
        loader
            .load_many(runs.iter().map(|r| RelationshipsOf {
                run: r.id,
                template: r.template_id,
            }))
            .await?;
    }
    let events = node.field("events");
    for field in events.selection_fields() {
        let arguments = field
            .arguments()
            .map_err(|e| async_graphql::Error::new(e.message))?;
        let argument = |name: &str| {
            arguments
                .iter()
                .find(|(n, v)| n.as_str() == name && *v != GqlValue::Null)
                .map(|(_, v)| v)
        };
        if argument("filter").is_some() || argument("after").is_some() {
            continue;
        }
        // The argument as the field parses it, with the field's default.
        let order: service::event::EventOrder =
            <EventOrder as async_graphql::InputType>::parse(argument("orderBy").cloned())
                .unwrap_or(EventOrder::Sequence)
                .into();
        let first = match argument("first") {
            Some(GqlValue::Number(n)) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
            _ => None,
        };
        let first = page_size(first, service_ctx(ctx).limits.max_page_size)?;
        let pages = loader
            .load_many(runs.iter().map(|r| FirstEventsOf {
                run: r.id,
                order,
                first,
            }))
            .await?;
        let rows: Vec<&crate::entity::event_instance::Model> = pages
            .values()
            .flat_map(|p| &p.rows)
            .map(|row| &row.1)
            .collect();
        super::event::prefetch_relations(ctx, &events, rows.into_iter()).await?;
    }
    Ok(())
}

/// Where a run is in its lifecycle.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "crate::entity::scenario_run::RunStatus")]
pub enum RunStatus {
    /// Created, not started.
    Pending,
    /// Under way.
    Running,
    /// Halted for now.
    Paused,
    /// Finished well (terminal).
    Completed,
    /// Finished badly (terminal).
    Failed,
    /// Stopped (terminal).
    Cancelled,
}

/// One execution of a scenario template.
pub struct ScenarioRun(pub scenario_run::Model);

#[Object]
impl ScenarioRun {
    /// Its id.
    async fn id(&self) -> Uuid {
        self.0.id
    }
    /// The id of the template it runs.
    async fn template_id(&self) -> Uuid {
        self.0.template_id
    }
    /// The template it runs.
    async fn template(&self, ctx: &Context<'_>) -> Result<Option<ScenarioTemplate>> {
        let found = loader(ctx)
            .load_one(ScenarioTemplateId(self.0.template_id))
            .await?;
        Ok(found.map(ScenarioTemplate))
    }
    /// A name for people.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Where it is in its lifecycle.
    async fn status(&self) -> Result<RunStatus> {
        Ok(self.0.status.into())
    }
    /// Free JSON parameters.
    async fn parameters(&self) -> RawJson {
        RawJson::of(&self.0.parameters)
    }
    /// The sequence of its latest event (0 before the first).
    async fn last_sequence(&self) -> i64 {
        self.0.last_sequence
    }
    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it first went RUNNING.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    /// When it reached a terminal status.
    async fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.0.ended_at
    }
    /// Its events, as `Query.events` gives them.
    async fn events(
        &self,
        ctx: &Context<'_>,
        filter: Option<EventFilter>,
        #[graphql(default_with = "EventOrder::Sequence")] order_by: EventOrder,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Event>> {
        if filter.is_none() && after.is_none() {
            // The common first page, batched across the runs of a list.
            return super::event::first_events(ctx, self.0.id, order_by, first).await;
        }
        super::event::list_events(ctx, self.0.id, filter, order_by, first, after).await
    }
    /// Its engine instances, optionally of one type.
    async fn engines(
        &self,
        ctx: &Context<'_>,
        engine_type: Option<String>,
    ) -> Result<Vec<EngineInstance>> {
        let mut engines = loader(ctx)
            .load_one(EnginesOf(self.0.id))
            .await?
            .unwrap_or_default();
        if let Some(engine_type) = engine_type {
            engines.retain(|e| e.engine_type == engine_type);
        }
        super::engine::prefetch(ctx, &ctx.look_ahead(), &engines).await?;
        Ok(engines.into_iter().map(EngineInstance).collect())
    }
    /// Every metric its template defines, with the run's aggregate.
    async fn metrics(&self, ctx: &Context<'_>) -> Result<Vec<RunMetric>> {
        Ok(self
            .metrics_and_evaluation(ctx)
            .await?
            .0
            .into_iter()
            .map(RunMetric)
            .collect())
    }
    /// How the run stands against its template's success criteria.
    async fn evaluation(&self, ctx: &Context<'_>) -> Result<RunEvaluation> {
        Ok(RunEvaluation(self.metrics_and_evaluation(ctx).await?.1))
    }
    /// The run this one was forked from.
    async fn parent_run_id(&self) -> Option<Uuid> {
        self.0.parent_run_id
    }
    /// The run this one was forked from.
    async fn parent_run(&self, ctx: &Context<'_>) -> Result<Option<ScenarioRun>> {
        let Some(parent) = self.0.parent_run_id else {
            return Ok(None);
        };
        Ok(loader(ctx).load_one(RunId(parent)).await?.map(ScenarioRun))
    }
    /// The parent's sequence this run was forked at: its events up to it
    /// are the parent's.
    async fn forked_at_sequence(&self) -> Option<i64> {
        self.0.forked_at_sequence
    }
    /// The runs forked from this one, oldest first.
    async fn forks(&self, ctx: &Context<'_>) -> Result<Vec<ScenarioRun>> {
        let forks = loader(ctx).load_one(ForksOf(self.0.id)).await?;
        Ok(forks
            .unwrap_or_default()
            .into_iter()
            .map(ScenarioRun)
            .collect())
    }
    /// The template's relationships overlaid with the changes made in this run.
    async fn relationships(&self, ctx: &Context<'_>) -> Result<Vec<RunRelationship>> {
        let key = RelationshipsOf {
            run: self.0.id,
            template: self.0.template_id,
        };
        let rels = loader(ctx).load_one(key).await?.unwrap_or_default();
        Ok(rels.into_iter().map(RunRelationship).collect())
    }
}

/// A relationship between two roles as the run sees it now.
pub struct RunRelationship(pub relationship::Relationship);

#[Object]
impl RunRelationship {
    /// The role it goes from.
    async fn source_role(&self) -> &str {
        &self.0.source_role
    }
    /// The role it goes to.
    async fn target_role(&self) -> &str {
        &self.0.target_role
    }
    /// What kind of relationship.
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    /// How strong it is.
    async fn strength(&self) -> f64 {
        self.0.strength
    }
    /// Free JSON.
    async fn data(&self) -> RawJson {
        RawJson::of(&self.0.data)
    }
    /// When the run changed it; null while it is the template's.
    async fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.0.updated_at
    }
}

/// A new run of a scenario template; it starts PENDING.
#[derive(InputObject)]
pub struct CreateScenarioRunInput {
    /// The template to run.
    pub template_id: Uuid,
    /// A name for people.
    pub name: String,
    /// Free JSON parameters; `{}` when null or left out.
    pub parameters: Option<Value>,
}

impl ScenarioRun {
    async fn metrics_and_evaluation(
        &self,
        ctx: &Context<'_>,
    ) -> Result<(Vec<metric::RunMetric>, metric::Evaluation)> {
        let key = MetricsOf {
            run: self.0.id,
            template: self.0.template_id,
        };
        loader(ctx)
            .load_one(key)
            .await?
            .ok_or_else(|| AppError::internal("metrics of a run not loaded").into())
    }
}

/// A run's aggregate of one metric its template defines.
pub struct RunMetric(pub metric::RunMetric);

#[Object]
impl RunMetric {
    /// The metric's name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Its unit.
    async fn unit(&self) -> &str {
        &self.0.unit
    }
    /// How its samples combine.
    async fn aggregation(&self) -> MetricAggregation {
        self.0.aggregation.into()
    }
    /// The aggregate; null before the first sample.
    async fn value(&self) -> Option<f64> {
        self.0.value
    }
    /// Samples so far.
    async fn samples(&self) -> i64 {
        self.0.samples
    }
    /// When the latest sample came.
    async fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.0.updated_at
    }
}

/// Where a run stands against its success criteria.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "metric::EvaluationStatus")]
pub enum EvaluationStatus {
    /// A criterion's metric has no value yet.
    Pending,
    /// Every criterion holds.
    Passed,
    /// Every criterion has a value and one does not hold.
    Failed,
}

/// A run's evaluation: its status and each criterion's outcome.
pub struct RunEvaluation(pub metric::Evaluation);

#[Object]
impl RunEvaluation {
    /// PENDING while a criterion's metric has no value, then PASSED when
    /// every criterion holds, else FAILED.
    async fn status(&self) -> EvaluationStatus {
        self.0.status.into()
    }
    /// Each criterion with the metric's value and whether it holds.
    async fn criteria(&self) -> Vec<CriterionOutcome> {
        self.0
            .criteria
            .iter()
            .cloned()
            .map(CriterionOutcome)
            .collect()
    }
}

/// One success criterion, judged. `EQ` holds within a relative 1e-9 (of
/// the threshold's magnitude, at least 1): float sums are rarely exact.
pub struct CriterionOutcome(pub metric::CriterionOutcome);

#[Object]
impl CriterionOutcome {
    /// The metric.
    async fn metric(&self) -> &str {
        &self.0.metric
    }
    /// The comparison.
    async fn operator(&self) -> ComparisonOperator {
        self.0.operator.into()
    }
    /// The value compared with.
    async fn threshold(&self) -> f64 {
        self.0.threshold
    }
    /// The metric's value; null before its first sample.
    async fn value(&self) -> Option<f64> {
        self.0.value
    }
    /// Whether it holds; null before the metric has a value.
    async fn passed(&self) -> Option<bool> {
        self.0.passed
    }
}

/// A fork to make of a run.
#[derive(InputObject)]
pub struct ForkRunInput {
    /// The run to fork.
    pub run_id: Uuid,
    /// The last of its events the fork keeps (0 for none, at most its
    /// `lastSequence`).
    pub at_sequence: i64,
    /// A name for people; the source's, with the sequence, when left out.
    pub name: Option<String>,
    /// Free JSON parameters; the source's when null or left out.
    pub parameters: Option<Value>,
}

impl From<ForkRunInput> for crate::service::fork::ForkRun {
    fn from(input: ForkRunInput) -> Self {
        crate::service::fork::ForkRun {
            run_id: input.run_id,
            at_sequence: input.at_sequence,
            name: input.name,
            parameters: input.parameters,
        }
    }
}

/// A relationship to set on a run.
#[derive(InputObject)]
pub struct SetRelationshipInput {
    /// The run.
    pub run_id: Uuid,
    /// A role of the run's template.
    pub source_role: String,
    /// A role of the run's template.
    pub target_role: String,
    /// What kind of relationship.
    pub kind: String,
    /// How strong.
    pub strength: f64,
    /// Free JSON; `{}` when null or left out.
    pub data: Option<Value>,
}

impl From<SetRelationshipInput> for relationship::SetRelationship {
    fn from(input: SetRelationshipInput) -> Self {
        relationship::SetRelationship {
            run_id: input.run_id,
            source_role: input.source_role,
            target_role: input.target_role,
            kind: input.kind,
            strength: input.strength,
            data: input.data,
        }
    }
}
