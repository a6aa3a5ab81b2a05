//! Event types: the typed kinds of events, with payload schema, default
//! priority and `maxAttempts`. The three `system` types are the server's own.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::Ctx;
use super::auth::{Access, Principal};
use crate::entity::event_type;
use crate::error::{AppError, AppResult};

/// Published by the server when an engine's failure of an event is final.
pub const ERROR_OCCURRED: &str = "error_occurred";
/// Published by the server on every run status change.
pub const RUN_STATUS_CHANGED: &str = "run_status_changed";
/// Published by the server when a run relationship is set.
pub const RELATIONSHIP_UPDATED: &str = "relationship_updated";
/// A sample of a metric, aggregated into the run's metrics when its
/// scenario template defines the metric.
pub const METRIC_RECORDED: &str = "metric_recorded";
/// The built-in event types, which clients may read but not change.
pub const BUILT_IN: [&str; 4] = [
    ERROR_OCCURRED,
    RUN_STATUS_CHANGED,
    RELATIONSHIP_UPDATED,
    METRIC_RECORDED,
];

/// A new event type.
#[derive(Debug, Clone)]
pub struct NewEventType {
    /// Unique name: a letter, then letters, digits, `_`, `.` or `-`.
    pub name: String,
    /// Free grouping (e.g. `actor`, `narration`, `analysis`).
    pub category: String,
    /// The engine type this event kind belongs to, if any.
    pub engine_type: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// JSON Schema that payloads must match.
    pub payload_schema: Option<Value>,
    /// Priority of events that give none.
    pub default_priority: Option<i32>,
    /// How often an engine may fail one event (at least 1).
    pub max_attempts: Option<i32>,
    /// How long a delivery leases one event (default 300 s).
    pub lease_seconds: Option<i32>,
    /// The backoff after a first failure, doubled per attempt (default 0).
    pub retry_delay_seconds: Option<i32>,
}

/// Changes to an event type. `Some(None)` clears a nullable field.
#[derive(Debug, Clone, Default)]
pub struct EventTypePatch {
    /// New category.
    pub category: Option<String>,
    /// New engine type, or none.
    pub engine_type: Option<Option<String>>,
    /// New description.
    pub description: Option<String>,
    /// New payload schema, or none.
    pub payload_schema: Option<Option<Value>>,
    /// New default priority.
    pub default_priority: Option<i32>,
    /// New maximum of attempts.
    pub max_attempts: Option<i32>,
    /// New lease length.
    pub lease_seconds: Option<i32>,
    /// New retry delay.
    pub retry_delay_seconds: Option<i32>,
}

fn check_type_name(name: &str) -> AppResult<()> {
    let mut chars = name.chars();
    let valid = name.len() <= 100
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        return Err(AppError::bad_input(
            "input.name",
            "name must start with a letter and hold only letters, digits, '_', '.' and '-' (at most 100)",
        ));
    }
    Ok(())
}

fn check_max_attempts(field: &str, max_attempts: i32) -> AppResult<i32> {
    if max_attempts < 1 {
        return Err(AppError::bad_input(field, "maxAttempts must be at least 1"));
    }
    Ok(max_attempts)
}

fn check_retry_delay(field: &str, seconds: i32) -> AppResult<i32> {
    let max = super::lease::MAX_RETRY_DELAY.num_seconds();
    if !(0..=max).contains(&i64::from(seconds)) {
        return Err(AppError::bad_input(
            field,
            format!("retryDelaySeconds must be between 0 and {max}"),
        ));
    }
    Ok(seconds)
}

fn check_schema(field: &str, schema: Option<Value>) -> AppResult<Option<Value>> {
    if let Some(schema) = &schema {
        super::check_json(field, schema)?;
        super::schema_cache::compile(field, schema)?;
    }
    Ok(schema)
}

/// Creates an event type; `CONFLICT` when the name is taken.
pub async fn create(
    ctx: &Ctx,
    principal: &Principal,
    input: NewEventType,
) -> AppResult<event_type::Model> {
    principal.require(Access::Admin)?;
    check_type_name(&input.name)?;
    let category = super::check_name("input.category", &input.category)?;
    if let Some(description) = &input.description {
        super::check_text("input.description", description)?;
    }
    if let Some(engine_type) = &input.engine_type {
        super::check_text("input.engineType", engine_type)?;
    }
    let payload_schema = check_schema("input.payloadSchema", input.payload_schema)?;
    let max_attempts = check_max_attempts("input.maxAttempts", input.max_attempts.unwrap_or(1))?;
    let lease_seconds =
        super::lease::check_seconds("input.leaseSeconds", input.lease_seconds.unwrap_or(300))?;
    let retry_delay_seconds = check_retry_delay(
        "input.retryDelaySeconds",
        input.retry_delay_seconds.unwrap_or(0),
    )?;
    let name = input.name;
    let model = event_type::ActiveModel {
        name: Set(name.clone()),
        category: Set(category),
        engine_type: Set(input.engine_type),
        description: Set(input.description.unwrap_or_default()),
        payload_schema: Set(payload_schema),
        default_priority: Set(input.default_priority.unwrap_or(0)),
        max_attempts: Set(max_attempts),
        lease_seconds: Set(lease_seconds),
        retry_delay_seconds: Set(retry_delay_seconds),
    };
    model
        .insert(&ctx.db.conn)
        .await
        .map_err(|e| AppError::from_db_naming(e, &name))
}

/// Applies `patch` to the event type `name`; built-in types cannot change.
pub async fn update(
    ctx: &Ctx,
    principal: &Principal,
    name: &str,
    patch: EventTypePatch,
) -> AppResult<event_type::Model> {
    principal.require(Access::Admin)?;
    // From the database, not the cache: the change starts from what is stored.
    let current = event_type::Entity::find_by_id(name.to_owned())
        .one(&ctx.db.conn)
        .await?
        .ok_or_else(|| AppError::not_found("name", format!("event type {name:?} not found")))?;
    if BUILT_IN.contains(&name) {
        return Err(AppError::bad_input(
            "name",
            format!("{name} is a built-in event type and cannot be changed"),
        ));
    }
    let mut model: event_type::ActiveModel = current.into();
    if let Some(category) = patch.category {
        model.category = Set(super::check_name("patch.category", &category)?);
    }
    if let Some(engine_type) = patch.engine_type {
        if let Some(engine_type) = &engine_type {
            super::check_text("patch.engineType", engine_type)?;
        }
        model.engine_type = Set(engine_type);
    }
    if let Some(description) = patch.description {
        super::check_text("patch.description", &description)?;
        model.description = Set(description);
    }
    if let Some(schema) = patch.payload_schema {
        model.payload_schema = Set(check_schema("patch.payloadSchema", schema)?);
    }
    if let Some(priority) = patch.default_priority {
        model.default_priority = Set(priority);
    }
    if let Some(max_attempts) = patch.max_attempts {
        model.max_attempts = Set(check_max_attempts("patch.maxAttempts", max_attempts)?);
    }
    if let Some(seconds) = patch.lease_seconds {
        model.lease_seconds = Set(super::lease::check_seconds("patch.leaseSeconds", seconds)?);
    }
    if let Some(seconds) = patch.retry_delay_seconds {
        model.retry_delay_seconds = Set(check_retry_delay("patch.retryDelaySeconds", seconds)?);
    }
    let updated = model.update(&ctx.db.conn).await?;
    ctx.event_types.clear();
    ctx.event_types_changed();
    Ok(updated)
}

/// The event type `name`, if it exists.
pub async fn get(ctx: &Ctx, name: &str) -> AppResult<Option<Arc<event_type::Model>>> {
    Ok(get_many(ctx, &[name.to_owned()]).await?.pop())
}

/// The event types among `names`, from memory where the cache holds them.
pub async fn get_many<S: AsRef<str>>(
    ctx: &Ctx,
    names: &[S],
) -> AppResult<Vec<Arc<event_type::Model>>> {
    get_many_on(ctx, &ctx.db.conn, names).await
}

/// [`get_many`], reading what the cache lacks through `conn` (a transaction).
pub async fn get_many_on<C: ConnectionTrait, S: AsRef<str>>(
    ctx: &Ctx,
    conn: &C,
    names: &[S],
) -> AppResult<Vec<Arc<event_type::Model>>> {
    let (mut found, missing, generation) = ctx.event_types.lookup(names);
    if missing.is_empty() {
        return Ok(found);
    }
    let loaded: Vec<Arc<event_type::Model>> = event_type::Entity::find()
        .filter(event_type::Column::Name.is_in(missing))
        .all(conn)
        .await?
        .into_iter()
        .map(Arc::new)
        .collect();
    ctx.event_types.fill(generation, &loaded);
    found.extend(loaded);
    Ok(found)
}

/// Event types kept in memory. Every publish and every event's `type` reads
/// them, and only admins change them, rarely: a read from memory saves a
/// statement per request.
///
/// What the cache holds is what the database held after the last change it
/// heard of. Changes made here clear it after their commit; changes made by
/// another replica clear it when their NOTIFY arrives, so on PostgreSQL the
/// cache is trusted only while this replica's LISTEN connection is up
/// (`trust`), and read around otherwise. A load that began before a clear
/// is not kept (the generation counts clears). Names not found are never
/// cached: a type created elsewhere is seen at once.
#[derive(Debug)]
pub struct EventTypeCache {
    /// A std Mutex: held to look up or insert, never across an await.
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    types: HashMap<String, Arc<event_type::Model>>,
    generation: u64,
    trusted: bool,
}

impl EventTypeCache {
    /// An empty cache, used from the start when `trusted` (one process owns
    /// the database), otherwise once [`EventTypeCache::trust`] says so.
    pub fn new(trusted: bool) -> Self {
        EventTypeCache {
            state: Mutex::new(CacheState {
                trusted,
                ..CacheState::default()
            }),
        }
    }

    /// Whether changes made elsewhere will be heard of; either way the cache
    /// starts over, since changes may have been missed.
    pub fn trust(&self, trusted: bool) {
        let mut state = self.state.lock().unwrap();
        state.trusted = trusted;
        state.types.clear();
        state.generation += 1;
    }

    /// Forgets every event type: one of them changed.
    pub fn clear(&self) {
        let mut state = self.state.lock().unwrap();
        state.types.clear();
        state.generation += 1;
    }

    /// The cached types among `names`, the names to load, and the
    /// generation to hand to [`EventTypeCache::fill`] with what they load.
    fn lookup<S: AsRef<str>>(
        &self,
        names: &[S],
    ) -> (Vec<Arc<event_type::Model>>, Vec<String>, u64) {
        let state = self.state.lock().unwrap();
        let names = names.iter().map(AsRef::as_ref);
        if !state.trusted {
            return (
                Vec::new(),
                names.map(str::to_owned).collect(),
                state.generation,
            );
        }
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            match state.types.get(name) {
                Some(model) => found.push(model.clone()),
                None => missing.push(name.to_owned()),
            }
        }
        (found, missing, state.generation)
    }

    /// Keeps `loaded`, unless the cache was cleared since `generation`.
    fn fill(&self, generation: u64, loaded: &[Arc<event_type::Model>]) {
        let mut state = self.state.lock().unwrap();
        if state.trusted && state.generation == generation {
            for model in loaded {
                state.types.insert(model.name.clone(), model.clone());
            }
        }
    }
}

/// Event types by name, optionally of one category or engine type.
pub async fn list(
    ctx: &Ctx,
    category: Option<String>,
    engine_type: Option<String>,
) -> AppResult<Vec<event_type::Model>> {
    let mut query = event_type::Entity::find().order_by_asc(event_type::Column::Name);
    if let Some(category) = category {
        query = query.filter(event_type::Column::Category.eq(category));
    }
    if let Some(engine_type) = engine_type {
        query = query.filter(event_type::Column::EngineType.eq(engine_type));
    }
    Ok(query.all(&ctx.db.conn).await?)
}
