//! The `identities` aggregate: the OpenID Connect identities a user signs in with, keyed by
//! (issuer, subject) — never by e-mail.

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, Insertable, OptionalExtension, QueryDsl, Queryable, Selectable, SelectableHelper};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::UserId;
use uuid::Uuid;

use crate::{
    DbResult,
    schema::{identities, users},
};

/// The unique index that keeps one account per (issuer, subject).
pub const ISSUER_SUBJECT_UNIQUE: &str = "identities_issuer_subject_key";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = identities, check_for_backend(diesel::pg::Pg))]
pub struct Identity {
    pub id: Uuid,
    pub user_id: UserId,
    pub provider: String,
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_login_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = identities)]
pub struct NewIdentity<'a> {
    pub id: Uuid,
    pub user_id: UserId,
    pub provider: &'a str,
    pub issuer: &'a str,
    pub subject: &'a str,
    pub email: Option<&'a str>,
}

pub async fn insert(conn: &mut AsyncPgConnection, new: &NewIdentity<'_>) -> DbResult<Identity> {
    Ok(diesel::insert_into(identities::table)
        .values(new)
        .returning(Identity::as_returning())
        .get_result(conn)
        .await?)
}

/// The identity of (issuer, subject) with its live account (a deleted account's identity is
/// treated as unknown). Uses `identities_issuer_subject_key`.
pub async fn find_live(
    conn: &mut AsyncPgConnection,
    issuer: &str,
    subject: &str,
) -> DbResult<Option<(Identity, crate::users::User)>> {
    Ok(identities::table
        .inner_join(users::table)
        .filter(identities::issuer.eq(issuer))
        .filter(identities::subject.eq(subject))
        .filter(users::deleted_at.is_null())
        .select((Identity::as_select(), crate::users::User::as_select()))
        .first(conn)
        .await
        .optional()?)
}

/// Records a login: the time, and the e-mail the provider gives now.
pub async fn touch(conn: &mut AsyncPgConnection, id: Uuid, email: Option<&str>) -> DbResult<()> {
    diesel::update(identities::table.find(id))
        .set((
            identities::last_login_at.eq(diesel::dsl::now),
            identities::email.eq(email),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// A user's identities, oldest first (`identities_user`).
pub async fn list_for_user(conn: &mut AsyncPgConnection, user_id: UserId) -> DbResult<Vec<Identity>> {
    Ok(identities::table
        .filter(identities::user_id.eq(user_id))
        .order((identities::created_at.asc(), identities::id.asc()))
        .select(Identity::as_select())
        .load(conn)
        .await?)
}

/// Locks the user's row (so two concurrent unlinks see each other) and counts their identities.
pub async fn lock_and_count(conn: &mut AsyncPgConnection, user_id: UserId) -> DbResult<(Option<String>, i64)> {
    let hash: Option<String> = users::table
        .find(user_id)
        .select(users::password_hash)
        .for_update()
        .first(conn)
        .await?;
    let n: i64 = identities::table
        .filter(identities::user_id.eq(user_id))
        .count()
        .get_result(conn)
        .await?;
    Ok((hash, n))
}

/// Deletes one of the user's identities; `None` when it is not theirs (or gone).
pub async fn delete(conn: &mut AsyncPgConnection, user_id: UserId, id: Uuid) -> DbResult<Option<Identity>> {
    Ok(
        diesel::delete(identities::table.find(id).filter(identities::user_id.eq(user_id)))
            .returning(Identity::as_returning())
            .get_result(conn)
            .await
            .optional()?,
    )
}
