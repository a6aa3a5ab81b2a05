//! Every table, index and constraint of DESIGN.md's data model.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AgentTemplates {
    Table,
    Id,
    Name,
    Description,
    Config,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ScenarioTemplates {
    Table,
    Id,
    Name,
    Description,
    Config,
    AgentRoles,
    EventFlow,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ScenarioRuns {
    Table,
    Id,
    TemplateId,
    Name,
    Status,
    Parameters,
    LastSequence,
    CreatedAt,
    StartedAt,
    EndedAt,
}

#[derive(DeriveIden)]
enum EventTypes {
    Table,
    Name,
    Category,
    EngineType,
    Description,
    PayloadSchema,
    DefaultPriority,
    MaxAttempts,
}

#[derive(DeriveIden)]
enum EventInstances {
    Table,
    Id,
    RunId,
    Sequence,
    EventType,
    Priority,
    Payload,
    SourceEngineId,
    ParentEventId,
    TargetEngineId,
    TargetEngineType,
    IdempotencyKey,
    CreatedAt,
}

#[derive(DeriveIden)]
enum EventProcessings {
    Table,
    EventId,
    EngineId,
    Status,
    Error,
    Attempts,
    ProcessedAt,
}

#[derive(DeriveIden)]
enum EngineStates {
    Table,
    EngineId,
    RunId,
    EngineType,
    State,
    Version,
    RegisteredAt,
    UpdatedAt,
    LastSeenAt,
}

#[derive(DeriveIden)]
enum RunRelationships {
    Table,
    RunId,
    SourceRole,
    TargetRole,
    Kind,
    Strength,
    Data,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    Name,
    Role,
    TokenHash,
    CreatedAt,
    RevokedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AgentTemplates::Table)
                    .col(uuid(AgentTemplates::Id).primary_key())
                    .col(string(AgentTemplates::Name).unique_key())
                    .col(text(AgentTemplates::Description).default(""))
                    .col(json_binary(AgentTemplates::Config))
                    .col(timestamp_with_time_zone(AgentTemplates::CreatedAt))
                    .col(timestamp_with_time_zone(AgentTemplates::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ScenarioTemplates::Table)
                    .col(uuid(ScenarioTemplates::Id).primary_key())
                    .col(string(ScenarioTemplates::Name).unique_key())
                    .col(text(ScenarioTemplates::Description).default(""))
                    .col(json_binary(ScenarioTemplates::Config))
                    .col(json_binary(ScenarioTemplates::AgentRoles))
                    .col(json_binary(ScenarioTemplates::EventFlow))
                    .col(timestamp_with_time_zone(ScenarioTemplates::CreatedAt))
                    .col(timestamp_with_time_zone(ScenarioTemplates::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ScenarioRuns::Table)
                    .col(uuid(ScenarioRuns::Id).primary_key())
                    .col(uuid(ScenarioRuns::TemplateId))
                    .col(string(ScenarioRuns::Name))
                    .col(string(ScenarioRuns::Status))
                    .col(json_binary(ScenarioRuns::Parameters))
                    .col(big_integer(ScenarioRuns::LastSequence).default(0))
                    .col(timestamp_with_time_zone(ScenarioRuns::CreatedAt))
                    .col(timestamp_with_time_zone_null(ScenarioRuns::StartedAt))
                    .col(timestamp_with_time_zone_null(ScenarioRuns::EndedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_scenario_runs_template")
                            .from(ScenarioRuns::Table, ScenarioRuns::TemplateId)
                            .to(ScenarioTemplates::Table, ScenarioTemplates::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_scenario_runs_template")
                    .table(ScenarioRuns::Table)
                    .col(ScenarioRuns::TemplateId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EventTypes::Table)
                    .col(string(EventTypes::Name).primary_key())
                    .col(string(EventTypes::Category))
                    .col(string_null(EventTypes::EngineType))
                    .col(text(EventTypes::Description).default(""))
                    .col(json_binary_null(EventTypes::PayloadSchema))
                    .col(integer(EventTypes::DefaultPriority).default(0))
                    .col(integer(EventTypes::MaxAttempts).default(1))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EventInstances::Table)
                    .col(uuid(EventInstances::Id).primary_key())
                    .col(uuid(EventInstances::RunId))
                    .col(big_integer(EventInstances::Sequence))
                    .col(string(EventInstances::EventType))
                    .col(integer(EventInstances::Priority))
                    .col(json_binary(EventInstances::Payload))
                    .col(uuid_null(EventInstances::SourceEngineId))
                    .col(uuid_null(EventInstances::ParentEventId))
                    .col(uuid_null(EventInstances::TargetEngineId))
                    .col(string_null(EventInstances::TargetEngineType))
                    .col(string_null(EventInstances::IdempotencyKey))
                    .col(timestamp_with_time_zone(EventInstances::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_event_instances_run")
                            .from(EventInstances::Table, EventInstances::RunId)
                            .to(ScenarioRuns::Table, ScenarioRuns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_event_instances_type")
                            .from(EventInstances::Table, EventInstances::EventType)
                            .to(EventTypes::Table, EventTypes::Name)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_event_instances_parent")
                            .from(EventInstances::Table, EventInstances::ParentEventId)
                            .to(EventInstances::Table, EventInstances::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        // The gapless per-run sequence; also the index of every "after N" read.
        manager
            .create_index(
                Index::create()
                    .name("ux_event_instances_run_sequence")
                    .table(EventInstances::Table)
                    .col(EventInstances::RunId)
                    .col(EventInstances::Sequence)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_event_instances_run_idempotency_key")
                    .table(EventInstances::Table)
                    .col(EventInstances::RunId)
                    .col(EventInstances::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Backlog reads: the most urgent first, ties by sequence.
        manager
            .create_index(
                Index::create()
                    .name("idx_event_instances_run_priority_sequence")
                    .table(EventInstances::Table)
                    .col(EventInstances::RunId)
                    .col((EventInstances::Priority, IndexOrder::Desc))
                    .col(EventInstances::Sequence)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EventProcessings::Table)
                    .col(uuid(EventProcessings::EventId))
                    .col(uuid(EventProcessings::EngineId))
                    .col(string(EventProcessings::Status))
                    .col(text_null(EventProcessings::Error))
                    .col(integer(EventProcessings::Attempts))
                    .col(timestamp_with_time_zone(EventProcessings::ProcessedAt))
                    .primary_key(
                        Index::create()
                            .col(EventProcessings::EventId)
                            .col(EventProcessings::EngineId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_event_processings_event")
                            .from(EventProcessings::Table, EventProcessings::EventId)
                            .to(EventInstances::Table, EventInstances::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_event_processings_engine")
                    .table(EventProcessings::Table)
                    .col(EventProcessings::EngineId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EngineStates::Table)
                    .col(uuid(EngineStates::EngineId).primary_key())
                    .col(uuid(EngineStates::RunId))
                    .col(string(EngineStates::EngineType))
                    .col(json_binary(EngineStates::State))
                    .col(big_integer(EngineStates::Version))
                    .col(timestamp_with_time_zone(EngineStates::RegisteredAt))
                    .col(timestamp_with_time_zone(EngineStates::UpdatedAt))
                    .col(timestamp_with_time_zone(EngineStates::LastSeenAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_engine_states_run")
                            .from(EngineStates::Table, EngineStates::RunId)
                            .to(ScenarioRuns::Table, ScenarioRuns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_engine_states_run_type")
                    .table(EngineStates::Table)
                    .col(EngineStates::RunId)
                    .col(EngineStates::EngineType)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RunRelationships::Table)
                    .col(uuid(RunRelationships::RunId))
                    .col(string(RunRelationships::SourceRole))
                    .col(string(RunRelationships::TargetRole))
                    .col(string(RunRelationships::Kind))
                    .col(double(RunRelationships::Strength))
                    .col(json_binary(RunRelationships::Data))
                    .col(timestamp_with_time_zone(RunRelationships::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(RunRelationships::RunId)
                            .col(RunRelationships::SourceRole)
                            .col(RunRelationships::TargetRole),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_run_relationships_run")
                            .from(RunRelationships::Table, RunRelationships::RunId)
                            .to(ScenarioRuns::Table, ScenarioRuns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(uuid(ApiKeys::Id).primary_key())
                    .col(string(ApiKeys::Name).unique_key())
                    .col(string(ApiKeys::Role))
                    .col(string(ApiKeys::TokenHash).unique_key())
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                    .to_owned(),
            )
            .await?;

        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ApiKeys::Table.into_iden(),
            RunRelationships::Table.into_iden(),
            EngineStates::Table.into_iden(),
            EventProcessings::Table.into_iden(),
            EventInstances::Table.into_iden(),
            EventTypes::Table.into_iden(),
            ScenarioRuns::Table.into_iden(),
            ScenarioTemplates::Table.into_iden(),
            AgentTemplates::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
