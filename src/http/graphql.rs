//! `POST /graphql` and `GET /graphql` (queries over HTTP, and the websocket upgrade).

use std::borrow::Cow;
use std::collections::HashMap;

use async_graphql::ParseRequestError;
use async_graphql::parser::types::OperationType;
use async_graphql_axum::rejection::GraphQLRejection;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::{AppState, ErrorCode};
use crate::error::AppError;
use crate::graphql::execution::{Answer, Vars};
use crate::service::auth::{self, Principal};

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

/// Who `authorization` says sent a request, or the response refusing it.
async fn principal(state: &AppState, authorization: Option<&str>) -> Result<Principal, Response> {
    auth::principal(&state.ctx, authorization)
        .await
        .map_err(|err| {
            let status = match err {
                AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let message = err.to_string();
            request_error(status, err.code(), message)
        })
}

/// Runs `request` for whoever `authorization` says, with a DataLoader of its own.
async fn execute(
    state: &AppState,
    authorization: Option<&str>,
    request: async_graphql::Request,
) -> Response {
    let principal = match principal(state, authorization).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    match state.graphql.execute(&state.ctx, principal, request).await {
        Answer::General(response) => GraphQLResponse::from(response).into_response(),
        Answer::Compiled(body) => compiled_response(body),
    }
}

/// A body the compiled path wrote.
fn compiled_response(body: String) -> Response {
    // As async-graphql-axum answers the general path.
    (
        [(header::CONTENT_TYPE, "application/graphql-response+json")],
        body,
    )
        .into_response()
}

/// What the compiled path reads of a JSON request body, borrowed from it:
/// the variables stay JSON text until an argument needs one (a 2 KB state
/// goes from its text to the service's value in one parse, where
/// async-graphql-axum buffers the body as serde `Content` and builds a
/// value tree of every variable).
#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow, default)]
    query: Cow<'a, str>,
    #[serde(borrow, default, rename = "operationName")]
    operation_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    variables: Option<HashMap<Cow<'a, str>, &'a RawValue>>,
    #[serde(borrow, default)]
    extensions: Option<&'a RawValue>,
}

impl RawRequest<'_> {
    /// Whether async-graphql would read this body as the same request:
    /// its extensions (which no part of the schema reads) must be an object.
    fn reads_alike(&self) -> bool {
        self.extensions.is_none_or(|e| e.get().starts_with('{'))
    }
}

/// Whether async-graphql reads `headers`' body as JSON, and only as JSON.
fn json_body(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_TYPE) {
        None => true,
        Some(value) => value.to_str().is_ok_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
        }),
    }
}

/// Runs one GraphQL request sent as a POST body. A JSON body is read whole
/// first: when its document has a proven compiled plan, the plan answers
/// from the body's text; any other request is read by async-graphql-axum,
/// as before, and runs through the schema.
async fn execute_post(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if !json_body(&parts.headers) {
        return extract_and_execute(&state, parts, body).await;
    }
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        // As async-graphql-axum reports a body it cannot read.
        Err(err) => {
            return rejection(GraphQLRejection(ParseRequestError::Io(
                std::io::Error::other(err.to_string()),
            )));
        }
    };
    let raw = serde_json::from_slice::<RawRequest>(&bytes)
        .ok()
        .filter(RawRequest::reads_alike);
    let Some(raw) = raw else {
        // async-graphql-axum says what is wrong with the body.
        return extract_and_execute(&state, parts, Body::from(bytes)).await;
    };
    let principal = match principal(&state, authorization(&parts.headers)).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    if let Some(body) = state
        .graphql
        .execute_compiled(
            &state.ctx,
            &principal,
            &raw.query,
            raw.operation_name.as_deref(),
            &Vars::Raw(&raw.variables.unwrap_or_default()),
        )
        .await
    {
        return compiled_response(body);
    }
    match extract(&state, parts, Body::from(bytes)).await {
        Ok(request) => {
            let response = state.graphql.execute_general(principal, request).await;
            GraphQLResponse::from(response).into_response()
        }
        Err(response) => response,
    }
}

/// Reads a request as async-graphql-axum does and runs it.
async fn extract_and_execute(state: &AppState, parts: Parts, body: Body) -> Response {
    let headers = parts.headers.clone();
    match extract(state, parts, body).await {
        Ok(request) => execute(state, authorization(&headers), request).await,
        Err(response) => response,
    }
}

/// A request as async-graphql-axum reads it, or the response refusing it.
async fn extract(
    state: &AppState,
    parts: Parts,
    body: Body,
) -> Result<async_graphql::Request, Response> {
    GraphQLRequest::<GraphQLRejection>::from_request(Request::from_parts(parts, body), state)
        .await
        .map(GraphQLRequest::into_inner)
        .map_err(rejection)
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
