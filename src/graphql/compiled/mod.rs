//! The compiled path: the hot documents answered without the general executor.
//!
//! An engine sends the same few documents thousands of times a second: a
//! page of a run's events, `publishEvent`, `saveEngineState`. Through
//! async-graphql each answer is a resolver future per field and per list
//! item, a value tree of the response, and its serialization; for a page of
//! 50 events that is most of the server's CPU per request. A document of one
//! of those shapes is compiled once into a [`Plan`]: which root field, where
//! its arguments come from, which fields to write in which order. A request
//! for it decodes its arguments, calls the same service function as the
//! resolver does, and writes the response's JSON directly.
//!
//! The plan answers only what it is sure to answer exactly as the general
//! path would, and hands everything else back (`None`): a document is used
//! only once the general path has run it without errors (so it passed
//! validation and the depth and complexity limits, which do not depend on
//! variables); a variable of an unexpected type, a service error (which
//! changed nothing) or anything unusual sends the request through the
//! general path, which gives the error its usual shape. The property test
//! `tests/it/compiled.rs` checks the two paths byte for byte.
//!
//! A mutation of only `recordProcessing` fields (an engine recording a
//! batch under aliases) compiles to one call of `processing::record_all`:
//! one transaction for the batch instead of one per field, all or nothing,
//! so a batch with an error goes to the general path, which records field
//! by field and reports each (`tests/it/compiled_records.rs`).
//!
//! A reader's `events` subscription compiles too, for its memory rather
//! than its CPU: answered through async-graphql, every idle subscription
//! keeps the executor's boxed stream, the request's variables and query
//! environment alive (~5 KiB); compiled, it keeps the event stream and its
//! plan. A subscription document is proven once the general path has taken
//! it past validation (its first response without errors, or a first poll
//! that waits for events).

mod plan;
mod write;

pub use plan::Plan;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{PathSegment, Response, Variables};
use futures::Stream;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::delivery::Hub;
use crate::delivery::subscription::{self, Delivered, EventsRequest};
use crate::entity::event_instance;
use crate::error::{AppError, AppResult};

use crate::graphql::types::event::EventInput;
use crate::service::auth::Principal;
use crate::service::event::{self as event_svc, EventCursor, EventFilter};
use crate::service::page::{CursorKey, PageRequest, page_size};
use crate::service::{Ctx, engine, processing, publish};
use plan::{Arg, Root};

/// A request's variables, as the compiled path reads them.
pub enum Vars<'a> {
    /// As async-graphql decoded them.
    Parsed(&'a Variables),
    /// As JSON text from the request's body, each decoded only when an
    /// argument reads it: a saved state goes from its text to the compact
    /// text the service binds, without a value tree in between.
    Raw(&'a HashMap<Cow<'a, str>, &'a RawValue>),
}

/// Answers `plan` for `variables`: the response body, or none when the
/// general path must answer.
pub async fn run(
    plan: &Plan,
    ctx: &Ctx,
    principal: &Principal,
    variables: &Vars<'_>,
) -> Option<String> {
    match &plan.root {
        Root::Events {
            run_id,
            order,
            first,
            after,
            selection,
        } => {
            let run_id = run_id.resolve_in(variables)?.uuid()?;
            let order = match order.resolve_in(variables) {
                None => event_svc::EventOrder::Sequence,
                Some(value) => value.event_order()?,
            };
            let first = first
                .resolve_in(variables)
                .map(|v| v.opt_i32())
                .unwrap_or(Some(None))?;
            let after = match after.resolve_in(variables) {
                None => None,
                Some(value) => value.opt_string()?,
            };
            let page = PageRequest {
                first: page_size(first, ctx.limits.max_page_size).ok()?,
                after: match after.as_deref() {
                    Some(text) => Some(EventCursor::decode(text).ok()?),
                    None => None,
                },
            };
            if selection.head_only() {
                events_page::<event_instance::Head>(ctx, plan, selection, run_id, order, page).await
            } else {
                events_page::<event_instance::Model>(ctx, plan, selection, run_id, order, page)
                    .await
            }
        }
        // Subscriptions run over websockets only (`subscribe`).
        Root::EventsSubscription(_) => None,
        Root::PublishEvent { input, selection } => {
            let input = input.resolve_in(variables)?.event_input()?;
            let events = publish::publish(ctx, principal, vec![input.into()], "input", |_| {
                "input".into()
            })
            .await
            .ok()?;
            let event = events.first()?;
            let types = write::types_of(
                ctx,
                selection.types_selected(),
                std::iter::once(event.event_type.as_str()),
            )
            .await?;
            let mut out = write::Out::response(&plan.key);
            write::event(&mut out, &selection.fields, event, &types)?;
            Some(out.finish())
        }
        Root::SaveEngineState {
            engine_id,
            state,
            expected_version,
            selection,
        } => {
            let engine_id = engine_id.resolve_in(variables)?.uuid()?;
            let state = state.resolve_in(variables)?.json_text()?;
            if state.get().trim() == "null" {
                return None;
            }
            let expected_version = match expected_version.resolve_in(variables) {
                None => None,
                Some(value) => value.opt_i64()?,
            };
            let checked = engine::check_state_text(ctx, "state", &state).ok()?;
            // The state is answered as the general path answers it: the
            // value its text parses to (keys sorted), parsed only if asked.
            let answered = if write::selects_state(selection) {
                Some(serde_json::from_str::<Value>(state.get()).ok()?)
            } else {
                None
            };
            let saved = engine::save_checked(ctx, principal, engine_id, checked, expected_version)
                .await
                .ok()?;
            let mut out = write::Out::response(&plan.key);
            write::engine(&mut out, selection, &saved, answered.as_ref())?;
            Some(out.finish())
        }
        Root::Records(fields) => {
            let inputs = fields
                .iter()
                .map(|field| field.input.resolve_in(variables)?.record())
                .collect::<Option<Vec<_>>>()?;
            // All or nothing: an error leaves the batch to the general
            // path, which records field by field and reports each.
            let written = processing::record_all(ctx, principal, &inputs).await.ok()?;
            let mut out = write::Out::data();
            for (i, (field, record)) in fields.iter().zip(&written).enumerate() {
                out.key(i == 0, &field.key);
                write::processing(&mut out, &field.selection, record);
            }
            Some(out.finish())
        }
    }
}

/// The response to `plan` (an `events` page with `selection`), its rows
/// read as `R`: whole events, or their heads when that is all it writes.
async fn events_page<R: event_instance::Row>(
    ctx: &Ctx,
    plan: &Plan,
    selection: &plan::ConnectionSelection,
    run_id: uuid::Uuid,
    order: event_svc::EventOrder,
    page: PageRequest<EventCursor>,
) -> Option<String> {
    let had_cursor = page.after.is_some();
    let page = event_svc::list::<R>(ctx, run_id, EventFilter::default(), order, page)
        .await
        .ok()?;
    let types = write::types_of(
        ctx,
        selection.types_selected(),
        page.rows.iter().map(|(_, e)| e.event_type()),
    )
    .await?;
    let mut out = write::Out::response(&plan.key);
    write::connection(&mut out, selection, &page, had_cursor, &types)?;
    Some(out.finish())
}

/// Starts a reader's `events` subscription answered by `plan`: its stream
/// of events, or none when the general path must answer (an engine's
/// subscription, an argument the schema would refuse, an error at the
/// start, which changed nothing and which the general path reports).
pub async fn subscribe(
    plan: &Plan,
    ctx: &Ctx,
    hub: &Arc<Hub>,
    variables: &Variables,
) -> Option<impl Stream<Item = AppResult<Delivered>> + use<>> {
    let Root::EventsSubscription(subscription) = &plan.root else {
        return None;
    };
    let plan::EventsSubscription {
        run_id,
        engine_id,
        event_types,
        min_priority,
        after_sequence,
        max_in_flight,
        lease_seconds,
        selection: _,
    } = &**subscription;
    // An engine's stream (leases, its own delivery field) stays general.
    if engine_id
        .resolve(variables)
        .is_some_and(|v| *v != async_graphql::Value::Null)
    {
        return None;
    }
    let opt_i32 = |arg: &Arg| match arg.resolve(variables) {
        None => Some(None),
        Some(value) => value.opt_i32(),
    };
    let request = EventsRequest {
        run_id: run_id.resolve(variables)?.uuid()?,
        engine_id: None,
        event_types: match event_types.resolve(variables) {
            None => None,
            Some(value) => value.opt_strings()?,
        },
        min_priority: opt_i32(min_priority)?,
        after_sequence: match after_sequence.resolve(variables) {
            None => None,
            Some(value) => value.opt_i64()?,
        },
        max_in_flight: opt_i32(max_in_flight)?,
        lease_seconds: opt_i32(lease_seconds)?,
    };
    subscription::events(ctx, hub, request).await.ok()
}

/// The `next` payload of `event` for a subscription `plan`.
pub fn render_event(plan: &Plan, event: &event_instance::Model) -> Option<String> {
    let Root::EventsSubscription(subscription) = &plan.root else {
        return None;
    };
    let selection = &subscription.selection;
    let mut out = write::Out::response(&plan.key);
    write::event(&mut out, &selection.fields, event, &HashMap::new())?;
    Some(out.finish())
}

/// The response the general path gives for an error from a subscription's
/// stream: the error at the root field, no data.
pub fn stream_error(plan: &Plan, err: AppError) -> Response {
    let err = async_graphql::Error::from(err)
        .into_server_error(plan.pos)
        .with_path(vec![PathSegment::Field(plan.key.clone())]);
    Response::from_errors(vec![err])
}

/// An argument's value, decoded exactly as the schema's input types decode
/// it; `None` where they would refuse it (the general path then says why).
trait Decode {
    fn uuid(&self) -> Option<uuid::Uuid>;
    fn opt_i32(&self) -> Option<Option<i32>>;
    fn opt_i64(&self) -> Option<Option<i64>>;
    fn opt_string(&self) -> Option<Option<String>>;
    fn opt_strings(&self) -> Option<Option<Vec<String>>>;
    fn event_order(&self) -> Option<event_svc::EventOrder>;
    fn json(&self) -> Option<Value>;
    fn event_input(&self) -> Option<EventInput>;
    fn record(&self) -> Option<processing::Record>;
}

impl Decode for async_graphql::Value {
    fn uuid(&self) -> Option<uuid::Uuid> {
        match self {
            async_graphql::Value::String(s) => uuid::Uuid::parse_str(s).ok(),
            _ => None,
        }
    }

    fn opt_i32(&self) -> Option<Option<i32>> {
        match self {
            async_graphql::Value::Null => Some(None),
            async_graphql::Value::Number(n) => Some(Some(i32::try_from(n.as_i64()?).ok()?)),
            _ => None,
        }
    }

    fn opt_i64(&self) -> Option<Option<i64>> {
        match self {
            async_graphql::Value::Null => Some(None),
            async_graphql::Value::Number(n) => Some(Some(n.as_i64()?)),
            _ => None,
        }
    }

    fn opt_string(&self) -> Option<Option<String>> {
        match self {
            async_graphql::Value::Null => Some(None),
            async_graphql::Value::String(s) => Some(Some(s.clone())),
            _ => None,
        }
    }

    fn opt_strings(&self) -> Option<Option<Vec<String>>> {
        match self {
            async_graphql::Value::Null => Some(None),
            // A single value where a list is expected is a list of one.
            async_graphql::Value::String(s) => Some(Some(vec![s.clone()])),
            async_graphql::Value::List(items) => items
                .iter()
                .map(|item| match item {
                    async_graphql::Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(Some),
            _ => None,
        }
    }

    fn event_order(&self) -> Option<event_svc::EventOrder> {
        let name = match self {
            async_graphql::Value::Enum(name) => name.as_str(),
            async_graphql::Value::String(name) => name.as_str(),
            _ => return None,
        };
        match name {
            "SEQUENCE" => Some(event_svc::EventOrder::Sequence),
            "PRIORITY" => Some(event_svc::EventOrder::Priority),
            _ => None,
        }
    }

    fn json(&self) -> Option<Value> {
        self.clone().into_json().ok()
    }

    fn event_input(&self) -> Option<EventInput> {
        let async_graphql::Value::Object(fields) = self else {
            return None;
        };
        let mut input = EventInput {
            run_id: uuid::Uuid::nil(),
            event_type: String::new(),
            priority: None,
            payload: None,
            source_engine_id: None,
            parent_event_id: None,
            target_engine_id: None,
            target_engine_type: None,
            idempotency_key: None,
            deliver_at: None,
            partition_key: None,
        };
        let (mut run_id, mut event_type) = (false, false);
        let opt_uuid = |v: &async_graphql::Value| match v {
            async_graphql::Value::Null => Some(None),
            v => v.uuid().map(Some),
        };
        for (name, value) in fields {
            match name.as_str() {
                "runId" => {
                    input.run_id = value.uuid()?;
                    run_id = true;
                }
                "eventType" => {
                    input.event_type = value.opt_string()??;
                    event_type = true;
                }
                "priority" => input.priority = value.opt_i32()?,
                "payload" => {
                    input.payload = match value {
                        async_graphql::Value::Null => None,
                        value => Some(value.json()?),
                    }
                }
                "sourceEngineId" => input.source_engine_id = opt_uuid(value)?,
                "parentEventId" => input.parent_event_id = opt_uuid(value)?,
                "targetEngineId" => input.target_engine_id = opt_uuid(value)?,
                "targetEngineType" => input.target_engine_type = value.opt_string()?,
                "idempotencyKey" => input.idempotency_key = value.opt_string()?,
                "partitionKey" => input.partition_key = value.opt_string()?,
                "deliverAt" => {
                    input.deliver_at = match value.opt_string()? {
                        None => None,
                        Some(text) => Some(text.parse().ok()?),
                    }
                }
                _ => return None,
            }
        }
        (run_id && event_type).then_some(input)
    }

    fn record(&self) -> Option<processing::Record> {
        let async_graphql::Value::Object(fields) = self else {
            return None;
        };
        let (mut event_id, mut engine_id, mut status) = (None, None, None);
        let mut record = processing::Record {
            event_id: uuid::Uuid::nil(),
            engine_id: uuid::Uuid::nil(),
            status: processing::ProcessingStatus::Processed,
            error: None,
            lease_id: None,
            retry_after_seconds: None,
        };
        for (name, value) in fields {
            match name.as_str() {
                "eventId" => event_id = Some(value.uuid()?),
                "engineId" => engine_id = Some(value.uuid()?),
                "status" => {
                    let name = match value {
                        async_graphql::Value::Enum(name) => name.as_str(),
                        async_graphql::Value::String(name) => name.as_str(),
                        _ => return None,
                    };
                    status = Some(processing::ProcessingStatus::parse(name)?);
                }
                "error" => record.error = value.opt_string()?,
                "leaseId" => {
                    record.lease_id = match value {
                        async_graphql::Value::Null => None,
                        value => Some(value.uuid()?),
                    }
                }
                "retryAfterSeconds" => record.retry_after_seconds = value.opt_i32()?,
                _ => return None,
            }
        }
        record.event_id = event_id?;
        record.engine_id = engine_id?;
        record.status = status?;
        Some(record)
    }
}

/// An argument's value as [`Arg::resolve_in`] finds it.
enum Resolved<'a> {
    Value(&'a async_graphql::Value),
    /// A variable's JSON text, not decoded yet.
    Raw(&'a RawValue),
}

impl Resolved<'_> {
    /// The value async-graphql would have decoded; none for text it would refuse.
    fn decoded(&self) -> Option<Cow<'_, async_graphql::Value>> {
        match self {
            Resolved::Value(value) => Some(Cow::Borrowed(*value)),
            Resolved::Raw(raw) => serde_json::from_str(raw.get()).ok().map(Cow::Owned),
        }
    }
}

impl<'a> Resolved<'a> {
    /// A `JSON` argument as text: the variable's as the request gave it (so
    /// it is not parsed here), or the literal's or parsed value's serialized.
    fn json_text(self) -> Option<Cow<'a, RawValue>> {
        match self {
            Resolved::Raw(raw) => Some(Cow::Borrowed(raw)),
            Resolved::Value(value) => serde_json::value::to_raw_value(&value.json()?)
                .ok()
                .map(Cow::Owned),
        }
    }
}

/// Each method decodes as async-graphql would (from the same JSON text,
/// through the same `Deserialize`) and then as the value's own method does.
impl Decode for Resolved<'_> {
    fn uuid(&self) -> Option<uuid::Uuid> {
        self.decoded()?.uuid()
    }

    fn opt_i32(&self) -> Option<Option<i32>> {
        self.decoded()?.opt_i32()
    }

    fn opt_i64(&self) -> Option<Option<i64>> {
        self.decoded()?.opt_i64()
    }

    fn opt_string(&self) -> Option<Option<String>> {
        self.decoded()?.opt_string()
    }

    fn opt_strings(&self) -> Option<Option<Vec<String>>> {
        self.decoded()?.opt_strings()
    }

    fn event_order(&self) -> Option<event_svc::EventOrder> {
        self.decoded()?.event_order()
    }

    fn json(&self) -> Option<Value> {
        match self {
            Resolved::Value(value) => value.json(),
            // async-graphql's value of any JSON text converts back to the
            // value that text parses to.
            Resolved::Raw(raw) => serde_json::from_str(raw.get()).ok(),
        }
    }

    fn event_input(&self) -> Option<EventInput> {
        self.decoded()?.event_input()
    }

    fn record(&self) -> Option<processing::Record> {
        self.decoded()?.record()
    }
}

impl Arg {
    /// The argument's value: a literal, or the variable's (its default when
    /// the request gives none); none when it is absent.
    fn resolve<'a>(&'a self, variables: &'a Variables) -> Option<&'a async_graphql::Value> {
        match self {
            Arg::Absent => None,
            Arg::Literal(value) => Some(value),
            Arg::Variable { name, default } => variables.get(name).or(default.as_ref()),
        }
    }

    /// [`Arg::resolve`] for variables of either kind.
    fn resolve_in<'a>(&'a self, variables: &'a Vars<'a>) -> Option<Resolved<'a>> {
        match (self, variables) {
            (_, Vars::Parsed(parsed)) => self.resolve(parsed).map(Resolved::Value),
            (Arg::Variable { name, default }, Vars::Raw(raw)) => match raw.get(name.as_str()) {
                Some(text) => Some(Resolved::Raw(text)),
                None => default.as_ref().map(Resolved::Value),
            },
            (Arg::Absent, Vars::Raw(_)) => None,
            (Arg::Literal(value), Vars::Raw(_)) => Some(Resolved::Value(value)),
        }
    }
}
