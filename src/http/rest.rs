//! The REST adapters of DESIGN.md's Operations section, for engines that
//! would rather not speak GraphQL: snake_case JSON over the same services,
//! the same keys and the same error codes, mapped to HTTP statuses.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use futures::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_util::io::ReaderStream;
use uuid::Uuid;

use super::graphql::authorization;
use super::{AppState, ErrorCode};
use crate::entity::{engine_state, event_processing};
use crate::error::AppError;
use crate::service::auth::{self, Access, Principal};
use crate::service::processing::{self, ProcessingStatus, Record};
use crate::service::{engine, export};

/// The REST routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/events/{event_id}/process", put(process))
        .route(
            "/api/v1/engine_instances/{engine_id}/state",
            get(get_state).put(put_state),
        )
        .route("/api/v1/runs/{run_id}/export", get(export_run))
}

/// `GET /api/v1/runs/{run_id}/export`: the run as JSON Lines, streamed as
/// it is read. A failure after the first bytes aborts the response, so a
/// client never takes a cut file for a whole one.
async fn export_run(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    caller(&state, &headers).await?.require(Access::Read)?;
    let run_id = uuid_in_path("run_id", &run_id)?;
    export::require_run(&state.ctx, run_id).await?;
    let (writer, reader) = tokio::io::duplex(64 * 1024);
    let ctx = state.ctx.clone();
    let done = tokio::spawn(async move { export::export(&ctx, run_id, writer).await });
    let outcome = futures::stream::once(async move {
        match done.await {
            Ok(Ok(_)) => None,
            Ok(Err(err)) => {
                tracing::error!(%run_id, error = %err, "export failed");
                Some(Err(std::io::Error::other("the export failed")))
            }
            Err(err) => Some(Err(std::io::Error::other(err))),
        }
    })
    .filter_map(std::future::ready);
    let body = Body::from_stream(ReaderStream::new(reader).chain(outcome));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"run-{run_id}.jsonl\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// An [`AppError`] as REST answers it: `{"error": {"code", "message"}}`.
pub struct RestError(AppError);

impl From<AppError> for RestError {
    fn from(err: AppError) -> Self {
        RestError(err)
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            AppError::BadUserInput { .. } | AppError::PayloadSchemaViolation { .. } => {
                StatusCode::BAD_REQUEST
            }
            AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound { .. } => StatusCode::NOT_FOUND,
            AppError::VersionConflict { .. }
            | AppError::Conflict(_)
            | AppError::RunClosed { .. }
            | AppError::LeaseLost { .. }
            | AppError::InvalidTransition { .. } => StatusCode::CONFLICT,
            AppError::LimitExceeded { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = json!({"error": {"code": self.0.code(), "message": self.0.to_string()}});
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(self.0.code()));
        response
    }
}

/// The body limit's plain-text 413, reshaped as a REST error.
pub fn too_large(limit: usize) -> Response {
    RestError(AppError::limit(
        "body",
        format!("the request body is larger than {limit} bytes"),
    ))
    .into_response()
}

type RestResult<T> = Result<Json<T>, RestError>;

/// Who sends the request, from its `Authorization` header.
async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Principal, RestError> {
    Ok(auth::principal(&state.ctx, authorization(headers)).await?)
}

/// A path segment that must be a UUID.
fn uuid_in_path(name: &str, text: &str) -> Result<Uuid, RestError> {
    Uuid::parse_str(text)
        .map_err(|_| RestError(AppError::bad_input(name, format!("{name} is not a UUID"))))
}

/// A JSON body of shape `T`; unknown fields are refused so that typos show.
fn body<T: DeserializeOwned>(bytes: Result<Bytes, BytesRejection>) -> Result<T, RestError> {
    let bytes = bytes.map_err(|rejection| {
        let err = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::limit("body", rejection.body_text())
        } else {
            AppError::bad_input("body", rejection.body_text())
        };
        RestError(err)
    })?;
    serde_json::from_slice(&bytes).map_err(|err| {
        RestError(AppError::bad_input(
            "body",
            format!("invalid JSON body: {err}"),
        ))
    })
}

/// `PUT /api/v1/events/{event_id}/process`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessBody {
    engine_id: Uuid,
    status: RestStatus,
    #[serde(default)]
    error: Option<String>,
    /// The lease the engine was given; a stale one is refused (409 LEASE_LOST).
    #[serde(default)]
    lease_id: Option<Uuid>,
    /// After a failure: deliver again no sooner than this.
    #[serde(default)]
    retry_after_seconds: Option<i32>,
}

/// Processing outcomes, in REST's lower case.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RestStatus {
    Processed,
    Failed,
}

async fn process(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> RestResult<Value> {
    let principal = caller(&state, &headers).await?;
    let event_id = uuid_in_path("event_id", &event_id)?;
    let input: ProcessBody = body(bytes)?;
    let record = Record {
        event_id,
        engine_id: input.engine_id,
        status: match input.status {
            RestStatus::Processed => ProcessingStatus::Processed,
            RestStatus::Failed => ProcessingStatus::Failed,
        },
        error: input.error,
        lease_id: input.lease_id,
        retry_after_seconds: input.retry_after_seconds,
    };
    let recorded = processing::record(&state.ctx, &principal, record).await?;
    Ok(Json(processing_json(&recorded)))
}

fn processing_json(record: &event_processing::Model) -> Value {
    json!({
        "event_id": record.event_id,
        "engine_id": record.engine_id,
        "status": record.status.as_str().to_lowercase(),
        "error": record.error,
        "attempts": record.attempts,
        "processed_at": record.processed_at.to_rfc3339(),
    })
}

fn state_json(engine: &engine_state::Model) -> Value {
    json!({
        "engine_id": engine.engine_id,
        "engine_type": engine.engine_type,
        "run_id": engine.run_id,
        "state": engine.state,
        "version": engine.version,
        "updated_at": engine.updated_at.to_rfc3339(),
    })
}

/// `GET /api/v1/engine_instances/{engine_id}/state`.
async fn get_state(
    State(state): State<AppState>,
    Path(engine_id): Path<String>,
    headers: HeaderMap,
) -> RestResult<Value> {
    caller(&state, &headers).await?.require(Access::Read)?;
    let engine_id = uuid_in_path("engine_id", &engine_id)?;
    let engine = engine::get(&state.ctx, engine_id).await?.ok_or_else(|| {
        AppError::not_found("engine_id", format!("engine {engine_id} is not registered"))
    })?;
    Ok(Json(state_json(&engine)))
}

/// `PUT /api/v1/engine_instances/{engine_id}/state`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBody {
    state: Value,
    #[serde(default)]
    expected_version: Option<i64>,
}

async fn put_state(
    State(state): State<AppState>,
    Path(engine_id): Path<String>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> RestResult<Value> {
    let principal = caller(&state, &headers).await?;
    let engine_id = uuid_in_path("engine_id", &engine_id)?;
    let input: StateBody = body(bytes)?;
    let saved = engine::save_state(
        &state.ctx,
        &principal,
        engine_id,
        input.state,
        input.expected_version,
    )
    .await?;
    Ok(Json(state_json(&saved)))
}
