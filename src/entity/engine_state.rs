//! `engine_states`: one row per engine instance, its JSON checkpoint and the
//! optimistic-concurrency `version`.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "engine_states")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub engine_id: Uuid,
    pub run_id: Uuid,
    pub engine_type: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub state: Json,
    pub version: i64,
    pub registered_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub last_seen_at: DateTimeUtc,
    /// The API key that registered the engine (none when the server is open).
    pub registered_by: Option<Uuid>,
    /// The group it shares its run's work with, if any.
    pub group_id: Option<Uuid>,
    /// While a subscription of the engine is open (renewed as it lives, set
    /// to the time it ended when it ends; none before its first): the
    /// partition keys it has stay with it until then.
    pub subscribed_until: Option<DateTimeUtc>,
    /// The engine of the parent run this one was forked from, if any.
    pub forked_from: Option<Uuid>,
}

impl ActiveModelBehavior for ActiveModel {}
