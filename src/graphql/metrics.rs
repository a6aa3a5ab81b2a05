//! Counts every GraphQL operation (by transport, operation name and
//! outcome) and every error code it returns, into the server's [`Metrics`],
//! and names the operation in the request's tracing span.

use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest,
    NextSubscribe,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, Response, ServerResult, Variables};
use futures::stream::{BoxStream, StreamExt};

use crate::metrics::Metrics;
use crate::service::Ctx;

/// How an operation reached the schema: HTTP requests run through the
/// `request` hook, websocket operations (queries included) through `subscribe`.
#[derive(Debug, Clone, Copy)]
enum Transport {
    Http,
    Websocket,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Websocket => "websocket",
        }
    }
}

/// The extension; register it before `ErrorCodes` so that it sees the codes.
pub struct RequestMetrics;

impl ExtensionFactory for RequestMetrics {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OneRequest::default())
    }
}

/// The per-request half of [`RequestMetrics`].
#[derive(Default)]
struct OneRequest {
    /// The operation's name: asked for, or the document's only one. A std
    /// Mutex: nothing awaits while it is held.
    name: Arc<Mutex<Option<String>>>,
}

impl OneRequest {
    fn record(ctx: &ExtensionContext<'_>, name: &Mutex<Option<String>>, response: &Response) {
        let Some(services) = ctx.data_opt::<Ctx>() else {
            return;
        };
        let name = name.lock().expect("name lock poisoned").clone();
        count(
            &services.metrics,
            Transport::Http,
            name.as_deref(),
            response,
        );
    }
}

fn count(metrics: &Metrics, transport: Transport, name: Option<&str>, response: &Response) {
    metrics.request(transport.label(), name, response.errors.is_empty());
    count_errors(metrics, response);
}

fn count_errors(metrics: &Metrics, response: &Response) {
    for error in &response.errors {
        let code = error
            .extensions
            .as_ref()
            .and_then(|e| e.get("code"))
            .and_then(|code| match code {
                async_graphql::Value::String(code) => Some(code.as_str()),
                _ => None,
            })
            .unwrap_or("OTHER");
        metrics.error(code);
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for OneRequest {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let response = next.run(ctx).await;
        Self::record(ctx, &self.name, &response);
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let name = self.name.clone();
        let metrics = ctx.data_opt::<Ctx>().map(|c| c.metrics.clone());
        let mut first = true;
        next.run(ctx, stream)
            .map(move |response| {
                // The operation counts once, by its first response; errors
                // count each time.
                if let Some(metrics) = &metrics {
                    if first {
                        first = false;
                        let name = name.lock().expect("name lock poisoned").clone();
                        count(metrics, Transport::Websocket, name.as_deref(), &response);
                    } else {
                        count_errors(metrics, &response);
                    }
                }
                response
            })
            .boxed()
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if let Some(name) = &request.operation_name {
            *self.name.lock().expect("name lock poisoned") = Some(name.clone());
        }
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let mut name = self.name.lock().expect("name lock poisoned");
        if name.is_none() {
            let mut operations = document.operations.iter();
            if let (Some((Some(only), _)), None) = (operations.next(), operations.next()) {
                *name = Some(only.to_string());
            }
        }
        // The request's span (HTTP) or the operation's (websocket) declares
        // the field; the logs of this request carry the name from now on.
        if let Some(name) = name.as_deref() {
            tracing::Span::current().record("operation", name);
        }
        Ok(document)
    }
}
