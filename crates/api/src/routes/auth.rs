//! `/v1/auth/*`: sign-up, login, refresh, logout and the caller's sessions.

use actix_web::{HttpResponse, http::header, web};
use chrono::{DateTime, Utc};
use garde::Validate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    dto::UserResponse,
    error::{ApiResult, Problem},
    http::extract::{AuthUser, ClientMeta, IdPath, ValidJson},
    http::ratelimit::Limits,
    infra::ratelimit::{account_subject, token_subject},
    services::{self, auth::NewAccount},
    state::AppState,
    validate,
};
use domain::{Email, Password, Role, SessionId, UserName};

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// Compared case-insensitively; stored lower-cased.
    #[garde(custom(validate::email))]
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// 8 to 72 bytes (bcrypt's limit; longer passwords are rejected, never truncated).
    #[garde(custom(validate::password))]
    #[schema(example = "correct horse battery staple", min_length = 8, max_length = 72)]
    pub password: String,
    #[garde(custom(validate::name))]
    #[schema(example = "Ada Lovelace", min_length = 1, max_length = 100)]
    pub name: String,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[garde(length(max = 320))]
    pub email: String,
    #[garde(length(max = 1024))]
    pub password: String,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[garde(length(min = 1, max = 256))]
    pub refresh_token: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// JWT access token; send as `Authorization: Bearer …`.
    pub access_token: String,
    /// Opaque refresh token; single use (each refresh returns a new one).
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Access-token lifetime in seconds.
    pub expires_in: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SignupResponse {
    pub user: UserResponse,
    #[serde(flatten)]
    pub tokens: TokenResponse,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionResponse {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// True for the session of the access token making this request.
    pub current: bool,
}

impl From<services::auth::Tokens> for TokenResponse {
    fn from(t: services::auth::Tokens) -> Self {
        Self {
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            token_type: "Bearer".into(),
            expires_in: t.expires_in,
        }
    }
}

fn no_store(status: actix_web::http::StatusCode) -> actix_web::HttpResponseBuilder {
    let mut b = HttpResponse::build(status);
    b.insert_header((header::CACHE_CONTROL, "no-store"));
    b
}

/// Create an account and a first session.
#[utoipa::path(post, path = "/v1/auth/signup", tag = "auth", request_body = SignupRequest, responses(
    (status = 201, body = SignupResponse),
    (status = 409, body = Problem, content_type = "application/problem+json", description = "`email_taken`"),
    (status = 422, body = Problem, content_type = "application/problem+json", description = "`validation_failed`: bad e-mail, weak or over-long password, unknown field"),
    (status = 429, body = Problem, content_type = "application/problem+json", description = "`rate_limited` (SIGNUP policy, per IP)"),
    (status = 400, body = Problem, content_type = "application/problem+json", description = "`malformed_json`"),
    (status = 415, body = Problem, content_type = "application/problem+json"),
))]
pub async fn signup(
    state: web::Data<AppState>,
    limits: Limits,
    meta: ClientMeta,
    ValidJson(body): ValidJson<SignupRequest>,
) -> ApiResult<HttpResponse> {
    limits.per_ip(limits.policies().signup).await?;
    let account = NewAccount {
        email: Email::parse(&body.email)?,
        password: Password::parse(body.password, "password")?,
        name: UserName::parse(&body.name)?,
        role: Role::User,
    };
    let (user, tokens) = services::auth::signup(&state, account, &meta).await?;
    Ok(no_store(actix_web::http::StatusCode::CREATED).json(SignupResponse {
        user: user.into(),
        tokens: tokens.into(),
    }))
}

/// Exchange e-mail and password for a token pair (a new session).
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest, responses(
    (status = 200, body = TokenResponse),
    (status = 401, body = Problem, content_type = "application/problem+json", description = "`invalid_credentials` (same for an unknown e-mail)"),
    (status = 429, body = Problem, content_type = "application/problem+json", description = "`rate_limited` (LOGIN policy, per IP and per account); `Retry-After` says when to retry"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub async fn login(
    state: web::Data<AppState>,
    limits: Limits,
    meta: ClientMeta,
    ValidJson(body): ValidJson<LoginRequest>,
) -> ApiResult<HttpResponse> {
    // Per client IP and per account (the normalised address, so case variants share a budget).
    let policy = limits.policies().login;
    limits.per_ip(policy).await?;
    let account = Email::parse(&body.email).map_or_else(|_| body.email.trim().to_lowercase(), String::from);
    limits.per_subject(policy, &account_subject(&account)).await?;
    let tokens = services::auth::login(&state, &body.email, &body.password, &meta).await?;
    Ok(no_store(actix_web::http::StatusCode::OK).json(TokenResponse::from(tokens)))
}

/// Rotate a refresh token. Presenting an already-used token revokes its whole session.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest, responses(
    (status = 200, body = TokenResponse),
    (status = 401, body = Problem, content_type = "application/problem+json", description = "`invalid_token`: unknown, expired, revoked or re-used token"),
    (status = 429, body = Problem, content_type = "application/problem+json", description = "`rate_limited` (REFRESH policy, per session)"),
))]
pub async fn refresh(
    state: web::Data<AppState>,
    limits: Limits,
    meta: ClientMeta,
    ValidJson(body): ValidJson<RefreshRequest>,
) -> ApiResult<HttpResponse> {
    // The REFRESH policy (per session) is charged inside the use case; its decision goes into
    // the response's RateLimit headers.
    let refreshed = services::auth::refresh(&state, &body.refresh_token, &meta)
        .await
        .map_err(|e| match e {
            services::Error::RateLimited(d) => limits.refused(d),
            e => e.into(),
        })?;
    limits.enforce(refreshed.limit)?;
    Ok(no_store(actix_web::http::StatusCode::OK).json(TokenResponse::from(refreshed.tokens)))
}

/// Revoke the session of a refresh token. Always 204 (idempotent; unknown tokens are ignored).
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = RefreshRequest, responses(
    (status = 204, description = "Session revoked"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub async fn logout(
    state: web::Data<AppState>,
    meta: ClientMeta,
    ValidJson(body): ValidJson<RefreshRequest>,
) -> ApiResult<HttpResponse> {
    services::auth::logout(&state, &body.refresh_token, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The caller's live sessions, newest first.
#[utoipa::path(get, path = "/v1/auth/sessions", tag = "auth", security(("bearer" = [])), responses(
    (status = 200, body = Vec<SessionResponse>),
    (status = 401, body = Problem, content_type = "application/problem+json"),
))]
pub async fn list_sessions(state: web::Data<AppState>, me: AuthUser) -> ApiResult<HttpResponse> {
    let sessions = services::auth::list_sessions(&state, &me.actor()).await?;
    let body: Vec<SessionResponse> = sessions
        .into_iter()
        .map(|s| SessionResponse {
            current: s.id == me.session_id,
            id: s.id.into(),
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at,
            user_agent: s.user_agent,
            ip: s.ip,
        })
        .collect();
    Ok(no_store(actix_web::http::StatusCode::OK).json(body))
}

/// Revoke one of the caller's sessions (another user's session is a 404).
#[utoipa::path(delete, path = "/v1/auth/sessions/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Session id")), responses(
    (status = 204, description = "Revoked"),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
))]
pub async fn revoke_session(
    state: web::Data<AppState>,
    me: AuthUser,
    meta: ClientMeta,
    IdPath(id): IdPath<SessionId>,
) -> ApiResult<HttpResponse> {
    services::auth::revoke_session(&state, &me.actor(), id, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The token from the e-mailed link.
    #[garde(length(min = 1, max = 256))]
    pub token: String,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotRequest {
    #[garde(length(max = 320))]
    pub email: String,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    #[garde(length(min = 1, max = 256))]
    pub token: String,
    /// 8 to 72 bytes.
    #[garde(custom(validate::password))]
    pub new_password: String,
}

/// Confirm an e-mail address with the token from the verification e-mail (single use, 24 h).
#[utoipa::path(post, path = "/v1/auth/verify-email", tag = "auth", request_body = TokenRequest, responses(
    (status = 204, description = "Verified; a welcome e-mail is queued"),
    (status = 400, body = Problem, content_type = "application/problem+json", description = "`invalid_token`: unknown, expired or used"),
))]
pub async fn verify_email(
    state: web::Data<AppState>,
    meta: ClientMeta,
    ValidJson(body): ValidJson<TokenRequest>,
) -> ApiResult<HttpResponse> {
    services::auth::verify_email(&state, &body.token, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Ask for a password-reset e-mail. Always 202, whether or not the address has an account.
#[utoipa::path(post, path = "/v1/auth/password/forgot", tag = "auth", request_body = ForgotRequest, responses(
    (status = 202, description = "Accepted; an e-mail is queued if the account exists"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
    (status = 429, body = Problem, content_type = "application/problem+json"),
))]
pub async fn forgot_password(
    state: web::Data<AppState>,
    limits: Limits,
    meta: ClientMeta,
    ValidJson(body): ValidJson<ForgotRequest>,
) -> ApiResult<HttpResponse> {
    limits.per_ip(limits.policies().forgot).await?;
    services::auth::forgot_password(&state, &body.email, &meta).await?;
    Ok(HttpResponse::Accepted().finish())
}

/// Set a new password with the token from the reset e-mail (single use, 1 h). Revokes every session.
#[utoipa::path(post, path = "/v1/auth/password/reset", tag = "auth", request_body = ResetRequest, responses(
    (status = 204, description = "Password changed; all sessions revoked"),
    (status = 400, body = Problem, content_type = "application/problem+json", description = "`invalid_token`"),
    (status = 422, body = Problem, content_type = "application/problem+json", description = "weak password"),
    (status = 429, body = Problem, content_type = "application/problem+json", description = "`rate_limited` (RESET policy, per IP and per token)"),
))]
pub async fn reset_password(
    state: web::Data<AppState>,
    limits: Limits,
    meta: ClientMeta,
    ValidJson(body): ValidJson<ResetRequest>,
) -> ApiResult<HttpResponse> {
    let password = Password::parse(body.new_password, "new_password")?;
    let policy = limits.policies().reset;
    limits.per_ip(policy).await?;
    limits.per_subject(policy, &token_subject(&body.token)).await?;
    services::auth::reset_password(&state, &body.token, &password, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}
