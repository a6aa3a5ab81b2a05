//! Runs GraphQL operations for the transports. Around the schema it keeps
//! parsed documents by query text (with their compiled plans, see
//! `compiled`), gives every error an `extensions.code`, counts operations
//! and error codes, and names the operation in the current tracing span.
//!
//! This is done here rather than in async-graphql extensions on purpose: an
//! extension of any kind sends every resolved field (and every list item)
//! through the extension chain, two boxed futures and two registry lookups
//! per field, which a 50-event page pays 300 times.

use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use async_graphql::parser::parse_query;
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, Response};
use futures::stream::{Stream, StreamExt};
use lru::LruCache;

pub use super::compiled::Vars;

use super::error::{add_code, catching_panics};
use super::{AppSchema, RequestLoader, compiled};
use crate::delivery::Hub;
use crate::delivery::subscription::Delivered;
use crate::error::AppResult;
use crate::metrics::{Metrics, Transport};
use crate::service::Ctx;
use crate::service::auth::Principal;

/// Distinct query texts whose parsed documents are kept.
const DOCUMENTS: usize = 256;

/// Longer query texts are parsed every time: the cache's memory stays bounded
/// by `DOCUMENTS` times this, whatever clients send.
const MAX_CACHED_QUERY_BYTES: usize = 16 * 1024;

/// The schema, as the transports run it.
#[derive(Clone)]
pub struct Executor {
    schema: AppSchema,
    documents: Arc<Documents>,
    metrics: Arc<Metrics>,
    /// Event delivery, for the compiled subscriptions.
    hub: Arc<Hub>,
}

impl Executor {
    /// Runs `schema`, counting into `metrics`; compiled subscriptions take
    /// their events from `hub`.
    pub fn new(schema: AppSchema, metrics: Arc<Metrics>, hub: Arc<Hub>) -> Self {
        Executor {
            schema,
            documents: Arc::new(Documents::new(DOCUMENTS)),
            metrics,
            hub,
        }
    }

    /// `query` parsed, from the cache when its text was seen before; none
    /// when it does not parse.
    pub fn document(&self, query: &str) -> Option<Arc<ExecutableDocument>> {
        self.documents.document(query)
    }

    /// Runs one request sent over HTTP for `principal`: answered by its
    /// document's compiled plan when it has one that the general path has
    /// run without errors before (and the plan takes the request), else by
    /// the schema. A panic inside it becomes an `INTERNAL` error of this
    /// request only.
    pub async fn execute(&self, ctx: &Ctx, principal: Principal, request: Request) -> Answer {
        let compiled = self
            .execute_compiled(
                ctx,
                &principal,
                &request.query,
                request.operation_name.as_deref(),
                &Vars::Parsed(&request.variables),
            )
            .await;
        match compiled {
            Some(body) => Answer::Compiled(body),
            None => Answer::General(self.execute_general(principal, request).await),
        }
    }

    /// Answers a request on its document's compiled plan, as `execute`
    /// would; none, with nothing done, when the general path must answer
    /// it. The HTTP transport gives the variables as the body's JSON text.
    pub async fn execute_compiled(
        &self,
        ctx: &Ctx,
        principal: &Principal,
        query: &str,
        operation_name: Option<&str>,
        variables: &Vars<'_>,
    ) -> Option<String> {
        let (operation, entry) = self.documents.prepare_parts(query, operation_name);
        let plan = entry.as_deref()?.proven_plan(operation_name)?;
        let body = compiled::run(plan, ctx, principal, variables).await?;
        self.metrics
            .request(Transport::Http, operation.as_deref(), true);
        self.metrics.compiled();
        Some(body)
    }

    /// Runs `request` through the schema only.
    pub async fn execute_general(&self, principal: Principal, mut request: Request) -> Response {
        let (operation, entry) = self.documents.prepare(&request);
        let query = request.query.clone();
        give_parsed(&mut request, entry.as_deref());
        let request = request.data(RequestLoader::cached()).data(principal);
        let mut response = catching_panics(self.schema.execute(request)).await;
        add_codes(&mut response, &query);
        self.count(Transport::Http, operation.as_deref(), &response);
        if response.errors.is_empty()
            && let Some(entry) = entry
        {
            entry.proven.store(true, Ordering::Relaxed);
        }
        response
    }

    /// Starts a websocket subscription on its document's compiled plan, when
    /// the document has one that is proven and the plan takes the request;
    /// none when the general path (`execute_stream`) must run it.
    pub async fn subscribe(
        &self,
        ctx: &Ctx,
        request: &mut Request,
    ) -> Option<CompiledSubscription> {
        let (operation, entry) = self.documents.prepare(request);
        let entry = entry?;
        let plan = entry
            .proven_plan(request.operation_name.as_deref())
            .filter(|p| p.is_subscription())?;
        let events = compiled::subscribe(plan, ctx, &self.hub, &request.variables).await?;
        self.metrics.compiled();
        Some(CompiledSubscription {
            events: Box::pin(events),
            query: request.query.clone(),
            operation,
            entry,
            first: true,
            metrics: self.metrics.clone(),
        })
    }

    /// Runs one websocket operation: a query's or mutation's one response,
    /// or a subscription's responses. Its document is proven once it is past
    /// validation: a first response without errors, or a first poll that
    /// waits (for a subscription's events or a resolver's reads).
    pub fn execute_stream(
        &self,
        mut request: Request,
    ) -> impl Stream<Item = Response> + Send + use<> {
        let (operation, entry) = self.documents.prepare(&request);
        give_parsed(&mut request, entry.as_deref());
        let query = request.query.clone();
        let this = self.clone();
        let mut first = true;
        let mut responses = self
            .schema
            .execute_stream(request)
            .map(move |mut response| {
                add_codes(&mut response, &query);
                // The operation counts once, by its first response; its errors
                // count each time.
                if first {
                    first = false;
                    this.count(Transport::Websocket, operation.as_deref(), &response);
                } else {
                    this.count_errors(&response);
                }
                response
            });
        let mut proving = entry;
        futures::stream::poll_fn(move |cx| {
            let poll = responses.poll_next_unpin(cx);
            if let Some(entry) = proving.take() {
                let past_validation = match &poll {
                    Poll::Pending => true,
                    Poll::Ready(Some(response)) => response.errors.is_empty(),
                    Poll::Ready(None) => false,
                };
                if past_validation {
                    entry.proven.store(true, Ordering::Relaxed);
                }
            }
            poll
        })
    }

    fn count(&self, transport: Transport, operation: Option<&str>, response: &Response) {
        self.metrics
            .request(transport, operation, response.errors.is_empty());
        self.count_errors(response);
    }

    fn count_errors(&self, response: &Response) {
        for error in &response.errors {
            self.metrics.error(error_code(error));
        }
    }
}

/// What an HTTP request is answered with.
pub enum Answer {
    /// The body the compiled path wrote.
    Compiled(String),
    /// The schema's response.
    General(Response),
}

/// A websocket subscription answered by its compiled plan.
pub struct CompiledSubscription {
    events: Pin<Box<dyn Stream<Item = AppResult<Delivered>> + Send>>,
    /// The query text, which error codes name arguments from.
    query: String,
    operation: Option<String>,
    entry: Arc<Entry>,
    first: bool,
    metrics: Arc<Metrics>,
}

/// What a compiled subscription brings next.
pub enum Next {
    /// An event to send, rendered by `CompiledSubscription::render`.
    Event(Delivered),
    /// An error response, as the general path would send it; the stream ends after it.
    Error(Box<Response>),
}

impl CompiledSubscription {
    /// The next event or error; none once the stream has ended.
    pub async fn next(&mut self) -> Option<Next> {
        let item = self.events.next().await?;
        let first = std::mem::replace(&mut self.first, false);
        match item {
            Ok(delivered) => {
                if first {
                    self.metrics
                        .request(Transport::Websocket, self.operation.as_deref(), true);
                }
                Some(Next::Event(delivered))
            }
            Err(err) => {
                let plan = self
                    .entry
                    .plan
                    .as_ref()
                    .expect("a compiled entry has a plan");
                let mut response = compiled::stream_error(plan, err);
                add_codes(&mut response, &self.query);
                if first {
                    self.metrics
                        .request(Transport::Websocket, self.operation.as_deref(), false);
                }
                for error in &response.errors {
                    self.metrics.error(error_code(error));
                }
                Some(Next::Error(Box::new(response)))
            }
        }
    }

    /// The `next` payload of `event`, as the general path would write it.
    pub fn render(&self, event: &crate::entity::event_instance::Model) -> Option<String> {
        let plan = self.entry.plan.as_ref()?;
        compiled::render_event(plan, event)
    }
}

/// An error's `extensions.code`, or `OTHER`.
fn error_code(error: &async_graphql::ServerError) -> &str {
    error
        .extensions
        .as_ref()
        .and_then(|e| e.get("code"))
        .and_then(|code| match code {
            async_graphql::Value::String(code) => Some(code.as_str()),
            _ => None,
        })
        .unwrap_or("OTHER")
}

/// Spares the schema parsing `request` again.
fn give_parsed(request: &mut Request, entry: Option<&Entry>) {
    if let Some(entry) = entry {
        request.set_parsed_query(ExecutableDocument::clone(&entry.document));
    }
}

/// Gives each error of `response` its code; `query` names the arguments.
fn add_codes(response: &mut Response, query: &str) {
    for error in &mut response.errors {
        add_code(error, Some(query));
    }
}

/// Parsed documents by query text, least recently used out first.
struct Documents {
    /// A std Mutex: held for a lookup or an insert, never across an await.
    cache: Mutex<LruCache<String, Arc<Entry>>>,
}

/// A parsed document and its compiled plan, if it has one.
struct Entry {
    document: Arc<ExecutableDocument>,
    plan: Option<compiled::Plan>,
    /// Set once the general path has answered the document without errors:
    /// it is valid and within the limits, and the plan may answer it.
    proven: AtomicBool,
}

impl Entry {
    /// The plan, when it is proven and a request for `operation_name` runs
    /// its operation.
    fn proven_plan(&self, operation_name: Option<&str>) -> Option<&compiled::Plan> {
        let plan = self.plan.as_ref()?;
        let named = match (operation_name, &plan.operation) {
            (None, _) => true,
            (Some(asked), Some(name)) => asked == name.as_str(),
            (Some(_), None) => false,
        };
        (named && self.proven.load(Ordering::Relaxed)).then_some(plan)
    }
}

impl Documents {
    fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).expect("a cache holds something");
        Documents {
            cache: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// The entry of `request`'s document (from the cache when its text was
    /// seen before) and the operation's name: the one asked for, or the
    /// document's only one. The name is recorded into the current span. A
    /// text that does not parse has no entry: the schema reports why.
    fn prepare(&self, request: &Request) -> (Option<String>, Option<Arc<Entry>>) {
        self.prepare_parts(&request.query, request.operation_name.as_deref())
    }

    /// `prepare` for a request's query text and operation name.
    fn prepare_parts(
        &self,
        query: &str,
        operation_name: Option<&str>,
    ) -> (Option<String>, Option<Arc<Entry>>) {
        let entry = self.entry(query);
        let document = entry.as_ref().map(|e| &e.document);
        let name = operation_name.map(str::to_owned).or_else(|| {
            let document = document?;
            let mut operations = document.operations.iter();
            match (operations.next(), operations.next()) {
                (Some((Some(only), _)), None) => Some(only.to_string()),
                _ => None,
            }
        });
        // The request's span (HTTP) or the operation's (websocket) declares
        // the field; the logs of this request carry the name from now on.
        if let Some(name) = name.as_deref() {
            tracing::Span::current().record("operation", name);
        }
        (name, entry)
    }

    fn document(&self, query: &str) -> Option<Arc<ExecutableDocument>> {
        self.entry(query).map(|e| e.document.clone())
    }

    fn entry(&self, query: &str) -> Option<Arc<Entry>> {
        if let Some(entry) = self.cache.lock().expect("documents poisoned").get(query) {
            return Some(entry.clone());
        }
        let document = parse_query(query).ok()?;
        let entry = Arc::new(Entry {
            plan: compiled::Plan::compile(&document),
            document: Arc::new(document),
            proven: AtomicBool::new(false),
        });
        if query.len() <= MAX_CACHED_QUERY_BYTES {
            self.cache
                .lock()
                .expect("documents poisoned")
                .put(query.to_owned(), entry.clone());
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::Documents;

    #[test]
    fn keeps_the_most_recent_texts_and_never_a_long_one() {
        let documents = Documents::new(2);
        for query in ["{ a }", "{ b }", "{ a }", "{ c }"] {
            assert!(documents.document(query).is_some());
        }
        let cache = documents.cache.lock().unwrap();
        assert!(cache.contains("{ a }") && cache.contains("{ c }"));
        assert!(!cache.contains("{ b }"));
        drop(cache);

        let long = format!("{{ a{} }}", " ".repeat(super::MAX_CACHED_QUERY_BYTES));
        assert!(documents.document(&long).is_some());
        assert!(!documents.cache.lock().unwrap().contains(&long));
        assert!(documents.document("{ not closed").is_none());
    }
}
