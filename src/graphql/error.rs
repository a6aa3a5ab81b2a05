//! How errors reach GraphQL clients: every [`AppError`] becomes a GraphQL
//! error with `extensions.code` (and `extensions.field`), and the errors that
//! async-graphql raises itself (parse, validation, limits) get a code too.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextRequest};
use async_graphql::{ErrorExtensions, Response, ServerError, Value};

use crate::error::AppError;

impl From<AppError> for async_graphql::Error {
    fn from(err: AppError) -> Self {
        to_graphql(&err)
    }
}

/// The GraphQL error of `err`: its message (never an internal cause) and codes.
fn to_graphql(err: &AppError) -> async_graphql::Error {
    {
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

/// Gives every error async-graphql raises on its own an `extensions.code`.
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodes)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for ErrorCodes {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        for error in &mut response.errors {
            add_code(error);
        }
        response
    }
}

/// Codes an error that has none: query limits are `LIMIT_EXCEEDED`, anything
/// else that async-graphql rejects on its own is the client's input.
pub fn add_code(error: &mut ServerError) {
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
    if let Some(field) = argument_name(message) {
        extensions.set("field", field);
    }
}

/// The argument named in async-graphql's `Invalid value for argument "x"` messages.
fn argument_name(message: &str) -> Option<&str> {
    let rest = message.split("argument \"").nth(1)?;
    rest.split('"').next()
}
