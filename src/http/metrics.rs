//! `GET /metrics` (Prometheus text) and the middleware that counts what
//! never reaches the GraphQL schema: refused requests and REST calls.

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{AppState, ErrorCode};
use crate::metrics::Transport;

/// The metrics route; open like the health routes, for scrapers.
pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(render))
}

async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let text = state.ctx.metrics.render(state.ctx.db.pool_use());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// Counts GraphQL requests refused before the schema (unreadable, too large,
/// unauthenticated); the schema counts the others itself.
pub async fn count_refusals(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
        state.ctx.metrics.request(Transport::Http, None, false);
        state.ctx.metrics.error(code);
    }
    response
}

/// Counts every REST call by route and outcome, and its error code.
pub async fn count_rest(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| format!("{} {}", request.method(), path.as_str()));
    let response = next.run(request).await;
    let metrics = &state.ctx.metrics;
    metrics.request(
        Transport::Rest,
        route.as_deref(),
        response.status().is_success(),
    );
    if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
        metrics.error(code);
    }
    response
}
