//! `POST /graphql` and `GET /graphql` (queries over HTTP) and `GET /graphiql`.

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Router;
use axum::extract::State;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

use super::AppState;
use crate::graphql::request_loader;

/// The GraphQL routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/graphql", get(execute).post(execute))
        .route("/graphiql", get(graphiql))
}

/// Runs one GraphQL request with a DataLoader of its own.
async fn execute(State(state): State<AppState>, request: GraphQLRequest) -> GraphQLResponse {
    let request = request.into_inner().data(request_loader(&state.ctx));
    state.schema.execute(request).await.into()
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
