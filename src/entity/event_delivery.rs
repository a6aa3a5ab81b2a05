//! `event_deliveries`: one row per event and recipient (an engine, or a
//! group as one) once the event has been delivered to or recorded by it:
//! the member holding the current lease, how many times it was delivered,
//! the failures so far and a failed attempt's backoff, and whether the
//! recipient is done with it.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "event_deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub event_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub recipient_id: Uuid,
    /// The engine that holds (or last held) the lease: the recipient itself,
    /// or one member of its group.
    pub engine_id: Option<Uuid>,
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
    /// `FAILED` records so far, by any member: counted toward `maxAttempts`.
    pub failures: i32,
}

impl ActiveModelBehavior for ActiveModel {}
