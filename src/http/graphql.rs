//! `POST /graphql` and `GET /graphql` (queries over HTTP, and the websocket upgrade).

use async_graphql::ParseRequestError;
use async_graphql::parser::types::OperationType;
use async_graphql_axum::rejection::GraphQLRejection;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Json;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::{AppState, ErrorCode};
use crate::error::AppError;
use crate::graphql::execution::Answer;
use crate::service::auth;

/// The GraphQL routes.
pub fn routes() -> Router<AppState> {
    Router::new().route("/graphql", get(execute_get).post(execute_post))
}

/// A GraphQL-shaped error response for a request that never reached the schema.
pub(super) fn request_error(status: StatusCode, code: &'static str, message: String) -> Response {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    let mut response = (status, Json(body)).into_response();
    response.extensions_mut().insert(ErrorCode(code));
    response
}

fn rejection(rejection: GraphQLRejection) -> Response {
    match rejection.0 {
        ParseRequestError::PayloadTooLarge => request_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "LIMIT_EXCEEDED",
            "request body is too large".into(),
        ),
        other => request_error(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            format!("invalid GraphQL request: {other}"),
        ),
    }
}

/// The `Authorization` header's value.
pub(super) fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// Runs `request` for whoever `authorization` says, with a DataLoader of its own.
async fn execute(
    state: &AppState,
    authorization: Option<&str>,
    request: async_graphql::Request,
) -> Response {
    let principal = match auth::principal(&state.ctx, authorization).await {
        Ok(principal) => principal,
        Err(err) => {
            let status = match err {
                AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let message = err.to_string();
            return request_error(status, err.code(), message);
        }
    };
    match state.graphql.execute(&state.ctx, principal, request).await {
        Answer::General(response) => GraphQLResponse::from(response).into_response(),
        Answer::Compiled(body) => (
            // As async-graphql-axum answers the general path.
            [(header::CONTENT_TYPE, "application/graphql-response+json")],
            body,
        )
            .into_response(),
    }
}

/// Runs one GraphQL request sent as a POST body.
async fn execute_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    match request {
        Ok(request) => execute(&state, authorization(&headers), request.into_inner()).await,
        Err(err) => rejection(err),
    }
}

/// `GET /graphql`: the GraphQL websocket when the client asks for an
/// upgrade, otherwise a query sent as URL parameters.
async fn execute_get(State(state): State<AppState>, request: Request) -> Response {
    let wants_websocket = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if wants_websocket {
        let (mut parts, _) = request.into_parts();
        return match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(upgrade) => super::ws::upgrade(state, upgrade),
            Err(rejection) => rejection.into_response(),
        };
    }
    let headers = request.headers().clone();
    match GraphQLRequest::<GraphQLRejection>::from_request(request, &state).await {
        Ok(request) => execute_query(&state, authorization(&headers), request.into_inner()).await,
        Err(err) => rejection(err),
    }
}

/// Runs a query sent as URL parameters. Mutations are refused: a GET must
/// not change anything (a link or an image could send it).
async fn execute_query(
    state: &AppState,
    authorization: Option<&str>,
    request: async_graphql::Request,
) -> Response {
    let has_mutation = async_graphql::parser::parse_query(&request.query).is_ok_and(|doc| {
        doc.operations
            .iter()
            .any(|(_, op)| op.node.ty == OperationType::Mutation)
    });
    if has_mutation {
        return request_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "BAD_USER_INPUT",
            "mutations must be sent with POST".into(),
        );
    }
    execute(state, authorization, request).await
}
