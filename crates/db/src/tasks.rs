//! The `tasks` and `categories` aggregates. Every query is scoped by `user_id`: another user's
//! rows are simply not found.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::{
    AsChangeset, BoolExpressionMethods, ExpressionMethods, Insertable, OptionalExtension, PgTextExpressionMethods,
    QueryDsl, Queryable, Selectable, SelectableHelper,
    dsl::exists,
    pg::Pg,
    sql_types::{Array, Int2, Record, Text, Timestamptz},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::{
    CategoryId, TaskId, UserId,
    tasks::{TaskListQuery, TaskSort},
};

use crate::{
    DbResult,
    fragment::{Bound, after, static_sql},
    schema::{categories, task_categories, tasks},
};

/// The unique index that keeps category names unique per user, case-insensitively.
pub const CATEGORY_NAME_UNIQUE: &str = "categories_user_name_key";

/// The foreign key from a task's category link to the category. A write that links a category
/// deleted meanwhile violates it (see [`owned_category_ids`] for why that cannot happen in a
/// transaction that checked ownership first).
pub const TASK_CATEGORY_FK: &str = "task_categories_category_id_fkey";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = tasks, check_for_backend(Pg))]
pub struct TaskRow {
    pub id: TaskId,
    pub user_id: UserId,
    pub title: String,
    pub description: Option<String>,
    /// Decoded strictly: an unknown stored value is an error, never a default.
    #[diesel(deserialize_as = String)]
    pub status: domain::tasks::TaskStatus,
    #[diesel(deserialize_as = i16)]
    pub priority: domain::tasks::Priority,
    pub due_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = tasks)]
pub struct NewTask<'a> {
    pub id: TaskId,
    pub user_id: UserId,
    pub title: &'a str,
    pub description: Option<&'a str>,
    pub status: &'a str,
    pub priority: i16,
    pub due_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A partial update. Outer `None` = unchanged; `Some(None)` = set NULL (nullable columns).
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = tasks)]
pub struct TaskChanges<'a> {
    pub title: Option<&'a str>,
    pub description: Option<Option<&'a str>>,
    pub status: Option<&'a str>,
    pub priority: Option<i16>,
    pub due_at: Option<Option<DateTime<Utc>>>,
    pub completed_at: Option<Option<DateTime<Utc>>>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = categories, check_for_backend(Pg))]
pub struct CategoryRow {
    pub id: CategoryId,
    pub user_id: UserId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn insert(conn: &mut AsyncPgConnection, new: &NewTask<'_>) -> DbResult<TaskRow> {
    Ok(diesel::insert_into(tasks::table)
        .values(new)
        .returning(TaskRow::as_returning())
        .get_result(conn)
        .await?)
}

/// The user's task, locked for update (inside a transaction). Deleted tasks only if asked.
pub async fn lock_owned(
    conn: &mut AsyncPgConnection,
    user_id: UserId,
    id: TaskId,
    include_deleted: bool,
) -> DbResult<Option<TaskRow>> {
    let owned = tasks::table
        .find(id)
        .filter(tasks::user_id.eq(user_id))
        .select(TaskRow::as_select());
    let row = if include_deleted {
        owned.for_update().first(conn).await
    } else {
        owned.filter(tasks::deleted_at.is_null()).for_update().first(conn).await
    };
    Ok(row.optional()?)
}

pub async fn find_owned(conn: &mut AsyncPgConnection, user_id: UserId, id: TaskId) -> DbResult<Option<TaskRow>> {
    Ok(tasks::table
        .find(id)
        .filter(tasks::user_id.eq(user_id))
        .filter(tasks::deleted_at.is_null())
        .select(TaskRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn update(conn: &mut AsyncPgConnection, id: TaskId, changes: &TaskChanges<'_>) -> DbResult<TaskRow> {
    Ok(diesel::update(tasks::table.find(id))
        .set(changes)
        .returning(TaskRow::as_returning())
        .get_result(conn)
        .await?)
}

/// Sets or clears `deleted_at` on the user's task if it is in the other state. Returns the row
/// when it changed.
pub async fn set_deleted(
    conn: &mut AsyncPgConnection,
    user_id: UserId,
    id: TaskId,
    deleted: bool,
) -> DbResult<Option<TaskRow>> {
    let target = tasks::table.find(id).filter(tasks::user_id.eq(user_id));
    let now = Utc::now();
    let row = if deleted {
        diesel::update(target.filter(tasks::deleted_at.is_null()))
            .set((tasks::deleted_at.eq(now), tasks::updated_at.eq(now)))
            .returning(TaskRow::as_returning())
            .get_result(conn)
            .await
    } else {
        diesel::update(target.filter(tasks::deleted_at.is_not_null()))
            .set((tasks::deleted_at.eq(None::<DateTime<Utc>>), tasks::updated_at.eq(now)))
            .returning(TaskRow::as_returning())
            .get_result(conn)
            .await
    };
    Ok(row.optional()?)
}

/// Which of `ids` are categories of this user, each locked `FOR KEY SHARE` until the end of the
/// transaction (call inside one): a concurrent delete of one of them waits for this transaction,
/// so links inserted after this check cannot violate [`TASK_CATEGORY_FK`], and a category deleted
/// just before is simply not returned. The lock is the one the foreign key check itself takes; it
/// does not block renames or other links.
pub async fn owned_category_ids(
    conn: &mut AsyncPgConnection,
    user_id: UserId,
    ids: &[CategoryId],
) -> DbResult<Vec<CategoryId>> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    Ok(categories::table
        .filter(categories::user_id.eq(user_id))
        .filter(categories::id.eq_any(ids))
        .select(categories::id)
        .for_key_share()
        .load(conn)
        .await?)
}

/// Replaces the task's category set (call inside a transaction: delete + insert).
pub async fn replace_categories(
    conn: &mut AsyncPgConnection,
    task_id: TaskId,
    category_ids: &[CategoryId],
) -> DbResult<()> {
    diesel::delete(task_categories::table.filter(task_categories::task_id.eq(task_id)))
        .execute(conn)
        .await?;
    if !category_ids.is_empty() {
        let rows: Vec<_> = category_ids
            .iter()
            .map(|c| {
                (
                    task_categories::task_id.eq(task_id),
                    task_categories::category_id.eq(*c),
                )
            })
            .collect();
        diesel::insert_into(task_categories::table)
            .values(rows)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// The categories of several tasks in one query: task id → [(category id, name)], by name.
pub async fn categories_of(
    conn: &mut AsyncPgConnection,
    task_ids: &[TaskId],
) -> DbResult<HashMap<TaskId, Vec<(CategoryId, String)>>> {
    if task_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(TaskId, CategoryId, String)> = task_categories::table
        .inner_join(categories::table)
        .filter(task_categories::task_id.eq_any(task_ids))
        .order((categories::name.asc(), categories::id.asc()))
        .select((task_categories::task_id, categories::id, categories::name))
        .load(conn)
        .await?;
    let mut map: HashMap<TaskId, Vec<(CategoryId, String)>> = HashMap::new();
    for (task, id, name) in rows {
        map.entry(task).or_default().push((id, name));
    }
    Ok(map)
}

/// Escapes `%`, `_` and `\\` for a literal substring match.
fn like_contains(q: &str) -> String {
    let mut out = String::with_capacity(q.len() + 2);
    out.push('%');
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Ties of every sort are broken by id.
const TIE: &str = "tasks.id";
const DUE_ASC_KEY: &str = "coalesce(tasks.due_at, 'infinity'::timestamptz)";
const DUE_DESC_KEY: &str = "coalesce(tasks.due_at, '-infinity'::timestamptz)";

/// One page of the user's tasks: filters, the sort (ties by id), the keyset after the cursor,
/// and `limit` rows. One statement.
/// A task's categories (by name, then id) as one column of the page's own statement, so that a
/// page with its categories is one round trip (and, constant, it leaves the statement cacheable).
const CATEGORIES_OF_TASK: &str = "array(select (c.id, c.name) from task_categories tc \
     join categories c on c.id = tc.category_id where tc.task_id = tasks.id order by c.name, c.id)";

/// A page of a user's tasks, each with its categories, in one statement.
pub async fn list(
    conn: &mut AsyncPgConnection,
    user_id: UserId,
    q: &TaskListQuery,
    limit: i64,
) -> DbResult<Vec<(TaskRow, Vec<(CategoryId, String)>)>> {
    let mut query = tasks::table
        .filter(tasks::user_id.eq(user_id))
        .select((
            TaskRow::as_select(),
            static_sql::<Array<Record<(diesel::sql_types::Uuid, Text)>>>(CATEGORIES_OF_TASK),
        ))
        .into_boxed::<Pg>();
    if !q.include_deleted {
        query = query.filter(tasks::deleted_at.is_null());
    }
    if !q.statuses.is_empty() {
        query = query.filter(tasks::status.eq_any(q.statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>()));
    }
    if !q.priorities.is_empty() {
        query = query.filter(tasks::priority.eq_any(q.priorities.iter().map(|p| p.rank()).collect::<Vec<_>>()));
    }
    if let Some(category) = q.category_id {
        query = query.filter(exists(
            task_categories::table
                .filter(task_categories::category_id.eq(category))
                .filter(task_categories::task_id.eq(tasks::id)),
        ));
    }
    if let Some(before) = q.due_before {
        query = query.filter(tasks::due_at.lt(before));
    }
    if let Some(after) = q.due_after {
        query = query.filter(tasks::due_at.ge(after));
    }
    if let Some(text) = &q.q {
        query = query.filter(tasks::title.ilike(like_contains(text)));
    }
    let desc = q.sort.descending();
    // The keyset condition compares the same expression the index is built on.
    if let Some(c) = &q.after {
        let id = c.id.into_uuid();
        query = match q.sort {
            TaskSort::CreatedAsc | TaskSort::CreatedDesc => query.filter(after::<Timestamptz, _>(
                "tasks.created_at",
                TIE,
                desc,
                Bound::Value(c.t.unwrap_or_default()),
                id,
            )),
            TaskSort::DueAsc | TaskSort::DueDesc => {
                let (key, none) = if q.sort == TaskSort::DueAsc {
                    (DUE_ASC_KEY, "'infinity'::timestamptz")
                } else {
                    (DUE_DESC_KEY, "'-infinity'::timestamptz")
                };
                // "No due date" sorts as ±infinity, which chrono cannot carry: a literal.
                let bound = c.t.map_or(Bound::Literal(none), Bound::Value);
                query.filter(after::<Timestamptz, _>(key, TIE, desc, bound, id))
            }
            TaskSort::PriorityAsc | TaskSort::PriorityDesc => query.filter(after::<Int2, _>(
                "tasks.priority",
                TIE,
                desc,
                Bound::Value(c.p.unwrap_or(2)),
                id,
            )),
        };
    }
    query = match q.sort {
        TaskSort::CreatedAsc => query.order((tasks::created_at.asc(), tasks::id.asc())),
        TaskSort::CreatedDesc => query.order((tasks::created_at.desc(), tasks::id.desc())),
        TaskSort::DueAsc => query.order((static_sql::<Timestamptz>(DUE_ASC_KEY).asc(), tasks::id.asc())),
        TaskSort::DueDesc => query.order((static_sql::<Timestamptz>(DUE_DESC_KEY).desc(), tasks::id.desc())),
        TaskSort::PriorityAsc => query.order((tasks::priority.asc(), tasks::id.asc())),
        TaskSort::PriorityDesc => query.order((tasks::priority.desc(), tasks::id.desc())),
    };
    Ok(query.limit(limit).load(conn).await?)
}

// ---- categories ----

pub async fn insert_category(conn: &mut AsyncPgConnection, user_id: UserId, name: &str) -> DbResult<CategoryRow> {
    let now = Utc::now();
    Ok(diesel::insert_into(categories::table)
        .values((
            categories::id.eq(CategoryId::generate()),
            categories::user_id.eq(user_id),
            categories::name.eq(name),
            categories::created_at.eq(now),
            categories::updated_at.eq(now),
        ))
        .returning(CategoryRow::as_returning())
        .get_result(conn)
        .await?)
}

/// The user's categories in creation order, after `after`.
pub async fn list_categories(
    conn: &mut AsyncPgConnection,
    user_id: UserId,
    after: Option<CategoryId>,
    limit: i64,
) -> DbResult<Vec<CategoryRow>> {
    let mut q = categories::table
        .filter(categories::user_id.eq(user_id))
        .select(CategoryRow::as_select())
        .order(categories::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        q = q.filter(categories::id.gt(after));
    }
    Ok(q.load(conn).await?)
}

pub async fn rename_category(
    conn: &mut AsyncPgConnection,
    user_id: UserId,
    id: CategoryId,
    name: &str,
) -> DbResult<Option<CategoryRow>> {
    Ok(
        diesel::update(categories::table.find(id).filter(categories::user_id.eq(user_id)))
            .set((categories::name.eq(name), categories::updated_at.eq(Utc::now())))
            .returning(CategoryRow::as_returning())
            .get_result(conn)
            .await
            .optional()?,
    )
}

/// Deletes the category; its task links go with it (ON DELETE CASCADE), the tasks stay.
pub async fn delete_category(conn: &mut AsyncPgConnection, user_id: UserId, id: CategoryId) -> DbResult<bool> {
    let n = diesel::delete(
        categories::table
            .find(id)
            .filter(categories::user_id.eq(user_id).and(categories::id.eq(id))),
    )
    .execute(conn)
    .await?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::like_contains;

    #[test]
    fn substring_patterns_are_escaped() {
        assert_eq!(like_contains("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
