//! One websocket operation: runs the GraphQL request through the executor
//! and queues each response as `next` (then `complete`), rendering an
//! event once for every subscriber that selects it the same way.

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use serde_json::json;

use super::protocol::{OperationPayload, Protocol};
use super::writer::Outbox;
use crate::graphql::RequestLoader;
use crate::graphql::error::internal_error;
use crate::graphql::execution::{CompiledSubscription, Next};
use crate::graphql::subscription::LastEvent;
use crate::http::{AppState, render};
use crate::metrics::Metrics;
use crate::service::auth::Principal;

/// Counts a running operation for its lifetime, aborted or not.
struct Running(Arc<Metrics>);

impl Running {
    fn start(metrics: &Arc<Metrics>) -> Self {
        metrics.subscriptions(1.0);
        Running(metrics.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.subscriptions(-1.0);
    }
}

/// Runs one operation: its responses as `next`, then `complete`; an operation
/// that fails before its first result gets a single `error`.
pub(super) async fn operation(
    state: Arc<AppState>,
    principal: Principal,
    protocol: Protocol,
    id: String,
    payload: OperationPayload,
    out: Outbox,
) {
    let _running = Running::start(&state.ctx.metrics);
    // The executor parses the query once and keeps it; the shape reads that.
    let shape = state.graphql.document(&payload.query).and_then(|document| {
        render::shape_of(&document, &payload.query, payload.operation_name.as_deref())
    });
    let per_subscriber = render::selects_delivery(&payload.query);
    let mut request = async_graphql::Request::new(payload.query);
    if let Some(variables) = payload.variables {
        request = request.variables(async_graphql::Variables::from_json(variables));
    }
    if let Some(name) = payload.operation_name {
        request = request.operation_name(name);
    }
    // The request and the setup's reads are boxed, and so is the general
    // path's loop: what this future keeps inline for the operation's whole
    // life is only what a compiled subscription needs.
    let mut request = Box::new(request);
    let compiled = Box::pin(state.graphql.subscribe(&state.ctx, &mut request)).await;
    if let Some(compiled) = compiled {
        // The request (its variables, its query text) is not kept.
        drop(request);
        return compiled_operation(state, protocol, id, shape, compiled, out).await;
    }
    let general = General {
        protocol,
        id,
        shape,
        per_subscriber,
        out,
    };
    Box::pin(general_operation(state, principal, *request, general)).await;
}

/// What the general path's loop needs of its operation.
struct General {
    protocol: Protocol,
    id: String,
    shape: Option<Arc<str>>,
    per_subscriber: bool,
    out: Outbox,
}

/// Runs an operation through the executor.
async fn general_operation(
    state: Arc<AppState>,
    principal: Principal,
    request: async_graphql::Request,
    general: General,
) {
    let General {
        protocol,
        id,
        shape,
        per_subscriber,
        out,
    } = general;
    let last_event = LastEvent::default();
    let request = request
        .data(RequestLoader::uncached())
        .data(principal)
        .data(last_event.clone());
    let mut responses = state.graphql.execute_stream(request);
    let mut first = true;
    loop {
        // A panic while producing the next response ends this operation with
        // an INTERNAL error; the connection and its other operations go on.
        let next = std::panic::AssertUnwindSafe(responses.next())
            .catch_unwind()
            .await;
        let response = match next {
            Ok(Some(response)) => response,
            Ok(None) => break,
            Err(_) => return panicked(&id, &out).await,
        };
        let failed_at_start =
            first && response.is_err() && response.data == async_graphql::Value::Null;
        let event = last_event.take();
        let created_at = event.as_ref().map(|delivered| delivered.event.created_at);
        let message = match (&shape, event) {
            (Some(shape), Some(event))
                if response.errors.is_empty() && (event.delivery.is_none() || !per_subscriber) =>
            {
                let payload = state.renders.payload(event.event.id, shape, || {
                    serde_json::to_string(&response).expect("responses serialize")
                });
                let id = serde_json::to_string(&id).expect("strings serialize");
                format!(
                    r#"{{"id":{id},"type":"{}","payload":{payload}}}"#,
                    protocol.next_type()
                )
            }
            _ if failed_at_start => {
                json!({"id": id, "type": "error", "payload": response.errors}).to_string()
            }
            _ => json!({"id": id, "type": protocol.next_type(), "payload": response}).to_string(),
        };
        if out.text(message).await.is_err() {
            return;
        }
        if let Some(created_at) = created_at {
            count_delivered(&state, created_at);
        }
        if failed_at_start {
            return;
        }
        first = false;
    }
    complete(&id, &out).await;
}

/// Runs a subscription on its compiled plan: the same messages as the
/// general path's, rendered without the executor.
async fn compiled_operation(
    state: Arc<AppState>,
    protocol: Protocol,
    id: String,
    shape: Option<Arc<str>>,
    mut compiled: CompiledSubscription,
    out: Outbox,
) {
    let quoted = serde_json::to_string(&id).expect("strings serialize");
    loop {
        let next = std::panic::AssertUnwindSafe(compiled.next())
            .catch_unwind()
            .await;
        let message = match next {
            Ok(Some(Next::Event(delivered))) => {
                let event = &delivered.event;
                // The subscription is borrowed only here, not across an await.
                let payload: Arc<str> = {
                    let render = || compiled.render(event).unwrap_or_default();
                    match &shape {
                        Some(shape) => state.renders.payload(event.id, shape, render),
                        None => render().into(),
                    }
                };
                if payload.is_empty() {
                    // `write::event` fails only for an event type it was not
                    // given, and a compiled subscription never selects `type`:
                    // nothing to send is a bug, not a case.
                    tracing::error!(operation = %id, "a compiled event did not render");
                    let error = json!({"id": id, "type": "error", "payload": [internal_error()]});
                    let _ = out.text(error.to_string()).await;
                    return;
                }
                let message = format!(
                    r#"{{"id":{quoted},"type":"{}","payload":{payload}}}"#,
                    protocol.next_type()
                );
                if out.text(message).await.is_err() {
                    return;
                }
                count_delivered(&state, event.created_at);
                continue;
            }
            Ok(Some(Next::Error(response))) => {
                json!({"id": id, "type": protocol.next_type(), "payload": response}).to_string()
            }
            Ok(None) => break,
            Err(_) => return panicked(&id, &out).await,
        };
        if out.text(message).await.is_err() {
            return;
        }
    }
    complete(&id, &out).await;
}

/// Ends an operation whose stream panicked with an `INTERNAL` error; the
/// connection and its other operations go on.
async fn panicked(id: &str, out: &Outbox) {
    tracing::error!(operation = %id, "a subscription panicked");
    let error = json!({"id": id, "type": "error", "payload": [internal_error()]});
    let _ = out.text(error.to_string()).await;
}

/// Counts an event delivered, with how long after its publication.
fn count_delivered(state: &AppState, created_at: chrono::DateTime<chrono::Utc>) {
    let lag = (chrono::Utc::now() - created_at)
        .to_std()
        .unwrap_or_default();
    state.ctx.metrics.delivered(lag);
}

/// Ends the operation with `complete`.
async fn complete(id: &str, out: &Outbox) {
    tracing::debug!("operation complete");
    let _ = out
        .text(json!({"id": id, "type": "complete"}).to_string())
        .await;
}
