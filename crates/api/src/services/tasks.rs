//! Tasks and categories of the signed-in user. Ownership is part of every query: another user's
//! task or category is simply not found (404), for every verb. Admins have no back door here.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use db::tasks::{self, CategoryRow, NewTask, TaskChanges, TaskRow};
use domain::{
    CategoryId, Limit, Page, TaskId, UserId,
    jobs::AuditEventType as Ev,
    tasks::{Priority, TaskCursor, TaskListQuery, TaskPatch, TaskSort, TaskStatus, completed_at_after},
};
use serde_json::json;

use crate::{
    infra::cache::{Scope, ns},
    services::{
        Error, RequestMeta, Result,
        jobs::{Target, audit},
        on_constraint,
        work::{self, conn},
    },
    state::AppState,
};

/// The cache scope of the user's task list pages: every write of theirs to a task or to a
/// category a page shows invalidates it (after commit, on every instance, before it answers).
pub fn pages_of(user_id: UserId) -> Scope {
    Scope::owned(ns::TASKS, user_id)
}

/// A task with its categories (id, name), as the API shows it.
#[derive(Debug)]
pub struct TaskView {
    pub row: TaskRow,
    pub categories: Vec<(CategoryId, String)>,
}

pub struct NewTaskInput {
    pub title: String,
    pub description: Option<String>,
    pub status: TaskStatus,
    pub priority: Priority,
    pub due_at: Option<DateTime<Utc>>,
    pub category_ids: Vec<CategoryId>,
}

fn category_exists() -> Error {
    Error::Conflict {
        code: "category_exists",
        detail: "You already have a category with this name.".into(),
    }
}

fn not_your_category(id: impl std::fmt::Display) -> Error {
    Error::field("category_ids", format!("{id} is not one of your categories"))
}

/// Links the task to its (checked) categories. A category deleted between the check and the
/// insert is the same 422 as one that never was yours (by the foreign key's name; the check's
/// lock makes it unreachable, this keeps it a client error if that ever changes).
async fn link_categories(conn: &mut db::AsyncPgConnection, task_id: TaskId, ids: &[CategoryId]) -> Result<()> {
    tasks::replace_categories(conn, task_id, ids)
        .await
        .map_err(on_constraint(tasks::TASK_CATEGORY_FK, || {
            Error::field("category_ids", "names a category that was deleted meanwhile")
        }))
}

/// Checks that every id names one of the user's categories; naming another user's (or an
/// unknown, or a just deleted) category is a 422, never a silent link. Returns the de-duplicated
/// ids, locked against deletion until the transaction ends.
async fn owned_categories(
    conn: &mut db::AsyncPgConnection,
    user_id: UserId,
    ids: &[CategoryId],
) -> Result<Vec<CategoryId>> {
    let wanted: Vec<CategoryId> = ids.iter().copied().collect::<HashSet<_>>().into_iter().collect();
    let owned: HashSet<CategoryId> = tasks::owned_category_ids(conn, user_id, &wanted)
        .await?
        .into_iter()
        .collect();
    if let Some(missing) = wanted.iter().find(|id| !owned.contains(id)) {
        return Err(not_your_category(missing));
    }
    Ok(wanted)
}

async fn view(conn: &mut db::AsyncPgConnection, row: TaskRow) -> Result<TaskView> {
    let mut cats = tasks::categories_of(conn, &[row.id]).await?;
    Ok(TaskView {
        categories: cats.remove(&row.id).unwrap_or_default(),
        row,
    })
}

pub async fn create(state: &AppState, user_id: UserId, input: NewTaskInput) -> Result<TaskView> {
    work::transaction(state, async |tx| {
        let conn = tx.conn();
        let category_ids = owned_categories(conn, user_id, &input.category_ids).await?;
        let now = Utc::now();
        let row = tasks::insert(
            conn,
            &NewTask {
                id: TaskId::generate(),
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
        tx.invalidate(pages_of(user_id));
        view(tx.conn(), row).await
    })
    .await
}

pub async fn get(state: &AppState, user_id: UserId, id: TaskId) -> Result<TaskView> {
    let mut conn = conn(state).await?;
    let row = tasks::find_owned(&mut conn, user_id, id)
        .await?
        .ok_or(Error::NotFound)?;
    view(&mut conn, row).await
}

/// Applies a partial update in one transaction: the row is locked, `completed_at` follows the
/// status, and a new category set replaces the old one atomically (an invalid set changes
/// nothing at all).
pub async fn update(state: &AppState, user_id: UserId, id: TaskId, patch: TaskPatch) -> Result<TaskView> {
    work::transaction(state, async |tx| {
        let conn = tx.conn();
        let current = tasks::lock_owned(conn, user_id, id, false)
            .await?
            .ok_or(Error::NotFound)?;
        // The category set is checked (and locked) before anything changes.
        let category_ids = match &patch.category_ids {
            Some(ids) => Some(owned_categories(conn, user_id, ids).await?),
            None => None,
        };
        let now = Utc::now();
        let completed_at = patch
            .status
            .map(|s| completed_at_after(s, Some(current.status), current.completed_at, now));
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
        if let Some(ids) = &category_ids {
            link_categories(conn, id, ids).await?;
        }
        tx.invalidate(pages_of(user_id));
        view(tx.conn(), row).await
    })
    .await
}

/// Soft delete (404 if missing or already deleted), audited through the outbox.
pub async fn delete(state: &AppState, user_id: UserId, id: TaskId, meta: &RequestMeta) -> Result<()> {
    work::transaction(state, async |tx| {
        tasks::set_deleted(tx.conn(), user_id, id, true)
            .await?
            .ok_or(Error::NotFound)?;
        tx.invalidate(pages_of(user_id));
        tx.enqueue(audit(Ev::TaskDeleted, Some(user_id), Target::Task(id), meta, json!({})));
        Ok(())
    })
    .await
}

/// Undoes a soft delete. Restoring a task that is not deleted is a no-op (idempotent).
pub async fn restore(state: &AppState, user_id: UserId, id: TaskId, meta: &RequestMeta) -> Result<TaskView> {
    work::transaction(state, async |tx| {
        let current = tasks::lock_owned(tx.conn(), user_id, id, true)
            .await?
            .ok_or(Error::NotFound)?;
        if current.deleted_at.is_none() {
            return view(tx.conn(), current).await;
        }
        let row = tasks::set_deleted(tx.conn(), user_id, id, false)
            .await?
            .ok_or(Error::NotFound)?;
        tx.invalidate(pages_of(user_id));
        tx.enqueue(audit(
            Ev::TaskRestored,
            Some(user_id),
            Target::Task(id),
            meta,
            json!({}),
        ));
        view(tx.conn(), row).await
    })
    .await
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
            p: Some(row.priority.rank()),
            id: row.id,
        },
    }
}

/// One page: the tasks (one statement) and all their categories (one more), whatever the page
/// size.
pub async fn list_page(
    conn: &mut db::AsyncPgConnection,
    user_id: UserId,
    query: &TaskListQuery,
) -> Result<Page<TaskView>> {
    let rows = tasks::list(conn, user_id, query, query.limit.get() + 1).await?;
    let page = Page::from_overfetch(rows, query.limit, |(r, _)| cursor_of(query.sort, r));
    Ok(page.map(|(row, categories)| TaskView { categories, row }))
}

pub async fn list(state: &AppState, user_id: UserId, query: &TaskListQuery) -> Result<Page<TaskView>> {
    let mut conn = conn(state).await?;
    list_page(&mut conn, user_id, query).await
}

// ---- categories ----

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct CategoryCursor {
    pub id: CategoryId,
}

pub async fn list_categories(
    state: &AppState,
    user_id: UserId,
    after: Option<CategoryId>,
    limit: Limit,
) -> Result<Page<CategoryRow>> {
    let rows = tasks::list_categories(&mut *conn(state).await?, user_id, after, limit.get() + 1).await?;
    Ok(Page::from_overfetch(rows, limit, |c| CategoryCursor { id: c.id }))
}

pub async fn create_category(state: &AppState, user_id: UserId, name: &str) -> Result<CategoryRow> {
    tasks::insert_category(&mut *conn(state).await?, user_id, name)
        .await
        .map_err(on_constraint(tasks::CATEGORY_NAME_UNIQUE, category_exists))
}

/// Renames the category; the user's task pages (which embed its name) are invalidated.
pub async fn rename_category(state: &AppState, user_id: UserId, id: CategoryId, name: &str) -> Result<CategoryRow> {
    work::transaction(state, async |tx| {
        let row = tasks::rename_category(tx.conn(), user_id, id, name)
            .await
            .map_err(on_constraint(tasks::CATEGORY_NAME_UNIQUE, category_exists))?
            .ok_or(Error::NotFound)?;
        tx.invalidate(pages_of(user_id));
        Ok(row)
    })
    .await
}

/// Deletes the category and its task links; the user's task pages are invalidated.
pub async fn delete_category(state: &AppState, user_id: UserId, id: CategoryId) -> Result<()> {
    work::transaction(state, async |tx| {
        if !tasks::delete_category(tx.conn(), user_id, id).await? {
            return Err(Error::NotFound);
        }
        tx.invalidate(pages_of(user_id));
        Ok(())
    })
    .await
}
