//! `/v1/categories`: the signed-in user's own categories (name unique per user,
//! case-insensitively).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use domain::{CategoryId, Cursor, Limit, tasks::parse_category_name};
use garde::Validate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    dto::Page,
    error::{ApiResult, Problem},
    http::extract::{AuthUser, IdPath, JsonBody, ValidQuery},
    services::tasks::{self as svc, CategoryCursor},
    state::AppState,
};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CategoryResponse {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<db::tasks::CategoryRow> for CategoryResponse {
    fn from(c: db::tasks::CategoryRow) -> Self {
        Self {
            id: c.id.into(),
            name: c.name,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryRequest {
    /// 1–50 characters; unique among your categories, case-insensitively.
    pub name: String,
}

#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CategoryListQuery {
    #[garde(range(min = 1, max = 100))]
    pub limit: Option<i64>,
    #[garde(length(max = 512))]
    pub cursor: Option<String>,
}

/// Your categories, in creation order.
#[utoipa::path(get, path = "/v1/categories", tag = "tasks", security(("bearer" = [])), params(CategoryListQuery), responses(
    (status = 200, body = Page<CategoryResponse>),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub async fn list_categories(
    state: web::Data<AppState>,
    me: AuthUser,
    ValidQuery(q): ValidQuery<CategoryListQuery>,
) -> ApiResult<HttpResponse> {
    let limit = Limit::parse(q.limit)?;
    let after = q
        .cursor
        .as_deref()
        .map(Cursor::decode::<CategoryCursor>)
        .transpose()?
        .map(|c| c.id);
    let page = svc::list_categories(&state, me.id(), after, limit).await?;
    Ok(HttpResponse::Ok().json(Page::of(page, CategoryResponse::from)))
}

/// Create a category.
#[utoipa::path(post, path = "/v1/categories", tag = "tasks", security(("bearer" = [])), request_body = CategoryRequest, responses(
    (status = 201, body = CategoryResponse),
    (status = 409, body = Problem, content_type = "application/problem+json", description = "`category_exists`"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub async fn create_category(
    state: web::Data<AppState>,
    me: AuthUser,
    JsonBody(b): JsonBody<CategoryRequest>,
) -> ApiResult<HttpResponse> {
    let name = parse_category_name(&b.name)?;
    Ok(HttpResponse::Created().json(CategoryResponse::from(
        svc::create_category(&state, me.id(), &name).await?,
    )))
}

/// Rename one of your categories.
#[utoipa::path(patch, path = "/v1/categories/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = CategoryRequest, responses(
    (status = 200, body = CategoryResponse),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json", description = "`category_exists`"),
))]
pub async fn rename_category(
    state: web::Data<AppState>,
    me: AuthUser,
    IdPath(id): IdPath<CategoryId>,
    JsonBody(b): JsonBody<CategoryRequest>,
) -> ApiResult<HttpResponse> {
    let name = parse_category_name(&b.name)?;
    Ok(HttpResponse::Ok().json(CategoryResponse::from(
        svc::rename_category(&state, me.id(), id, &name).await?,
    )))
}

/// Delete one of your categories; its tasks stay and lose the category.
#[utoipa::path(delete, path = "/v1/categories/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = Uuid, Path)), responses(
    (status = 204, description = "Deleted"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
))]
pub async fn delete_category(
    state: web::Data<AppState>,
    me: AuthUser,
    IdPath(id): IdPath<CategoryId>,
) -> ApiResult<HttpResponse> {
    svc::delete_category(&state, me.id(), id).await?;
    Ok(HttpResponse::NoContent().finish())
}
