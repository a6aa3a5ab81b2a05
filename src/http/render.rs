//! One serialization per event for all websocket subscriptions that select
//! it the same way. An `events` subscription whose selection set uses no
//! variables renders an event identically for every subscriber that sent
//! the same query text (the variables of the root field only choose which
//! events arrive), so the first subscriber's serialized payload is kept
//! here, keyed by event and query, and the others reuse it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use async_graphql::Positioned;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use async_graphql_value::Value as AstValue;
use uuid::Uuid;

/// Payloads kept: enough for every subscriber of a burst to find its event.
const CAPACITY: usize = 4096;

/// Serialized `next` payloads by (event id, query shape).
#[derive(Default)]
pub struct RenderCache {
    /// A std Mutex: held for a lookup or an insert, never across an await.
    entries: Mutex<Entries>,
    /// Payloads serialized (cache misses).
    serialized: AtomicU64,
    /// Payloads reused (cache hits).
    reused: AtomicU64,
}

/// A payload, rendered by whichever subscriber asks first.
type Slot = Arc<OnceLock<Arc<str>>>;

#[derive(Default)]
struct Entries {
    map: HashMap<(Uuid, Arc<str>), Slot>,
    order: VecDeque<(Uuid, Arc<str>)>,
}

impl RenderCache {
    /// The payload of `event_id` for `shape`, serialized by `render` only the
    /// first time it is asked for.
    pub fn payload(
        &self,
        event_id: Uuid,
        shape: &Arc<str>,
        render: impl FnOnce() -> String,
    ) -> Arc<str> {
        let key = (event_id, shape.clone());
        let slot = {
            let mut entries = self.entries.lock().expect("render cache poisoned");
            match entries.map.get(&key) {
                Some(slot) => slot.clone(),
                None => {
                    let slot = Slot::default();
                    entries.map.insert(key.clone(), slot.clone());
                    entries.order.push_back(key);
                    while entries.order.len() > CAPACITY {
                        if let Some(old) = entries.order.pop_front() {
                            entries.map.remove(&old);
                        }
                    }
                    slot
                }
            }
        };
        // Outside the map's lock; subscribers of the same event wait for the
        // first one's rendering instead of rendering again.
        let mut rendered_here = false;
        let payload = slot
            .get_or_init(|| {
                rendered_here = true;
                render().into()
            })
            .clone();
        let counter = if rendered_here {
            &self.serialized
        } else {
            &self.reused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        payload
    }

    /// (payloads serialized, payloads reused) since start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.serialized.load(Ordering::Relaxed),
            self.reused.load(Ordering::Relaxed),
        )
    }
}

/// Whether a query may select a field that differs per subscriber for the
/// same event: `Event.delivery`, each engine's own lease. A plain text test,
/// so it errs on the side of rendering per subscriber.
pub fn selects_delivery(query: &str) -> bool {
    query.contains("delivery")
}

/// The cache key of a subscription's rendering: its query text and
/// operation name, when what it selects of each event uses no variable.
/// `document` is `query` parsed.
pub fn shape_of(
    document: &ExecutableDocument,
    query: &str,
    operation_name: Option<&str>,
) -> Option<Arc<str>> {
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => operation,
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name)?,
        (DocumentOperations::Multiple(_), None) => return None,
    };
    if operation.node.ty != OperationType::Subscription {
        return None;
    }
    for root in &operation.node.selection_set.node.items {
        let Selection::Field(field) = &root.node else {
            return None;
        };
        // The root field's arguments may differ: they only pick the events.
        let directive_args = field.node.directives.iter().flat_map(|d| &d.node.arguments);
        if has_variables(directive_args.map(|(_, v)| v))
            || uses_variables(&field.node.selection_set.node, document)
        {
            return None;
        }
    }
    Some(format!("{}\n{query}", operation_name.unwrap_or("")).into())
}

fn has_variables<'a>(mut values: impl Iterator<Item = &'a Positioned<AstValue>>) -> bool {
    values.any(|v| v.node.clone().into_const().is_none())
}

fn uses_variables(set: &SelectionSet, document: &ExecutableDocument) -> bool {
    set.items.iter().any(|selection| {
        let directive_args = selection
            .node
            .directives()
            .iter()
            .flat_map(|d| &d.node.arguments);
        if has_variables(directive_args.map(|(_, v)| v)) {
            return true;
        }
        match &selection.node {
            Selection::Field(field) => {
                has_variables(field.node.arguments.iter().map(|(_, v)| v))
                    || uses_variables(&field.node.selection_set.node, document)
            }
            Selection::InlineFragment(fragment) => {
                uses_variables(&fragment.node.selection_set.node, document)
            }
            Selection::FragmentSpread(spread) => document
                .fragments
                .get(&spread.node.fragment_name.node)
                .is_none_or(|f| uses_variables(&f.node.selection_set.node, document)),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    /// `shape_of` for a query text; none when it does not parse.
    fn shape_of(query: &str, operation_name: Option<&str>) -> Option<Arc<str>> {
        let document = async_graphql::parser::parse_query(query).ok()?;
        super::shape_of(&document, query, operation_name)
    }

    #[test]
    fn only_variable_free_selections_share_a_rendering() {
        let plain =
            "subscription($r: UUID!, $e: UUID) { events(runId: $r, engineId: $e) { id payload } }";
        assert!(shape_of(plain, None).is_some());
        let with_fragment =
            "subscription($r: UUID!) { events(runId: $r) { ...F } } fragment F on Event { id }";
        assert!(shape_of(with_fragment, None).is_some());
        let variable_inside = "subscription($r: UUID!, $s: Boolean!) { events(runId: $r) { id payload @include(if: $s) } }";
        assert!(shape_of(variable_inside, None).is_none());
        let variable_in_fragment = "subscription($r: UUID!, $f: Int) { events(runId: $r) { ...F } } fragment F on Event { run { events(first: $f) { nodes { id } } } }";
        assert!(shape_of(variable_in_fragment, None).is_none());
        assert!(
            shape_of("{ __typename }", None).is_none(),
            "queries are not shared"
        );
        assert!(shape_of("not graphql", None).is_none());
    }
}
