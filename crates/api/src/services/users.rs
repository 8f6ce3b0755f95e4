//! Profile changes and user administration. Admin actions are audited through the outbox.

use db::{
    sessions::{self, RevokeReason},
    users::{self, User, UserChanges},
};
use domain::{Limit, Page, Password, Role, UserId, UserName, jobs::AuditEventType as Ev};
use serde_json::json;

use crate::{
    infra::cache::ns,
    services::{
        Actor, Error, RequestMeta, Result,
        auth::{NewAccount, hash_new_account_password, insert_account},
        jobs::{Target, audit},
        work::{self, conn},
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
    actor: &Actor,
    name: Option<UserName>,
    password: Option<PasswordChange>,
    meta: &RequestMeta,
) -> Result<User> {
    let new_hash = match &password {
        None => None,
        Some(change) => {
            let me = users::find_active(&mut *conn(state).await?, actor.user_id)
                .await?
                .ok_or(Error::NotFound)?;
            if !state
                .hasher
                .verify(&change.current, me.password_hash.as_deref())
                .await?
            {
                return Err(Error::WrongCurrentPassword);
            }
            Some(state.hasher.hash(&change.new).await?)
        }
    };
    let changes = UserChanges {
        name: name.as_ref().map(UserName::as_str),
        password_hash: new_hash.as_deref(),
        ..UserChanges::default()
    };
    work::transaction(state, async |tx| {
        let user = apply(tx, actor.user_id, &changes).await?;
        if changes.password_hash.is_some() {
            let n = sessions::revoke_all_for_user(
                tx.conn(),
                actor.user_id,
                Some(actor.session_id),
                RevokeReason::PasswordChanged,
            )
            .await?;
            // A reset link mailed before the change must not undo it.
            db::email::invalidate_tokens(tx.conn(), actor.user_id, db::email::TokenPurpose::PasswordReset).await?;
            tx.enqueue(audit(
                Ev::PasswordChanged,
                Some(actor.user_id),
                Target::User(actor.user_id),
                meta,
                json!({ "sessions_revoked": n }),
            ));
        }
        if changes.name.is_some() {
            tx.invalidate(ns::USERS);
        }
        Ok(user)
    })
    .await
}

/// Applies a change set (the user's cached sessions are re-checked from then on); an empty one
/// just reads the row.
async fn apply(tx: &mut work::Tx, id: UserId, changes: &UserChanges<'_>) -> Result<User> {
    if changes.name.is_none() && changes.role.is_none() && changes.password_hash.is_none() {
        return users::find_active(tx.conn(), id).await?.ok_or(Error::NotFound);
    }
    tx.auth_changed(id);
    Ok(users::update(tx.conn(), id, changes).await?)
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct UserCursor {
    pub id: UserId,
}

pub async fn list(state: &AppState, q: Option<&str>, after: Option<UserId>, limit: Limit) -> Result<Page<User>> {
    let rows = users::list(&mut *conn(state).await?, after, q, limit.get() + 1).await?;
    Ok(Page::from_overfetch(rows, limit, |u| UserCursor { id: u.id }))
}

pub async fn create(state: &AppState, admin: &Actor, account: NewAccount, meta: &RequestMeta) -> Result<User> {
    let hash = hash_new_account_password(state, &account).await?;
    let user = work::transaction(state, async |tx| {
        let user = insert_account(tx.conn(), &account, &hash).await?;
        tx.enqueue(audit(
            Ev::AdminUserCreated,
            Some(admin.user_id),
            Target::User(user.id),
            meta,
            json!({ "role": account.role }),
        ));
        tx.invalidate(ns::USERS);
        Ok(user)
    })
    .await?;
    tracing::info!(user.id = %user.id, role = %account.role, "admin created user");
    Ok(user)
}

pub async fn get(state: &AppState, id: UserId) -> Result<User> {
    users::find_active(&mut *conn(state).await?, id)
        .await?
        .ok_or(Error::NotFound)
}

pub async fn admin_update(
    state: &AppState,
    admin: &Actor,
    id: UserId,
    name: Option<UserName>,
    role: Option<Role>,
    meta: &RequestMeta,
) -> Result<User> {
    let changes = UserChanges {
        name: name.as_ref().map(UserName::as_str),
        role: role.map(Role::as_str),
        ..UserChanges::default()
    };
    work::transaction(state, async |tx| {
        let user = apply(tx, id, &changes).await?;
        tx.enqueue(audit(
            Ev::AdminUserUpdated,
            Some(admin.user_id),
            Target::User(id),
            meta,
            json!({ "name_changed": changes.name.is_some(), "role": changes.role }),
        ));
        tx.invalidate(ns::USERS);
        Ok(user)
    })
    .await
}

/// Soft-deletes the account and revokes all its sessions in one transaction. The e-mail becomes
/// free for a new account (the unique index only covers live rows).
pub async fn delete(state: &AppState, admin: &Actor, id: UserId, meta: &RequestMeta) -> Result<()> {
    work::transaction(state, async |tx| {
        if !users::soft_delete(tx.conn(), id).await? {
            return Err(Error::NotFound);
        }
        let n = sessions::revoke_all_for_user(tx.conn(), id, None, RevokeReason::AccountDeleted).await?;
        tx.auth_changed(id);
        tx.enqueue(audit(
            Ev::AdminUserDeleted,
            Some(admin.user_id),
            Target::User(id),
            meta,
            json!({ "sessions_revoked": n }),
        ));
        tx.invalidate(ns::USERS);
        Ok(())
    })
    .await?;
    tracing::info!(user.id = %id, "user deleted");
    Ok(())
}
