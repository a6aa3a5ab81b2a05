//! The idempotency-key index covers only events that have a key: most
//! events have none, and every one of them paid an index entry on insert
//! (NULLs are distinct in a unique index, so uniqueness is unchanged).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EventInstances {
    Table,
    RunId,
    IdempotencyKey,
}

const NAME: &str = "ux_event_instances_run_idempotency_key";

fn create(partial: bool) -> IndexCreateStatement {
    let mut index = Index::create();
    index
        .name(NAME)
        .table(EventInstances::Table)
        .col(EventInstances::RunId)
        .col(EventInstances::IdempotencyKey)
        .unique();
    if partial {
        index.and_where(Expr::col(EventInstances::IdempotencyKey).is_not_null());
    }
    index.to_owned()
}

fn drop() -> IndexDropStatement {
    Index::drop()
        .name(NAME)
        .table(EventInstances::Table)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    // In a transaction on SQLite too (the migrator's default there is none):
    // it pins one connection, and another pooled connection, its schema
    // cache still holding the dropped index, refuses to create it again.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(drop()).await?;
        manager.create_index(create(true)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(drop()).await?;
        manager.create_index(create(false)).await
    }
}
