//! `event_instances`: the events of a run, each with its gapless per-run
//! `sequence` and its priority.

use sea_orm::entity::prelude::*;

use super::json_text::JsonText;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "event_instances")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub run_id: Uuid,
    pub sequence: i64,
    pub event_type: String,
    pub priority: i32,
    /// Passed through as text; `value()` parses it.
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: JsonText,
    pub source_engine_id: Option<Uuid>,
    pub parent_event_id: Option<Uuid>,
    pub target_engine_id: Option<Uuid>,
    pub target_engine_type: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTimeUtc,
    /// A delayed event is pending for engines only from this time.
    pub deliver_at: Option<DateTimeUtc>,
    /// Events of one key go to a recipient one at a time, in sequence order.
    pub partition_key: Option<String>,
}

impl ActiveModelBehavior for ActiveModel {}

/// An event decoded by column position, for the hot reads (pages of events,
/// the feed). The derived decoder looks each column up by name in each row
/// and formats the column's name for every NULL it meets (SeaORM's
/// `TryGetError::Null`); on a page of 50 events that was a third of the
/// server's CPU. The positions are `Column`'s order, which `Entity::find()`
/// selects (the test below pins it).
pub struct ByPosition(pub Model);

impl sea_orm::FromQueryResult for ByPosition {
    fn from_query_result(res: &sea_orm::QueryResult, pre: &str) -> Result<Self, DbErr> {
        use sea_orm::sqlx::Row;
        use sea_orm::sqlx::types::Json;

        // `$get` is `try_get`, or on PostgreSQL `try_get_unchecked`: the
        // statement is ours and the column types are the migrations' (which
        // every test decodes through here), so the per-column check that
        // the Rust type accepts the column's type (a type clone and
        // comparisons, 50 rows x 14 columns per page: 7% of the server's
        // CPU on a W1 page) would only repeat what the tests prove. The
        // payload comes from `$payload`: on PostgreSQL `jsonb`'s text as it
        // is, on SQLite the text checked by a parse.
        macro_rules! decode {
            ($row:expr, $get:ident, $payload:expr) => {{
                let row = $row;
                let get =
                    |e: sea_orm::sqlx::Error| DbErr::Custom(format!("decoding an event: {e}"));
                Model {
                    id: row.$get(0).map_err(get)?,
                    run_id: row.$get(1).map_err(get)?,
                    sequence: row.$get(2).map_err(get)?,
                    event_type: row.$get(3).map_err(get)?,
                    priority: row.$get(4).map_err(get)?,
                    payload: $payload
                        .map_err(|e| DbErr::Custom(format!("decoding an event's payload: {e}")))?,
                    source_engine_id: row.$get(6).map_err(get)?,
                    parent_event_id: row.$get(7).map_err(get)?,
                    target_engine_id: row.$get(8).map_err(get)?,
                    target_engine_type: row.$get(9).map_err(get)?,
                    idempotency_key: row.$get(10).map_err(get)?,
                    created_at: row.$get(11).map_err(get)?,
                    deliver_at: row.$get(12).map_err(get)?,
                    partition_key: row.$get(13).map_err(get)?,
                }
            }};
        }
        let model = match (pre, res.try_as_pg_row(), res.try_as_sqlite_row()) {
            ("", Some(row), _) => decode!(row, try_get_unchecked, jsonb_text(row, 5)),
            ("", None, Some(row)) => decode!(
                row,
                try_get,
                row.try_get::<Json<JsonText>, _>(5).map(|json| json.0)
            ),
            _ => <Model as sea_orm::FromQueryResult>::from_query_result(res, pre)?,
        };
        Ok(ByPosition(model))
    }
}

/// The text of the `jsonb` column `index` of `row`, as it is: valid JSON by
/// the column's type, so not parsed again.
fn jsonb_text(row: &sea_orm::sqlx::postgres::PgRow, index: usize) -> Result<JsonText, String> {
    use sea_orm::sqlx::Row;
    use sea_orm::sqlx::postgres::PgValueFormat;
    let value = row.try_get_raw(index).map_err(|e| e.to_string())?;
    let bytes = value.as_bytes().map_err(|e| e.to_string())?;
    let text = match (value.format(), bytes) {
        // The binary form is a version byte, then the text.
        (PgValueFormat::Binary, [1, text @ ..]) | (PgValueFormat::Text, text) => text,
        (PgValueFormat::Binary, _) => return Err("not jsonb of version 1".into()),
    };
    let text = std::str::from_utf8(text).map_err(|e| e.to_string())?;
    Ok(JsonText::from_jsonb(text))
}

/// The columns in [`ByPosition`]'s order, for hand-written statements.
pub const COLUMNS: &str = "id, run_id, sequence, event_type, priority, payload, source_engine_id, \
    parent_event_id, target_engine_id, target_engine_type, idempotency_key, created_at, \
    deliver_at, partition_key";

/// The events `select` finds, decoded by position.
pub async fn fetch<C: ConnectionTrait>(
    select: Select<Entity>,
    conn: &C,
) -> Result<Vec<Model>, DbErr> {
    let rows = select.into_model::<ByPosition>().all(conn).await?;
    Ok(rows.into_iter().map(|row| row.0).collect())
}

#[cfg(test)]
mod tests {
    use sea_orm::{IdenStatic, Iterable};

    use super::Column;

    #[test]
    fn by_position_decodes_the_columns_in_their_order() {
        let names: Vec<String> = Column::iter().map(|c| c.as_str().to_owned()).collect();
        assert_eq!(super::COLUMNS.split(", ").collect::<Vec<_>>(), names);
        assert_eq!(
            names,
            [
                "id",
                "run_id",
                "sequence",
                "event_type",
                "priority",
                "payload",
                "source_engine_id",
                "parent_event_id",
                "target_engine_id",
                "target_engine_type",
                "idempotency_key",
                "created_at",
                "deliver_at",
                "partition_key",
            ]
        );
    }
}
