//! `/v1/users/*`: the caller's profile and user administration (admins only).

use actix_web::{HttpResponse, web};
use garde::Validate;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::{
    dto::{Page, UserResponse},
    error::{ApiError, ApiResult, Problem},
    http::{
        extract::{AdminUser, AuthUser, ClientMeta, IdPath, ValidJson, ValidQuery},
        ratelimit::Limits,
    },
    infra::{cache::ns, ratelimit::account_subject},
    services::{
        self,
        auth::NewAccount,
        users::{PasswordChange, UserCursor},
    },
    state::AppState,
    validate,
};
use domain::{Cursor, Email, Limit, Password, Role, UserId, UserName};

/// Profile changes. `role`, `email`, `id` and `email_verified` are not accepted here (422).
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    // `serde(default)`: an absent field is optional in the schema too (utoipa marks a plain
    // `Option` required-but-nullable; schemathesis found that).
    #[serde(default)]
    #[garde(custom(validate::opt_name))]
    pub name: Option<String>,
    /// New password (8–72 bytes); requires `current_password`. Revokes your other sessions.
    #[serde(default)]
    #[garde(custom(validate::opt_password))]
    pub password: Option<String>,
    #[serde(default)]
    #[garde(length(max = 1024))]
    pub current_password: Option<String>,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    #[garde(custom(validate::email))]
    pub email: String,
    #[garde(custom(validate::password))]
    pub password: String,
    #[garde(custom(validate::name))]
    pub name: String,
    /// Defaults to `user`.
    #[garde(skip)]
    #[serde(default)]
    pub role: Option<Role>,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminUpdateUserRequest {
    #[garde(custom(validate::opt_name))]
    #[serde(default)]
    pub name: Option<String>,
    #[garde(skip)]
    #[serde(default)]
    pub role: Option<Role>,
}

#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListUsersQuery {
    /// Case-insensitive prefix of the e-mail or the name.
    #[garde(length(min = 1, max = 100))]
    pub q: Option<String>,
    /// 1–100, default 20.
    #[garde(range(min = 1, max = 100))]
    pub limit: Option<i64>,
    /// Opaque cursor from a previous page's `next_cursor`.
    #[garde(length(max = 512))]
    pub cursor: Option<String>,
}

/// Your own profile.
#[utoipa::path(get, path = "/v1/users/me", tag = "users", security(("bearer" = [])), responses(
    (status = 200, body = UserResponse),
    (status = 401, body = Problem, content_type = "application/problem+json"),
))]
pub async fn get_me(me: AuthUser) -> HttpResponse {
    HttpResponse::Ok().json(UserResponse::from(me.user))
}

/// Change your name and/or password.
#[utoipa::path(patch, path = "/v1/users/me", tag = "users", security(("bearer" = [])), request_body = UpdateMeRequest, responses(
    (status = 200, body = UserResponse),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 403, body = Problem, content_type = "application/problem+json", description = "`invalid_current_password`"),
    (status = 422, body = Problem, content_type = "application/problem+json", description = "Invalid field, unknown field (e.g. `role`), or `password` without `current_password`"),
    (status = 429, body = Problem, content_type = "application/problem+json", description = "`rate_limited` (LOGIN policy of the account: every password change attempt counts, like a login)"),
))]
pub async fn patch_me(
    state: web::Data<AppState>,
    limits: Limits,
    me: AuthUser,
    meta: ClientMeta,
    ValidJson(body): ValidJson<UpdateMeRequest>,
) -> ApiResult<HttpResponse> {
    let name = body.name.as_deref().map(UserName::parse).transpose()?;
    let password = match (body.password, body.current_password) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(ApiError::field(
                "current_password",
                "is required to change the password",
            ));
        }
        (Some(new), Some(current)) => Some(PasswordChange {
            current,
            new: Password::parse(new, "password")?,
        }),
    };
    if password.is_some() {
        // A current-password check is a password guess: it spends the account's login budget
        // before bcrypt runs, so an access token is not an unlimited oracle.
        limits
            .per_subject(limits.policies().login, &account_subject(&me.user.email))
            .await?;
    }
    let user = services::users::update_me(&state, &me.actor(), name, password, &meta).await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(user)))
}

/// List live users in creation order (admin). Cached (`X-Cache: hit|miss`); any change to a user
/// invalidates it.
#[utoipa::path(get, path = "/v1/users", tag = "users", security(("bearer" = [])), params(ListUsersQuery), responses(
    (status = 200, body = Page<UserResponse>),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json", description = "Bad `limit`, `q` or a tampered `cursor`"),
))]
pub async fn list(
    state: web::Data<AppState>,
    _admin: AdminUser,
    ValidQuery(query): ValidQuery<ListUsersQuery>,
) -> ApiResult<HttpResponse> {
    let limit = Limit::parse(query.limit)?;
    let after = query
        .cursor
        .as_deref()
        .map(Cursor::decode::<UserCursor>)
        .transpose()?
        .map(|c| c.id);
    let key = format!(
        "list:{}:{}:{}",
        limit.get(),
        query.q.as_deref().unwrap_or("").to_lowercase(),
        query.cursor.as_deref().unwrap_or("")
    );
    let cached = state.cache.get_or_load(ns::USERS, &key, || async {
        let page = services::users::list(&state, query.q.as_deref(), after, limit).await?;
        serde_json::to_string(&Page::of(page, UserResponse::from)).map_err(ApiError::internal)
    });
    Ok(crate::routes::cached_json(cached.await?))
}

/// Create a user with any role (admin).
#[utoipa::path(post, path = "/v1/users", tag = "users", security(("bearer" = [])), request_body = CreateUserRequest, responses(
    (status = 201, body = UserResponse),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json", description = "`email_taken`"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub async fn create(
    state: web::Data<AppState>,
    AdminUser(admin): AdminUser,
    meta: ClientMeta,
    ValidJson(body): ValidJson<CreateUserRequest>,
) -> ApiResult<HttpResponse> {
    let account = NewAccount {
        email: Email::parse(&body.email)?,
        password: Password::parse(body.password, "password")?,
        name: UserName::parse(&body.name)?,
        role: body.role.unwrap_or(Role::User),
    };
    let user = services::users::create(&state, &admin.actor(), account, &meta).await?;
    Ok(HttpResponse::Created().json(UserResponse::from(user)))
}

/// One user (admin).
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), responses(
    (status = 200, body = UserResponse),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
))]
pub async fn get(state: web::Data<AppState>, _admin: AdminUser, IdPath(id): IdPath<UserId>) -> ApiResult<HttpResponse> {
    let key = format!("user:{id}");
    let cached = state.cache.get_or_load(ns::USERS, &key, || async {
        let user = services::users::get(&state, id).await?;
        serde_json::to_string(&UserResponse::from(user)).map_err(ApiError::internal)
    });
    Ok(crate::routes::cached_json(cached.await?))
}

/// Change a user's name or role (admin).
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = AdminUpdateUserRequest, responses(
    (status = 200, body = UserResponse),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub async fn update(
    state: web::Data<AppState>,
    AdminUser(admin): AdminUser,
    meta: ClientMeta,
    IdPath(id): IdPath<UserId>,
    ValidJson(body): ValidJson<AdminUpdateUserRequest>,
) -> ApiResult<HttpResponse> {
    let name = body.name.as_deref().map(UserName::parse).transpose()?;
    let user = services::users::admin_update(&state, &admin.actor(), id, name, body.role, &meta).await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(user)))
}

/// Soft-delete a user: all sessions revoked, the e-mail free for re-use (admin).
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), responses(
    (status = 204, description = "Deleted"),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
))]
pub async fn delete(
    state: web::Data<AppState>,
    AdminUser(admin): AdminUser,
    meta: ClientMeta,
    IdPath(id): IdPath<UserId>,
) -> ApiResult<HttpResponse> {
    services::users::delete(&state, &admin.actor(), id, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}
