//! Evaluation: the built-in `metric_recorded` event type, `run_metrics`
//! (each run's aggregate of each defined metric, kept by the publishing
//! transaction), and `metricsDefinitions[].aggregation` as one of `SUM MEAN
//! MIN MAX LAST COUNT`.
//!
//! Stored aggregations are mapped case-insensitively (`sum`, `mean`, `avg`,
//! `average`, `min`, `max`, `last`, `latest`, `count`); a definition without
//! one gets `LAST`. Any other stored value stops the migration with the list
//! of templates, metrics and values, and nothing is changed: fix them (see
//! the message) and migrate again. A `metric_recorded` type made before it
//! was built in becomes the built-in one (category `system`, its schema).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, Statement};
use serde_json::Value;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RunMetrics {
    Table,
    RunId,
    Name,
    Aggregation,
    Unit,
    Value,
    Samples,
    Total,
    LastSequence,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ScenarioRuns {
    Table,
    Id,
}

const METRIC_RECORDED: &str = "metric_recorded";
const METRIC_SCHEMA: &str = r#"{"type":"object","required":["metric","value"],"properties":{"metric":{"type":"string","minLength":1},"value":{"type":"number"},"labels":{"type":"object"}}}"#;

/// The stored form of an aggregation written `value`, if it is one.
fn aggregation(value: &str) -> Option<&'static str> {
    Some(match value.trim().to_ascii_lowercase().as_str() {
        "sum" | "total" => "SUM",
        "mean" | "avg" | "average" => "MEAN",
        "min" | "minimum" => "MIN",
        "max" | "maximum" => "MAX",
        "last" | "latest" | "" => "LAST",
        "count" => "COUNT",
        _ => return None,
    })
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        let backend = conn.get_database_backend();
        let rows = conn
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT id, name, config FROM scenario_templates",
            ))
            .await?;
        let mut unknown = Vec::new();
        let mut changed = Vec::new();
        for row in rows {
            let id: sea_orm_migration::sea_orm::prelude::Uuid = row.try_get("", "id")?;
            let name: String = row.try_get("", "name")?;
            let mut config: Value = row.try_get("", "config")?;
            let mut dirty = false;
            let definitions = config
                .get_mut("metricsDefinitions")
                .and_then(Value::as_array_mut);
            for definition in definitions.into_iter().flatten() {
                let metric = definition
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned();
                let stored = match definition.get("aggregation") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                match aggregation(&stored) {
                    Some(mapped) if mapped != stored => {
                        definition["aggregation"] = Value::from(mapped);
                        dirty = true;
                    }
                    Some(_) => {}
                    None => unknown.push(format!(
                        "scenario template {name:?} ({id}), metric {metric:?}: {stored:?}"
                    )),
                }
            }
            if dirty {
                changed.push((id, config));
            }
        }
        if !unknown.is_empty() {
            return Err(DbErr::Migration(format!(
                "metricsDefinitions[].aggregation must be one of SUM, MEAN, MIN, MAX, LAST, \
                 COUNT; these stored values are none of them and were left as they are: {}. \
                 Set each to one of those in scenario_templates.config, then migrate again",
                unknown.join("; ")
            )));
        }
        for (id, config) in changed {
            let update = Query::update()
                .table(Alias::new("scenario_templates"))
                .value(Alias::new("config"), config)
                .and_where(Expr::col(Alias::new("id")).eq(id))
                .to_owned();
            manager.exec_stmt(update).await?;
        }

        let schema: Value =
            serde_json::from_str(METRIC_SCHEMA).map_err(|e| DbErr::Migration(e.to_string()))?;
        let names = [
            "name",
            "category",
            "engine_type",
            "description",
            "payload_schema",
            "default_priority",
            "max_attempts",
        ];
        let insert = Query::insert()
            .into_table(Alias::new("event_types"))
            .columns(names.map(Alias::new))
            .values_panic([
                METRIC_RECORDED.into(),
                "system".into(),
                Option::<String>::None.into(),
                "A sample of a metric of the run (AnalystEngine); aggregated when the \
                 scenario template defines the metric."
                    .into(),
                schema.into(),
                10.into(),
                1.into(),
            ])
            .on_conflict(
                OnConflict::column(Alias::new("name"))
                    .update_columns(
                        ["category", "engine_type", "description", "payload_schema"]
                            .map(Alias::new),
                    )
                    .to_owned(),
            )
            .to_owned();
        manager.exec_stmt(insert).await?;

        manager
            .create_table(
                Table::create()
                    .table(RunMetrics::Table)
                    .col(uuid(RunMetrics::RunId))
                    .col(string(RunMetrics::Name))
                    .col(string(RunMetrics::Aggregation))
                    .col(string(RunMetrics::Unit))
                    .col(double_null(RunMetrics::Value))
                    .col(big_integer(RunMetrics::Samples))
                    .col(double(RunMetrics::Total))
                    .col(big_integer(RunMetrics::LastSequence))
                    .col(timestamp_with_time_zone(RunMetrics::UpdatedAt))
                    .primary_key(Index::create().col(RunMetrics::RunId).col(RunMetrics::Name))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_run_metrics_run")
                            .from(RunMetrics::Table, RunMetrics::RunId)
                            .to(ScenarioRuns::Table, ScenarioRuns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RunMetrics::Table).to_owned())
            .await?;
        // The built-in type goes unless events use it; the mapped
        // aggregations stay (the old free text took them as they are).
        manager
            .get_connection()
            .execute_unprepared(
                "DELETE FROM event_types WHERE name = 'metric_recorded'
                 AND NOT EXISTS (SELECT 1 FROM event_instances
                                 WHERE event_type = 'metric_recorded')",
            )
            .await?;
        Ok(())
    }
}
