//! The compiled path's JSON: written straight into one buffer, the way
//! async-graphql would serialize the same response (`{"data":{...}}`,
//! fields in selection order, UUIDs hyphenated, times in RFC 3339 with
//! `+00:00`, JSON fields as their text).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::plan::{
    ConnectionField, ConnectionSelection, EdgeField, EngineField, EventField, Key, PageInfoField,
    ProcessingField, TypeField,
};
use crate::entity::event_instance::Row;
use crate::entity::{event_processing, event_type};
use crate::service::Ctx;
use crate::service::engine::SavedEngine;
use crate::service::event::EventCursor;
use crate::service::page::{CursorKey, Page};

/// The event types named `names`, by name, when `wanted`; none when one is
/// missing (the general path then reports it).
pub(super) async fn types_of<'a>(
    ctx: &Ctx,
    wanted: bool,
    names: impl Iterator<Item = &'a str>,
) -> Option<HashMap<String, Arc<event_type::Model>>> {
    let mut types = HashMap::new();
    if !wanted {
        return Some(types);
    }
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    names.dedup();
    for found in crate::service::event_type::get_many(ctx, &names)
        .await
        .ok()?
    {
        types.insert(found.name.clone(), found);
    }
    names
        .iter()
        .all(|n| types.contains_key(*n))
        .then_some(types)
}

/// A response being written.
pub(super) struct Out(String);

impl Out {
    /// `{"data":{"<key>":` written; the root field's value comes next.
    pub fn response(key: &str) -> Self {
        let mut out = Self::data();
        out.key(true, key);
        out
    }

    /// `{"data":{` written; root fields come next, each after its
    /// [`Out::key`].
    pub fn data() -> Self {
        let mut out = Out(String::with_capacity(4096));
        out.0.push_str(r#"{"data":{"#);
        out
    }

    /// The body, closed.
    pub fn finish(mut self) -> String {
        self.0.push_str("}}");
        self.0
    }

    fn raw(&mut self, text: &str) {
        self.0.push_str(text);
    }

    fn string(&mut self, text: &str) {
        // Text without a character that JSON escapes (`"`, `\`, a control
        // character; keys, names and ids rarely hold one) is written as it
        // is, other text as async-graphql's serializer writes it (serde_json).
        if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.0.push('"');
            self.0.push_str(text);
            self.0.push('"');
        } else {
            let escaped = serde_json::to_string(text).expect("strings serialize");
            self.0.push_str(&escaped);
        }
    }

    /// A root field's key (after a comma unless `first`); its value comes next.
    pub fn key(&mut self, first: bool, key: &str) {
        if !first {
            self.0.push(',');
        }
        self.string(key);
        self.0.push(':');
    }

    /// [`Out::key`] for a field of a plan's selection, its key written already.
    fn field(&mut self, first: bool, key: &Key) {
        if !first {
            self.0.push(',');
        }
        self.0.push_str(key.written());
    }

    fn number(&mut self, n: impl std::fmt::Display) {
        write!(self.0, "{n}").expect("writing to a String");
    }

    fn bool(&mut self, b: bool) {
        self.0.push_str(if b { "true" } else { "false" });
    }

    fn null(&mut self) {
        self.0.push_str("null");
    }

    fn uuid(&mut self, id: Uuid) {
        self.0.push('"');
        self.0
            .push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        self.0.push('"');
    }

    fn time(&mut self, at: DateTime<Utc>) {
        self.0.push('"');
        self.0.push_str(&at.to_rfc3339());
        self.0.push('"');
    }

    fn opt_uuid(&mut self, id: Option<Uuid>) {
        match id {
            Some(id) => self.uuid(id),
            None => self.null(),
        }
    }

    fn opt_string(&mut self, text: Option<&str>) {
        match text {
            Some(text) => self.string(text),
            None => self.null(),
        }
    }
}

/// An `EventConnection` of `page`.
pub(super) fn connection<R: Row>(
    out: &mut Out,
    selection: &ConnectionSelection,
    page: &Page<EventCursor, R>,
    had_cursor: bool,
    types: &HashMap<String, Arc<event_type::Model>>,
) -> Option<()> {
    // Room for the page up front: growing a 20 KB body by doubling copied
    // it three times. A payload is its text; what else an event writes is
    // mostly under 256 bytes.
    let payloads: usize = page
        .rows
        .iter()
        .map(|(_, e)| e.payload().as_str().len())
        .sum();
    out.0.reserve(payloads + 256 * page.rows.len());
    out.raw("{");
    for (i, (key, field)) in selection.fields.iter().enumerate() {
        out.field(i == 0, key);
        match field {
            ConnectionField::Nodes(events) => {
                out.raw("[");
                for (n, (_, e)) in page.rows.iter().enumerate() {
                    if n > 0 {
                        out.raw(",");
                    }
                    event(out, &events.fields, e, types)?;
                }
                out.raw("]");
            }
            ConnectionField::Edges(edge) => {
                out.raw("[");
                for (n, (cursor, e)) in page.rows.iter().enumerate() {
                    if n > 0 {
                        out.raw(",");
                    }
                    out.raw("{");
                    for (j, (key, field)) in edge.iter().enumerate() {
                        out.field(j == 0, key);
                        match field {
                            EdgeField::Cursor => out.string(&cursor.encode()),
                            EdgeField::Node(events) => event(out, &events.fields, e, types)?,
                        }
                    }
                    out.raw("}");
                }
                out.raw("]");
            }
            ConnectionField::PageInfo(info) => {
                out.raw("{");
                for (j, (key, field)) in info.iter().enumerate() {
                    out.field(j == 0, key);
                    match field {
                        PageInfoField::HasPreviousPage => out.bool(had_cursor),
                        PageInfoField::HasNextPage => out.bool(page.has_next),
                        PageInfoField::StartCursor => {
                            out.opt_string(page.rows.first().map(|(c, _)| c.encode()).as_deref())
                        }
                        PageInfoField::EndCursor => {
                            out.opt_string(page.rows.last().map(|(c, _)| c.encode()).as_deref())
                        }
                    }
                }
                out.raw("}");
            }
        }
    }
    out.raw("}");
    Some(())
}

/// An `Event` with `fields`; none when `e` is a head and `fields` ask for
/// more (which [`super::plan::EventSelection::head_only`] rules out).
pub(super) fn event<R: Row>(
    out: &mut Out,
    fields: &[(Key, EventField)],
    e: &R,
    types: &HashMap<String, Arc<event_type::Model>>,
) -> Option<()> {
    out.raw("{");
    for (i, (key, field)) in fields.iter().enumerate() {
        out.field(i == 0, key);
        match field {
            EventField::Id => out.uuid(e.id()),
            EventField::RunId => out.uuid(e.whole()?.run_id),
            EventField::Sequence => out.number(e.sequence()),
            EventField::EventType => out.string(e.event_type()),
            EventField::Priority => out.number(e.priority()),
            EventField::Payload => out.raw(e.payload().as_str()),
            EventField::SourceEngineId => out.opt_uuid(e.whole()?.source_engine_id),
            EventField::ParentEventId => out.opt_uuid(e.whole()?.parent_event_id),
            EventField::TargetEngineId => out.opt_uuid(e.whole()?.target_engine_id),
            EventField::TargetEngineType => {
                out.opt_string(e.whole()?.target_engine_type.as_deref())
            }
            EventField::IdempotencyKey => out.opt_string(e.whole()?.idempotency_key.as_deref()),
            EventField::CreatedAt => out.time(e.whole()?.created_at),
            EventField::DeliverAt => match e.whole()?.deliver_at {
                Some(at) => out.time(at),
                None => out.null(),
            },
            EventField::PartitionKey => out.opt_string(e.whole()?.partition_key.as_deref()),
            EventField::Type(type_fields) => {
                event_type(out, type_fields, types.get(e.event_type())?);
            }
        }
    }
    out.raw("}");
    Some(())
}

fn event_type(out: &mut Out, fields: &[(Key, TypeField)], t: &event_type::Model) {
    out.raw("{");
    for (i, (key, field)) in fields.iter().enumerate() {
        out.field(i == 0, key);
        match field {
            TypeField::Name => out.string(&t.name),
            TypeField::Category => out.string(&t.category),
            TypeField::EngineType => out.opt_string(t.engine_type.as_deref()),
            TypeField::Description => out.string(&t.description),
            TypeField::PayloadSchema => match &t.payload_schema {
                Some(schema) => out.raw(&schema.to_string()),
                None => out.null(),
            },
            TypeField::DefaultPriority => out.number(t.default_priority),
            TypeField::MaxAttempts => out.number(t.max_attempts),
            TypeField::LeaseSeconds => out.number(t.lease_seconds),
            TypeField::RetryDelaySeconds => out.number(t.retry_delay_seconds),
        }
    }
    out.raw("}");
}

/// A `Processing` record with `fields`.
pub(super) fn processing(
    out: &mut Out,
    fields: &[(Key, ProcessingField)],
    p: &event_processing::Model,
) {
    out.raw("{");
    for (i, (key, field)) in fields.iter().enumerate() {
        out.field(i == 0, key);
        match field {
            ProcessingField::EventId => out.uuid(p.event_id),
            ProcessingField::EngineId => out.uuid(p.engine_id),
            ProcessingField::Status => out.string(p.status.as_str()),
            ProcessingField::Error => out.opt_string(p.error.as_deref()),
            ProcessingField::Attempts => out.number(p.attempts),
            ProcessingField::ProcessedAt => out.time(p.processed_at),
            ProcessingField::RunSequence => out.number(p.run_sequence),
        }
    }
    out.raw("}");
}

/// Whether `fields` ask for the engine's state.
pub(super) fn selects_state(fields: &[(Key, EngineField)]) -> bool {
    fields
        .iter()
        .any(|(_, field)| matches!(field, EngineField::State))
}

/// An `EngineInstance` with `fields`, after a save of `state` (which must
/// be there when [`selects_state`]).
pub(super) fn engine(
    out: &mut Out,
    fields: &[(Key, EngineField)],
    e: &SavedEngine,
    state: Option<&Value>,
) -> Option<()> {
    out.raw("{");
    for (i, (key, field)) in fields.iter().enumerate() {
        out.field(i == 0, key);
        match field {
            EngineField::EngineId => out.uuid(e.engine_id),
            EngineField::RunId => out.uuid(e.run_id),
            EngineField::EngineType => out.string(&e.engine_type),
            EngineField::State => out.raw(&state?.to_string()),
            EngineField::Version => out.number(e.version),
            EngineField::RegisteredAt => out.time(e.registered_at),
            EngineField::UpdatedAt => out.time(e.updated_at),
            EngineField::LastSeenAt => out.time(e.last_seen_at),
        }
    }
    out.raw("}");
    Some(())
}

#[cfg(test)]
mod tests {
    use super::Out;

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut texts: Vec<String> = (0u32..0x80)
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .collect();
        texts.extend(
            [
                "",
                "eventType",
                "caf\u{e9} \u{2028} \u{1f600}",
                "\"\"",
                "\\",
                "\u{7f}",
            ]
            .map(String::from),
        );
        for text in texts {
            let mut out = Out(String::new());
            out.string(&text);
            assert_eq!(out.0, serde_json::to_string(&text).unwrap(), "{text:?}");
        }
    }
}
