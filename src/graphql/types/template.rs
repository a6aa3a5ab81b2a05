//! Agent templates, scenario templates and the typed parts of a scenario
//! template (config, agent roles, event flow), as outputs and inputs.

use async_graphql::{
    ComplexObject, Context, Enum, InputObject, MaybeUndefined, Object, Result, SimpleObject,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::json::{FreeJson, RawJson};
use super::loader;
use crate::entity::{agent_template, scenario_template};
use crate::graphql::loaders::AgentTemplateId;
use crate::service::scenario_template as svc;

/// An Agno agent's definition: role, instructions, model, tools.
pub struct AgentTemplate(pub agent_template::Model);

#[Object]
impl AgentTemplate {
    /// Its id.
    async fn id(&self) -> Uuid {
        self.0.id
    }
    /// Its unique name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Free text.
    async fn description(&self) -> &str {
        &self.0.description
    }
    /// The agent's definition, a JSON object.
    async fn config(&self) -> RawJson {
        RawJson::of(&self.0.config)
    }
    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// A new agent template.
#[derive(InputObject)]
pub struct CreateAgentTemplateInput {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The agent's definition: a JSON object (role, instructions, model,
    /// tools); `{}` when null or left out.
    pub config: Option<Value>,
}

/// Changes to an agent template; omitted fields stay as they are.
#[derive(InputObject)]
pub struct AgentTemplatePatch {
    /// New unique name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New config object; null clears it to `{}`, left out keeps it.
    pub config: MaybeUndefined<Value>,
}

/// A scene the NarratorEngine can describe.
#[derive(SimpleObject, InputObject)]
#[graphql(input_name = "SceneDescriptionInput")]
pub struct SceneDescription {
    /// Unique key of the scene.
    pub key: String,
    /// What the narrator says of it.
    pub description: String,
}

/// A metric the AnalystEngine computes.
#[derive(SimpleObject, InputObject)]
#[graphql(input_name = "MetricDefinitionInput")]
pub struct MetricDefinition {
    /// Unique metric name.
    pub name: String,
    /// What it measures.
    #[graphql(default)]
    pub description: String,
    /// Its unit.
    #[graphql(default)]
    pub unit: String,
    /// How samples combine into the run's value.
    pub aggregation: MetricAggregation,
}

/// How a metric's samples combine into the run's value.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "svc::Aggregation")]
pub enum MetricAggregation {
    /// The sum of the samples.
    Sum,
    /// Their mean (the sum over the count).
    Mean,
    /// The smallest.
    Min,
    /// The largest.
    Max,
    /// The sample with the highest sequence.
    Last,
    /// How many samples there were.
    Count,
}

/// How a success criterion compares its metric with the threshold.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "svc::Operator")]
pub enum ComparisonOperator {
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// Equal.
    Eq,
}

/// A condition on a metric that makes a run successful.
#[derive(SimpleObject, InputObject)]
#[graphql(input_name = "SuccessCriterionInput")]
pub struct SuccessCriterion {
    /// A metric of `metricsDefinitions`.
    pub metric: String,
    /// The comparison.
    pub operator: ComparisonOperator,
    /// The value compared with.
    pub threshold: f64,
}

/// A scenario template's typed config.
#[derive(SimpleObject, InputObject)]
#[graphql(input_name = "ScenarioConfigInput")]
pub struct ScenarioConfig {
    /// Scenes for the NarratorEngine.
    #[graphql(default)]
    pub scene_descriptions: Vec<SceneDescription>,
    /// Metrics for the AnalystEngine.
    #[graphql(default)]
    pub metrics_definitions: Vec<MetricDefinition>,
    /// Success criteria for the AnalystEngine.
    #[graphql(default)]
    pub success_criteria: Vec<SuccessCriterion>,
    /// Anything else, free JSON; `{}` when null or left out.
    pub extra: FreeJson,
}

/// A relationship a role starts the run with.
#[derive(SimpleObject, InputObject)]
#[graphql(input_name = "RoleRelationshipInput")]
pub struct RoleRelationship {
    /// The other role.
    pub target_role: String,
    /// What kind of relationship (ally, rival, ...).
    pub kind: String,
    /// How strong it is.
    pub strength: f64,
    /// Free JSON (null when left out).
    pub data: FreeJson,
}

/// A role of the scenario and the agent template that plays it.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct AgentRole {
    /// Unique role name.
    pub role: String,
    /// The agent template playing it.
    pub agent_template_id: Uuid,
    /// The role's starting relationships (ActorEngine data).
    pub relationships: Vec<RoleRelationship>,
}

#[ComplexObject]
impl AgentRole {
    /// The agent template playing this role.
    async fn agent_template(&self, ctx: &Context<'_>) -> Result<Option<AgentTemplate>> {
        let found = loader(ctx)
            .load_one(AgentTemplateId(self.agent_template_id))
            .await?;
        Ok(found.map(AgentTemplate))
    }
}

/// A role of the scenario.
#[derive(InputObject)]
pub struct AgentRoleInput {
    /// Unique role name.
    pub role: String,
    /// The agent template playing it.
    pub agent_template_id: Uuid,
    /// The role's starting relationships.
    #[graphql(default)]
    pub relationships: Vec<RoleRelationship>,
}

/// A world rule for the NarratorEngine.
#[derive(SimpleObject, InputObject)]
#[graphql(input_name = "WorldRuleInput")]
pub struct WorldRule {
    /// Unique key of the rule.
    pub key: String,
    /// The rule in words.
    pub description: String,
    /// Free JSON (null when left out).
    pub data: FreeJson,
}

/// How events flow in the scenario: world rules and the rest.
#[derive(SimpleObject, InputObject)]
#[graphql(input_name = "EventFlowInput")]
pub struct EventFlow {
    /// World rules for the NarratorEngine.
    #[graphql(default)]
    pub world_rules: Vec<WorldRule>,
    /// Anything else, free JSON; `{}` when null or left out.
    pub extra: FreeJson,
}

/// Writes `From` both ways between a GraphQL type and its service twin,
/// field by field (`each` fields are lists converted item by item), so that
/// the compiler checks that the two agree.
macro_rules! twins {
    ($ours:ident <=> $theirs:path { $($field:ident),* } $(each { $($list:ident),* })?) => {
        impl From<$theirs> for $ours {
            fn from(value: $theirs) -> Self {
                $ours {
                    $($field: value.$field.into(),)*
                    $($($list: value.$list.into_iter().map(Into::into).collect(),)*)?
                }
            }
        }

        impl From<$ours> for $theirs {
            fn from(value: $ours) -> Self {
                Self {
                    $($field: value.$field.into(),)*
                    $($($list: value.$list.into_iter().map(Into::into).collect(),)*)?
                }
            }
        }
    };
}

twins!(SceneDescription <=> svc::SceneDescription { key, description });
twins!(MetricDefinition <=> svc::MetricDefinition { name, description, unit, aggregation });
twins!(SuccessCriterion <=> svc::SuccessCriterion { metric, operator, threshold });
twins!(ScenarioConfig <=> svc::ScenarioConfig { extra }
    each { scene_descriptions, metrics_definitions, success_criteria });
twins!(RoleRelationship <=> svc::RoleRelationship { target_role, kind, strength, data });
twins!(AgentRole <=> svc::AgentRole { role, agent_template_id } each { relationships });
twins!(AgentRoleInput <=> svc::AgentRole { role, agent_template_id } each { relationships });
twins!(WorldRule <=> svc::WorldRule { key, description, data });
twins!(EventFlow <=> svc::EventFlow { extra } each { world_rules });

/// A role list from the input, for the service.
fn roles(input: Vec<AgentRoleInput>) -> Vec<svc::AgentRole> {
    input.into_iter().map(Into::into).collect()
}

/// A scenario: its typed config, its roles and its event flow.
pub struct ScenarioTemplate(pub scenario_template::Model);

#[Object]
impl ScenarioTemplate {
    /// Its id.
    async fn id(&self) -> Uuid {
        self.0.id
    }
    /// Its unique name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Free text.
    async fn description(&self) -> &str {
        &self.0.description
    }
    /// Scenes, metrics and success criteria.
    async fn config(&self) -> ScenarioConfig {
        svc::config_of(&self.0).into()
    }
    /// The roles and the agent templates that play them.
    async fn agent_roles(&self) -> Vec<AgentRole> {
        svc::roles_of(&self.0).into_iter().map(Into::into).collect()
    }
    /// World rules and the rest of the event flow.
    async fn event_flow(&self) -> EventFlow {
        svc::event_flow_of(&self.0).into()
    }
    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// A new scenario template.
#[derive(InputObject)]
pub struct CreateScenarioTemplateInput {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Scenes, metrics and success criteria.
    pub config: Option<ScenarioConfig>,
    /// The roles.
    pub agent_roles: Option<Vec<AgentRoleInput>>,
    /// World rules and the rest.
    pub event_flow: Option<EventFlow>,
}

/// Changes to a scenario template; a given part replaces the old one whole.
#[derive(InputObject)]
pub struct ScenarioTemplatePatch {
    /// New unique name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New config.
    pub config: Option<ScenarioConfig>,
    /// New roles.
    pub agent_roles: Option<Vec<AgentRoleInput>>,
    /// New event flow.
    pub event_flow: Option<EventFlow>,
}

impl From<CreateScenarioTemplateInput> for svc::NewScenarioTemplate {
    fn from(input: CreateScenarioTemplateInput) -> Self {
        svc::NewScenarioTemplate {
            name: input.name,
            description: input.description,
            config: input.config.map(Into::into),
            agent_roles: input.agent_roles.map(roles),
            event_flow: input.event_flow.map(Into::into),
        }
    }
}

impl From<ScenarioTemplatePatch> for svc::ScenarioTemplatePatch {
    fn from(patch: ScenarioTemplatePatch) -> Self {
        svc::ScenarioTemplatePatch {
            name: patch.name,
            description: patch.description,
            config: patch.config.map(Into::into),
            agent_roles: patch.agent_roles.map(roles),
            event_flow: patch.event_flow.map(Into::into),
        }
    }
}
