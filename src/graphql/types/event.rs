//! Event types, events, processing records and the inputs that create them.

use std::sync::Arc;

use async_graphql::connection::Connection;
use async_graphql::{
    Context, Enum, InputObject, Lookahead, MaybeUndefined, Object, Result, SimpleObject,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::engine::EngineInstance;
use super::json::RawJson;
use super::run::ScenarioRun;
use super::{connection, loader, service_ctx};
use crate::entity::{event_delivery, event_instance, event_processing, event_type};
use crate::graphql::loaders::{EventId, EventTypeName, FirstEventsOf, ProcessingsOf, RunId};
use crate::service::event::{self as svc, EventCursor};
use crate::service::page::{CursorKey, Page, PageRequest, page_size};
use crate::service::{event_type as types_svc, processing};

/// A typed kind of event. Shared with the request's loader, not copied.
pub struct EventType(pub Arc<event_type::Model>);

impl From<event_type::Model> for EventType {
    fn from(model: event_type::Model) -> Self {
        EventType(Arc::new(model))
    }
}

impl From<Arc<event_type::Model>> for EventType {
    fn from(model: Arc<event_type::Model>) -> Self {
        EventType(model)
    }
}

#[Object]
impl EventType {
    /// Unique name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Grouping; `system` for the server's own types.
    async fn category(&self) -> &str {
        &self.0.category
    }
    /// The engine type these events belong to, if any.
    async fn engine_type(&self) -> Option<&str> {
        self.0.engine_type.as_deref()
    }
    /// Free text.
    async fn description(&self) -> &str {
        &self.0.description
    }
    /// JSON Schema that payloads must match; null accepts any payload.
    async fn payload_schema(&self) -> Option<RawJson> {
        self.0.payload_schema.as_ref().map(RawJson::of)
    }
    /// Priority of events that give none.
    async fn default_priority(&self) -> i32 {
        self.0.default_priority
    }
    /// How often an engine may fail one event before the failure is final.
    async fn max_attempts(&self) -> i32 {
        self.0.max_attempts
    }
    /// How long a delivery to an engine leases one event before it goes
    /// out again (a subscription's `leaseSeconds` overrides it).
    async fn lease_seconds(&self) -> i32 {
        self.0.lease_seconds
    }
    /// The wait before a failed event is delivered again, doubled per
    /// failed attempt (at most an hour); a record's `retryAfterSeconds`
    /// overrides it.
    async fn retry_delay_seconds(&self) -> i32 {
        self.0.retry_delay_seconds
    }
}

/// A new event type.
#[derive(InputObject)]
pub struct CreateEventTypeInput {
    /// Unique name: a letter, then letters, digits, `_`, `.` or `-`.
    pub name: String,
    /// Grouping (actor, narration, analysis, ...).
    pub category: String,
    /// The engine type these events belong to.
    pub engine_type: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// JSON Schema that payloads must match; null or left out accepts any
    /// payload.
    pub payload_schema: Option<Value>,
    /// Priority of events that give none (default 0).
    pub default_priority: Option<i32>,
    /// How often an engine may fail one event (default 1).
    pub max_attempts: Option<i32>,
    /// How long a delivery leases one event, 1 to 86,400 (default 300).
    pub lease_seconds: Option<i32>,
    /// The wait before a failed event goes out again, doubled per failed
    /// attempt, 0 to 3,600 (default 0).
    pub retry_delay_seconds: Option<i32>,
}

impl From<CreateEventTypeInput> for types_svc::NewEventType {
    fn from(input: CreateEventTypeInput) -> Self {
        types_svc::NewEventType {
            name: input.name,
            category: input.category,
            engine_type: input.engine_type,
            description: input.description,
            payload_schema: input.payload_schema,
            default_priority: input.default_priority,
            max_attempts: input.max_attempts,
            lease_seconds: input.lease_seconds,
            retry_delay_seconds: input.retry_delay_seconds,
        }
    }
}

/// Changes to an event type; `null` clears `engineType` or `payloadSchema`.
#[derive(InputObject)]
pub struct EventTypePatch {
    /// New grouping.
    pub category: Option<String>,
    /// New engine type; null clears it.
    pub engine_type: MaybeUndefined<String>,
    /// New description.
    pub description: Option<String>,
    /// New payload schema; null removes it (any payload is accepted),
    /// left out keeps it.
    pub payload_schema: MaybeUndefined<Value>,
    /// New default priority.
    pub default_priority: Option<i32>,
    /// New maximum of attempts.
    pub max_attempts: Option<i32>,
    /// New lease length.
    pub lease_seconds: Option<i32>,
    /// New retry delay.
    pub retry_delay_seconds: Option<i32>,
}

fn maybe<T>(value: MaybeUndefined<T>) -> Option<Option<T>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v)),
    }
}

impl From<EventTypePatch> for types_svc::EventTypePatch {
    fn from(patch: EventTypePatch) -> Self {
        types_svc::EventTypePatch {
            category: patch.category,
            engine_type: maybe(patch.engine_type),
            description: patch.description,
            payload_schema: maybe(patch.payload_schema),
            default_priority: patch.default_priority,
            max_attempts: patch.max_attempts,
            lease_seconds: patch.lease_seconds,
            retry_delay_seconds: patch.retry_delay_seconds,
        }
    }
}

/// An event of a run. Shared, not copied, among the subscribers it is
/// sent to; with its lease when it went to an engine's subscription.
pub struct Event(
    pub Arc<event_instance::Model>,
    pub Option<Arc<event_delivery::Model>>,
);

impl From<event_instance::Model> for Event {
    fn from(model: event_instance::Model) -> Self {
        Event(Arc::new(model), None)
    }
}

/// One delivery of an event to an engine: its lease.
pub struct Delivery(pub Arc<event_delivery::Model>);

#[Object]
impl Delivery {
    /// The engine the event was delivered to.
    async fn engine_id(&self) -> Uuid {
        self.0.engine_id.unwrap_or(self.0.recipient_id)
    }
    /// The event.
    async fn event_id(&self) -> Uuid {
        self.0.event_id
    }
    /// How many times the event has been delivered to this engine, from 1.
    async fn attempt(&self) -> i32 {
        self.0.attempt
    }
    /// The lease: name it when recording (`leaseId`) so that a record after
    /// the event went to another delivery fails with `LEASE_LOST`.
    async fn lease_id(&self) -> Option<Uuid> {
        self.0.lease_id
    }
    /// When the lease ends unless it is extended (`extendLease`) or the
    /// event is recorded; then the event is delivered again.
    async fn lease_expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.lease_expires_at
    }
}

#[Object]
impl Event {
    /// Its id.
    async fn id(&self) -> Uuid {
        self.0.id
    }
    /// The run it belongs to.
    async fn run_id(&self) -> Uuid {
        self.0.run_id
    }
    /// The run it belongs to.
    async fn run(&self, ctx: &Context<'_>) -> Result<Option<ScenarioRun>> {
        Ok(loader(ctx)
            .load_one(RunId(self.0.run_id))
            .await?
            .map(ScenarioRun))
    }
    /// Its place in the run: 1, 2, 3, ... without gaps, in commit order.
    async fn sequence(&self) -> i64 {
        self.0.sequence
    }
    /// The name of its event type.
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    /// Its event type.
    async fn r#type(&self, ctx: &Context<'_>) -> Result<EventType> {
        let found = loader(ctx)
            .load_one(EventTypeName(self.0.event_type.clone()))
            .await?;
        found
            .map(EventType)
            .ok_or_else(|| crate::error::AppError::internal("event without event type").into())
    }
    /// Higher is more urgent.
    async fn priority(&self) -> i32 {
        self.0.priority
    }
    /// Its payload, valid against the event type's schema.
    async fn payload(&self) -> RawJson {
        RawJson::text(self.0.payload.as_str())
    }
    /// The engine that emitted it.
    async fn source_engine_id(&self) -> Option<Uuid> {
        self.0.source_engine_id
    }
    /// The id of the event it answers.
    async fn parent_event_id(&self) -> Option<Uuid> {
        self.0.parent_event_id
    }
    /// The event it answers.
    async fn parent(&self, ctx: &Context<'_>) -> Result<Option<Event>> {
        let Some(parent) = self.0.parent_event_id else {
            return Ok(None);
        };
        Ok(loader(ctx)
            .load_one(EventId(parent))
            .await?
            .map(Event::from))
    }
    /// Delivered only to this engine.
    async fn target_engine_id(&self) -> Option<Uuid> {
        self.0.target_engine_id
    }
    /// Delivered only to engines of this type.
    async fn target_engine_type(&self) -> Option<&str> {
        self.0.target_engine_type.as_deref()
    }
    /// The key that makes publishing it idempotent.
    async fn idempotency_key(&self) -> Option<&str> {
        self.0.idempotency_key.as_deref()
    }
    /// When it was committed.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// A delayed event is delivered to engines only from this time.
    async fn deliver_at(&self) -> Option<DateTime<Utc>> {
        self.0.deliver_at
    }
    /// Events of one key go to an engine (or group) one at a time, in
    /// sequence order; in a group, a key stays with one member.
    async fn partition_key(&self) -> Option<&str> {
        self.0.partition_key.as_deref()
    }
    /// This delivery's lease, when the event came through an engine's
    /// subscription; null elsewhere.
    async fn delivery(&self) -> Option<Delivery> {
        self.1.clone().map(Delivery)
    }
    /// What each engine recorded for it.
    async fn processed_by(&self, ctx: &Context<'_>) -> Result<Vec<Processing>> {
        let found = loader(ctx).load_one(ProcessingsOf(self.0.id)).await?;
        Ok(found
            .unwrap_or_default()
            .into_iter()
            .map(Processing)
            .collect())
    }
}

/// An event to publish.
#[derive(InputObject, Clone)]
pub struct EventInput {
    /// The run it belongs to.
    pub run_id: Uuid,
    /// Its event type's name.
    pub event_type: String,
    /// Higher is more urgent; the type's `defaultPriority` when omitted.
    pub priority: Option<i32>,
    /// Payload, checked against the type's schema; `{}` when null or
    /// left out.
    pub payload: Option<Value>,
    /// The engine that emits it.
    pub source_engine_id: Option<Uuid>,
    /// The event it answers (same run).
    pub parent_event_id: Option<Uuid>,
    /// Deliver only to this engine.
    pub target_engine_id: Option<Uuid>,
    /// Deliver only to engines of this type.
    pub target_engine_type: Option<String>,
    /// Publishing again with the same key in the same run returns the first event.
    pub idempotency_key: Option<String>,
    /// Deliver to engines only from this time (the event is published at
    /// once; readers with `afterSequence` see it).
    pub deliver_at: Option<DateTime<Utc>>,
    /// Events with the same key (in one run) are never in flight together
    /// for one engine or group, and go in sequence order among themselves.
    pub partition_key: Option<String>,
}

impl From<EventInput> for crate::service::publish::NewEvent {
    fn from(input: EventInput) -> Self {
        crate::service::publish::NewEvent {
            run_id: input.run_id,
            event_type: input.event_type,
            priority: input.priority,
            payload: input.payload,
            source_engine_id: input.source_engine_id,
            parent_event_id: input.parent_event_id,
            target_engine_id: input.target_engine_id,
            target_engine_type: input.target_engine_type,
            idempotency_key: input.idempotency_key,
            deliver_at: input.deliver_at,
            partition_key: input.partition_key,
        }
    }
}

/// The order of an event list.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "crate::service::event::EventOrder")]
pub enum EventOrder {
    /// By sequence, ascending.
    Sequence,
    /// By priority descending, then sequence ascending.
    Priority,
}

/// Which events of a run to list.
#[derive(InputObject, Default)]
pub struct EventFilter {
    /// Only events of these types.
    pub event_types: Option<Vec<String>>,
    /// Only events of at least this priority.
    pub min_priority: Option<i32>,
    /// Only events with a greater sequence.
    pub after_sequence: Option<i64>,
    /// Only events routed to this engine and not yet recorded by it (a FAILED
    /// record below the type's `maxAttempts` still counts as pending).
    pub pending_for: Option<Uuid>,
    /// Only events emitted by this engine.
    pub source_engine_id: Option<Uuid>,
}

/// Lists the events of `run_id`: shared by `Query.events` and `ScenarioRun.events`.
pub async fn list_events(
    ctx: &Context<'_>,
    run_id: Uuid,
    filter: Option<EventFilter>,
    order: EventOrder,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Connection<String, Event>> {
    let service = service_ctx(ctx);
    let filter = filter.unwrap_or_default();
    let order = order.into();
    let page = PageRequest {
        first: page_size(first, service.limits.max_page_size)?,
        after: after.as_deref().map(EventCursor::decode).transpose()?,
    };
    let had_cursor = page.after.is_some();
    let filter = svc::EventFilter {
        event_types: filter.event_types,
        min_priority: filter.min_priority,
        after_sequence: filter.after_sequence,
        until_sequence: None,
        pending_for: filter.pending_for,
        source_engine_id: filter.source_engine_id,
    };
    let page = svc::list(service, run_id, filter, order, page).await?;
    prefetch_relations(ctx, &ctx.look_ahead(), page.rows.iter().map(|(_, e)| e)).await?;
    Ok(connection(page, had_cursor, Event::from))
}

/// The first page of a run's events in `order`, unfiltered, through the
/// request's loader: the runs of a list share one statement.
pub async fn first_events(
    ctx: &Context<'_>,
    run_id: Uuid,
    order: EventOrder,
    first: Option<i32>,
) -> Result<Connection<String, Event>> {
    let service = service_ctx(ctx);
    let key = FirstEventsOf {
        run: run_id,
        order: order.into(),
        first: page_size(first, service.limits.max_page_size)?,
    };
    let page = loader(ctx).load_one(key).await?.unwrap_or(Page {
        rows: Vec::new(),
        has_next: false,
    });
    prefetch_relations(ctx, &ctx.look_ahead(), page.rows.iter().map(|(_, e)| e)).await?;
    Ok(connection(page, false, Event::from))
}

/// Loads the relations that the query selects on a list of events with one
/// `load_many` per relation, before the events resolve one by one. Batching
/// then does not depend on the DataLoader's delay catching every row: each
/// row's field is served from the request's cache.
pub async fn prefetch_relations<'a>(
    ctx: &Context<'_>,
    look: &Lookahead<'_>,
    events: impl Iterator<Item = &'a event_instance::Model> + Clone,
) -> Result<()> {
    let selects = |field: &str| {
        look.field("nodes").field(field).exists()
            || look.field("edges").field("node").field(field).exists()
    };
    let loader = loader(ctx);
    if selects("type") {
        loader
            .load_many(events.clone().map(|e| EventTypeName(e.event_type.clone())))
            .await?;
    }
    if selects("processedBy") {
        loader
            .load_many(events.clone().map(|e| ProcessingsOf(e.id)))
            .await?;
    }
    if selects("run") {
        loader
            .load_many(events.clone().map(|e| RunId(e.run_id)))
            .await?;
    }
    if selects("parent") {
        loader
            .load_many(events.filter_map(|e| e.parent_event_id.map(EventId)))
            .await?;
    }
    Ok(())
}

/// What an engine did with an event.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "crate::entity::event_processing::ProcessingStatus")]
pub enum ProcessingStatus {
    /// Handled.
    Processed,
    /// Failed; delivered again until the type's `maxAttempts` is reached.
    Failed,
}

/// What one engine recorded for one event.
pub struct Processing(pub event_processing::Model);

#[Object]
impl Processing {
    /// The event.
    async fn event_id(&self) -> Uuid {
        self.0.event_id
    }
    /// The engine.
    async fn engine_id(&self) -> Uuid {
        self.0.engine_id
    }
    /// The latest outcome.
    async fn status(&self) -> Result<ProcessingStatus> {
        Ok(match self.0.status {
            processing::ProcessingStatus::Processed => ProcessingStatus::Processed,
            processing::ProcessingStatus::Failed => ProcessingStatus::Failed,
        })
    }
    /// Why it failed.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// How many times the engine recorded this event.
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }
    /// When it was last recorded.
    async fn processed_at(&self) -> DateTime<Utc> {
        self.0.processed_at
    }
    /// The run's `lastSequence` when it was last recorded.
    async fn run_sequence(&self) -> i64 {
        self.0.run_sequence
    }
}

/// A processing record.
#[derive(InputObject)]
pub struct RecordProcessingInput {
    /// The event.
    pub event_id: Uuid,
    /// The engine (registered, in the event's run).
    pub engine_id: Uuid,
    /// The outcome.
    pub status: ProcessingStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// The lease of the delivery being recorded; a lease that is no longer
    /// current fails with `LEASE_LOST` and records nothing.
    pub lease_id: Option<Uuid>,
    /// After a failure: deliver again no sooner than this many seconds
    /// (0 to 3,600; else the event type's `retryDelaySeconds`, doubled).
    pub retry_after_seconds: Option<i32>,
}

impl From<RecordProcessingInput> for processing::Record {
    fn from(input: RecordProcessingInput) -> Self {
        processing::Record {
            event_id: input.event_id,
            engine_id: input.engine_id,
            status: input.status.into(),
            error: input.error,
            lease_id: input.lease_id,
            retry_after_seconds: input.retry_after_seconds,
        }
    }
}

/// Record, emit and checkpoint in one transaction.
#[derive(InputObject)]
pub struct CompleteEventInput {
    /// The event.
    pub event_id: Uuid,
    /// The engine (registered, in the event's run).
    pub engine_id: Uuid,
    /// The outcome.
    pub status: ProcessingStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// The lease of the delivery being completed; a lease that is no longer
    /// current fails with `LEASE_LOST` and changes nothing.
    pub lease_id: Option<Uuid>,
    /// Events to publish; `sourceEngineId` defaults to the engine and
    /// `parentEventId` to the completed event.
    #[graphql(default)]
    pub emit: Vec<EventInput>,
    /// The engine's new state; null or left out saves none.
    pub state: Option<Value>,
    /// The state version the engine last saw; a stale one fails the whole call.
    pub expected_version: Option<i64>,
}

impl From<CompleteEventInput> for processing::Completion {
    fn from(input: CompleteEventInput) -> Self {
        processing::Completion {
            record: processing::Record {
                event_id: input.event_id,
                engine_id: input.engine_id,
                status: input.status.into(),
                error: input.error,
                lease_id: input.lease_id,
                retry_after_seconds: None,
            },
            emit: input.emit.into_iter().map(Into::into).collect(),
            state: input.state,
            expected_version: input.expected_version,
        }
    }
}

/// A lease to renew.
#[derive(InputObject)]
pub struct ExtendLeaseInput {
    /// The event.
    pub event_id: Uuid,
    /// The engine holding it.
    pub engine_id: Uuid,
    /// The lease it holds.
    pub lease_id: Uuid,
    /// The lease runs this long from now (1 to 86,400).
    pub seconds: i32,
}

impl From<ExtendLeaseInput> for crate::service::lease::Extension {
    fn from(input: ExtendLeaseInput) -> Self {
        crate::service::lease::Extension {
            event_id: input.event_id,
            engine_id: input.engine_id,
            lease_id: input.lease_id,
            seconds: input.seconds,
        }
    }
}

/// What `completeEvent` wrote.
#[derive(SimpleObject)]
pub struct CompleteEventPayload {
    /// The processing record.
    pub processing: Processing,
    /// The emitted events, in input order.
    pub emitted: Vec<Event>,
    /// The engine after the save.
    pub engine: EngineInstance,
}
