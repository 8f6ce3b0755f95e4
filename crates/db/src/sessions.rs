//! The `sessions` aggregate: a session is one login, i.e. one family of rotating refresh tokens.
//!
//! Rotation is a single conditional `UPDATE … WHERE used_at IS NULL` whose row count decides the
//! winner, so any number of concurrent refreshes of one token yield exactly one success.

use chrono::{DateTime, Utc};
use diesel::{
    ExpressionMethods, Insertable, JoinOnDsl, OptionalExtension, QueryDsl, Queryable, Selectable, SelectableHelper,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::{SessionId, UserId};

use crate::{
    DbResult,
    schema::{refresh_tokens, sessions, users},
    users::User,
};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sessions, check_for_backend(diesel::pg::Pg))]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = sessions)]
pub struct NewSession<'a> {
    pub id: SessionId,
    pub user_id: UserId,
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<&'a str>,
    pub ip: Option<&'a str>,
}

/// Why a session was revoked (the `revoked_reason` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    Logout,
    UserRevoked,
    RefreshReuse,
    PasswordChanged,
    PasswordReset,
    AccountDeleted,
    Admin,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::UserRevoked => "user_revoked",
            Self::RefreshReuse => "refresh_reuse",
            Self::PasswordChanged => "password_changed",
            Self::PasswordReset => "password_reset",
            Self::AccountDeleted => "account_deleted",
            Self::Admin => "admin",
        }
    }
}

/// The outcome of presenting a known refresh token (see [`session_of_token`] for the lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumed {
    /// The token was live and is now used; the session may be given a new token.
    Fresh,
    /// The token had already been used (or is gone): a replay, or a stolen token. The family must die.
    Reused,
}

pub async fn create(conn: &mut AsyncPgConnection, new: &NewSession<'_>) -> DbResult<Session> {
    Ok(diesel::insert_into(sessions::table)
        .values(new)
        .returning(Session::as_returning())
        .get_result(conn)
        .await?)
}

pub async fn insert_refresh_token(
    conn: &mut AsyncPgConnection,
    session_id: SessionId,
    token_hash: &[u8],
) -> DbResult<()> {
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::token_hash.eq(token_hash),
            refresh_tokens::session_id.eq(session_id),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks a token of a known session (from [`session_of_token`]) used if it was live: one
/// statement. A token that is no longer live is a replay.
pub async fn consume_refresh_token(conn: &mut AsyncPgConnection, token_hash: &[u8]) -> DbResult<Consumed> {
    let n = diesel::update(
        refresh_tokens::table
            .find(token_hash)
            .filter(refresh_tokens::used_at.is_null()),
    )
    .set(refresh_tokens::used_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?;
    Ok(if n == 1 { Consumed::Fresh } else { Consumed::Reused })
}

/// The session if it is live (not revoked, not expired) and its user is not deleted.
/// This is the per-request check behind every access token: one primary-key join.
pub async fn find_live_with_user(
    conn: &mut AsyncPgConnection,
    session_id: SessionId,
) -> DbResult<Option<(Session, User)>> {
    Ok(sessions::table
        .inner_join(users::table.on(users::id.eq(sessions::user_id)))
        .filter(sessions::id.eq(session_id))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(diesel::dsl::now))
        .filter(users::deleted_at.is_null())
        .select((Session::as_select(), User::as_select()))
        .first(conn)
        .await
        .optional()?)
}

pub async fn touch(conn: &mut AsyncPgConnection, session_id: SessionId) -> DbResult<()> {
    diesel::update(sessions::table.find(session_id))
        .set(sessions::last_used_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
    Ok(())
}

/// Revokes one session. With `owner`, only if it belongs to that user (ownership in the WHERE).
/// Returns the session's user when a live session was revoked, `None` otherwise.
pub async fn revoke(
    conn: &mut AsyncPgConnection,
    session_id: SessionId,
    owner: Option<UserId>,
    reason: RevokeReason,
) -> DbResult<Option<UserId>> {
    let mut target = diesel::update(sessions::table)
        .filter(sessions::id.eq(session_id))
        .filter(sessions::revoked_at.is_null())
        .into_boxed();
    if let Some(owner) = owner {
        target = target.filter(sessions::user_id.eq(owner));
    }
    Ok(target
        .set((
            sessions::revoked_at.eq(diesel::dsl::now),
            sessions::revoked_reason.eq(reason.as_str()),
        ))
        .returning(sessions::user_id)
        .get_result(conn)
        .await
        .optional()?)
}

/// Revokes every live session of a user, except `keep` if given. Returns how many were revoked.
pub async fn revoke_all_for_user(
    conn: &mut AsyncPgConnection,
    user_id: UserId,
    keep: Option<SessionId>,
    reason: RevokeReason,
) -> DbResult<usize> {
    let mut target = diesel::update(sessions::table)
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::revoked_at.is_null())
        .into_boxed();
    if let Some(keep) = keep {
        target = target.filter(sessions::id.ne(keep));
    }
    Ok(target
        .set((
            sessions::revoked_at.eq(diesel::dsl::now),
            sessions::revoked_reason.eq(reason.as_str()),
        ))
        .execute(conn)
        .await?)
}

/// The user's live sessions, newest first.
pub async fn list_live(conn: &mut AsyncPgConnection, user_id: UserId) -> DbResult<Vec<Session>> {
    Ok(sessions::table
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(diesel::dsl::now))
        .order(sessions::created_at.desc())
        .select(Session::as_select())
        .load(conn)
        .await?)
}

/// The session a refresh token (used or not) belongs to.
pub async fn session_of_token(conn: &mut AsyncPgConnection, token_hash: &[u8]) -> DbResult<Option<SessionId>> {
    Ok(refresh_tokens::table
        .find(token_hash)
        .select(refresh_tokens::session_id)
        .first(conn)
        .await
        .optional()?)
}
