//! `event_instances`: the events of a run, each with its gapless per-run
//! `sequence` and its priority.

use sea_orm::QuerySelect;
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

/// `$ty { field: column, ... }` decoded by position from the row of
/// `$res`, its `payload` from column `$payload`; none when the row is not
/// a plain row of either backend (`$pre` is a prefix).
///
/// On PostgreSQL the columns are read by `try_get_unchecked`: the
/// statement is ours and the column types are the migrations' (which every
/// test decodes through here), so the per-column check that the Rust type
/// accepts the column's type (a type clone and comparisons, 50 rows x 14
/// columns per page: 7% of the server's CPU on a W1 page) would only repeat
/// what the tests prove; the payload is `jsonb`'s text as it is. On SQLite
/// the columns are checked, the payload's text by a parse.
macro_rules! by_position {
    ($res:expr, $pre:expr, $ty:ident { $($field:ident: $at:expr),* $(,)? ; payload: $payload:expr }) => {{
        use sea_orm::sqlx::Row;
        use sea_orm::sqlx::types::Json;
        let get = |e: sea_orm::sqlx::Error| DbErr::Custom(format!("decoding an event: {e}"));
        let payload = |e: String| DbErr::Custom(format!("decoding an event's payload: {e}"));
        match ($pre, $res.try_as_pg_row(), $res.try_as_sqlite_row()) {
            ("", Some(row), _) => Some($ty {
                $($field: row.try_get_unchecked($at).map_err(get)?,)*
                payload: jsonb_text(row, $payload).map_err(payload)?,
            }),
            ("", None, Some(row)) => Some($ty {
                $($field: row.try_get($at).map_err(get)?,)*
                payload: row
                    .try_get::<Json<JsonText>, _>($payload)
                    .map(|json| json.0)
                    .map_err(|e| payload(e.to_string()))?,
            }),
            _ => None,
        }
    }};
}

impl sea_orm::FromQueryResult for ByPosition {
    fn from_query_result(res: &sea_orm::QueryResult, pre: &str) -> Result<Self, DbErr> {
        let decoded = by_position!(res, pre, Model {
            id: 0, run_id: 1, sequence: 2, event_type: 3, priority: 4,
            source_engine_id: 6, parent_event_id: 7, target_engine_id: 8,
            target_engine_type: 9, idempotency_key: 10, created_at: 11, deliver_at: 12,
            partition_key: 13;
            payload: 5
        });
        match decoded {
            Some(model) => Ok(ByPosition(model)),
            None => Ok(ByPosition(
                <Model as sea_orm::FromQueryResult>::from_query_result(res, pre)?,
            )),
        }
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

/// The events `select` finds, decoded by position: whole, or as [`Head`]s.
pub async fn fetch<R: Row, C: ConnectionTrait>(
    select: Select<Entity>,
    conn: &C,
) -> Result<Vec<R>, DbErr> {
    let rows = R::narrow(select)
        .into_model::<R::Decoder>()
        .all(conn)
        .await?;
    Ok(rows.into_iter().map(R::decoded).collect())
}

/// What a page of events can be read as: the whole [`Model`] or its
/// [`Head`]. Each gives what a page needs of every row (its order and
/// cursor) and what engines read most.
pub trait Row: Sized + Send + Sync {
    /// How a row is decoded.
    type Decoder: sea_orm::FromQueryResult + Send + Sync;
    /// `select` reading only this row's columns.
    fn narrow(select: Select<Entity>) -> Select<Entity>;
    /// The row from its decoder.
    fn decoded(decoder: Self::Decoder) -> Self;
    /// The event's id.
    fn id(&self) -> Uuid;
    /// Its place in its run.
    fn sequence(&self) -> i64;
    /// Its type's name.
    fn event_type(&self) -> &str;
    /// Its priority.
    fn priority(&self) -> i32;
    /// Its payload.
    fn payload(&self) -> &JsonText;
    /// The whole event, when this row is one.
    fn whole(&self) -> Option<&Model>;
}

/// [`Row`]'s accessors of the fields that [`Model`] and [`Head`] share by name.
macro_rules! head_fields {
    () => {
        fn id(&self) -> Uuid {
            self.id
        }

        fn sequence(&self) -> i64 {
            self.sequence
        }

        fn event_type(&self) -> &str {
            &self.event_type
        }

        fn priority(&self) -> i32 {
            self.priority
        }

        fn payload(&self) -> &JsonText {
            &self.payload
        }
    };
}

impl Row for Model {
    type Decoder = ByPosition;

    fn narrow(select: Select<Entity>) -> Select<Entity> {
        select
    }

    fn decoded(decoder: ByPosition) -> Self {
        decoder.0
    }

    head_fields!();

    fn whole(&self) -> Option<&Model> {
        Some(self)
    }
}

/// The five columns of an event a page of `id eventType priority payload`
/// needs (with the sequence, for the order and cursors): PostgreSQL sends
/// a page of them for ~13% less CPU than a page of all fourteen columns
/// (`bench/pgbench`'s `w1c`), and the server decodes fewer.
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    /// The event's id.
    pub id: Uuid,
    /// Its place in its run.
    pub sequence: i64,
    /// Its type's name.
    pub event_type: String,
    /// Its priority.
    pub priority: i32,
    /// Its payload.
    pub payload: JsonText,
}

impl sea_orm::FromQueryResult for Head {
    fn from_query_result(res: &sea_orm::QueryResult, pre: &str) -> Result<Self, DbErr> {
        // The positions are `HEAD`'s order, which `Row::narrow` selects.
        by_position!(res, pre, Head { id: 0, sequence: 1, event_type: 2, priority: 3; payload: 4 })
            .ok_or_else(|| DbErr::Custom("an event's head is decoded from a row of its own".into()))
    }
}

/// [`Head`]'s columns, in its decoder's order.
const HEAD: [Column; 5] = [
    Column::Id,
    Column::Sequence,
    Column::EventType,
    Column::Priority,
    Column::Payload,
];

impl Row for Head {
    type Decoder = Head;

    fn narrow(select: Select<Entity>) -> Select<Entity> {
        select.select_only().columns(HEAD)
    }

    fn decoded(decoder: Head) -> Self {
        decoder
    }

    head_fields!();

    fn whole(&self) -> Option<&Model> {
        None
    }
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
