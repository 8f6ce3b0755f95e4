//! `DbError`: what a caller of this crate can act on (not found, a named constraint, a
//! transaction to retry, the database being unavailable), with everything else kept opaque —
//! but never lost: `Unavailable` and `Other` keep the error they came from as their `source`.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

pub type DbResult<T> = Result<T, DbError>;

/// The underlying error (diesel's, the pool's, a migration's).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("row not found")]
    NotFound,
    /// A unique constraint was violated; the constraint name lets the caller map it to a
    /// client-facing conflict (`users_email_key` → `email_taken`).
    #[error("unique constraint {constraint} violated")]
    UniqueViolation { constraint: String },
    /// A foreign key, check or not-null constraint rejected the write.
    #[error("constraint {constraint} violated")]
    ConstraintViolation { constraint: String },
    /// Serialization failure or deadlock: the transaction may be retried.
    #[error("transaction conflict, retry")]
    Retry,
    /// A statement waited longer than the transaction's `lock_timeout` for a row lock.
    #[error("lock wait timed out")]
    LockTimeout,
    /// The pool timed out or the connection broke: the database is (temporarily) unreachable.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] BoxError),
    #[error("database error: {0}")]
    Other(#[source] BoxError),
}

impl DbError {
    pub fn other(e: impl Into<BoxError>) -> Self {
        Self::Other(e.into())
    }

    pub fn unavailable(e: impl Into<BoxError>) -> Self {
        Self::Unavailable(e.into())
    }
}

impl From<DieselError> for DbError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::NotFound => DbError::NotFound,
            DieselError::DatabaseError(kind, info) => {
                let constraint = info.constraint_name().unwrap_or("unknown").to_owned();
                match kind {
                    DatabaseErrorKind::UniqueViolation => DbError::UniqueViolation { constraint },
                    DatabaseErrorKind::ForeignKeyViolation
                    | DatabaseErrorKind::CheckViolation
                    | DatabaseErrorKind::NotNullViolation => DbError::ConstraintViolation { constraint },
                    DatabaseErrorKind::SerializationFailure => DbError::Retry,
                    DatabaseErrorKind::ClosedConnection => DbError::unavailable(DieselError::DatabaseError(kind, info)),
                    // diesel-async reports I/O failures of the socket as `Unknown` database errors.
                    _ if info.message().contains("deadlock detected") => DbError::Retry,
                    _ if info.message().contains("lock timeout") => DbError::LockTimeout,
                    _ if is_connection_failure(info.message()) => {
                        DbError::unavailable(DieselError::DatabaseError(kind, info))
                    }
                    _ => DbError::other(DieselError::DatabaseError(kind, info)),
                }
            }
            DieselError::BrokenTransactionManager => DbError::unavailable(e),
            other => DbError::other(other),
        }
    }
}

/// Whether an error message describes a lost or refused connection rather than a query problem.
fn is_connection_failure(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "connection closed",
        "broken pipe",
        "connection reset",
        "connection refused",
        "unexpected eof",
        "terminating connection",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

impl From<diesel_async::pooled_connection::bb8::RunError> for DbError {
    fn from(e: diesel_async::pooled_connection::bb8::RunError) -> Self {
        DbError::unavailable(e)
    }
}

impl From<diesel::ConnectionError> for DbError {
    fn from(e: diesel::ConnectionError) -> Self {
        DbError::unavailable(e)
    }
}

#[cfg(test)]
mod tests {
    use super::is_connection_failure;

    #[test]
    fn connection_failures_are_recognised() {
        assert!(is_connection_failure("connection closed"));
        assert!(is_connection_failure("Broken pipe (os error 32)"));
        assert!(is_connection_failure(
            "FATAL: terminating connection due to administrator command"
        ));
        assert!(!is_connection_failure("duplicate key value violates unique constraint"));
    }
}
