//! Flow-controlled, leased delivery: a row per (event, engine) delivery in
//! `event_deliveries` (the current lease, its attempt count, a retry's
//! backoff, and whether the engine is done with the event), the delivery
//! time of delayed events, and each event type's lease and retry delay.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EventDeliveries {
    Table,
    EventId,
    EngineId,
    LeaseId,
    Attempt,
    LeaseExpiresAt,
    NotBefore,
    Done,
    DeliveredAt,
}

#[derive(DeriveIden)]
enum EventInstances {
    Table,
    Id,
    DeliverAt,
}

#[derive(DeriveIden)]
enum EventTypes {
    Table,
    LeaseSeconds,
    RetryDelaySeconds,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EventDeliveries::Table)
                    .col(uuid(EventDeliveries::EventId))
                    .col(uuid(EventDeliveries::EngineId))
                    .col(uuid_null(EventDeliveries::LeaseId))
                    .col(integer(EventDeliveries::Attempt).default(0))
                    .col(timestamp_with_time_zone_null(
                        EventDeliveries::LeaseExpiresAt,
                    ))
                    .col(timestamp_with_time_zone_null(EventDeliveries::NotBefore))
                    .col(boolean(EventDeliveries::Done).default(false))
                    .col(timestamp_with_time_zone_null(EventDeliveries::DeliveredAt))
                    .primary_key(
                        Index::create()
                            .col(EventDeliveries::EventId)
                            .col(EventDeliveries::EngineId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_event_deliveries_event")
                            .from(EventDeliveries::Table, EventDeliveries::EventId)
                            .to(EventInstances::Table, EventInstances::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // An engine's leases: released when its subscription ends, listed as
        // `inFlight`.
        manager
            .create_index(
                Index::create()
                    .name("idx_event_deliveries_engine_lease")
                    .table(EventDeliveries::Table)
                    .col(EventDeliveries::EngineId)
                    .col(EventDeliveries::LeaseExpiresAt)
                    .to_owned(),
            )
            .await?;
        // SQLite alters one column per statement.
        manager
            .alter_table(
                Table::alter()
                    .table(EventInstances::Table)
                    .add_column(timestamp_with_time_zone_null(EventInstances::DeliverAt))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(EventTypes::Table)
                    .add_column(integer(EventTypes::LeaseSeconds).default(300))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(EventTypes::Table)
                    .add_column(integer(EventTypes::RetryDelaySeconds).default(0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [EventTypes::RetryDelaySeconds, EventTypes::LeaseSeconds] {
            manager
                .alter_table(
                    Table::alter()
                        .table(EventTypes::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(EventInstances::Table)
                    .drop_column(EventInstances::DeliverAt)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(EventDeliveries::Table).to_owned())
            .await
    }
}
