//! Profile changes and user administration. Admin actions are audited through the outbox.

use db::{
    outbox,
    sessions::{self, RevokeReason},
    users::{self, User, UserChanges},
};
use diesel_async::AsyncConnection;
use domain::{Limit, Password, Role, UserName, jobs::AuditEventType as Ev};
use serde_json::json;
use uuid::Uuid;

use crate::{
    cache::ns,
    error::{ApiError, ApiResult},
    extract::{AuthUser, ClientMeta},
    services::{
        auth::{NewAccount, conn, hash_new_account_password, insert_account},
        jobs::{Target, audit},
    },
    state::AppState,
};

/// A password change on one's own profile.
pub struct PasswordChange {
    pub current: String,
    pub new: Password,
}

/// Updates the caller's name and/or password. A password change needs the current password (the
/// caller has charged the guess to the account's `LOGIN` budget); it revokes every other session
/// of the account (the caller's own session stays signed in) and every outstanding reset token.
/// A wrong current password changes and revokes nothing.
pub async fn update_me(
    state: &AppState,
    me: &AuthUser,
    name: Option<UserName>,
    password: Option<PasswordChange>,
    meta: &ClientMeta,
) -> ApiResult<User> {
    let new_hash = match &password {
        None => None,
        Some(change) => {
            if !state
                .hasher
                .verify(&change.current, Some(&me.user.password_hash))
                .await?
            {
                return Err(ApiError::Forbidden {
                    code: "invalid_current_password",
                    detail: "The current password is wrong.",
                });
            }
            Some(state.hasher.hash(&change.new).await?)
        }
    };
    let changes = UserChanges {
        name: name.as_ref().map(UserName::as_str),
        password_hash: new_hash.as_deref(),
        ..UserChanges::default()
    };
    let mut conn = conn(state).await?;
    let (user, jobs) = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let user = apply(conn, me.id(), &changes).await?;
            let mut jobs = vec![];
            if changes.password_hash.is_some() {
                let n =
                    sessions::revoke_all_for_user(conn, me.id(), Some(me.session_id), RevokeReason::PasswordChanged)
                        .await?;
                // A reset link mailed before the change must not undo it.
                db::email::invalidate_tokens(conn, me.id(), db::email::TokenPurpose::PasswordReset).await?;
                jobs.push(audit(
                    Ev::PasswordChanged,
                    Some(me.id()),
                    Target::User(me.id()),
                    meta,
                    json!({ "sessions_revoked": n }),
                ));
                outbox::insert(conn, &jobs).await?;
            }
            Ok((user, jobs))
        })
        .await?;
    state.jobs.after_commit(jobs);
    if changes.name.is_some() {
        state.cache.invalidate(ns::USERS).await;
    }
    Ok(user)
}

/// Applies a change set; an empty one just reads the row.
async fn apply(conn: &mut db::AsyncPgConnection, id: Uuid, changes: &UserChanges<'_>) -> ApiResult<User> {
    if changes.name.is_none() && changes.role.is_none() && changes.password_hash.is_none() {
        return users::find_active(conn, id).await?.ok_or(ApiError::NotFound);
    }
    Ok(users::update(conn, id, changes).await?)
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct UserCursor {
    pub id: Uuid,
}

pub async fn list(
    state: &AppState,
    q: Option<&str>,
    after: Option<Uuid>,
    limit: Limit,
) -> ApiResult<(Vec<User>, Option<UserCursor>)> {
    // Fetch one extra row to know whether another page exists.
    let mut rows = users::list(&mut *conn(state).await?, after, q, limit.get() + 1).await?;
    let next = if rows.len() as i64 > limit.get() {
        rows.truncate(limit.get() as usize);
        rows.last().map(|u| UserCursor { id: u.id })
    } else {
        None
    };
    Ok((rows, next))
}

pub async fn create(state: &AppState, admin: &AuthUser, account: NewAccount, meta: &ClientMeta) -> ApiResult<User> {
    let hash = hash_new_account_password(state, &account).await?;
    let mut conn = conn(state).await?;
    let (user, jobs) = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let user = insert_account(conn, &account, &hash).await?;
            let jobs = vec![audit(
                Ev::AdminUserCreated,
                Some(admin.id()),
                Target::User(user.id),
                meta,
                json!({ "role": account.role }),
            )];
            outbox::insert(conn, &jobs).await?;
            Ok((user, jobs))
        })
        .await?;
    state.jobs.after_commit(jobs);
    state.cache.invalidate(ns::USERS).await;
    tracing::info!(user.id = %user.id, role = %account.role, "admin created user");
    Ok(user)
}

pub async fn get(state: &AppState, id: Uuid) -> ApiResult<User> {
    users::find_active(&mut *conn(state).await?, id)
        .await?
        .ok_or(ApiError::NotFound)
}

pub async fn admin_update(
    state: &AppState,
    admin: &AuthUser,
    id: Uuid,
    name: Option<UserName>,
    role: Option<Role>,
    meta: &ClientMeta,
) -> ApiResult<User> {
    let changes = UserChanges {
        name: name.as_ref().map(UserName::as_str),
        role: role.map(Role::as_str),
        ..UserChanges::default()
    };
    let mut conn = conn(state).await?;
    let (user, jobs) = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let user = apply(conn, id, &changes).await?;
            let jobs = vec![audit(
                Ev::AdminUserUpdated,
                Some(admin.id()),
                Target::User(id),
                meta,
                json!({ "name_changed": changes.name.is_some(), "role": changes.role }),
            )];
            outbox::insert(conn, &jobs).await?;
            Ok((user, jobs))
        })
        .await?;
    state.jobs.after_commit(jobs);
    state.cache.invalidate(ns::USERS).await;
    Ok(user)
}

/// Soft-deletes the account and revokes all its sessions in one transaction. The e-mail becomes
/// free for a new account (the unique index only covers live rows).
pub async fn delete(state: &AppState, admin: &AuthUser, id: Uuid, meta: &ClientMeta) -> ApiResult<()> {
    let mut conn = conn(state).await?;
    let jobs = conn
        .transaction::<_, ApiError, _>(async |conn| {
            if !users::soft_delete(conn, id).await? {
                return Err(ApiError::NotFound);
            }
            let n = sessions::revoke_all_for_user(conn, id, None, RevokeReason::AccountDeleted).await?;
            let jobs = vec![audit(
                Ev::AdminUserDeleted,
                Some(admin.id()),
                Target::User(id),
                meta,
                json!({ "sessions_revoked": n }),
            )];
            outbox::insert(conn, &jobs).await?;
            Ok(jobs)
        })
        .await?;
    state.jobs.after_commit(jobs);
    state.cache.invalidate(ns::USERS).await;
    tracing::info!(user.id = %id, "user deleted");
    Ok(())
}
