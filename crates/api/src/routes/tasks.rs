//! `/v1/tasks`: the signed-in user's own tasks.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use domain::{
    CategoryId, TaskId,
    input::{Fields, double_option},
    tasks::{Priority, TaskListQuery, TaskPatch, TaskStatus, parse_category_ids, parse_description, parse_title},
};
use garde::Validate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    dto::Page,
    error::{ApiError, ApiResult, Problem},
    http::extract::{AuthUser, ClientMeta, IdPath, JsonBody, ValidJson},
    services::tasks::{self as svc, NewTaskInput, TaskView},
    state::AppState,
};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CategoryRef {
    pub id: Uuid,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskResponse {
    pub id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub status: TaskStatus,
    pub priority: Priority,
    pub due_at: Option<DateTime<Utc>>,
    /// Sorted by name.
    pub categories: Vec<CategoryRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set while the status is `done`.
    pub completed_at: Option<DateTime<Utc>>,
    /// Set on soft-deleted tasks (visible with `include_deleted=true`).
    pub deleted_at: Option<DateTime<Utc>>,
}

impl From<TaskView> for TaskResponse {
    fn from(v: TaskView) -> Self {
        let r = v.row;
        Self {
            id: r.id.into(),
            title: r.title,
            description: r.description,
            status: r.status,
            priority: r.priority,
            due_at: r.due_at,
            categories: v
                .categories
                .into_iter()
                .map(|(id, name)| CategoryRef { id: id.into(), name })
                .collect(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            completed_at: r.completed_at,
            deleted_at: r.deleted_at,
        }
    }
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskRequest {
    /// 1–200 characters.
    #[garde(skip)]
    pub title: String,
    /// Up to 10,000 characters.
    #[garde(skip)]
    #[serde(default)]
    pub description: Option<String>,
    /// Default `todo`.
    #[garde(skip)]
    #[serde(default)]
    pub status: Option<TaskStatus>,
    /// Default `medium`.
    #[garde(skip)]
    #[serde(default)]
    pub priority: Option<Priority>,
    #[garde(skip)]
    #[serde(default)]
    pub due_at: Option<DateTime<Utc>>,
    /// Your own categories only (another user's → 422). At most 50.
    #[garde(length(max = 50))]
    #[serde(default)]
    pub category_ids: Option<Vec<Uuid>>,
}

/// Partial update: an absent field is unchanged; `null` clears `description` and `due_at`
/// (and is rejected for the other fields); `category_ids` replaces the whole set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTaskRequest {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub title: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<TaskStatus>)]
    pub status: Option<Option<TaskStatus>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Priority>)]
    pub priority: Option<Option<Priority>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub due_at: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Vec<Uuid>>)]
    pub category_ids: Option<Option<Vec<Uuid>>>,
}

/// Documentation of the list parameters (parsing is `domain::tasks::TaskListQuery::parse`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documentation of the query parameters only: parsing is in domain"
)]
pub struct TaskListParams {
    /// One or several of `todo`, `in_progress`, `done` (repeat the parameter or separate by commas).
    status: Option<Vec<TaskStatus>>,
    /// One or several of `low`, `medium`, `high`.
    priority: Option<Vec<Priority>>,
    /// Only tasks in this category.
    category_id: Option<Uuid>,
    /// Only tasks due strictly before this time (RFC 3339).
    due_before: Option<DateTime<Utc>>,
    /// Only tasks due at or after this time (RFC 3339).
    due_after: Option<DateTime<Utc>>,
    /// Case-insensitive substring of the title (1–100 characters).
    q: Option<String>,
    /// Include soft-deleted tasks (default false).
    include_deleted: Option<bool>,
    /// `created_at`, `-created_at` (default), `due_at`, `-due_at` (no due date last in both),
    /// `priority` (low → high), `-priority` (high → low). Ties are broken by id.
    sort: Option<String>,
    /// 1–100, default 20.
    limit: Option<i64>,
    /// Opaque cursor from `next_cursor`; only valid with the same `sort`.
    cursor: Option<String>,
}

/// Create a task.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", security(("bearer" = [])), request_body = CreateTaskRequest, responses(
    (status = 201, body = TaskResponse),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json", description = "Invalid field, or a category that is not yours"),
))]
pub async fn create(
    state: web::Data<AppState>,
    me: AuthUser,
    ValidJson(b): ValidJson<CreateTaskRequest>,
) -> ApiResult<HttpResponse> {
    let mut f = Fields::new();
    let title = f.check(parse_title(&b.title));
    let description = b.description.as_deref().map(|d| f.check(parse_description(d)));
    let due_at = b.due_at.and_then(|t| f.check(domain::time::check("due_at", t)));
    f.finish(())?;
    let input = NewTaskInput {
        title: title.unwrap_or_default(),
        description: description.flatten(),
        status: b.status.unwrap_or(TaskStatus::Todo),
        priority: b.priority.unwrap_or(Priority::Medium),
        due_at,
        category_ids: b
            .category_ids
            .unwrap_or_default()
            .into_iter()
            .map(CategoryId::from)
            .collect(),
    };
    let task = svc::create(&state, me.id(), input).await?;
    Ok(HttpResponse::Created().json(TaskResponse::from(task)))
}

/// List your tasks: filters, sort, cursor pagination. Each task embeds its categories. Pages are
/// cached per user (`X-Cache: hit|miss`); any write of yours to a task or a category invalidates
/// your pages on every instance before that write answers, so a page read afterwards shows it.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", security(("bearer" = [])), params(TaskListParams), responses(
    (status = 200, body = Page<TaskResponse>, headers(("X-Cache" = String, description = "`hit` or `miss`"))),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json", description = "Unknown parameter, bad filter value, unknown sort, or a tampered cursor"),
))]
pub async fn list(state: web::Data<AppState>, me: AuthUser, req: HttpRequest) -> ApiResult<HttpResponse> {
    let pairs = crate::http::extract::query_pairs(req.query_string())?;
    let query = TaskListQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let key = query.cache_key();
    let cached = state.cache.get_or_load(svc::pages_of(me.id()), &key, || async {
        let page = svc::list(&state, me.id(), &query).await?;
        serde_json::to_string(&Page::of(page, TaskResponse::from)).map_err(ApiError::internal)
    });
    Ok(crate::routes::cached_json(cached.await?))
}

/// One of your tasks.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = Uuid, Path)), responses(
    (status = 200, body = TaskResponse),
    (status = 404, body = Problem, content_type = "application/problem+json", description = "Missing, deleted, or not yours"),
))]
pub async fn get(state: web::Data<AppState>, me: AuthUser, IdPath(id): IdPath<TaskId>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(TaskResponse::from(svc::get(&state, me.id(), id).await?)))
}

/// Partially update one of your tasks.
#[utoipa::path(patch, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = UpdateTaskRequest, responses(
    (status = 200, body = TaskResponse),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub async fn update(
    state: web::Data<AppState>,
    me: AuthUser,
    IdPath(id): IdPath<TaskId>,
    JsonBody(b): JsonBody<UpdateTaskRequest>,
) -> ApiResult<HttpResponse> {
    let mut f = Fields::new();
    let patch = TaskPatch {
        title: f.set("title", b.title, |t| parse_title(&t)),
        description: f.set_or_clear(b.description, |d| parse_description(&d)),
        status: f.set("status", b.status, Ok),
        priority: f.set("priority", b.priority, Ok),
        due_at: f.set_or_clear(b.due_at, |t| domain::time::check("due_at", t)),
        category_ids: f.set("category_ids", b.category_ids, parse_category_ids),
    };
    let patch = f.finish(patch)?;
    Ok(HttpResponse::Ok().json(TaskResponse::from(svc::update(&state, me.id(), id, patch).await?)))
}

/// Soft-delete one of your tasks.
#[utoipa::path(delete, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = Uuid, Path)), responses(
    (status = 204, description = "Deleted (restorable)"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
))]
pub async fn delete(
    state: web::Data<AppState>,
    me: AuthUser,
    meta: ClientMeta,
    IdPath(id): IdPath<TaskId>,
) -> ApiResult<HttpResponse> {
    svc::delete(&state, me.id(), id, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Undo a soft delete (a no-op on a task that is not deleted).
#[utoipa::path(post, path = "/v1/tasks/{id}/restore", tag = "tasks", security(("bearer" = [])), params(("id" = Uuid, Path)), responses(
    (status = 200, body = TaskResponse),
    (status = 404, body = Problem, content_type = "application/problem+json"),
))]
pub async fn restore(
    state: web::Data<AppState>,
    me: AuthUser,
    meta: ClientMeta,
    IdPath(id): IdPath<TaskId>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(TaskResponse::from(svc::restore(&state, me.id(), id, &meta).await?)))
}
