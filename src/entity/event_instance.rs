//! `event_instances`: the events of a run, each with its gapless per-run
//! `sequence` and its priority.

use sea_orm::entity::prelude::*;

use super::json_text::JsonText;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "event_instances")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub run_id: Uuid,
    pub sequence: i64,
    pub event_type: String,
    pub priority: i32,
    /// Passed through as text; `value()` parses it.
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: JsonText,
    pub source_engine_id: Option<Uuid>,
    pub parent_event_id: Option<Uuid>,
    pub target_engine_id: Option<Uuid>,
    pub target_engine_type: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTimeUtc,
    /// A delayed event is pending for engines only from this time.
    pub deliver_at: Option<DateTimeUtc>,
    /// Events of one key go to a recipient one at a time, in sequence order.
    pub partition_key: Option<String>,
}

impl ActiveModelBehavior for ActiveModel {}
