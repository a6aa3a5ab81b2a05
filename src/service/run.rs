//! Scenario runs and their lifecycle:
//! PENDING -> RUNNING <-> PAUSED -> COMPLETED | FAILED | CANCELLED, with
//! PENDING -> CANCELLED. Every change publishes `run_status_changed`.

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth::{Access, Principal};
use super::event_type::RUN_STATUS_CHANGED;
use super::page::{self, Page, PageRequest};
use super::publish::{NewEvent, insert_prepared, prepare};
use super::{Ctx, check_name, now};
use crate::entity::scenario_run;
use crate::error::{AppError, AppResult};

pub use crate::entity::scenario_run::RunStatus;

impl RunStatus {
    /// Reads the stored form (as in a `run_status_changed` payload).
    pub fn parse(stored: &str) -> Option<Self> {
        use sea_orm::ActiveEnum;
        RunStatus::try_from_value(&stored.to_owned()).ok()
    }

    /// The statuses of a run that is over.
    pub const TERMINAL: [RunStatus; 3] = [
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    /// Whether the run is over and takes no more events.
    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }

    /// Whether a run may go from `self` to `to`.
    pub fn can_become(self, to: RunStatus) -> bool {
        use RunStatus::*;
        match (self, to) {
            (Pending, Running) | (Pending, Cancelled) => true,
            (Running, Paused) | (Paused, Running) => true,
            (Running | Paused, t) => t.is_terminal(),
            _ => false,
        }
    }
}

/// A new run of a scenario template.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// The template it runs.
    pub template_id: Uuid,
    /// A name for people.
    pub name: String,
    /// Free JSON parameters.
    pub parameters: Option<Value>,
}

/// Creates a PENDING run.
pub async fn create(
    ctx: &Ctx,
    principal: &Principal,
    input: NewRun,
) -> AppResult<scenario_run::Model> {
    principal.require(Access::Admin)?;
    let name = check_name("input.name", &input.name)?;
    if let Some(parameters) = &input.parameters {
        super::check_json("input.parameters", parameters)?;
    }
    if super::scenario_template::get(ctx, input.template_id)
        .await?
        .is_none()
    {
        return Err(AppError::bad_input(
            "input.templateId",
            format!("scenario template {} does not exist", input.template_id),
        ));
    }
    let model = scenario_run::ActiveModel {
        id: Set(Uuid::now_v7()),
        template_id: Set(input.template_id),
        name: Set(name),
        status: Set(RunStatus::Pending),
        parameters: Set(input.parameters.unwrap_or_else(|| json!({}))),
        last_sequence: Set(0),
        created_at: Set(now()),
        started_at: Set(None),
        ended_at: Set(None),
        parent_run_id: Set(None),
        forked_at_sequence: Set(None),
    };
    Ok(model.insert(&ctx.db.conn).await?)
}

/// Moves the run to `to` and publishes `run_status_changed`, in one transaction.
pub async fn set_status(
    ctx: &Ctx,
    principal: &Principal,
    run_id: Uuid,
    to: RunStatus,
) -> AppResult<scenario_run::Model> {
    principal.require(Access::Admin)?;
    let txn = ctx.db.begin_write().await?;
    // Lock the run first: two concurrent changes must not both pass the check.
    let run = super::publish::bump_sequence(&txn, run_id, 0)
        .await?
        .ok_or_else(|| AppError::not_found("runId", format!("scenario run {run_id} not found")))?;
    let from = run.status;
    if !from.can_become(to) {
        return Err(AppError::InvalidTransition {
            from: from.as_str().into(),
            to: to.as_str().into(),
        });
    }
    let mut payload = json!({"runId": run_id, "from": from.as_str(), "to": to.as_str()});
    if to.is_terminal() {
        // The run's last word on itself: read under its lock, so no sample
        // can come between this evaluation and the close.
        let (_, evaluation) = super::metric::of_run(&*txn, &run).await?;
        payload["evaluation"] = serde_json::to_value(&evaluation)
            .map_err(|e| AppError::internal(format!("evaluation not serializable: {e}")))?;
    }
    let event = NewEvent {
        run_id,
        event_type: RUN_STATUS_CHANGED.into(),
        payload: Some(payload),
        ..Default::default()
    };
    let prepared = prepare(ctx, &*txn, vec![event], "status", |_| "status".into()).await?;
    let published = insert_prepared(&txn, prepared, false).await?;

    let at = now();
    let mut update = scenario_run::Entity::update_many()
        .col_expr(scenario_run::Column::Status, Expr::value(to))
        .filter(scenario_run::Column::Id.eq(run_id));
    if to == RunStatus::Running && run.started_at.is_none() {
        update = update.col_expr(scenario_run::Column::StartedAt, Expr::value(at));
    }
    if to.is_terminal() {
        update = update.col_expr(scenario_run::Column::EndedAt, Expr::value(at));
    }
    let updated = update.exec_with_returning(&*txn).await?;
    txn.commit().await?;
    ctx.announce(&published);
    updated
        .into_iter()
        .next()
        .ok_or_else(|| AppError::internal("run vanished inside its own transaction"))
}

/// The run `id`, if it exists.
pub async fn get(ctx: &Ctx, id: Uuid) -> AppResult<Option<scenario_run::Model>> {
    Ok(scenario_run::Entity::find_by_id(id)
        .one(&ctx.db.conn)
        .await?)
}

/// The runs among `ids`.
pub async fn get_many(ctx: &Ctx, ids: &[Uuid]) -> AppResult<Vec<scenario_run::Model>> {
    Ok(scenario_run::Entity::find()
        .filter(scenario_run::Column::Id.is_in(ids.iter().copied()))
        .all(&ctx.db.conn)
        .await?)
}

/// Runs in creation order, optionally of one status or template.
pub async fn list(
    ctx: &Ctx,
    status: Option<RunStatus>,
    template_id: Option<Uuid>,
    page: PageRequest<Uuid>,
) -> AppResult<Page<Uuid, scenario_run::Model>> {
    let mut query = scenario_run::Entity::find();
    if let Some(status) = status {
        query = query.filter(scenario_run::Column::Status.eq(status));
    }
    if let Some(template_id) = template_id {
        query = query.filter(scenario_run::Column::TemplateId.eq(template_id));
    }
    page::by_id(&ctx.db.conn, query, scenario_run::Column::Id, page, |m| {
        m.id
    })
    .await
}

/// The `last_sequence` of each run among `ids`: the periodic delivery check.
pub async fn last_sequences<C: sea_orm::ConnectionTrait>(
    conn: &C,
    ids: Vec<Uuid>,
) -> AppResult<Vec<(Uuid, i64)>> {
    use sea_orm::QuerySelect;
    Ok(scenario_run::Entity::find()
        .select_only()
        .column(scenario_run::Column::Id)
        .column(scenario_run::Column::LastSequence)
        .filter(scenario_run::Column::Id.is_in(ids))
        .into_tuple::<(Uuid, i64)>()
        .all(conn)
        .await?)
}
