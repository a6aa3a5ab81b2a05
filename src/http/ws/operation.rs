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
    let last_event = LastEvent::default();
    let mut request = async_graphql::Request::new(payload.query)
        .data(RequestLoader::uncached())
        .data(principal)
        .data(last_event.clone());
    if let Some(variables) = payload.variables {
        request = request.variables(async_graphql::Variables::from_json(variables));
    }
    if let Some(name) = payload.operation_name {
        request = request.operation_name(name);
    }
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
            Err(_) => {
                tracing::error!(operation = %id, "a subscription panicked");
                let error = json!({"id": id, "type": "error", "payload": [internal_error()]});
                let _ = out.text(error.to_string()).await;
                return;
            }
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
            let lag = (chrono::Utc::now() - created_at)
                .to_std()
                .unwrap_or_default();
            state.ctx.metrics.delivered(lag);
        }
        if failed_at_start {
            return;
        }
        first = false;
    }
    tracing::debug!("operation complete");
    let _ = out
        .text(json!({"id": id, "type": "complete"}).to_string())
        .await;
}
