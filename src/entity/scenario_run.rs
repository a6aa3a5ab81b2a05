//! `scenario_runs`: one execution of a scenario template. `last_sequence` is
//! the per-run counter that publishing transactions increment.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "scenario_runs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub template_id: Uuid,
    pub name: String,
    pub status: RunStatus,
    #[sea_orm(column_type = "JsonBinary")]
    pub parameters: Json,
    pub last_sequence: i64,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub ended_at: Option<DateTimeUtc>,
    /// The run this one was forked from, if any.
    pub parent_run_id: Option<Uuid>,
    /// The parent's sequence it was forked at.
    pub forked_at_sequence: Option<i64>,
}

impl ActiveModelBehavior for ActiveModel {}

/// Where a run is in its lifecycle, stored as its upper-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum RunStatus {
    /// Created, not started.
    #[sea_orm(string_value = "PENDING")]
    Pending,
    /// Under way.
    #[sea_orm(string_value = "RUNNING")]
    Running,
    /// Halted for now.
    #[sea_orm(string_value = "PAUSED")]
    Paused,
    /// Finished well (terminal).
    #[sea_orm(string_value = "COMPLETED")]
    Completed,
    /// Finished badly (terminal).
    #[sea_orm(string_value = "FAILED")]
    Failed,
    /// Stopped by someone (terminal).
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
}

impl RunStatus {
    /// The stored form (also the `from`/`to` of `run_status_changed`).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "PENDING",
            RunStatus::Running => "RUNNING",
            RunStatus::Paused => "PAUSED",
            RunStatus::Completed => "COMPLETED",
            RunStatus::Failed => "FAILED",
            RunStatus::Cancelled => "CANCELLED",
        }
    }
}
