//! Engine states on PostgreSQL compressed with lz4 instead of pglz.
//!
//! A ~2 KB state is over PostgreSQL's TOAST threshold, so every save
//! compresses it twice (the engine's row and its history row); with pglz
//! that was a fifth of PostgreSQL's CPU per save (BENCHMARKS.md, issue 17).
//! Only values written from now on use lz4; older ones stay readable as
//! they are. A PostgreSQL built without lz4, or older than 14 (which has no
//! `SET COMPRESSION`), keeps pglz (a notice says so).
//! Nothing changes on SQLite.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Sets the compression of both state columns to `method`, unless this
/// PostgreSQL lacks it or the statement.
async fn compress_states(manager: &SchemaManager<'_>, method: &str) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    if conn.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    conn.execute_unprepared(&format!(
        "DO $$
         BEGIN
             EXECUTE 'ALTER TABLE engine_states ALTER COLUMN state SET COMPRESSION {method}';
             EXECUTE 'ALTER TABLE engine_state_versions ALTER COLUMN state SET COMPRESSION {method}';
         EXCEPTION WHEN feature_not_supported OR syntax_error THEN
             RAISE NOTICE 'compression {method} is not supported here: states keep the default';
         END $$"
    ))
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        compress_states(manager, "lz4").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        compress_states(manager, "default").await
    }
}
