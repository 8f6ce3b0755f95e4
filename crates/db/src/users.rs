//! The `users` aggregate: accounts, soft delete, the admin list.

use chrono::{DateTime, Utc};
use diesel::{
    BoolExpressionMethods, ExpressionMethods, Insertable, OptionalExtension, QueryDsl, Queryable, Selectable,
    SelectableHelper, TextExpressionMethods, dsl::sql, sql_types::Bool,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::UserId;

use crate::{DbResult, schema::users};

/// The unique index that keeps one live account per e-mail.
pub const EMAIL_UNIQUE: &str = "users_email_key";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub name: String,
    /// `None` for an account created by an OpenID login that never set a password.
    pub password_hash: Option<String>,
    /// Decoded strictly: a value the CHECK constraint should never admit is an error, not a default.
    #[diesel(deserialize_as = String)]
    pub role: domain::Role,
    pub email_verified_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub id: UserId,
    pub email: &'a str,
    pub name: &'a str,
    pub password_hash: Option<&'a str>,
    pub role: &'a str,
}

/// A partial update: `None` leaves the column unchanged.
#[derive(Debug, Default, diesel::AsChangeset)]
#[diesel(table_name = users)]
pub struct UserChanges<'a> {
    pub name: Option<&'a str>,
    pub role: Option<&'a str>,
    pub password_hash: Option<&'a str>,
    pub updated_at: Option<DateTime<Utc>>,
}

pub async fn insert(conn: &mut AsyncPgConnection, new: &NewUser<'_>) -> DbResult<User> {
    Ok(diesel::insert_into(users::table)
        .values(new)
        .returning(User::as_returning())
        .get_result(conn)
        .await?)
}

pub async fn find_active_by_email(conn: &mut AsyncPgConnection, email: &str) -> DbResult<Option<User>> {
    Ok(users::table
        .filter(users::email.eq(email))
        .filter(users::deleted_at.is_null())
        .select(User::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn find_active(conn: &mut AsyncPgConnection, id: UserId) -> DbResult<Option<User>> {
    Ok(users::table
        .find(id)
        .filter(users::deleted_at.is_null())
        .select(User::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Escapes `%`, `_` and `\` so user input is matched literally by `LIKE`.
fn like_prefix(q: &str) -> String {
    let mut out = String::with_capacity(q.len() + 1);
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// One page of live users in id (= creation) order, after `after`, optionally filtered by an
/// e-mail or name prefix (case-insensitive).
pub async fn list(
    conn: &mut AsyncPgConnection,
    after: Option<UserId>,
    q: Option<&str>,
    limit: i64,
) -> DbResult<Vec<User>> {
    let mut query = users::table
        .filter(users::deleted_at.is_null())
        .select(User::as_select())
        .order(users::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(users::id.gt(after));
    }
    if let Some(q) = q {
        let pattern = like_prefix(&q.to_lowercase());
        query = query.filter(
            users::email
                .like(pattern.clone())
                .or(sql::<Bool>("lower(name) LIKE ").bind::<diesel::sql_types::Text, _>(pattern)),
        );
    }
    Ok(query.load(conn).await?)
}

pub async fn update(conn: &mut AsyncPgConnection, id: UserId, changes: &UserChanges<'_>) -> DbResult<User> {
    Ok(
        diesel::update(users::table.find(id).filter(users::deleted_at.is_null()))
            .set((changes, users::updated_at.eq(diesel::dsl::now)))
            .returning(User::as_returning())
            .get_result(conn)
            .await?,
    )
}

/// Marks the account deleted. Returns false when it did not exist or was already deleted.
pub async fn soft_delete(conn: &mut AsyncPgConnection, id: UserId) -> DbResult<bool> {
    let n = diesel::update(users::table.find(id).filter(users::deleted_at.is_null()))
        .set((
            users::deleted_at.eq(diesel::dsl::now),
            users::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

pub async fn mark_email_verified(conn: &mut AsyncPgConnection, id: UserId) -> DbResult<bool> {
    let n = diesel::update(
        users::table
            .find(id)
            .filter(users::deleted_at.is_null())
            .filter(users::email_verified_at.is_null()),
    )
    .set(users::email_verified_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::like_prefix;

    #[test]
    fn like_prefix_escapes_wildcards() {
        assert_eq!(like_prefix("a%b_c\\"), "a\\%b\\_c\\\\%");
        assert_eq!(like_prefix("bob"), "bob%");
    }
}
