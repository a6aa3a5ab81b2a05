//! `POST /graphql` and `GET /graphql` (queries over HTTP) and `GET /graphiql`.

use async_graphql::ParseRequestError;
use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::OperationType;
use async_graphql_axum::rejection::GraphQLRejection;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::AppState;
use crate::graphql::request_loader;

/// The GraphQL routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/graphql", get(execute_get).post(execute_post))
        .route("/graphiql", get(graphiql))
}

/// A GraphQL-shaped error response for a request that never reached the schema.
fn request_error(status: StatusCode, code: &str, message: String) -> Response {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, Json(body)).into_response()
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

async fn execute(state: &AppState, request: async_graphql::Request) -> Response {
    let request = request.data(request_loader(&state.ctx));
    GraphQLResponse::from(state.schema.execute(request).await).into_response()
}

/// Runs one GraphQL request with a DataLoader of its own.
async fn execute_post(
    State(state): State<AppState>,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    match request {
        Ok(request) => execute(&state, request.into_inner()).await,
        Err(err) => rejection(err),
    }
}

/// Runs a query sent as URL parameters. Mutations are refused: a GET must
/// not change anything (a link or an image could send it).
async fn execute_get(
    State(state): State<AppState>,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    let request = match request {
        Ok(request) => request.into_inner(),
        Err(err) => return rejection(err),
    };
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
    execute(&state, request).await
}

/// GraphiQL, wired to the HTTP endpoint and to the websocket on the same path.
async fn graphiql() -> impl IntoResponse {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql")
            .title("scenario-hub GraphiQL")
            .finish(),
    )
}
