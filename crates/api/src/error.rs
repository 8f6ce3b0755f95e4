//! `ApiError`: the one error type of the HTTP layer, rendered as RFC 9457 `application/problem+json`.
//!
//! Which error to use where:
//! - input that fails parsing or validation → [`ApiError::Validation`] (422, field errors);
//! - a syntactically broken request (bad JSON) → [`ApiError::BadRequest`] (400);
//! - missing/invalid credentials → [`ApiError::Unauthorized`] (401); valid but not allowed → 403;
//! - another user's resource, or a missing one → [`ApiError::NotFound`] (404: never reveal which);
//! - a unique constraint → [`ApiError::Conflict`] (409) with a stable `code`;
//! - Postgres or Redis unreachable → [`ApiError::Unavailable`] (503);
//! - anything else → [`ApiError::Internal`]: logged once here, answered as an opaque 500.

use actix_web::{
    HttpResponse, ResponseError,
    http::{StatusCode, header},
};
use db::DbError;
use domain::{DomainError, FieldError};
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// `Retry-After` (seconds) of every 503 — a backing service down, a request abandoned after
/// `REQUEST_TIMEOUT`, readiness failing: every 503 is a problem rendered by
/// [`Problem::into_response`], which sets it (the edge turns any other 503 into one).
pub const RETRY_AFTER_SECS: &str = "5";

/// The RFC 9457 problem body.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type: `/problems/{code}`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code, e.g. `validation_failed`, `email_taken`, `invalid_credentials`.
    pub code: String,
    /// Field-level errors (validation failures only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    pub request_id: String,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("/problems/{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
            errors: Vec::new(),
            request_id: crate::http::request_id::current(),
        }
    }

    pub fn into_response(self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = HttpResponse::build(status);
        res.insert_header((header::CONTENT_TYPE, PROBLEM_JSON))
            .insert_header((header::CACHE_CONTROL, "no-store"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
        }
        res.json(self)
    }

    /// The generic problem for a status produced outside our handlers (404 route, 405 method…).
    pub fn for_status(status: StatusCode) -> Self {
        let (code, detail) = match status.as_u16() {
            400 => ("bad_request", "The request could not be understood."),
            401 => ("unauthorized", "Authentication is required."),
            403 => ("forbidden", "You are not allowed to do this."),
            404 => ("not_found", "No resource at this address."),
            405 => ("method_not_allowed", "This method is not allowed on this resource."),
            406 => ("not_acceptable", "The requested representation is not available."),
            408 => ("request_timeout", "The request took too long to arrive."),
            413 => ("payload_too_large", "The request body is too large."),
            414 => ("uri_too_long", "The request URI is too long."),
            415 => ("unsupported_media_type", "The request body must be application/json."),
            431 => ("headers_too_large", "The request headers are too large."),
            s if s >= 500 => ("internal_error", "An unexpected error occurred."),
            _ => ("error", "The request failed."),
        };
        Self::new(status, code, detail)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("bad request: {detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("unauthorized: {code}")]
    Unauthorized { code: &'static str, detail: &'static str },
    #[error("forbidden")]
    Forbidden { code: &'static str, detail: &'static str },
    #[error("not found")]
    NotFound,
    #[error("conflict: {code}")]
    Conflict { code: &'static str, detail: String },
    /// A 409 naming the fields that conflict (`insufficient_stock` names each short line).
    #[error("conflict: {code}")]
    ConflictFields {
        code: &'static str,
        detail: String,
        errors: Vec<FieldError>,
    },
    /// A 409 the client should retry after `Retry-After` (`idempotency_key_in_use`).
    #[error("busy: {code}")]
    Busy { code: &'static str, detail: &'static str },
    /// A 422 with a specific `code` (`idempotency_key_reused`).
    #[error("unprocessable: {code}")]
    Unprocessable { code: &'static str, detail: &'static str },
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Any other status with its own `code` (the OpenID login's 400s, 404 `unknown_provider`,
    /// 503 `provider_unavailable`).
    #[error("{code}")]
    Coded {
        status: StatusCode,
        code: &'static str,
        detail: &'static str,
    },
    #[error("rate limited")]
    RateLimited(crate::infra::ratelimit::Decision),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn unauthorized() -> Self {
        Self::Unauthorized {
            code: "unauthorized",
            detail: "A valid access token is required.",
        }
    }

    pub fn invalid_token() -> Self {
        Self::Unauthorized {
            code: "invalid_token",
            detail: "The token is invalid, expired or revoked.",
        }
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// 409 `insufficient_stock`, naming each short line.
    pub fn insufficient_stock(errors: Vec<FieldError>) -> Self {
        Self::ConflictFields {
            code: "insufficient_stock",
            detail: "Not enough stock for some lines; nothing was reserved.".into(),
            errors,
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }

    /// The problem body this error answers with.
    pub fn to_problem(&self) -> Problem {
        self.problem()
    }

    fn problem(&self) -> Problem {
        match self {
            Self::Validation(errors) => {
                let mut p = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    "One or more fields are invalid.",
                );
                p.errors = errors.clone();
                p
            }
            Self::BadRequest { code, detail } => Problem::new(StatusCode::BAD_REQUEST, code, detail.clone()),
            Self::Unauthorized { code, detail } => Problem::new(StatusCode::UNAUTHORIZED, code, *detail),
            Self::Forbidden { code, detail } => Problem::new(StatusCode::FORBIDDEN, code, *detail),
            Self::NotFound => Problem::new(StatusCode::NOT_FOUND, "not_found", "The resource does not exist."),
            Self::Conflict { code, detail } => Problem::new(StatusCode::CONFLICT, code, detail.clone()),
            Self::ConflictFields { code, detail, errors } => {
                let mut p = Problem::new(StatusCode::CONFLICT, code, detail.clone());
                p.errors = errors.clone();
                p
            }
            Self::Busy { code, detail } => Problem::new(StatusCode::CONFLICT, code, *detail),
            Self::Unprocessable { code, detail } => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, *detail),
            Self::PayloadTooLarge => Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE),
            Self::UnsupportedMediaType => Problem::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            Self::Unavailable(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "A backing service is temporarily unavailable; retry shortly.",
            ),
            Self::RateLimited(d) => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "Too many requests ({} policy); retry in {} s.",
                    d.policy.name,
                    d.retry_after_secs.max(1)
                ),
            ),
            Self::Coded { status, code, detail } => Problem::new(*status, code, *detail),
            Self::Internal(_) => Problem::for_status(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.problem().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Internal(e) => tracing::error!(error = ?e, "internal error"),
            Self::Unavailable(e) => tracing::warn!(error = %e, "dependency unavailable"),
            _ => {}
        }
        let mut res = self.problem().into_response();
        if let Self::RateLimited(d) = self {
            d.write_headers(res.headers_mut());
        }
        if matches!(self, Self::Busy { .. }) {
            res.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        if matches!(self, Self::Unauthorized { .. }) {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        res
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Validation(errors) => Self::Validation(errors),
        }
    }
}

/// Every `DbError` variant, mapped on purpose. A named constraint the use case expected is mapped
/// by the service (`services::on_constraint`); what reaches here is unexpected but still a client
/// answer where the client can act on it.
impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound => Self::NotFound,
            DbError::UniqueViolation { constraint } => {
                tracing::warn!(%constraint, "unmapped unique violation");
                Self::Conflict {
                    code: "conflict",
                    detail: "A conflicting record already exists.".into(),
                }
            }
            // A referenced row went away (or a check the edge should have made): the write
            // raced another change; the client can reload and retry.
            DbError::ConstraintViolation { constraint } => {
                tracing::warn!(%constraint, "unmapped constraint violation");
                Self::Conflict {
                    code: "conflict",
                    detail: "The change conflicts with the current state of related records.".into(),
                }
            }
            // Serialization failure or deadlock: nothing was written; retrying is safe.
            DbError::Retry => Self::Unavailable("transaction conflict (serialization failure or deadlock)".into()),
            // A row lock held too long by another transaction: nothing was written.
            DbError::LockTimeout => Self::Unavailable("lock wait timed out".into()),
            DbError::Unavailable(e) => Self::Unavailable(e.to_string()),
            other @ DbError::Other(_) => Self::Internal(other.into()),
        }
    }
}

impl From<auth::password::HashError> for ApiError {
    fn from(e: auth::password::HashError) -> Self {
        Self::Internal(e.into())
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        DbError::from(e).into()
    }
}

/// The one place a service outcome becomes an HTTP status and a stable `code`.
impl From<crate::services::Error> for ApiError {
    fn from(e: crate::services::Error) -> Self {
        use crate::services::Error as E;
        match e {
            E::Invalid(errors) => Self::Validation(errors),
            E::InvalidCredentials => Self::Unauthorized {
                code: "invalid_credentials",
                detail: "The e-mail or password is wrong.",
            },
            E::InvalidRefreshToken => Self::invalid_token(),
            E::InvalidEmailToken => Self::BadRequest {
                code: "invalid_token",
                detail: "The token is invalid, expired or already used.".into(),
            },
            E::WrongCurrentPassword => Self::Forbidden {
                code: "invalid_current_password",
                detail: "The current password is wrong.",
            },
            E::RateLimited(d) => Self::RateLimited(d),
            E::NotFound => Self::NotFound,
            E::Conflict { code, detail } => Self::Conflict { code, detail },
            E::InsufficientStock(errors) => Self::insufficient_stock(errors),
            E::InvalidTransition { from, action } => Self::Conflict {
                code: "invalid_transition",
                detail: format!(
                    "An order that is {} cannot be {}.",
                    from.as_str(),
                    action.past_participle()
                ),
            },
            E::KeyInUse => Self::Busy {
                code: "idempotency_key_in_use",
                detail: "A request with this Idempotency-Key is still being processed; retry shortly.",
            },
            E::KeyReused => Self::Unprocessable {
                code: "idempotency_key_reused",
                detail: "This Idempotency-Key was already used with a different request body.",
            },
            E::OAuth(f) => oauth_failure(&f),
            E::Db(e) => e.into(),
            E::Internal(e) => Self::Internal(e),
        }
    }
}

fn oauth_failure(f: &crate::services::oauth::Failure) -> ApiError {
    use crate::services::oauth::Failure as F;
    let (status, code, detail) = match f {
        F::UnknownProvider => (
            StatusCode::NOT_FOUND,
            "unknown_provider",
            "No such login provider is configured.",
        ),
        F::InvalidState => (
            StatusCode::BAD_REQUEST,
            "invalid_state",
            "The login request is unknown, expired, already used or for another provider; start again.",
        ),
        F::Denied => (
            StatusCode::BAD_REQUEST,
            "oauth_denied",
            "The provider did not grant the login.",
        ),
        F::InvalidCode => (
            StatusCode::BAD_REQUEST,
            "invalid_code",
            "The code is invalid, expired or already used.",
        ),
        F::InvalidIdToken => (
            StatusCode::BAD_REQUEST,
            "invalid_id_token",
            "The provider's ID token did not verify.",
        ),
        F::ProviderUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "provider_unavailable",
            "The login provider cannot be reached; retry shortly.",
        ),
        F::StoreUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "A backing service is temporarily unavailable; retry shortly.",
        ),
    };
    ApiError::Coded { status, code, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::Error as S;

    fn answer(e: ApiError) -> (u16, String) {
        let p = e.problem();
        (p.status, p.code)
    }

    /// Every database and service outcome → its status and `code`, in one table.
    #[test]
    fn every_error_maps_to_its_status_and_code() {
        let table: Vec<(ApiError, u16, &str)> = vec![
            (DbError::NotFound.into(), 404, "not_found"),
            (
                DbError::UniqueViolation {
                    constraint: "x_key".into(),
                }
                .into(),
                409,
                "conflict",
            ),
            (
                DbError::ConstraintViolation {
                    constraint: "x_fkey".into(),
                }
                .into(),
                409,
                "conflict",
            ),
            (DbError::Retry.into(), 503, "service_unavailable"),
            (DbError::LockTimeout.into(), 503, "service_unavailable"),
            (
                S::InsufficientStock(vec![FieldError::new("items[0].quantity", "only 1 in stock")]).into(),
                409,
                "insufficient_stock",
            ),
            (
                S::InvalidTransition {
                    from: domain::orders::OrderStatus::Delivered,
                    action: domain::orders::Action::Cancel,
                }
                .into(),
                409,
                "invalid_transition",
            ),
            (S::KeyInUse.into(), 409, "idempotency_key_in_use"),
            (S::KeyReused.into(), 422, "idempotency_key_reused"),
            (
                DbError::unavailable("pool timed out").into(),
                503,
                "service_unavailable",
            ),
            (DbError::other("boom").into(), 500, "internal_error"),
            (
                S::Invalid(vec![FieldError::new("f", "bad")]).into(),
                422,
                "validation_failed",
            ),
            (S::InvalidCredentials.into(), 401, "invalid_credentials"),
            (S::InvalidRefreshToken.into(), 401, "invalid_token"),
            (S::InvalidEmailToken.into(), 400, "invalid_token"),
            (S::WrongCurrentPassword.into(), 403, "invalid_current_password"),
            (S::NotFound.into(), 404, "not_found"),
            (
                S::RateLimited(crate::infra::ratelimit::Decision {
                    policy: crate::config::Policy::parse("refresh", "30/60").unwrap(),
                    allowed: false,
                    remaining: 0,
                    reset_secs: 2,
                    retry_after_secs: 2,
                })
                .into(),
                429,
                "rate_limited",
            ),
            (
                S::Conflict {
                    code: "email_taken",
                    detail: "taken".into(),
                }
                .into(),
                409,
                "email_taken",
            ),
            (S::Db(DbError::Retry).into(), 503, "service_unavailable"),
            (S::Internal(anyhow::anyhow!("x")).into(), 500, "internal_error"),
        ];
        for (error, status, code) in table {
            let label = format!("{error:?}");
            assert_eq!(answer(error), (status, code.to_owned()), "{label}");
        }
    }

    #[test]
    fn on_constraint_maps_only_the_named_constraint() {
        let mapped = crate::services::on_constraint("users_email_key", || S::NotFound)(DbError::UniqueViolation {
            constraint: "users_email_key".into(),
        });
        assert!(matches!(mapped, S::NotFound), "{mapped:?}");
        let other = crate::services::on_constraint("users_email_key", || S::NotFound)(DbError::UniqueViolation {
            constraint: "other_key".into(),
        });
        assert!(matches!(other, S::Db(DbError::UniqueViolation { .. })), "{other:?}");
    }

    #[test]
    fn db_errors_keep_their_source() {
        use std::error::Error as _;
        let e = DbError::from(diesel::result::Error::BrokenTransactionManager);
        assert!(e.source().is_some(), "{e:?}");
    }
}
