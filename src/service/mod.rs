//! The service layer: every business rule and every transaction of
//! scenario-hub, as plain async functions over a [`Ctx`]. Nothing here knows
//! about GraphQL or HTTP, so the GraphQL resolvers and the REST adapters share
//! one implementation of each rule.

pub mod agent_template;
pub mod auth;
pub mod compact;
pub mod engine;
pub mod event;
pub mod event_type;
pub mod export;
pub mod fork;
pub mod history;
pub mod import;
pub mod lease;
pub mod metric;
pub mod page;
pub mod pending;
pub mod processing;
pub mod publish;
pub mod relationship;
pub mod run;
pub mod scenario_template;
pub mod schema_cache;

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use crate::config::Limits;
use crate::db::Db;

/// Told of every commit that adds events to a run, after the commit: the
/// delivery layer's doorbell. Services know only this trait.
pub trait CommitListener: Send + Sync {
    /// Run `run_id` has committed events up to `last_sequence`; `stored`,
    /// when the publisher has them, are the events it committed, as the
    /// database holds them, consecutive and in sequence order (subscribers
    /// in this process then need not read them back).
    fn committed(
        &self,
        run_id: Uuid,
        last_sequence: i64,
        stored: Option<Vec<crate::entity::event_instance::Model>>,
    );

    /// Engine `engine_id` recorded `event_ids` of run `run_id`: its window
    /// has room again; `again` when they failed with attempts left, so the
    /// events are pending again (maybe after a backoff). A batch of records
    /// is one call, so that it is one piece of news, not one per event.
    fn recorded(&self, run_id: Uuid, engine_id: Uuid, event_ids: &[Uuid], again: bool);

    /// Leases of run `run_id` were released before they expired: their
    /// events are pending again.
    fn released(&self, run_id: Uuid);

    /// An event type changed: other replicas' caches must forget theirs.
    fn event_types_changed(&self);

    /// Whether this process has subscribers of run `run_id`, to whom a
    /// publisher may hand its events as stored.
    fn watches(&self, run_id: Uuid) -> bool;
}

/// A listener for contexts without delivery (command line tools).
struct NoListener;

impl CommitListener for NoListener {
    fn committed(
        &self,
        _run_id: Uuid,
        _last_sequence: i64,
        _stored: Option<Vec<crate::entity::event_instance::Model>>,
    ) {
    }
    fn recorded(&self, _run_id: Uuid, _engine_id: Uuid, _event_ids: &[Uuid], _again: bool) {}
    fn released(&self, _run_id: Uuid) {}
    fn event_types_changed(&self) {}
    fn watches(&self, _run_id: Uuid) -> bool {
        false
    }
}

/// What every service call needs: the database, the limits, and the caches
/// that outlive a request.
#[derive(Clone)]
pub struct Ctx {
    /// The connection pool.
    pub db: Db,
    /// Limits on sizes and counts of what clients send.
    pub limits: Arc<Limits>,
    /// Compiled payload validators, keyed by event type.
    pub schemas: Arc<schema_cache::SchemaCache>,
    /// Event types in memory.
    pub event_types: Arc<event_type::EventTypeCache>,
    /// Rung after each commit that adds events.
    listener: Arc<dyn CommitListener>,
    /// Whether any API key is active, cached briefly.
    pub keys: Arc<auth::KeyPresence>,
    /// This server's Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Ctx {
    /// A context over `db` with `limits`, telling nobody of commits.
    pub fn new(db: Db, limits: Limits) -> Self {
        let postgres = db.conn.get_database_backend() == sea_orm::DatabaseBackend::Postgres;
        Ctx {
            db,
            limits: Arc::new(limits),
            schemas: Arc::new(schema_cache::SchemaCache::default()),
            // On PostgreSQL other processes may change event types: the
            // delivery hub vouches for the cache while it hears of them.
            event_types: Arc::new(event_type::EventTypeCache::new(!postgres)),
            listener: Arc::new(NoListener),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            keys: Arc::new(auth::KeyPresence::default()),
        }
    }

    /// The same context, telling `listener` of commits.
    pub fn with_listener(mut self, listener: Arc<dyn CommitListener>) -> Self {
        self.listener = listener;
        self
    }

    /// Tells the listener, after the commit, that an engine recorded `event_ids`.
    pub fn announce_recorded(
        &self,
        run_id: Uuid,
        engine_id: Uuid,
        event_ids: &[Uuid],
        again: bool,
    ) {
        self.listener.recorded(run_id, engine_id, event_ids, again);
    }

    /// Tells the listener that leases of `run_id` were released.
    pub fn announce_released(&self, run_id: Uuid) {
        self.listener.released(run_id);
    }

    /// Tells the listener, after the commit, that an event type changed.
    pub fn event_types_changed(&self) {
        self.listener.event_types_changed();
    }

    /// Tells the listener of the runs and highest sequences among `events`,
    /// once they are committed.
    pub fn announce(&self, events: &[crate::entity::event_instance::Model]) {
        self.metrics.published(events.len());
        let mut heads: Vec<(Uuid, i64)> = Vec::new();
        for event in events {
            match heads.iter_mut().find(|(run, _)| *run == event.run_id) {
                Some((_, last)) => *last = (*last).max(event.sequence),
                None => heads.push((event.run_id, event.sequence)),
            }
        }
        for (run_id, last_sequence) in heads {
            self.listener.committed(run_id, last_sequence, None);
        }
    }

    /// Whether this process has subscribers of the run: then a publisher
    /// that can read its events back as stored hands them over
    /// ([`Ctx::announce_stored`]).
    pub fn watched(&self, run_id: Uuid) -> bool {
        self.listener.watches(run_id)
    }

    /// [`Ctx::announce`] for the committed events of one run, consecutive,
    /// in sequence order, read back from the statement that stored them.
    pub fn announce_stored(&self, events: Vec<crate::entity::event_instance::Model>) {
        let Some((run_id, last)) = events.last().map(|e| (e.run_id, e.sequence)) else {
            return;
        };
        self.metrics.published(events.len());
        self.listener.committed(run_id, last, Some(events));
    }
}

/// The current time at microsecond precision, which both backends store
/// exactly, so that what a mutation returns equals what a later read returns.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The serialized size of a JSON value in bytes.
pub fn json_size(value: &serde_json::Value) -> usize {
    serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
}

/// Refuses text with a NUL character, which PostgreSQL cannot store (and
/// SQLite would, so both backends answer alike).
pub fn check_text(field: &str, text: &str) -> crate::error::AppResult<()> {
    if text.contains('\0') {
        return Err(crate::error::AppError::bad_input(
            field,
            format!("{field} must not contain NUL (\\u0000)"),
        ));
    }
    Ok(())
}

/// Refuses JSON with a NUL character in any string or key (see [`check_text`]).
pub fn check_json(field: &str, value: &serde_json::Value) -> crate::error::AppResult<()> {
    use serde_json::Value;
    match value {
        Value::String(s) => check_text(field, s),
        Value::Array(items) => items.iter().try_for_each(|v| check_json(field, v)),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            check_text(field, k)?;
            check_json(field, v)
        }),
        _ => Ok(()),
    }
}

/// Checks a required, human-given name: trimmed, not empty, at most 200 characters.
pub fn check_name(field: &str, name: &str) -> crate::error::AppResult<String> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(crate::error::AppError::bad_input(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if trimmed.chars().count() > 200 {
        return Err(crate::error::AppError::bad_input(
            field,
            format!("{field} must be at most 200 characters"),
        ));
    }
    if trimmed.contains('\0') {
        return Err(crate::error::AppError::bad_input(
            field,
            format!("{field} must not contain NUL"),
        ));
    }
    Ok(trimmed.to_owned())
}
