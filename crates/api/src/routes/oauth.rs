//! `/v1/auth/oauth/*` and `/v1/users/me/identities`: OpenID Connect login (see
//! [`services::oauth`]) and the caller's linked identities.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, http::header, web};
use chrono::{DateTime, Utc};
use garde::Validate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    error::{ApiResult, Problem},
    http::extract::{AuthUser, ClientMeta, IdPath, ValidJson, ValidQuery},
    http::ratelimit::Limits,
    routes::auth::{SignupResponse, TokenResponse},
    services::{self, oauth::Callback},
    state::AppState,
};

#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeQuery {
    /// Where the callback should send the browser (302 with `#login_code=…`); must be one of
    /// `OAUTH_RETURN_URLS`, exactly. Without it the callback answers the token pair as JSON.
    #[garde(length(max = 2048))]
    pub return_to: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The authorization code.
    pub code: Option<String>,
    /// The opaque state the authorize step issued.
    pub state: Option<String>,
    /// Set by the provider instead of `code` when it refused (`access_denied`).
    pub error: Option<String>,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    /// The `login_code` of the callback's redirect fragment (single use, 60 s).
    #[garde(length(min = 1, max = 256))]
    pub login_code: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IdentityResponse {
    pub id: Uuid,
    /// The configured provider name, e.g. `google`.
    pub provider: String,
    /// The e-mail the provider gave at the last login.
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IdentityList {
    pub items: Vec<IdentityResponse>,
}

/// Start an OpenID Connect login: 302 to the provider (code flow, PKCE S256, state, nonce).
#[utoipa::path(get, path = "/v1/auth/oauth/{provider}/authorize", tag = "auth",
    params(("provider" = String, Path, description = "A configured provider name (`OIDC_PROVIDERS`)"), AuthorizeQuery),
    responses(
        (status = 302, description = "To the provider's authorization endpoint", headers(("Location" = String))),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "`unknown_provider`"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "`return_to` not allowed"),
        (status = 429, body = Problem, content_type = "application/problem+json", description = "`rate_limited` (OAUTH policy, per IP)"),
        (status = 503, body = Problem, content_type = "application/problem+json", description = "`provider_unavailable`"),
    ))]
pub async fn authorize(
    state: web::Data<AppState>,
    limits: Limits,
    provider: web::Path<String>,
    ValidQuery(q): ValidQuery<AuthorizeQuery>,
) -> ApiResult<HttpResponse> {
    limits.per_ip(limits.policies().oauth).await?;
    let url = services::oauth::authorize(&state, &provider, q.return_to.as_deref()).await?;
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, url))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

/// The provider's redirect back: the code is exchanged and the ID token verified; the account
/// is found, linked or created. 200 with the token pair, or (when authorize had `return_to`) 302
/// to `return_to#login_code=…`.
#[utoipa::path(get, path = "/v1/auth/oauth/{provider}/callback", tag = "auth",
    params(("provider" = String, Path, description = "A configured provider name"), CallbackQuery),
    responses(
        (status = 200, body = SignupResponse),
        (status = 302, description = "To `return_to#login_code=…`", headers(("Location" = String))),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "`invalid_state`, `oauth_denied`, `invalid_code`, `invalid_id_token`"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "`unknown_provider`"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`account_exists`: an account has this e-mail and the link rule does not hold"),
        (status = 429, body = Problem, content_type = "application/problem+json", description = "`rate_limited` (OAUTH policy, per IP)"),
        (status = 503, body = Problem, content_type = "application/problem+json", description = "`provider_unavailable`"),
    ))]
pub async fn callback(
    state: web::Data<AppState>,
    req: HttpRequest,
    limits: Limits,
    meta: ClientMeta,
    provider: web::Path<String>,
) -> ApiResult<HttpResponse> {
    limits.per_ip(limits.policies().oauth).await?;
    // Read leniently: providers add parameters of their own (`iss`, `scope`, `authuser`…), and
    // a malformed callback is a 400 of the flow, not a 422.
    let mut q = Callback::default();
    for (k, v) in form_urlencoded::parse(req.query_string().as_bytes()) {
        let slot = match &*k {
            "code" => &mut q.code,
            "state" => &mut q.state,
            "error" => &mut q.error,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v.into_owned());
        }
    }
    match services::oauth::callback(&state, &provider, q, &meta).await? {
        services::oauth::Completed::Tokens(user, tokens) => Ok(HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(SignupResponse {
                user: (*user).into(),
                tokens: tokens.into(),
            })),
        services::oauth::Completed::Redirect(url) => Ok(HttpResponse::Found()
            .insert_header((header::LOCATION, url))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish()),
    }
}

/// Exchange a `login_code` (from the callback's redirect) for a token pair. Single use, 60 s.
#[utoipa::path(post, path = "/v1/auth/oauth/exchange", tag = "auth", request_body = ExchangeRequest, responses(
    (status = 200, body = SignupResponse),
    (status = 400, body = Problem, content_type = "application/problem+json", description = "`invalid_code`: unknown, expired or used"),
    (status = 429, body = Problem, content_type = "application/problem+json", description = "`rate_limited` (OAUTH policy, per IP)"),
))]
pub async fn exchange(
    state: web::Data<AppState>,
    limits: Limits,
    meta: ClientMeta,
    ValidJson(body): ValidJson<ExchangeRequest>,
) -> ApiResult<HttpResponse> {
    limits.per_ip(limits.policies().oauth).await?;
    let (user, tokens) = services::oauth::exchange(&state, &body.login_code, &meta).await?;
    Ok(HttpResponse::build(StatusCode::OK)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(SignupResponse {
            user: user.into(),
            tokens: TokenResponse::from(tokens),
        }))
}

/// The caller's linked OpenID identities, oldest first.
#[utoipa::path(get, path = "/v1/users/me/identities", tag = "users", security(("bearer" = [])), responses(
    (status = 200, body = IdentityList),
    (status = 401, body = Problem, content_type = "application/problem+json"),
))]
pub async fn list_identities(state: web::Data<AppState>, me: AuthUser) -> ApiResult<HttpResponse> {
    let items = services::oauth::list_identities(&state, &me.actor())
        .await?
        .into_iter()
        .map(|i| IdentityResponse {
            id: i.id,
            provider: i.provider,
            email: i.email,
            created_at: i.created_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(IdentityList { items }))
}

/// Unlink one of the caller's identities. Refused when it is the account's last way to sign in.
#[utoipa::path(delete, path = "/v1/users/me/identities/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Unlinked"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "`last_login_method`: no password and no other identity"),
    ))]
pub async fn unlink_identity(
    state: web::Data<AppState>,
    me: AuthUser,
    meta: ClientMeta,
    id: IdPath<Uuid>,
) -> ApiResult<HttpResponse> {
    services::oauth::unlink_identity(&state, &me.actor(), id.0, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}
