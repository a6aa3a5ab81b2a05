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
    pub status: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub parameters: Json,
    pub last_sequence: i64,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub ended_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
