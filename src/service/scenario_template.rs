//! Scenario templates and the typed shape of their JSON columns: the config
//! read by NarratorEngine and AnalystEngine, the agent roles (with the
//! relationships ActorEngines start from) and the event flow's world rules.

use std::collections::HashSet;

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::auth::{Access, Principal};
use super::page::{self, Page, PageRequest};
use super::{Ctx, check_name, now};
use crate::entity::{scenario_run, scenario_template};
use crate::error::{AppError, AppResult};

/// A scene the NarratorEngine can describe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneDescription {
    /// Unique key of the scene.
    pub key: String,
    /// What the narrator says of it.
    pub description: String,
}

/// A metric the AnalystEngine computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricDefinition {
    /// Unique metric name.
    pub name: String,
    /// What it measures.
    #[serde(default)]
    pub description: String,
    /// Its unit.
    #[serde(default)]
    pub unit: String,
    /// How samples combine into the run's value.
    pub aggregation: Aggregation,
}

/// How a metric's samples combine into the run's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Aggregation {
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

impl Aggregation {
    /// Reads the stored form.
    pub fn parse(stored: &str) -> Option<Self> {
        [
            Aggregation::Sum,
            Aggregation::Mean,
            Aggregation::Min,
            Aggregation::Max,
            Aggregation::Last,
            Aggregation::Count,
        ]
        .into_iter()
        .find(|a| a.as_str() == stored)
    }

    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Sum => "SUM",
            Aggregation::Mean => "MEAN",
            Aggregation::Min => "MIN",
            Aggregation::Max => "MAX",
            Aggregation::Last => "LAST",
            Aggregation::Count => "COUNT",
        }
    }
}

/// How a success criterion compares a metric with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    /// Greater than.
    #[serde(rename = "GT")]
    Gt,
    /// Greater than or equal.
    #[serde(rename = "GTE")]
    Gte,
    /// Less than.
    #[serde(rename = "LT")]
    Lt,
    /// Less than or equal.
    #[serde(rename = "LTE")]
    Lte,
    /// Equal.
    #[serde(rename = "EQ")]
    Eq,
}

/// A condition on a metric that makes a run successful.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuccessCriterion {
    /// The metric's name, one of `metricsDefinitions`.
    pub metric: String,
    /// The comparison.
    pub operator: Operator,
    /// The value compared with.
    pub threshold: f64,
}

/// `scenario_templates.config`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScenarioConfig {
    /// Scenes for the NarratorEngine.
    pub scene_descriptions: Vec<SceneDescription>,
    /// Metrics for the AnalystEngine.
    pub metrics_definitions: Vec<MetricDefinition>,
    /// Success criteria for the AnalystEngine.
    pub success_criteria: Vec<SuccessCriterion>,
    /// Anything else, free JSON.
    pub extra: Value,
}

/// A relationship a role starts a run with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRelationship {
    /// The other role.
    pub target_role: String,
    /// What kind of relationship (ally, rival, ...).
    pub kind: String,
    /// How strong it is.
    pub strength: f64,
    /// Free JSON.
    #[serde(default)]
    pub data: Value,
}

/// A role of the scenario, played by an agent template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRole {
    /// Unique role name.
    pub role: String,
    /// The agent template playing it.
    pub agent_template_id: Uuid,
    /// The role's starting relationships.
    #[serde(default)]
    pub relationships: Vec<RoleRelationship>,
}

/// A world rule of the NarratorEngine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldRule {
    /// Unique key of the rule.
    pub key: String,
    /// The rule in words.
    pub description: String,
    /// Free JSON.
    #[serde(default)]
    pub data: Value,
}

/// `scenario_templates.event_flow`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EventFlow {
    /// World rules for the NarratorEngine.
    pub world_rules: Vec<WorldRule>,
    /// Anything else, free JSON.
    pub extra: Value,
}

/// A new scenario template.
#[derive(Debug, Clone)]
pub struct NewScenarioTemplate {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Typed config.
    pub config: Option<ScenarioConfig>,
    /// The roles.
    pub agent_roles: Option<Vec<AgentRole>>,
    /// World rules and the rest.
    pub event_flow: Option<EventFlow>,
}

/// Changes to a scenario template; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct ScenarioTemplatePatch {
    /// New unique name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New config, replacing the old one whole.
    pub config: Option<ScenarioConfig>,
    /// New roles, replacing the old ones whole.
    pub agent_roles: Option<Vec<AgentRole>>,
    /// New event flow, replacing the old one whole.
    pub event_flow: Option<EventFlow>,
}

/// The typed config of a stored template (defaults where the JSON lacks keys).
pub fn config_of(model: &scenario_template::Model) -> ScenarioConfig {
    serde_json::from_value(model.config.clone()).unwrap_or_default()
}

/// The typed agent roles of a stored template.
pub fn roles_of(model: &scenario_template::Model) -> Vec<AgentRole> {
    serde_json::from_value(model.agent_roles.clone()).unwrap_or_default()
}

/// The typed event flow of a stored template.
pub fn event_flow_of(model: &scenario_template::Model) -> EventFlow {
    serde_json::from_value(model.event_flow.clone()).unwrap_or_default()
}

fn require_text(field: String, value: &str) -> AppResult<()> {
    if value.trim().is_empty() {
        return Err(AppError::bad_input(
            field.clone(),
            format!("{field} must not be empty"),
        ));
    }
    Ok(())
}

fn require_unique<'a>(field: &str, values: impl Iterator<Item = &'a str>) -> AppResult<()> {
    let mut seen = HashSet::new();
    for (i, value) in values.enumerate() {
        let at = format!("{field}.{i}");
        require_text(at.clone(), value)?;
        if !seen.insert(value) {
            return Err(AppError::bad_input(
                at,
                format!("{value:?} appears twice in {field}"),
            ));
        }
    }
    Ok(())
}

fn check_config(prefix: &str, config: &mut ScenarioConfig) -> AppResult<()> {
    require_unique(
        &format!("{prefix}.sceneDescriptions"),
        config.scene_descriptions.iter().map(|s| s.key.as_str()),
    )?;
    require_unique(
        &format!("{prefix}.metricsDefinitions"),
        config.metrics_definitions.iter().map(|m| m.name.as_str()),
    )?;
    let metrics: HashSet<&str> = config
        .metrics_definitions
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    for (i, criterion) in config.success_criteria.iter().enumerate() {
        if !metrics.contains(criterion.metric.as_str()) {
            return Err(AppError::bad_input(
                format!("{prefix}.successCriteria.{i}.metric"),
                format!(
                    "success criterion refers to undefined metric {:?}",
                    criterion.metric
                ),
            ));
        }
        if !criterion.threshold.is_finite() {
            return Err(AppError::bad_input(
                format!("{prefix}.successCriteria.{i}.threshold"),
                "threshold must be a finite number",
            ));
        }
    }
    if config.extra.is_null() {
        config.extra = serde_json::json!({});
    }
    Ok(())
}

async fn check_roles(ctx: &Ctx, prefix: &str, roles: &[AgentRole]) -> AppResult<()> {
    require_unique(
        &format!("{prefix}.agentRoles"),
        roles.iter().map(|r| r.role.as_str()),
    )?;
    let names: HashSet<&str> = roles.iter().map(|r| r.role.as_str()).collect();
    for (i, role) in roles.iter().enumerate() {
        for (j, rel) in role.relationships.iter().enumerate() {
            let at = format!("{prefix}.agentRoles.{i}.relationships.{j}");
            if !names.contains(rel.target_role.as_str()) {
                return Err(AppError::bad_input(
                    format!("{at}.targetRole"),
                    format!("relationship targets undefined role {:?}", rel.target_role),
                ));
            }
            require_text(format!("{at}.kind"), &rel.kind)?;
            if !rel.strength.is_finite() {
                return Err(AppError::bad_input(
                    format!("{at}.strength"),
                    "strength must be a finite number",
                ));
            }
        }
    }
    let ids: Vec<Uuid> = roles.iter().map(|r| r.agent_template_id).collect();
    let found: HashSet<Uuid> = super::agent_template::get_many(ctx, &ids)
        .await?
        .into_iter()
        .map(|t| t.id)
        .collect();
    if let Some((i, role)) = roles
        .iter()
        .enumerate()
        .find(|(_, r)| !found.contains(&r.agent_template_id))
    {
        return Err(AppError::bad_input(
            format!("{prefix}.agentRoles.{i}.agentTemplateId"),
            format!("agent template {} does not exist", role.agent_template_id),
        ));
    }
    Ok(())
}

fn check_event_flow(prefix: &str, flow: &mut EventFlow) -> AppResult<()> {
    require_unique(
        &format!("{prefix}.eventFlow.worldRules"),
        flow.world_rules.iter().map(|r| r.key.as_str()),
    )?;
    if flow.extra.is_null() {
        flow.extra = serde_json::json!({});
    }
    Ok(())
}

/// The JSON of a typed part, checked for text that cannot be stored.
fn to_json<T: Serialize>(field: &str, value: &T) -> AppResult<Value> {
    let json = serde_json::to_value(value).map_err(AppError::internal)?;
    super::check_json(field, &json)?;
    Ok(json)
}

/// Creates a scenario template after validating its typed parts.
pub async fn create(
    ctx: &Ctx,
    principal: &Principal,
    input: NewScenarioTemplate,
) -> AppResult<scenario_template::Model> {
    principal.require(Access::Admin)?;
    let name = check_name("input.name", &input.name)?;
    if let Some(description) = &input.description {
        super::check_text("input.description", description)?;
    }
    let mut config = input.config.unwrap_or_default();
    check_config("input.config", &mut config)?;
    let roles = input.agent_roles.unwrap_or_default();
    check_roles(ctx, "input", &roles).await?;
    let mut flow = input.event_flow.unwrap_or_default();
    check_event_flow("input", &mut flow)?;
    let at = now();
    let model = scenario_template::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name.clone()),
        description: Set(input.description.unwrap_or_default()),
        config: Set(to_json("input.config", &config)?),
        agent_roles: Set(to_json("input.agentRoles", &roles)?),
        event_flow: Set(to_json("input.eventFlow", &flow)?),
        created_at: Set(at),
        updated_at: Set(at),
    };
    model
        .insert(&ctx.db.conn)
        .await
        .map_err(|e| AppError::from_db_naming(e, &name))
}

/// Applies `patch` to the scenario template `id`.
pub async fn update(
    ctx: &Ctx,
    principal: &Principal,
    id: Uuid,
    patch: ScenarioTemplatePatch,
) -> AppResult<scenario_template::Model> {
    principal.require(Access::Admin)?;
    let current = get(ctx, id)
        .await?
        .ok_or_else(|| AppError::not_found("id", format!("scenario template {id} not found")))?;
    let mut model: scenario_template::ActiveModel = current.into();
    if let Some(name) = patch.name {
        model.name = Set(check_name("patch.name", &name)?);
    }
    if let Some(description) = patch.description {
        super::check_text("patch.description", &description)?;
        model.description = Set(description);
    }
    if let Some(mut config) = patch.config {
        check_config("patch.config", &mut config)?;
        model.config = Set(to_json("patch.config", &config)?);
    }
    if let Some(roles) = patch.agent_roles {
        check_roles(ctx, "patch", &roles).await?;
        model.agent_roles = Set(to_json("patch.agentRoles", &roles)?);
    }
    if let Some(mut flow) = patch.event_flow {
        check_event_flow("patch", &mut flow)?;
        model.event_flow = Set(to_json("patch.eventFlow", &flow)?);
    }
    model.updated_at = Set(now());
    let name = model.name.clone().unwrap();
    model
        .update(&ctx.db.conn)
        .await
        .map_err(|e| AppError::from_db_naming(e, &name))
}

/// Deletes the scenario template `id`; `CONFLICT` while runs use it.
pub async fn delete(
    ctx: &Ctx,
    principal: &Principal,
    id: Uuid,
) -> AppResult<scenario_template::Model> {
    principal.require(Access::Admin)?;
    let current = get(ctx, id)
        .await?
        .ok_or_else(|| AppError::not_found("id", format!("scenario template {id} not found")))?;
    let runs = scenario_run::Entity::find()
        .filter(scenario_run::Column::TemplateId.eq(id))
        .count(&ctx.db.conn)
        .await?;
    if runs > 0 {
        return Err(AppError::Conflict(format!(
            "scenario template {id} is used by {runs} scenario run(s)"
        )));
    }
    // The foreign key still guards a run created meanwhile (CONFLICT too).
    scenario_template::Entity::delete_by_id(id)
        .exec(&ctx.db.conn)
        .await?;
    Ok(current)
}

/// The scenario template `id`, if it exists.
pub async fn get(ctx: &Ctx, id: Uuid) -> AppResult<Option<scenario_template::Model>> {
    Ok(scenario_template::Entity::find_by_id(id)
        .one(&ctx.db.conn)
        .await?)
}

/// The scenario templates among `ids`.
pub async fn get_many(ctx: &Ctx, ids: &[Uuid]) -> AppResult<Vec<scenario_template::Model>> {
    Ok(scenario_template::Entity::find()
        .filter(scenario_template::Column::Id.is_in(ids.iter().copied()))
        .all(&ctx.db.conn)
        .await?)
}

/// Scenario templates in creation order.
pub async fn list(
    ctx: &Ctx,
    page: PageRequest<Uuid>,
) -> AppResult<Page<Uuid, scenario_template::Model>> {
    let query = scenario_template::Entity::find();
    page::by_id(
        &ctx.db.conn,
        query,
        scenario_template::Column::Id,
        page,
        |m| m.id,
    )
    .await
}
