//! Tasks and categories of the signed-in user. Ownership is part of every query: another user's
//! task or category is simply not found (404), for every verb. Admins have no back door here.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use db::{
    outbox,
    tasks::{self, CategoryRow, NewTask, TaskChanges, TaskRow},
};
use diesel_async::AsyncConnection;
use domain::{
    Cursor, Limit,
    jobs::AuditEventType as Ev,
    tasks::{Priority, TaskCursor, TaskListQuery, TaskSort, TaskStatus, completed_at_after},
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult},
    extract::ClientMeta,
    services::{
        auth::conn,
        jobs::{Target, audit},
    },
    state::AppState,
};

/// A task with its categories (id, name), as the API shows it.
#[derive(Debug)]
pub struct TaskView {
    pub row: TaskRow,
    pub categories: Vec<(Uuid, String)>,
}

pub struct NewTaskInput {
    pub title: String,
    pub description: Option<String>,
    pub status: TaskStatus,
    pub priority: Priority,
    pub due_at: Option<DateTime<Utc>>,
    pub category_ids: Vec<Uuid>,
}

/// PATCH input: outer `None` = leave unchanged; `Some(None)` = clear (nullable fields only).
#[derive(Default)]
pub struct TaskPatch {
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub status: Option<TaskStatus>,
    pub priority: Option<Priority>,
    pub due_at: Option<Option<DateTime<Utc>>>,
    pub category_ids: Option<Vec<Uuid>>,
}

fn category_exists() -> ApiError {
    ApiError::Conflict {
        code: "category_exists",
        detail: "You already have a category with this name.".into(),
    }
}

fn map_category_conflict(e: db::DbError) -> ApiError {
    match e {
        db::DbError::UniqueViolation { constraint } if constraint == tasks::CATEGORY_NAME_UNIQUE => category_exists(),
        other => other.into(),
    }
}

fn not_your_category(id: impl std::fmt::Display) -> ApiError {
    ApiError::field("category_ids", format!("{id} is not one of your categories"))
}

/// Links the task to its (checked) categories. A category deleted between the check and the
/// insert is the same 422 as one that never was yours (by the foreign key's name; the check's
/// lock makes it unreachable, this keeps it a client error if that ever changes).
async fn link_categories(conn: &mut db::AsyncPgConnection, task_id: Uuid, ids: &[Uuid]) -> ApiResult<()> {
    tasks::replace_categories(conn, task_id, ids)
        .await
        .map_err(|e| match e {
            db::DbError::ConstraintViolation { constraint } if constraint == tasks::TASK_CATEGORY_FK => {
                ApiError::field("category_ids", "names a category that was deleted meanwhile")
            }
            other => other.into(),
        })
}

/// Checks that every id names one of the user's categories; naming another user's (or an
/// unknown, or a just deleted) category is a 422, never a silent link. Returns the de-duplicated
/// ids, locked against deletion until the transaction ends.
async fn owned_categories(conn: &mut db::AsyncPgConnection, user_id: Uuid, ids: &[Uuid]) -> ApiResult<Vec<Uuid>> {
    let wanted: Vec<Uuid> = ids.iter().copied().collect::<HashSet<_>>().into_iter().collect();
    let owned: HashSet<Uuid> = tasks::owned_category_ids(conn, user_id, &wanted)
        .await?
        .into_iter()
        .collect();
    if let Some(missing) = wanted.iter().find(|id| !owned.contains(id)) {
        return Err(not_your_category(missing));
    }
    Ok(wanted)
}

async fn view(conn: &mut db::AsyncPgConnection, row: TaskRow) -> ApiResult<TaskView> {
    let mut cats = tasks::categories_of(conn, &[row.id]).await?;
    Ok(TaskView {
        categories: cats.remove(&row.id).unwrap_or_default(),
        row,
    })
}

pub async fn create(state: &AppState, user_id: Uuid, input: NewTaskInput) -> ApiResult<TaskView> {
    let mut conn = conn(state).await?;
    conn.transaction::<_, ApiError, _>(async |conn| {
        let category_ids = owned_categories(conn, user_id, &input.category_ids).await?;
        let now = Utc::now();
        let row = tasks::insert(
            conn,
            &NewTask {
                id: Uuid::now_v7(),
                user_id,
                title: &input.title,
                description: input.description.as_deref(),
                status: input.status.as_str(),
                priority: input.priority.rank(),
                due_at: input.due_at,
                completed_at: completed_at_after(input.status, None, None, now),
                created_at: now,
                updated_at: now,
            },
        )
        .await?;
        link_categories(conn, row.id, &category_ids).await?;
        view(conn, row).await
    })
    .await
}

pub async fn get(state: &AppState, user_id: Uuid, id: Uuid) -> ApiResult<TaskView> {
    let mut conn = conn(state).await?;
    let row = tasks::find_owned(&mut conn, user_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    view(&mut conn, row).await
}

/// Applies a partial update in one transaction: the row is locked, `completed_at` follows the
/// status, and a new category set replaces the old one atomically (an invalid set changes
/// nothing at all).
pub async fn update(state: &AppState, user_id: Uuid, id: Uuid, patch: TaskPatch) -> ApiResult<TaskView> {
    let mut conn = conn(state).await?;
    conn.transaction::<_, ApiError, _>(async |conn| {
        let current = tasks::lock_owned(conn, user_id, id, false)
            .await?
            .ok_or(ApiError::NotFound)?;
        let now = Utc::now();
        let old_status: Option<TaskStatus> = current.status.parse().ok();
        let completed_at = patch
            .status
            .map(|s| completed_at_after(s, old_status, current.completed_at, now));
        let changes = TaskChanges {
            title: patch.title.as_deref(),
            description: patch.description.as_ref().map(|d| d.as_deref()),
            status: patch.status.map(TaskStatus::as_str),
            priority: patch.priority.map(Priority::rank),
            due_at: patch.due_at,
            completed_at,
            updated_at: Some(now),
        };
        let row = tasks::update(conn, id, &changes).await?;
        if let Some(ids) = &patch.category_ids {
            let ids = owned_categories(conn, user_id, ids).await?;
            link_categories(conn, id, &ids).await?;
        }
        view(conn, row).await
    })
    .await
}

/// Soft delete (404 if missing or already deleted), audited through the outbox.
pub async fn delete(state: &AppState, user_id: Uuid, id: Uuid, meta: &ClientMeta) -> ApiResult<()> {
    let mut conn = conn(state).await?;
    let jobs = conn
        .transaction::<_, ApiError, _>(async |conn| {
            tasks::set_deleted(conn, user_id, id, true)
                .await?
                .ok_or(ApiError::NotFound)?;
            let jobs = vec![audit(Ev::TaskDeleted, Some(user_id), Target::Task(id), meta, json!({}))];
            outbox::insert(conn, &jobs).await?;
            Ok(jobs)
        })
        .await?;
    state.jobs.after_commit(jobs);
    Ok(())
}

/// Undoes a soft delete. Restoring a task that is not deleted is a no-op (idempotent).
pub async fn restore(state: &AppState, user_id: Uuid, id: Uuid, meta: &ClientMeta) -> ApiResult<TaskView> {
    let mut conn = conn(state).await?;
    let (view, jobs) = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let current = tasks::lock_owned(conn, user_id, id, true)
                .await?
                .ok_or(ApiError::NotFound)?;
            if current.deleted_at.is_none() {
                return Ok((view(conn, current).await?, vec![]));
            }
            let row = tasks::set_deleted(conn, user_id, id, false)
                .await?
                .ok_or(ApiError::NotFound)?;
            let jobs = vec![audit(
                Ev::TaskRestored,
                Some(user_id),
                Target::Task(id),
                meta,
                json!({}),
            )];
            outbox::insert(conn, &jobs).await?;
            Ok((view(conn, row).await?, jobs))
        })
        .await?;
    state.jobs.after_commit(jobs);
    Ok(view)
}

fn cursor_of(sort: TaskSort, row: &TaskRow) -> TaskCursor {
    match sort {
        TaskSort::CreatedAsc | TaskSort::CreatedDesc => TaskCursor {
            s: sort,
            t: Some(row.created_at),
            p: None,
            id: row.id,
        },
        TaskSort::DueAsc | TaskSort::DueDesc => TaskCursor {
            s: sort,
            t: row.due_at,
            p: None,
            id: row.id,
        },
        TaskSort::PriorityAsc | TaskSort::PriorityDesc => TaskCursor {
            s: sort,
            t: None,
            p: Some(row.priority),
            id: row.id,
        },
    }
}

/// One page: the tasks (one statement) and all their categories (one more), whatever the page
/// size. Returns the views and the next cursor.
pub async fn list_page(
    conn: &mut db::AsyncPgConnection,
    user_id: Uuid,
    query: &TaskListQuery,
) -> ApiResult<(Vec<TaskView>, Option<String>)> {
    let limit = query.limit.get();
    let mut rows = tasks::list(conn, user_id, query, limit + 1).await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| Cursor::encode(&cursor_of(query.sort, r)))
    } else {
        None
    };
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut cats: HashMap<Uuid, Vec<(Uuid, String)>> = tasks::categories_of(conn, &ids).await?;
    let views = rows
        .into_iter()
        .map(|row| TaskView {
            categories: cats.remove(&row.id).unwrap_or_default(),
            row,
        })
        .collect();
    Ok((views, next))
}

pub async fn list(
    state: &AppState,
    user_id: Uuid,
    query: &TaskListQuery,
) -> ApiResult<(Vec<TaskView>, Option<String>)> {
    let mut conn = conn(state).await?;
    list_page(&mut conn, user_id, query).await
}

// ---- categories ----

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct CategoryCursor {
    pub id: Uuid,
}

pub async fn list_categories(
    state: &AppState,
    user_id: Uuid,
    after: Option<Uuid>,
    limit: Limit,
) -> ApiResult<(Vec<CategoryRow>, Option<String>)> {
    let mut rows = tasks::list_categories(&mut *conn(state).await?, user_id, after, limit.get() + 1).await?;
    let next = if rows.len() as i64 > limit.get() {
        rows.truncate(limit.get() as usize);
        rows.last().map(|c| Cursor::encode(&CategoryCursor { id: c.id }))
    } else {
        None
    };
    Ok((rows, next))
}

pub async fn create_category(state: &AppState, user_id: Uuid, name: &str) -> ApiResult<CategoryRow> {
    tasks::insert_category(&mut *conn(state).await?, user_id, name)
        .await
        .map_err(map_category_conflict)
}

pub async fn rename_category(state: &AppState, user_id: Uuid, id: Uuid, name: &str) -> ApiResult<CategoryRow> {
    tasks::rename_category(&mut *conn(state).await?, user_id, id, name)
        .await
        .map_err(map_category_conflict)?
        .ok_or(ApiError::NotFound)
}

pub async fn delete_category(state: &AppState, user_id: Uuid, id: Uuid) -> ApiResult<()> {
    if tasks::delete_category(&mut *conn(state).await?, user_id, id).await? {
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}
