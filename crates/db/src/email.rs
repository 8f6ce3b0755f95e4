//! E-mail bookkeeping: the send log (one row per logical message) and single-use tokens for
//! verification and password reset (stored as SHA-256 only).

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::UserId;

use crate::{
    DbResult,
    schema::{email_log, email_tokens, users},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    VerifyEmail,
    PasswordReset,
}

impl TokenPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::PasswordReset => "password_reset",
        }
    }
}

pub async fn already_sent(conn: &mut AsyncPgConnection, message_key: &str) -> DbResult<bool> {
    Ok(email_log::table
        .find(message_key)
        .select(email_log::message_key)
        .first::<String>(conn)
        .await
        .optional()?
        .is_some())
}

/// Records a sent message. Returns false if it was already recorded (a duplicate delivery).
pub async fn record_sent(
    conn: &mut AsyncPgConnection,
    message_key: &str,
    kind: &str,
    user_id: Option<UserId>,
) -> DbResult<bool> {
    let n = diesel::insert_into(email_log::table)
        .values((
            email_log::message_key.eq(message_key),
            email_log::kind.eq(kind),
            email_log::user_id.eq(user_id),
        ))
        .on_conflict(email_log::message_key)
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(n == 1)
}

pub async fn count_sent(conn: &mut AsyncPgConnection, kind: &str, user_id: UserId) -> DbResult<i64> {
    Ok(email_log::table
        .filter(email_log::kind.eq(kind))
        .filter(email_log::user_id.eq(user_id))
        .count()
        .get_result(conn)
        .await?)
}

pub async fn insert_token(
    conn: &mut AsyncPgConnection,
    token_hash: &[u8],
    user_id: UserId,
    purpose: TokenPurpose,
    expires_at: DateTime<Utc>,
) -> DbResult<()> {
    diesel::insert_into(email_tokens::table)
        .values((
            email_tokens::token_hash.eq(token_hash),
            email_tokens::user_id.eq(user_id),
            email_tokens::purpose.eq(purpose.as_str()),
            email_tokens::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// A live token of this purpose: unused, unexpired, and its account not deleted (a deleted
/// account's tokens are dead, whatever their age). Primary-key lookup.
#[diesel::dsl::auto_type(no_type_alias)]
fn live_token<'a>(token_hash: &'a [u8], purpose: &'a str) -> _ {
    email_tokens::table
        .filter(email_tokens::token_hash.eq(token_hash))
        .filter(email_tokens::purpose.eq(purpose))
        .filter(email_tokens::used_at.is_null())
        .filter(email_tokens::expires_at.gt(diesel::dsl::now))
        .filter(email_tokens::user_id.eq_any(users::table.filter(users::deleted_at.is_null()).select(users::id)))
}

/// The user of a live token of this purpose, without using it up (a cheap check before
/// expensive work; [`consume_token`] still decides who wins).
pub async fn find_live_token(
    conn: &mut AsyncPgConnection,
    token_hash: &[u8],
    purpose: TokenPurpose,
) -> DbResult<Option<UserId>> {
    Ok(live_token(token_hash, purpose.as_str())
        .select(email_tokens::user_id)
        .first(conn)
        .await
        .optional()?)
}

/// Marks a live token of this purpose used and returns its user. A single conditional UPDATE:
/// two concurrent uses cannot both succeed.
pub async fn consume_token(
    conn: &mut AsyncPgConnection,
    token_hash: &[u8],
    purpose: TokenPurpose,
) -> DbResult<Option<UserId>> {
    Ok(diesel::update(live_token(token_hash, purpose.as_str()))
        .set(email_tokens::used_at.eq(diesel::dsl::now))
        .returning(email_tokens::user_id)
        .get_result(conn)
        .await
        .optional()?)
}

/// Invalidates every live token of this purpose for the user (after a reset or a password change).
pub async fn invalidate_tokens(
    conn: &mut AsyncPgConnection,
    user_id: UserId,
    purpose: TokenPurpose,
) -> DbResult<usize> {
    Ok(diesel::update(
        email_tokens::table
            .filter(email_tokens::user_id.eq(user_id))
            .filter(email_tokens::purpose.eq(purpose.as_str()))
            .filter(email_tokens::used_at.is_null()),
    )
    .set(email_tokens::used_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?)
}
