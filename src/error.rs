//! The one error type of scenario-hub. Every failure a client can see is an
//! [`AppError`] with one of DESIGN.md's codes; internal causes are logged here
//! and never shown to the client.

use sea_orm::{DbErr, SqlErr};

/// A failure with a DESIGN.md error code.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The thing asked for does not exist.
    #[error("{message}")]
    NotFound {
        /// The argument or input field that named the missing thing.
        field: Option<String>,
        /// What was not found.
        message: String,
    },
    /// An argument or input field is invalid.
    #[error("{message}")]
    BadUserInput {
        /// The offending argument or input field (camelCase, dotted for nesting).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A payload does not match its event type's JSON Schema.
    #[error("{message}")]
    PayloadSchemaViolation {
        /// The input field holding the payload.
        field: String,
        /// A summary naming the first violations.
        message: String,
        /// Every violation, as "instance path: reason".
        violations: Vec<String>,
    },
    /// An engine state save carried a stale `expectedVersion`.
    #[error("engine state is at version {actual}, not the expected {expected}")]
    VersionConflict {
        /// The version the client expected.
        expected: i64,
        /// The version stored.
        actual: i64,
    },
    /// A run status change that the run's lifecycle does not allow.
    #[error("a run cannot go from {from} to {to}")]
    InvalidTransition {
        /// Current status.
        from: String,
        /// Requested status.
        to: String,
    },
    /// The run is in a terminal status and takes no more events.
    #[error("run {run_id} is {status} and takes no more events")]
    RunClosed {
        /// The closed run.
        run_id: uuid::Uuid,
        /// Its terminal status.
        status: String,
    },
    /// The change conflicts with stored data (a duplicate name, a template in use).
    #[error("{0}")]
    Conflict(String),
    /// A record or lease extension named a lease that is no longer the
    /// event's current one: it expired and the event went to another delivery.
    #[error("lease {lease_id} of event {event_id} is no longer the current one")]
    LeaseLost {
        /// The event.
        event_id: uuid::Uuid,
        /// The stale lease.
        lease_id: uuid::Uuid,
    },
    /// No valid credentials were given.
    #[error("{0}")]
    Unauthenticated(String),
    /// The credentials do not allow this operation.
    #[error("{0}")]
    Forbidden(String),
    /// A configured limit was exceeded.
    #[error("{message}")]
    LimitExceeded {
        /// The argument or input field over the limit, when there is one.
        field: Option<String>,
        /// Which limit, and its value.
        message: String,
    },
    /// The database is unreachable or restarting: worth a retry.
    #[error("the database is unavailable; retry shortly")]
    Unavailable(String),
    /// Anything the client cannot act on; the cause is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

/// Every `extensions.code` the server answers with (DESIGN.md, Errors).
pub const CODES: [&str; 13] = [
    "NOT_FOUND",
    "BAD_USER_INPUT",
    "PAYLOAD_SCHEMA_VIOLATION",
    "VERSION_CONFLICT",
    "INVALID_TRANSITION",
    "RUN_CLOSED",
    "CONFLICT",
    "LEASE_LOST",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "LIMIT_EXCEEDED",
    "UNAVAILABLE",
    "INTERNAL",
];

impl AppError {
    /// The `extensions.code` of this error.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::NotFound { .. } => "NOT_FOUND",
            AppError::BadUserInput { .. } => "BAD_USER_INPUT",
            AppError::PayloadSchemaViolation { .. } => "PAYLOAD_SCHEMA_VIOLATION",
            AppError::VersionConflict { .. } => "VERSION_CONFLICT",
            AppError::InvalidTransition { .. } => "INVALID_TRANSITION",
            AppError::RunClosed { .. } => "RUN_CLOSED",
            AppError::Conflict(_) => "CONFLICT",
            AppError::LeaseLost { .. } => "LEASE_LOST",
            AppError::Unauthenticated(_) => "UNAUTHENTICATED",
            AppError::Forbidden(_) => "FORBIDDEN",
            AppError::LimitExceeded { .. } => "LIMIT_EXCEEDED",
            AppError::Unavailable(_) => "UNAVAILABLE",
            AppError::Internal(_) => "INTERNAL",
        }
    }

    /// The input field this error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            AppError::NotFound { field, .. } | AppError::LimitExceeded { field, .. } => {
                field.as_deref()
            }
            AppError::BadUserInput { field, .. }
            | AppError::PayloadSchemaViolation { field, .. } => Some(field),
            _ => None,
        }
    }

    /// `BAD_USER_INPUT` about `field`.
    pub fn bad_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::BadUserInput {
            field: field.into(),
            message: message.into(),
        }
    }

    /// `NOT_FOUND` for the thing named by `field`.
    pub fn not_found(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::NotFound {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// `LIMIT_EXCEEDED` about `field`.
    pub fn limit(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::LimitExceeded {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// `INTERNAL`, logging the cause so that the client never sees it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        AppError::Internal(cause.to_string())
    }
}

/// The one place where database errors become client errors: constraint
/// violations are the client's doing (a duplicate name, a row still referred
/// to); a lost or refused connection is `UNAVAILABLE` (retryable); anything
/// else is internal and logged.
impl From<DbErr> for AppError {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(detail)) => {
                tracing::debug!(%detail, "unique constraint violation");
                AppError::Conflict("a record with the same unique key already exists".into())
            }
            Some(SqlErr::ForeignKeyConstraintViolation(detail)) => {
                tracing::debug!(%detail, "foreign key violation");
                AppError::Conflict(
                    "the change conflicts with records that refer to this one or that it refers to"
                        .into(),
                )
            }
            _ if is_unavailable(&err) => {
                tracing::warn!(error = %err, "database unavailable");
                AppError::Unavailable(err.to_string())
            }
            _ => AppError::internal(err),
        }
    }
}

/// The unique keys a client can collide on: how PostgreSQL names the
/// constraint, how SQLite names the column (`table.column`), and what the
/// client is told, `{}` standing for the value it sent.
const UNIQUE_KEYS: [(&str, &str, &str); 3] = [
    (
        "agent_templates_name_key",
        "agent_templates.name",
        "an agent template named {} already exists",
    ),
    (
        "scenario_templates_name_key",
        "scenario_templates.name",
        "a scenario template named {} already exists",
    ),
    (
        "event_types_pkey",
        "event_types.name",
        "event type {} already exists",
    ),
];

impl AppError {
    /// `err` as a client error; when it broke one of the unique keys a
    /// client can collide on, a `CONFLICT` that names `value`, the value
    /// sent for that key. The database decides, so two racing writers get
    /// the same answer as one late one.
    pub fn from_db_naming(err: DbErr, value: &str) -> AppError {
        if let Some(SqlErr::UniqueConstraintViolation(detail)) = err.sql_err()
            && let Some((_, _, message)) = UNIQUE_KEYS
                .iter()
                .find(|(pg, sqlite, _)| detail.contains(pg) || detail.contains(sqlite))
        {
            return AppError::Conflict(message.replace("{}", &format!("{value:?}")));
        }
        err.into()
    }
}

/// Whether `err` says the database cannot be reached now rather than that
/// the statement is wrong: no connection to be had, a connection lost, or
/// PostgreSQL shutting down or starting (SQLSTATE class 08, 57P01-57P03).
fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    use sea_orm::sqlx::Error as Sqlx;
    let sqlx = match err {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        _ => return false,
    };
    match sqlx.as_ref() {
        Sqlx::Io(_) | Sqlx::PoolTimedOut | Sqlx::PoolClosed | Sqlx::WorkerCrashed => true,
        Sqlx::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

impl From<sea_orm::TransactionError<AppError>> for AppError {
    fn from(err: sea_orm::TransactionError<AppError>) -> Self {
        match err {
            sea_orm::TransactionError::Connection(e) => e.into(),
            sea_orm::TransactionError::Transaction(e) => e,
        }
    }
}

/// Shorthand for results of the service layer.
pub type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::RuntimeErr;
    use sea_orm::sqlx::Error as Sqlx;

    #[test]
    fn lost_connections_are_unavailable_and_bad_statements_internal() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        for err in [
            DbErr::Query(RuntimeErr::SqlxError(Sqlx::Io(io()).into())),
            DbErr::Exec(RuntimeErr::SqlxError(Sqlx::PoolTimedOut.into())),
            DbErr::Conn(RuntimeErr::SqlxError(Sqlx::PoolClosed.into())),
        ] {
            assert_eq!(AppError::from(err).code(), "UNAVAILABLE");
        }
        let syntax = DbErr::Query(RuntimeErr::SqlxError(
            Sqlx::Protocol("unexpected message".into()).into(),
        ));
        assert_eq!(AppError::from(syntax).code(), "INTERNAL");
        assert_eq!(AppError::from(DbErr::Custom("x".into())).code(), "INTERNAL");
    }
}
