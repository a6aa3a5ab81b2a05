//! Engine groups and partition keys: `engine_groups` (one per run and group
//! name, with the one engine type its members share), each engine's group
//! and whether it is subscribed, delivery rows per *recipient* (an engine,
//! or a group as one) with the member holding the lease and the failures
//! counted across the group, and each event's partition key.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EngineGroups {
    Table,
    Id,
    RunId,
    Name,
    EngineType,
    CreatedAt,
}

#[derive(DeriveIden)]
enum EngineStates {
    Table,
    GroupId,
    SubscribedUntil,
}

#[derive(DeriveIden)]
enum EventDeliveries {
    Table,
    EventId,
    RecipientId,
    EngineId,
    LeaseId,
    Attempt,
    LeaseExpiresAt,
    NotBefore,
    Done,
    DeliveredAt,
    Failures,
}

/// The delivery table while it is rebuilt.
#[derive(DeriveIden, Clone, Copy)]
enum Deliveries {
    #[sea_orm(iden = "event_deliveries_new")]
    New,
    #[sea_orm(iden = "event_deliveries_old")]
    Old,
}

#[derive(DeriveIden)]
enum EventInstances {
    Table,
    Id,
    RunId,
    PartitionKey,
    Sequence,
}

#[derive(DeriveIden)]
enum ScenarioRuns {
    Table,
    Id,
}

const HOLDER_INDEX: &str = "idx_event_deliveries_holder_lease";
const RECIPIENT_INDEX: &str = "idx_event_deliveries_recipient_lease";
/// The index of the table before this migration.
const ENGINE_INDEX: &str = "idx_event_deliveries_engine_lease";

/// Creates the delivery table of this migration under `name`.
async fn deliveries_table(manager: &SchemaManager<'_>, name: Deliveries) -> Result<(), DbErr> {
    use EventDeliveries as D;
    manager
        .create_table(
            Table::create()
                .table(name)
                .col(uuid(D::EventId))
                .col(uuid(D::RecipientId))
                .col(uuid_null(D::EngineId))
                .col(uuid_null(D::LeaseId))
                .col(integer(D::Attempt).default(0))
                .col(timestamp_with_time_zone_null(D::LeaseExpiresAt))
                .col(timestamp_with_time_zone_null(D::NotBefore))
                .col(boolean(D::Done).default(false))
                .col(timestamp_with_time_zone_null(D::DeliveredAt))
                .col(integer(D::Failures).default(0))
                .primary_key(Index::create().col(D::EventId).col(D::RecipientId))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_event_deliveries_event_v2")
                        .from(name, D::EventId)
                        .to(EventInstances::Table, EventInstances::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await
}
const PARTITION_INDEX: &str = "idx_event_instances_run_partition";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EngineGroups::Table)
                    .col(uuid(EngineGroups::Id).primary_key())
                    .col(uuid(EngineGroups::RunId))
                    .col(string(EngineGroups::Name))
                    .col(string(EngineGroups::EngineType))
                    .col(timestamp_with_time_zone(EngineGroups::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_engine_groups_run")
                            .from(EngineGroups::Table, EngineGroups::RunId)
                            .to(ScenarioRuns::Table, ScenarioRuns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_engine_groups_run_name")
                    .table(EngineGroups::Table)
                    .col(EngineGroups::RunId)
                    .col(EngineGroups::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // SQLite alters one column per statement.
        for column in [
            uuid_null(EngineStates::GroupId),
            timestamp_with_time_zone_null(EngineStates::SubscribedUntil),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(EngineStates::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        // The row's key becomes the recipient (the engine, or its group);
        // `engine_id` is now the member that holds or last held the lease.
        // A new table and a copy, the way SQLite changes a primary key.
        deliveries_table(manager, Deliveries::New).await?;
        let conn = manager.get_connection();
        conn.execute_unprepared(
            "INSERT INTO event_deliveries_new
                 (event_id, recipient_id, engine_id, lease_id, attempt, lease_expires_at,
                  not_before, done, delivered_at, failures)
             SELECT d.event_id, d.engine_id, d.engine_id, d.lease_id, d.attempt,
                    d.lease_expires_at, d.not_before, d.done, d.delivered_at,
                    COALESCE((SELECT p.attempts FROM event_processings p
                              WHERE p.event_id = d.event_id AND p.engine_id = d.engine_id
                                AND p.status = 'FAILED'), 0)
             FROM event_deliveries d",
        )
        .await?;
        // Whether an engine is done with an event is read from its delivery
        // row alone now: records from before leased delivery get one.
        conn.execute_unprepared(
            "INSERT INTO event_deliveries_new
                 (event_id, recipient_id, engine_id, attempt, done, failures)
             SELECT p.event_id, p.engine_id, p.engine_id, 0,
                    (p.status = 'PROCESSED' OR p.attempts >= t.max_attempts),
                    CASE WHEN p.status = 'FAILED' THEN p.attempts ELSE 0 END
             FROM event_processings p
             JOIN event_instances e ON e.id = p.event_id
             JOIN event_types t ON t.name = e.event_type
             WHERE NOT EXISTS (
                 SELECT 1 FROM event_deliveries d
                 WHERE d.event_id = p.event_id AND d.engine_id = p.engine_id)",
        )
        .await?;
        manager
            .drop_table(Table::drop().table(EventDeliveries::Table).to_owned())
            .await?;
        manager
            .rename_table(
                Table::rename()
                    .table(Deliveries::New, EventDeliveries::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(RECIPIENT_INDEX)
                    .table(EventDeliveries::Table)
                    .col(EventDeliveries::RecipientId)
                    .col(EventDeliveries::LeaseExpiresAt)
                    .to_owned(),
            )
            .await?;
        // A member's leases: released when its subscription ends, listed as
        // `inFlight`.
        manager
            .create_index(
                Index::create()
                    .name(HOLDER_INDEX)
                    .table(EventDeliveries::Table)
                    .col(EventDeliveries::EngineId)
                    .col(EventDeliveries::LeaseExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(EventInstances::Table)
                    .add_column(string_null(EventInstances::PartitionKey))
                    .to_owned(),
            )
            .await?;
        // The earlier events of a key: the ordering and stickiness probes.
        manager
            .create_index(
                Index::create()
                    .name(PARTITION_INDEX)
                    .table(EventInstances::Table)
                    .col(EventInstances::RunId)
                    .col(EventInstances::PartitionKey)
                    .col(EventInstances::Sequence)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use EventDeliveries as D;
        manager
            .drop_index(
                Index::drop()
                    .name(PARTITION_INDEX)
                    .table(EventInstances::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(EventInstances::Table)
                    .drop_column(EventInstances::PartitionKey)
                    .to_owned(),
            )
            .await?;
        // Back to one row per (event, engine); group deliveries have no
        // single engine to go back to.
        manager
            .create_table(
                Table::create()
                    .table(Deliveries::Old)
                    .col(uuid(D::EventId))
                    .col(uuid(D::EngineId))
                    .col(uuid_null(D::LeaseId))
                    .col(integer(D::Attempt).default(0))
                    .col(timestamp_with_time_zone_null(D::LeaseExpiresAt))
                    .col(timestamp_with_time_zone_null(D::NotBefore))
                    .col(boolean(D::Done).default(false))
                    .col(timestamp_with_time_zone_null(D::DeliveredAt))
                    .primary_key(Index::create().col(D::EventId).col(D::EngineId))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_event_deliveries_event")
                            .from(Deliveries::Old, D::EventId)
                            .to(EventInstances::Table, EventInstances::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO event_deliveries_old
                     (event_id, engine_id, lease_id, attempt, lease_expires_at, not_before,
                      done, delivered_at)
                 SELECT event_id, recipient_id, lease_id, attempt, lease_expires_at,
                        not_before, done, delivered_at
                 FROM event_deliveries
                 WHERE recipient_id NOT IN (SELECT id FROM engine_groups)",
            )
            .await?;
        manager
            .drop_table(Table::drop().table(D::Table).to_owned())
            .await?;
        manager
            .rename_table(Table::rename().table(Deliveries::Old, D::Table).to_owned())
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(ENGINE_INDEX)
                    .table(D::Table)
                    .col(D::EngineId)
                    .col(D::LeaseExpiresAt)
                    .to_owned(),
            )
            .await?;
        for column in [EngineStates::SubscribedUntil, EngineStates::GroupId] {
            manager
                .alter_table(
                    Table::alter()
                        .table(EngineStates::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(EngineGroups::Table).to_owned())
            .await
    }
}
