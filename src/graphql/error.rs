//! How errors reach GraphQL clients: every [`AppError`] becomes a GraphQL
//! error with `extensions.code` (and `extensions.field`), and the errors that
//! async-graphql raises itself (parse, validation, limits) get a code too.

use std::sync::Arc;

use async_graphql::{ErrorExtensions, Response, ServerError, Value};

use crate::error::AppError;

impl From<AppError> for async_graphql::Error {
    fn from(err: AppError) -> Self {
        to_graphql(&err)
    }
}

/// The GraphQL error of `err`: its message (never an internal cause) and codes.
fn to_graphql(err: &AppError) -> async_graphql::Error {
    async_graphql::Error::new(err.to_string()).extend_with(|_, ext| {
        ext.set("code", err.code());
        if let Some(field) = err.field() {
            ext.set("field", field);
        }
        match err {
            AppError::VersionConflict { expected, actual } => {
                ext.set("expectedVersion", *expected);
                ext.set("actualVersion", *actual);
            }
            AppError::PayloadSchemaViolation { violations, .. } => {
                ext.set(
                    "violations",
                    Value::List(violations.iter().map(|v| Value::from(v.as_str())).collect()),
                );
            }
            _ => {}
        }
    })
}

/// A DataLoader failure; cloneable, as DataLoader requires.
#[derive(Debug, Clone)]
pub struct LoadError(pub Arc<AppError>);

impl From<AppError> for LoadError {
    fn from(err: AppError) -> Self {
        LoadError(Arc::new(err))
    }
}

impl From<LoadError> for async_graphql::Error {
    fn from(err: LoadError) -> Self {
        to_graphql(&err.0)
    }
}

/// Runs `execution`; a panic inside it (a resolver's, a loader's) becomes an
/// `INTERNAL` error for this request only. The panic text goes to the log.
pub async fn catching_panics(execution: impl std::future::Future<Output = Response>) -> Response {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(execution).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %text, "a request panicked");
            Response::from_errors(vec![internal_error()])
        }
    }
}

/// The error a client sees for anything internal.
pub fn internal_error() -> ServerError {
    let mut error = ServerError::new("internal error", None);
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", "INTERNAL");
    error
}

/// Codes an error that has none: query limits are `LIMIT_EXCEEDED`, anything
/// else that async-graphql rejects on its own is the client's input.
pub fn add_code(error: &mut ServerError, query: Option<&str>) {
    let field = argument_name(&error.message)
        .map(str::to_owned)
        .or_else(|| {
            let pos = error.locations.first()?;
            argument_at(query?, pos.line, pos.column)
        });
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_some() {
        return;
    }
    let message = error.message.as_str();
    if message.contains("nested too deep") || message.contains("too complex") {
        extensions.set("code", "LIMIT_EXCEEDED");
        return;
    }
    extensions.set("code", "BAD_USER_INPUT");
    if let Some(field) = field {
        extensions.set("field", field);
    }
}

/// The argument named in async-graphql's `Invalid value for argument "x"` messages.
fn argument_name(message: &str) -> Option<&str> {
    let rest = message.split("argument \"").nth(1)?;
    rest.split('"').next()
}

/// The argument whose value starts at `line`:`column` (1-based) of `query`,
/// as in `events(runId: "nope")`: the name before the colon.
fn argument_at(query: &str, line: usize, column: usize) -> Option<String> {
    let text = query.lines().nth(line.checked_sub(1)?)?;
    let before: String = text.chars().take(column.checked_sub(1)?).collect();
    let before = before.trim_end().strip_suffix(':')?.trim_end();
    let name: String = before
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::{argument_at, catching_panics};

    #[tokio::test]
    async fn a_panic_becomes_an_internal_error_without_its_text() {
        let response = catching_panics(async { panic!("secret path /etc/x and SELECT 1") }).await;
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json["errors"][0]["extensions"]["code"], "INTERNAL");
        assert_eq!(json["errors"][0]["message"], "internal error");
        assert!(!json.to_string().contains("secret"));
    }

    #[test]
    fn names_the_argument_at_a_position() {
        let query = "query($r: UUID!) {\n  events(runId: $r, first: 5) { nodes { id } }\n}";
        assert_eq!(argument_at(query, 2, 17).as_deref(), Some("runId"));
        assert_eq!(argument_at(query, 2, 28).as_deref(), Some("first"));
        assert_eq!(argument_at(query, 1, 1), None);
        assert_eq!(argument_at(query, 9, 1), None);
    }
}
