//! `event_processings`: what each engine recorded for each event (the seed's
//! `processed_by_engines`, normalized).

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "event_processings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub event_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub engine_id: Uuid,
    pub status: ProcessingStatus,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub attempts: i32,
    pub processed_at: DateTimeUtc,
    /// The run's `last_sequence` when the record committed: a fork at a
    /// sequence keeps the records made at or before it.
    pub run_sequence: i64,
}

impl ActiveModelBehavior for ActiveModel {}

/// What an engine says it did with an event, stored as its upper-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum ProcessingStatus {
    /// Handled.
    #[sea_orm(string_value = "PROCESSED")]
    Processed,
    /// Failed; delivered again until `maxAttempts` is reached.
    #[sea_orm(string_value = "FAILED")]
    Failed,
}

impl ProcessingStatus {
    /// Reads the stored form.
    pub fn parse(stored: &str) -> Option<Self> {
        match stored {
            "PROCESSED" => Some(ProcessingStatus::Processed),
            "FAILED" => Some(ProcessingStatus::Failed),
            _ => None,
        }
    }

    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessingStatus::Processed => "PROCESSED",
            ProcessingStatus::Failed => "FAILED",
        }
    }
}
