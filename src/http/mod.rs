//! HTTP transport: the axum router and the state its handlers share. Each
//! submodule owns its routes.

mod assets;
mod graphiql;
mod graphql;
mod health;
mod metrics;
mod render;
mod rest;
mod viewer;
mod ws;

pub use graphiql::GraphiqlAssets;
pub use render::RenderCache;
pub use ws::{WsSettings, socket_send_buffer};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::Response;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::graphql::execution::Executor;
use crate::service::Ctx;

/// What every handler can reach: one pointer to [`Shared`]. axum clones
/// the state for every request (its extractor and each middleware's), and
/// one reference count, not one per field, is what both worker threads
/// then bump on the same cache line.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state over `shared`.
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The server's parts every handler reaches through [`AppState`].
pub struct Shared {
    /// The GraphQL schema, built once, as the transports run it.
    pub graphql: Executor,
    /// The service context, for per-request loaders and health checks.
    pub ctx: Ctx,
    /// Websocket settings and the count of open connections.
    pub ws: Arc<WsSettings>,
    /// Cancelled on shutdown: websockets close with 1001.
    pub shutdown: CancellationToken,
    /// Serialized events shared by the websocket subscriptions.
    pub renders: Arc<RenderCache>,
    /// Where the GraphiQL page loads its scripts from.
    pub graphiql: GraphiqlAssets,
}

/// The whole HTTP surface of scenario-hub.
pub fn router(state: AppState) -> Router {
    let body_limit = state.ctx.limits.max_body_bytes;
    // Each API answers an oversized body in its own error shape.
    let graphql = Router::new()
        .merge(graphql::routes())
        .merge(graphiql::routes(&state.graphiql))
        .merge(viewer::routes())
        .merge(health::routes())
        .merge(metrics::routes())
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(middleware::map_response(
            move |response: Response| async move { too_large_as_json(response, body_limit) },
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::count_refusals,
        ));
    let rest = rest::routes()
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(middleware::map_response(
            move |response: Response| async move {
                if is_plain_too_large(&response) {
                    rest::too_large(body_limit)
                } else {
                    response
                }
            },
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::count_rest,
        ));
    graphql
        .merge(rest)
        .layer(
            // One span per request; the GraphQL operation name is recorded
            // into it once the document is parsed. No headers: they carry
            // tokens.
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<_>| {
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        operation = tracing::field::Empty,
                    )
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::DEBUG)),
        )
        .with_state(state)
}

/// The code of an error answered outside the GraphQL schema (a refused
/// request, a REST call), for the metrics.
#[derive(Debug, Clone, Copy)]
struct ErrorCode(&'static str);

/// Whether `response` is the body limit's own plain-text 413.
fn is_plain_too_large(response: &Response) -> bool {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json
}

/// The body limit answers 413 in plain text; clients get our JSON error instead.
fn too_large_as_json(response: Response, limit: usize) -> Response {
    if !is_plain_too_large(&response) {
        return response;
    }
    graphql::request_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "LIMIT_EXCEEDED",
        format!("the request body is larger than {limit} bytes"),
    )
}
