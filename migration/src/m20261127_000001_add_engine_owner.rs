//! Records which API key registered each engine, so that an `engine` key
//! saves the state of its own engines only.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EngineStates {
    Table,
    RegisteredBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(EngineStates::Table)
                    .add_column(uuid_null(EngineStates::RegisteredBy))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(EngineStates::Table)
                    .drop_column(EngineStates::RegisteredBy)
                    .to_owned(),
            )
            .await
    }
}
