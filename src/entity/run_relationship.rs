//! `run_relationships`: relationship changes made during a run, overlaid on
//! the template's relationships.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "run_relationships")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub run_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub source_role: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub target_role: String,
    pub kind: String,
    #[sea_orm(column_type = "Double")]
    pub strength: f64,
    #[sea_orm(column_type = "JsonBinary")]
    pub data: Json,
    pub updated_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
