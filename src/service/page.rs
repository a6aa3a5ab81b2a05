//! Forward cursor pagination shared by every list: a page size checked
//! against the limit, and opaque cursors that encode the sort key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};
use uuid::Uuid;

use crate::error::{AppError, AppResult};

/// The page size used when a client gives no `first`.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// A page request: how many rows, after which sort key.
#[derive(Debug, Clone)]
pub struct PageRequest<K> {
    /// How many rows to return.
    pub first: usize,
    /// Return rows strictly after this key.
    pub after: Option<K>,
}

/// One page of rows with their sort keys.
#[derive(Debug, Clone)]
pub struct Page<K, T> {
    /// The rows, each with the key that its cursor encodes.
    pub rows: Vec<(K, T)>,
    /// Whether more rows follow the last one.
    pub has_next: bool,
}

/// Checks `first` against `max` (default [`DEFAULT_PAGE_SIZE`], capped at `max`).
pub fn page_size(first: Option<i32>, max: usize) -> AppResult<usize> {
    match first {
        None => Ok(DEFAULT_PAGE_SIZE.min(max)),
        Some(n) if n < 0 => Err(AppError::bad_input("first", "first must not be negative")),
        Some(n) if n as usize > max => Err(AppError::limit(
            "first",
            format!("first must be at most {max}"),
        )),
        Some(n) => Ok(n as usize),
    }
}

/// A sort key that can travel as an opaque cursor.
pub trait CursorKey: Sized {
    /// The key as text.
    fn to_text(&self) -> String;
    /// The key from text, `None` when it is not one of ours.
    fn from_text(text: &str) -> Option<Self>;

    /// The opaque cursor of this key.
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.to_text())
    }

    /// Decodes a cursor a client sent back; `BAD_USER_INPUT` on `after` otherwise.
    fn decode(cursor: &str) -> AppResult<Self> {
        URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| Self::from_text(&text))
            .ok_or_else(|| {
                AppError::bad_input("after", "after is not a valid cursor for this list")
            })
    }
}

impl CursorKey for uuid::Uuid {
    fn to_text(&self) -> String {
        format!("id:{self}")
    }
    fn from_text(text: &str) -> Option<Self> {
        text.strip_prefix("id:")?.parse().ok()
    }
}

/// A page of `query`'s rows in id order (creation order: ids are UUIDv7).
pub async fn by_id<E>(
    conn: &impl ConnectionTrait,
    query: Select<E>,
    id: E::Column,
    page: PageRequest<Uuid>,
    id_of: impl Fn(&E::Model) -> Uuid,
) -> AppResult<Page<Uuid, E::Model>>
where
    E: EntityTrait,
    E::Model: Sync,
{
    let mut query = query.order_by_asc(id);
    if let Some(after) = page.after {
        query = query.filter(id.gt(after));
    }
    let rows = query.limit(page.first as u64 + 1).all(conn).await?;
    Ok(into_page(
        rows.into_iter().map(|m| (id_of(&m), m)).collect(),
        page.first,
    ))
}

/// Turns `first + 1` fetched rows into a page.
pub fn into_page<K, T>(mut rows: Vec<(K, T)>, first: usize) -> Page<K, T> {
    let has_next = rows.len() > first;
    rows.truncate(first);
    Page { rows, has_next }
}
