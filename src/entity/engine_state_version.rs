//! `engine_state_versions`: every saved state of every engine, with the
//! run's `last_sequence` when the save committed (the run timeline).

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "engine_state_versions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub engine_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub version: i64,
    #[sea_orm(column_type = "JsonBinary")]
    pub state: Json,
    pub saved_at: DateTimeUtc,
    /// The run's `last_sequence` when this version committed.
    pub run_sequence: i64,
}

impl ActiveModelBehavior for ActiveModel {}
