//! `event_types`: the typed kinds of events, with their payload JSON Schema,
//! default priority and how often an engine may fail one.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "event_types")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub category: String,
    pub engine_type: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub description: String,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub payload_schema: Option<Json>,
    pub default_priority: i32,
    pub max_attempts: i32,
    /// How long a delivery holds an event before it goes to an engine again.
    pub lease_seconds: i32,
    /// The backoff after a failed attempt, doubled per attempt.
    pub retry_delay_seconds: i32,
}

impl ActiveModelBehavior for ActiveModel {}
