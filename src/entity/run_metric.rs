//! `run_metrics`: a run's aggregate of one metric its scenario template
//! defines, updated by the transaction that publishes each sample.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "run_metrics")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub run_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// How samples combine (`SUM`, `MEAN`, ...), as defined when the first
    /// sample came.
    pub aggregation: String,
    /// The metric's unit.
    pub unit: String,
    /// The aggregate; none before the first sample.
    #[sea_orm(column_type = "Double", nullable)]
    pub value: Option<f64>,
    /// Samples aggregated.
    pub samples: i64,
    /// The sum of the samples (what `MEAN` divides).
    #[sea_orm(column_type = "Double")]
    pub total: f64,
    /// The sequence of the latest sample (what `LAST` keeps).
    pub last_sequence: i64,
    pub updated_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
