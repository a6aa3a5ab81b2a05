//! Which documents compile, and into what: the shapes the compiled path
//! answers, read off a parsed document once.

use std::collections::HashSet;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Field, OperationDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::{Name, Pos, Positioned, Value};
use async_graphql_value::Value as AstValue;

/// A compiled document: its operation's name and what its root field does
/// (its root fields, for a batch of records).
pub struct Plan {
    /// The operation's name, if it has one (a request may name only it).
    pub operation: Option<Name>,
    /// The (first) root field's response key.
    pub(super) key: String,
    /// Where the (first) root field is in the document (errors point at it).
    pub(super) pos: Pos,
    pub(super) root: Root,
}

/// The root fields the compiled path answers.
pub(super) enum Root {
    /// `Query.events(runId, orderBy, first, after)`, without a filter.
    Events {
        run_id: Arg,
        order: Arg,
        first: Arg,
        after: Arg,
        selection: ConnectionSelection,
    },
    /// `Subscription.events(...)` of a reader (no `engineId`), selecting
    /// event fields but not the event's `type`.
    EventsSubscription(Box<EventsSubscription>),
    /// `Mutation.publishEvent(input)`.
    PublishEvent {
        input: Arg,
        selection: EventSelection,
    },
    /// `Mutation.saveEngineState(engineId, state, expectedVersion)`.
    SaveEngineState {
        engine_id: Arg,
        state: Arg,
        expected_version: Arg,
        selection: Vec<(Key, EngineField)>,
    },
    /// `Mutation.recordProcessing(input)`, once or under several aliases:
    /// an engine recording a batch of events.
    Records(Vec<RecordField>),
}

/// One `recordProcessing` root field.
pub(super) struct RecordField {
    pub key: String,
    pub input: Arg,
    pub selection: Vec<(Key, ProcessingField)>,
}

/// A field of `Processing`.
pub(super) enum ProcessingField {
    EventId,
    EngineId,
    Status,
    Error,
    Attempts,
    ProcessedAt,
    RunSequence,
}

/// The arguments and selection of a compiled `events` subscription.
pub(super) struct EventsSubscription {
    pub run_id: Arg,
    pub engine_id: Arg,
    pub event_types: Arg,
    pub min_priority: Arg,
    pub after_sequence: Arg,
    pub max_in_flight: Arg,
    pub lease_seconds: Arg,
    pub selection: EventSelection,
}

/// Where an argument's value comes from.
#[derive(Clone)]
pub(super) enum Arg {
    /// Not given.
    Absent,
    /// Written in the document.
    Literal(Value),
    /// A variable, with the default its definition gives.
    Variable { name: Name, default: Option<Value> },
}

/// The fields selected on an `Event`, by response key, in order.
pub(super) struct EventSelection {
    pub fields: Vec<(Key, EventField)>,
}

impl EventSelection {
    /// Whether an event's head (`event_instance::Head`) has every field
    /// selected.
    pub fn head_only(&self) -> bool {
        self.fields.iter().all(|(_, field)| {
            matches!(
                field,
                EventField::Id
                    | EventField::Sequence
                    | EventField::EventType
                    | EventField::Priority
                    | EventField::Payload
                    | EventField::Type(_)
            )
        })
    }
}

/// A field of `Event` the compiled path writes.
pub(super) enum EventField {
    Id,
    RunId,
    Sequence,
    EventType,
    Priority,
    Payload,
    SourceEngineId,
    ParentEventId,
    TargetEngineId,
    TargetEngineType,
    IdempotencyKey,
    CreatedAt,
    DeliverAt,
    PartitionKey,
    Type(Vec<(Key, TypeField)>),
}

/// A field of `EventType`.
pub(super) enum TypeField {
    Name,
    Category,
    EngineType,
    Description,
    PayloadSchema,
    DefaultPriority,
    MaxAttempts,
    LeaseSeconds,
    RetryDelaySeconds,
}

/// The fields selected on an `EventConnection`.
pub(super) struct ConnectionSelection {
    pub fields: Vec<(Key, ConnectionField)>,
}

impl ConnectionSelection {
    /// Whether the page can be read as events' heads: every event selected
    /// asks only for what a head has (cursors need no more).
    pub fn head_only(&self) -> bool {
        self.fields.iter().all(|(_, field)| match field {
            ConnectionField::Nodes(events) => events.head_only(),
            ConnectionField::Edges(edge) => edge.iter().all(|(_, field)| match field {
                EdgeField::Cursor => true,
                EdgeField::Node(events) => events.head_only(),
            }),
            ConnectionField::PageInfo(_) => true,
        })
    }
}

/// A field of `EventConnection`.
pub(super) enum ConnectionField {
    Nodes(EventSelection),
    Edges(Vec<(Key, EdgeField)>),
    PageInfo(Vec<(Key, PageInfoField)>),
}

/// A field of `EventEdge`.
pub(super) enum EdgeField {
    Cursor,
    Node(EventSelection),
}

/// A field of `PageInfo`.
pub(super) enum PageInfoField {
    HasPreviousPage,
    HasNextPage,
    StartCursor,
    EndCursor,
}

/// A field of `EngineInstance`.
pub(super) enum EngineField {
    EngineId,
    RunId,
    EngineType,
    State,
    Version,
    RegisteredAt,
    UpdatedAt,
    LastSeenAt,
}

impl Plan {
    /// The plan of `document`, when it is one of the compiled shapes: one
    /// operation, one root field (or only `recordProcessing` ones), no
    /// fragments or directives, only the fields above.
    pub fn compile(document: &ExecutableDocument) -> Option<Plan> {
        if !document.fragments.is_empty() {
            return None;
        }
        let (operation, definition) = match &document.operations {
            DocumentOperations::Single(definition) => (None, &definition.node),
            DocumentOperations::Multiple(operations) if operations.len() == 1 => {
                let (name, definition) = operations.iter().next()?;
                (Some(name.clone()), &definition.node)
            }
            DocumentOperations::Multiple(_) => return None,
        };
        if !definition.directives.is_empty() {
            return None;
        }
        if definition.ty == OperationType::Mutation
            && let Some(plan) = records(definition, &operation)
        {
            return Some(plan);
        }
        let [root] = definition.selection_set.node.items.as_slice() else {
            return None;
        };
        let field = plain_field(root)?;
        let pos = match &root.node {
            Selection::Field(field) => field.pos,
            _ => return None,
        };
        let args = Args::of(field, definition)?;
        let root = match (definition.ty, field.name.node.as_str()) {
            (OperationType::Query, "events") => {
                args.only(&["runId", "orderBy", "first", "after"])?;
                Root::Events {
                    run_id: args.get("runId"),
                    order: args.get("orderBy"),
                    first: args.get("first"),
                    after: args.get("after"),
                    selection: connection(&field.selection_set.node)?,
                }
            }
            (OperationType::Subscription, "events") => {
                args.only(&[
                    "runId",
                    "engineId",
                    "eventTypes",
                    "minPriority",
                    "afterSequence",
                    "maxInFlight",
                    "leaseSeconds",
                ])?;
                let selection = event(&field.selection_set.node)?;
                if selection.types_selected() {
                    return None;
                }
                Root::EventsSubscription(Box::new(EventsSubscription {
                    run_id: args.get("runId"),
                    engine_id: args.get("engineId"),
                    event_types: args.get("eventTypes"),
                    min_priority: args.get("minPriority"),
                    after_sequence: args.get("afterSequence"),
                    max_in_flight: args.get("maxInFlight"),
                    lease_seconds: args.get("leaseSeconds"),
                    selection,
                }))
            }
            (OperationType::Mutation, "publishEvent") => {
                args.only(&["input"])?;
                Root::PublishEvent {
                    input: args.get("input"),
                    selection: event(&field.selection_set.node)?,
                }
            }
            (OperationType::Mutation, "saveEngineState") => {
                args.only(&["engineId", "state", "expectedVersion"])?;
                Root::SaveEngineState {
                    engine_id: args.get("engineId"),
                    state: args.get("state"),
                    expected_version: args.get("expectedVersion"),
                    selection: scalars(&field.selection_set.node, |name| {
                        Some(match name {
                            "engineId" => EngineField::EngineId,
                            "runId" => EngineField::RunId,
                            "engineType" => EngineField::EngineType,
                            "state" => EngineField::State,
                            "version" => EngineField::Version,
                            "registeredAt" => EngineField::RegisteredAt,
                            "updatedAt" => EngineField::UpdatedAt,
                            "lastSeenAt" => EngineField::LastSeenAt,
                            _ => return None,
                        })
                    })?,
                }
            }
            _ => return None,
        };
        Some(Plan {
            operation,
            key: response_key(field),
            pos,
            root,
        })
    }
}

impl Plan {
    /// Whether the plan answers a subscription (over a websocket only).
    pub fn is_subscription(&self) -> bool {
        matches!(self.root, Root::EventsSubscription(_))
    }
}

impl ConnectionSelection {
    /// Whether any event's `type` is selected (its event types are then read).
    pub fn types_selected(&self) -> bool {
        self.fields.iter().any(|(_, field)| match field {
            ConnectionField::Nodes(events) => events.types_selected(),
            ConnectionField::Edges(edge) => edge.iter().any(|(_, field)| match field {
                EdgeField::Node(events) => events.types_selected(),
                EdgeField::Cursor => false,
            }),
            ConnectionField::PageInfo(_) => false,
        })
    }
}

impl EventSelection {
    /// Whether the event's `type` is selected.
    pub fn types_selected(&self) -> bool {
        self.fields
            .iter()
            .any(|(_, field)| matches!(field, EventField::Type(_)))
    }
}

/// The plan of a mutation whose root fields are all `recordProcessing`,
/// each under its own response key.
fn records(definition: &OperationDefinition, operation: &Option<Name>) -> Option<Plan> {
    let items = &definition.selection_set.node.items;
    let mut keys = HashSet::with_capacity(items.len());
    let mut fields = Vec::with_capacity(items.len());
    let mut first = None;
    for item in items {
        let field = plain_field(item)?;
        if field.name.node != "recordProcessing" {
            return None;
        }
        let key = response_key(field);
        if !keys.insert(key.clone()) {
            return None;
        }
        let Selection::Field(positioned) = &item.node else {
            return None;
        };
        first.get_or_insert((key.clone(), positioned.pos));
        let args = Args::of(field, definition)?;
        args.only(&["input"])?;
        fields.push(RecordField {
            key,
            input: args.get("input"),
            selection: scalars(&field.selection_set.node, |name| {
                Some(match name {
                    "eventId" => ProcessingField::EventId,
                    "engineId" => ProcessingField::EngineId,
                    "status" => ProcessingField::Status,
                    "error" => ProcessingField::Error,
                    "attempts" => ProcessingField::Attempts,
                    "processedAt" => ProcessingField::ProcessedAt,
                    "runSequence" => ProcessingField::RunSequence,
                    _ => return None,
                })
            })?,
        });
    }
    let (key, pos) = first?;
    Some(Plan {
        operation: operation.clone(),
        key,
        pos,
        root: Root::Records(fields),
    })
}

/// A root field's arguments, with the operation's variable definitions.
struct Args<'a> {
    given: Vec<(&'a str, Arg)>,
}

impl<'a> Args<'a> {
    fn of(field: &'a Field, definition: &OperationDefinition) -> Option<Self> {
        let mut given = Vec::with_capacity(field.arguments.len());
        for (name, value) in &field.arguments {
            let name = name.node.as_str();
            if given.iter().any(|(seen, _)| *seen == name) {
                return None;
            }
            let arg = match &value.node {
                AstValue::Variable(variable) => {
                    let definition = definition
                        .variable_definitions
                        .iter()
                        .find(|d| d.node.name.node == *variable)?;
                    Arg::Variable {
                        name: variable.clone(),
                        default: definition.node.default_value().cloned(),
                    }
                }
                // A literal with a variable inside (an input object's
                // field) is left to the general path.
                literal => Arg::Literal(literal.clone().into_const()?),
            };
            given.push((name, arg));
        }
        Some(Args { given })
    }

    /// None when an argument outside `known` is given.
    fn only(&self, known: &[&str]) -> Option<()> {
        self.given
            .iter()
            .all(|(name, _)| known.contains(name))
            .then_some(())
    }

    fn get(&self, name: &str) -> Arg {
        self.given
            .iter()
            .find(|(given, _)| *given == name)
            .map_or(Arg::Absent, |(_, arg)| arg.clone())
    }
}

/// The field of `selection`, when it is a field without directives.
fn plain_field(selection: &Positioned<Selection>) -> Option<&Field> {
    match &selection.node {
        Selection::Field(field) if field.node.directives.is_empty() => Some(&field.node),
        _ => None,
    }
}

/// A field's response key as the response writes it, `"key":`, escaped
/// once when the plan is made rather than for every object written.
#[derive(Debug, Clone)]
pub struct Key(String);

impl Key {
    fn new(name: &str) -> Self {
        let mut text = serde_json::to_string(name).expect("strings serialize");
        text.push(':');
        Key(text)
    }

    /// `"key":`.
    pub fn written(&self) -> &str {
        &self.0
    }
}

fn response_key(field: &Field) -> String {
    field
        .alias
        .as_ref()
        .map_or(&field.name.node, |alias| &alias.node)
        .to_string()
}

/// The fields of `set`, each compiled by `compile` (given its name and its
/// own selection set); none when one does not compile, takes arguments, or
/// shares its response key with another (which the general path merges).
fn fields<T>(
    set: &SelectionSet,
    mut compile: impl FnMut(&str, &SelectionSet) -> Option<T>,
) -> Option<Vec<(Key, T)>> {
    let mut keys = HashSet::with_capacity(set.items.len());
    let mut out = Vec::with_capacity(set.items.len());
    for item in &set.items {
        let field = plain_field(item)?;
        if !field.arguments.is_empty() {
            return None;
        }
        let key = response_key(field);
        let written = Key::new(&key);
        if !keys.insert(key) {
            return None;
        }
        out.push((
            written,
            compile(field.name.node.as_str(), &field.selection_set.node)?,
        ));
    }
    Some(out)
}

/// Leaf fields only, named by `leaf`.
fn scalars<T>(set: &SelectionSet, leaf: impl Fn(&str) -> Option<T>) -> Option<Vec<(Key, T)>> {
    fields(set, |name, sub| {
        if sub.items.is_empty() {
            leaf(name)
        } else {
            None
        }
    })
}

fn event(set: &SelectionSet) -> Option<EventSelection> {
    let fields = fields(set, |name, sub| {
        let leaf = |field| sub.items.is_empty().then_some(field);
        match name {
            "id" => leaf(EventField::Id),
            "runId" => leaf(EventField::RunId),
            "sequence" => leaf(EventField::Sequence),
            "eventType" => leaf(EventField::EventType),
            "priority" => leaf(EventField::Priority),
            "payload" => leaf(EventField::Payload),
            "sourceEngineId" => leaf(EventField::SourceEngineId),
            "parentEventId" => leaf(EventField::ParentEventId),
            "targetEngineId" => leaf(EventField::TargetEngineId),
            "targetEngineType" => leaf(EventField::TargetEngineType),
            "idempotencyKey" => leaf(EventField::IdempotencyKey),
            "createdAt" => leaf(EventField::CreatedAt),
            "deliverAt" => leaf(EventField::DeliverAt),
            "partitionKey" => leaf(EventField::PartitionKey),
            "type" if !sub.items.is_empty() => scalars(sub, |name| {
                Some(match name {
                    "name" => TypeField::Name,
                    "category" => TypeField::Category,
                    "engineType" => TypeField::EngineType,
                    "description" => TypeField::Description,
                    "payloadSchema" => TypeField::PayloadSchema,
                    "defaultPriority" => TypeField::DefaultPriority,
                    "maxAttempts" => TypeField::MaxAttempts,
                    "leaseSeconds" => TypeField::LeaseSeconds,
                    "retryDelaySeconds" => TypeField::RetryDelaySeconds,
                    _ => return None,
                })
            })
            .map(EventField::Type),
            _ => None,
        }
    })?;
    Some(EventSelection { fields })
}

fn connection(set: &SelectionSet) -> Option<ConnectionSelection> {
    let fields = fields(set, |name, sub| match name {
        "nodes" => event(sub).map(ConnectionField::Nodes),
        "edges" => fields(sub, |name, sub| match name {
            "cursor" if sub.items.is_empty() => Some(EdgeField::Cursor),
            "node" => event(sub).map(EdgeField::Node),
            _ => None,
        })
        .map(ConnectionField::Edges),
        "pageInfo" => scalars(sub, |name| {
            Some(match name {
                "hasPreviousPage" => PageInfoField::HasPreviousPage,
                "hasNextPage" => PageInfoField::HasNextPage,
                "startCursor" => PageInfoField::StartCursor,
                "endCursor" => PageInfoField::EndCursor,
                _ => return None,
            })
        })
        .map(ConnectionField::PageInfo),
        _ => None,
    })?;
    Some(ConnectionSelection { fields })
}
