//! Agent templates: an Agno agent's definition, referenced by scenario
//! templates' agent roles.

use sea_orm::ExprTrait;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::Value;
use uuid::Uuid;

use super::auth::{Access, Principal};
use super::page::{self, Page, PageRequest};
use super::{Ctx, check_name, now};
use crate::entity::{agent_template, scenario_template};
use crate::error::{AppError, AppResult};

/// A new agent template.
#[derive(Debug, Clone)]
pub struct NewAgentTemplate {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The agent's definition: a JSON object (role, instructions, model, tools).
    pub config: Option<Value>,
}

/// Changes to an agent template; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct AgentTemplatePatch {
    /// New unique name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New config object.
    pub config: Option<Value>,
}

fn check_config(config: Value) -> AppResult<Value> {
    if !config.is_object() {
        return Err(AppError::bad_input(
            "config",
            "config must be a JSON object",
        ));
    }
    super::check_json("config", &config)?;
    Ok(config)
}

/// Creates an agent template.
pub async fn create(
    ctx: &Ctx,
    principal: &Principal,
    input: NewAgentTemplate,
) -> AppResult<agent_template::Model> {
    principal.require(Access::Admin)?;
    let name = check_name("name", &input.name)?;
    let config = check_config(input.config.unwrap_or_else(|| serde_json::json!({})))?;
    if let Some(description) = &input.description {
        super::check_text("input.description", description)?;
    }
    let at = now();
    let model = agent_template::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name.clone()),
        description: Set(input.description.unwrap_or_default()),
        config: Set(config),
        created_at: Set(at),
        updated_at: Set(at),
    };
    model
        .insert(&ctx.db.conn)
        .await
        .map_err(|e| AppError::from_db_naming(e, &name))
}

/// Applies `patch` to the agent template `id`.
pub async fn update(
    ctx: &Ctx,
    principal: &Principal,
    id: Uuid,
    patch: AgentTemplatePatch,
) -> AppResult<agent_template::Model> {
    principal.require(Access::Admin)?;
    let current = get(ctx, id)
        .await?
        .ok_or_else(|| AppError::not_found("id", format!("agent template {id} not found")))?;
    let mut model: agent_template::ActiveModel = current.into();
    if let Some(name) = patch.name {
        model.name = Set(check_name("patch.name", &name)?);
    }
    if let Some(description) = patch.description {
        super::check_text("patch.description", &description)?;
        model.description = Set(description);
    }
    if let Some(config) = patch.config {
        model.config = Set(check_config(config)
            .map_err(|_| AppError::bad_input("patch.config", "config must be a JSON object"))?);
    }
    model.updated_at = Set(now());
    let name = model.name.clone().unwrap();
    model
        .update(&ctx.db.conn)
        .await
        .map_err(|e| AppError::from_db_naming(e, &name))
}

/// Deletes the agent template `id`; `CONFLICT` while a scenario template's
/// agent role refers to it.
pub async fn delete(
    ctx: &Ctx,
    principal: &Principal,
    id: Uuid,
) -> AppResult<agent_template::Model> {
    principal.require(Access::Admin)?;
    let current = get(ctx, id)
        .await?
        .ok_or_else(|| AppError::not_found("id", format!("agent template {id} not found")))?;
    // Roles are JSON, so no foreign key guards them: look for users here.
    let users = scenario_template::Entity::find()
        .filter(
            Expr::col(scenario_template::Column::AgentRoles)
                .cast_as("text")
                .like(format!("%{id}%")),
        )
        .all(&ctx.db.conn)
        .await?;
    let user = users.iter().find(|t| {
        super::scenario_template::roles_of(t)
            .iter()
            .any(|r| r.agent_template_id == id)
    });
    if let Some(user) = user {
        return Err(AppError::Conflict(format!(
            "agent template {id} is used by scenario template {:?}",
            user.name
        )));
    }
    agent_template::Entity::delete_by_id(id)
        .exec(&ctx.db.conn)
        .await?;
    Ok(current)
}

/// The agent template `id`, if it exists.
pub async fn get(ctx: &Ctx, id: Uuid) -> AppResult<Option<agent_template::Model>> {
    Ok(agent_template::Entity::find_by_id(id)
        .one(&ctx.db.conn)
        .await?)
}

/// The agent templates among `ids`.
pub async fn get_many(ctx: &Ctx, ids: &[Uuid]) -> AppResult<Vec<agent_template::Model>> {
    Ok(agent_template::Entity::find()
        .filter(agent_template::Column::Id.is_in(ids.iter().copied()))
        .all(&ctx.db.conn)
        .await?)
}

/// Agent templates in creation order.
pub async fn list(
    ctx: &Ctx,
    page: PageRequest<Uuid>,
) -> AppResult<Page<Uuid, agent_template::Model>> {
    let query = agent_template::Entity::find();
    page::by_id(&ctx.db.conn, query, agent_template::Column::Id, page, |m| {
        m.id
    })
    .await
}
