//! `event_deliveries`: one row per event and engine once the event has been
//! delivered to or recorded by that engine: its current lease, how many
//! times it was delivered, a failed attempt's backoff, and whether the
//! engine is done with it.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "event_deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub event_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub engine_id: Uuid,
    /// The latest delivery's lease; a record that names another one is fenced off.
    pub lease_id: Option<Uuid>,
    /// Deliveries so far.
    pub attempt: i32,
    /// Until when the current lease holds the event; none once it is recorded or released.
    pub lease_expires_at: Option<DateTimeUtc>,
    /// A failed attempt's backoff: not pending again before this.
    pub not_before: Option<DateTimeUtc>,
    /// Recorded PROCESSED, or failed for good: never delivered again.
    pub done: bool,
    /// When it was last delivered.
    pub delivered_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
