//! Business operations: each function is one use case. It takes plain inputs (who acts, the
//! request's metadata, parsed domain values), runs its writes in one [`work::transaction`] (which
//! stages the jobs it implies in the outbox and dispatches them after commit), and returns a
//! service [`Error`] — never an HTTP status; `crate::error` maps errors to statuses.

pub mod audit;
pub mod auth;
pub mod jobs;
pub mod oauth;
pub mod orders;
pub mod payments;
pub mod products;
pub mod tasks;
pub mod users;
pub mod work;

use domain::{FieldError, Role, SessionId, UserId};

/// Who makes the request: the verified access token's user, session and current role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub role: Role,
}

/// What the audit log records about a request.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// What a use case can answer besides success. `crate::error` maps each to a status and `code`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that parsed but breaks a rule (field errors).
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// The e-mail/password pair is wrong (same answer for an unknown e-mail).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A refresh token that is unknown, used, expired or revoked.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// A single-use e-mail token (verification, reset) that is invalid, expired or used.
    #[error("invalid e-mail token")]
    InvalidEmailToken,
    /// The current password given to confirm a change is wrong.
    #[error("wrong current password")]
    WrongCurrentPassword,
    /// Missing, or not the caller's (never tell which).
    #[error("not found")]
    NotFound,
    /// A rate-limit policy the use case charges refused the request.
    #[error("rate limited")]
    RateLimited(crate::infra::ratelimit::Decision),
    /// Some lines of an order ask for more than is in stock (each short line named).
    #[error("insufficient stock")]
    InsufficientStock(Vec<FieldError>),
    /// The order's state does not allow the action.
    #[error("invalid transition from {from:?}")]
    InvalidTransition {
        from: domain::orders::OrderStatus,
        action: domain::orders::Action,
    },
    /// The first request with this Idempotency-Key is still running.
    #[error("idempotency key in use")]
    KeyInUse,
    /// The Idempotency-Key was used with another request body.
    #[error("idempotency key reused")]
    KeyReused,
    /// The change conflicts with existing state (`code` is stable for clients).
    #[error("conflict: {code}")]
    Conflict { code: &'static str, detail: String },
    /// An OpenID Connect login step failed (`crate::error` maps each to its status and code).
    #[error("openid login: {0:?}")]
    OAuth(oauth::Failure),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }
}

impl From<::auth::password::HashError> for Error {
    fn from(e: ::auth::password::HashError) -> Self {
        Self::Internal(e.into())
    }
}

impl From<domain::DomainError> for Error {
    fn from(e: domain::DomainError) -> Self {
        match e {
            domain::DomainError::Validation(errors) => Self::Invalid(errors),
        }
    }
}

/// Maps a named constraint to a client error, leaving every other database error as it is:
/// `.map_err(on_constraint(users::EMAIL_UNIQUE, || Error::Conflict { … }))`.
pub fn on_constraint(name: &'static str, to: impl FnOnce() -> Error) -> impl FnOnce(db::DbError) -> Error {
    move |e| match &e {
        db::DbError::UniqueViolation { constraint } | db::DbError::ConstraintViolation { constraint }
            if constraint == name =>
        {
            to()
        }
        _ => Error::Db(e),
    }
}
