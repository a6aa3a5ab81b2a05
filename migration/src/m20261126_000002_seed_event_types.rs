//! The three built-in event types (category `system`) that the server itself
//! publishes. Their payload schemas document what the server puts in them.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

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

/// (name, description, default priority, payload JSON Schema)
const BUILT_INS: [(&str, &str, i32, &str); 3] = [
    (
        "error_occurred",
        "An engine failed an event for the last allowed time.",
        100,
        r#"{"type":"object","required":["eventId","engineId","error","attempts"],"properties":{"eventId":{"type":"string"},"engineId":{"type":"string"},"error":{"type":["string","null"]},"attempts":{"type":"integer"}}}"#,
    ),
    (
        "run_status_changed",
        "A scenario run moved from one status to another.",
        1000,
        r#"{"type":"object","required":["runId","from","to"],"properties":{"runId":{"type":"string"},"from":{"type":"string"},"to":{"type":"string"}}}"#,
    ),
    (
        "relationship_updated",
        "A relationship between two roles of a run was set.",
        50,
        r#"{"type":"object","required":["sourceRole","targetRole","kind","strength"],"properties":{"sourceRole":{"type":"string"},"targetRole":{"type":"string"},"kind":{"type":"string"},"strength":{"type":"number"},"data":{}}}"#,
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut insert = Query::insert();
        insert.into_table(EventTypes::Table).columns([
            EventTypes::Name,
            EventTypes::Category,
            EventTypes::EngineType,
            EventTypes::Description,
            EventTypes::PayloadSchema,
            EventTypes::DefaultPriority,
            EventTypes::MaxAttempts,
        ]);
        for (name, description, priority, schema) in BUILT_INS {
            let schema: serde_json::Value =
                serde_json::from_str(schema).map_err(|e| DbErr::Migration(e.to_string()))?;
            insert.values_panic([
                name.into(),
                "system".into(),
                Option::<String>::None.into(),
                description.into(),
                schema.into(),
                priority.into(),
                1.into(),
            ]);
        }
        manager.exec_stmt(insert).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .exec_stmt(
                Query::delete()
                    .from_table(EventTypes::Table)
                    .and_where(
                        Expr::col(EventTypes::Name).is_in(BUILT_INS.iter().map(|(name, ..)| *name)),
                    )
                    .to_owned(),
            )
            .await
    }
}
