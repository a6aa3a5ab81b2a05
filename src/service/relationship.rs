//! Run relationships: the template's starting relationships overlaid with
//! the changes made during the run. Setting one publishes
//! `relationship_updated`, so ActorEngines learn of it on their subscription.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth::{Access, Principal};
use super::event_type::RELATIONSHIP_UPDATED;
use super::publish::{NewEvent, insert_prepared, prepare};
use super::scenario_template::roles_of;
use super::{Ctx, now};
use crate::entity::{run_relationship, scenario_run};
use crate::error::{AppError, AppResult};

/// A relationship to set on a run.
#[derive(Debug, Clone)]
pub struct SetRelationship {
    /// The run.
    pub run_id: Uuid,
    /// The role it goes from.
    pub source_role: String,
    /// The role it goes to.
    pub target_role: String,
    /// What kind of relationship.
    pub kind: String,
    /// How strong.
    pub strength: f64,
    /// Free JSON.
    pub data: Option<Value>,
}

/// A relationship as a run sees it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Relationship {
    /// The role it goes from.
    pub source_role: String,
    /// The role it goes to.
    pub target_role: String,
    /// What kind of relationship.
    pub kind: String,
    /// How strong.
    pub strength: f64,
    /// Free JSON.
    pub data: Value,
    /// When the run changed it; `None` while it is the template's.
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<run_relationship::Model> for Relationship {
    fn from(m: run_relationship::Model) -> Self {
        Relationship {
            source_role: m.source_role,
            target_role: m.target_role,
            kind: m.kind,
            strength: m.strength,
            data: m.data,
            updated_at: Some(m.updated_at),
        }
    }
}

/// Upserts a run relationship and publishes `relationship_updated`, atomically.
pub async fn set(
    ctx: &Ctx,
    principal: &Principal,
    input: SetRelationship,
) -> AppResult<Relationship> {
    principal.require(Access::Admin)?;
    use run_relationship::Column as R;
    let run = super::run::get(ctx, input.run_id).await?.ok_or_else(|| {
        AppError::not_found(
            "input.runId",
            format!("scenario run {} not found", input.run_id),
        )
    })?;
    super::publish::require_open(&run)?;
    let template = super::scenario_template::get(ctx, run.template_id)
        .await?
        .ok_or_else(|| AppError::internal("run without template"))?;
    let roles = roles_of(&template);
    for (field, role) in [
        ("input.sourceRole", &input.source_role),
        ("input.targetRole", &input.target_role),
    ] {
        if !roles.iter().any(|r| &r.role == role) {
            return Err(AppError::bad_input(
                field,
                format!(
                    "{role:?} is not a role of scenario template {:?}",
                    template.name
                ),
            ));
        }
    }
    let kind = super::check_name("input.kind", &input.kind)?;
    if !input.strength.is_finite() {
        return Err(AppError::bad_input(
            "input.strength",
            "strength must be a finite number",
        ));
    }
    let data = input.data.unwrap_or_else(|| json!({}));
    super::check_json("input.data", &data)?;
    let event = NewEvent {
        run_id: run.id,
        event_type: RELATIONSHIP_UPDATED.into(),
        payload: Some(json!({
            "sourceRole": input.source_role,
            "targetRole": input.target_role,
            "kind": kind,
            "strength": input.strength,
            "data": data,
        })),
        ..Default::default()
    };
    let prepared = prepare(ctx, &ctx.db.conn, vec![event], "input", |_| "input".into()).await?;

    let txn = ctx.db.begin_write().await?;
    // The event goes first: it takes the run lock and refuses a run closed meanwhile.
    let published = insert_prepared(&txn, prepared, false).await?;
    let row = run_relationship::ActiveModel {
        run_id: Set(run.id),
        source_role: Set(input.source_role),
        target_role: Set(input.target_role),
        kind: Set(kind),
        strength: Set(input.strength),
        data: Set(data),
        updated_at: Set(now()),
    };
    let saved = run_relationship::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([R::RunId, R::SourceRole, R::TargetRole])
                .update_columns([R::Kind, R::Strength, R::Data, R::UpdatedAt])
                .to_owned(),
        )
        .exec_with_returning(&*txn)
        .await?;
    txn.commit().await?;
    ctx.announce(&published);
    Ok(saved.into())
}

/// The run's relationships: the template's, overlaid with the run's changes,
/// ordered by (source role, target role).
pub async fn for_run(ctx: &Ctx, run: &scenario_run::Model) -> AppResult<Vec<Relationship>> {
    let mut all = for_runs(ctx, &[(run.id, run.template_id)]).await?;
    Ok(all.remove(&run.id).unwrap_or_default())
}

/// [`for_run`] of many runs, given as (run, template), in two statements.
pub async fn for_runs(
    ctx: &Ctx,
    runs: &[(Uuid, Uuid)],
) -> AppResult<HashMap<Uuid, Vec<Relationship>>> {
    let template_ids: Vec<Uuid> = runs.iter().map(|r| r.1).collect();
    let templates: HashMap<Uuid, _> = super::scenario_template::get_many(ctx, &template_ids)
        .await?
        .into_iter()
        .map(|t| (t.id, t))
        .collect();
    let mut changes: HashMap<Uuid, Vec<run_relationship::Model>> = HashMap::new();
    for change in run_relationship::Entity::find()
        .filter(run_relationship::Column::RunId.is_in(runs.iter().map(|r| r.0)))
        .all(&ctx.db.conn)
        .await?
    {
        changes.entry(change.run_id).or_default().push(change);
    }
    Ok(runs
        .iter()
        .map(|(run, template)| {
            let merged = merge(
                templates.get(template),
                changes.remove(run).unwrap_or_default(),
            );
            (*run, merged)
        })
        .collect())
}

/// A template's relationships with a run's `changes` laid over them.
fn merge(
    template: Option<&crate::entity::scenario_template::Model>,
    changes: Vec<run_relationship::Model>,
) -> Vec<Relationship> {
    let mut merged: BTreeMap<(String, String), Relationship> = BTreeMap::new();
    if let Some(template) = template {
        for role in roles_of(template) {
            for rel in role.relationships {
                merged.insert(
                    (role.role.clone(), rel.target_role.clone()),
                    Relationship {
                        source_role: role.role.clone(),
                        target_role: rel.target_role,
                        kind: rel.kind,
                        strength: rel.strength,
                        data: rel.data,
                        updated_at: None,
                    },
                );
            }
        }
    }
    for change in changes {
        merged.insert(
            (change.source_role.clone(), change.target_role.clone()),
            change.into(),
        );
    }
    merged.into_values().collect()
}
