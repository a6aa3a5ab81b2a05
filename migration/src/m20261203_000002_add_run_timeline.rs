//! The run timeline: every state save kept in `engine_state_versions` with
//! the run sequence it was saved at, the run sequence of each processing
//! record, and the lineage of forks (`scenario_runs.parent_run_id` and
//! `forked_at_sequence`, `engine_states.forked_from`).
//!
//! On SQLite a trigger keeps each save's version, so that a save stays one
//! statement there too (PostgreSQL's save is one statement with a CTE,
//! which SQLite cannot write).
//!
//! Rows from before keep what is known of them: an engine's current state
//! becomes its history of one, and it and every existing record are dated at
//! their run's `last_sequence` now (they happened at or before it).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EngineStateVersions {
    Table,
    EngineId,
    Version,
    State,
    SavedAt,
    RunSequence,
}

#[derive(DeriveIden)]
enum EngineStates {
    Table,
    EngineId,
    ForkedFrom,
}

#[derive(DeriveIden)]
enum EventProcessings {
    Table,
    RunSequence,
}

#[derive(DeriveIden)]
enum ScenarioRuns {
    Table,
    ParentRunId,
    ForkedAtSequence,
}

const FORKS_INDEX: &str = "idx_scenario_runs_parent";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use EngineStateVersions as V;
        manager
            .create_table(
                Table::create()
                    .table(V::Table)
                    .col(uuid(V::EngineId))
                    .col(big_integer(V::Version))
                    .col(json_binary(V::State))
                    .col(timestamp_with_time_zone(V::SavedAt))
                    .col(big_integer(V::RunSequence))
                    .primary_key(Index::create().col(V::EngineId).col(V::Version))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_engine_state_versions_engine")
                            .from(V::Table, V::EngineId)
                            .to(EngineStates::Table, EngineStates::EngineId)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // SQLite alters one column per statement.
        let columns = [
            (
                EngineStates::Table.into_iden(),
                uuid_null(EngineStates::ForkedFrom),
            ),
            (
                EventProcessings::Table.into_iden(),
                big_integer(EventProcessings::RunSequence)
                    .default(0)
                    .to_owned(),
            ),
            (
                ScenarioRuns::Table.into_iden(),
                uuid_null(ScenarioRuns::ParentRunId),
            ),
            (
                ScenarioRuns::Table.into_iden(),
                big_integer_null(ScenarioRuns::ForkedAtSequence),
            ),
        ];
        for (table, mut column) in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(FORKS_INDEX)
                    .table(ScenarioRuns::Table)
                    .col(ScenarioRuns::ParentRunId)
                    .to_owned(),
            )
            .await?;
        let conn = manager.get_connection();
        conn.execute_unprepared(
            "INSERT INTO engine_state_versions (engine_id, version, state, saved_at, run_sequence)
             SELECT s.engine_id, s.version, s.state, s.updated_at, r.last_sequence
             FROM engine_states s JOIN scenario_runs r ON r.id = s.run_id",
        )
        .await?;
        if conn.get_database_backend() == sea_orm_migration::sea_orm::DbBackend::Sqlite {
            conn.execute_unprepared(
                "CREATE TRIGGER engine_state_versions_on_save
                 AFTER UPDATE OF version ON engine_states
                 WHEN NEW.version <> OLD.version
                 BEGIN
                     INSERT INTO engine_state_versions
                         (engine_id, version, state, saved_at, run_sequence)
                     VALUES (NEW.engine_id, NEW.version, NEW.state, NEW.updated_at,
                             (SELECT last_sequence FROM scenario_runs WHERE id = NEW.run_id));
                 END",
            )
            .await?;
        }
        conn.execute_unprepared(
            "UPDATE event_processings SET run_sequence = (
                 SELECT r.last_sequence FROM event_instances e
                 JOIN scenario_runs r ON r.id = e.run_id
                 WHERE e.id = event_processings.event_id)",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        if conn.get_database_backend() == sea_orm_migration::sea_orm::DbBackend::Sqlite {
            conn.execute_unprepared("DROP TRIGGER IF EXISTS engine_state_versions_on_save")
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name(FORKS_INDEX)
                    .table(ScenarioRuns::Table)
                    .to_owned(),
            )
            .await?;
        let columns = [
            (
                ScenarioRuns::Table.into_iden(),
                ScenarioRuns::ForkedAtSequence.into_iden(),
            ),
            (
                ScenarioRuns::Table.into_iden(),
                ScenarioRuns::ParentRunId.into_iden(),
            ),
            (
                EventProcessings::Table.into_iden(),
                EventProcessings::RunSequence.into_iden(),
            ),
            (
                EngineStates::Table.into_iden(),
                EngineStates::ForkedFrom.into_iden(),
            ),
        ];
        for (table, column) in columns {
            manager
                .alter_table(Table::alter().table(table).drop_column(column).to_owned())
                .await?;
        }
        manager
            .drop_table(Table::drop().table(EngineStateVersions::Table).to_owned())
            .await
    }
}
