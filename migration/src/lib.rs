//! Schema migrations of scenario-hub, applied by `scenario-hub migrate` and on
//! every `scenario-hub serve` start. Each migration has a real `down`.

pub use sea_orm_migration::prelude::*;

mod m20261126_000001_create_tables;
mod m20261126_000002_seed_event_types;
mod m20261127_000001_add_engine_owner;
mod m20261127_000002_partial_idempotency_index;
mod m20261202_000001_add_leased_delivery;
mod m20261203_000001_add_engine_groups;
mod m20261203_000002_add_run_timeline;
mod m20261203_000003_add_run_metrics;
mod m20261206_000001_lz4_state_compression;

/// All migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_create_tables::Migration),
            Box::new(m20261126_000002_seed_event_types::Migration),
            Box::new(m20261127_000001_add_engine_owner::Migration),
            Box::new(m20261127_000002_partial_idempotency_index::Migration),
            Box::new(m20261202_000001_add_leased_delivery::Migration),
            Box::new(m20261203_000001_add_engine_groups::Migration),
            Box::new(m20261203_000002_add_run_timeline::Migration),
            Box::new(m20261203_000003_add_run_metrics::Migration),
            Box::new(m20261206_000001_lz4_state_compression::Migration),
        ]
    }
}
