//! Sign-up, login, refresh-token rotation with re-use detection, logout, sessions, e-mail
//! verification and password reset. Each use case is one unit of work ([`work::transaction`]):
//! the jobs it implies (audit events, e-mails) are staged in the same transaction as its change.

use auth::OpaqueToken;
use chrono::Utc;
use db::{
    AsyncPgConnection,
    email::TokenPurpose,
    sessions::{self, Consumed, NewSession, RevokeReason},
    users::{self, NewUser, User},
};
use domain::{
    Email, Password, Role, SessionId, UserId, UserName,
    jobs::{AuditEventType as Ev, EmailMessage},
};
use serde_json::json;

use crate::{
    infra::{cache::ns, ratelimit::Decision},
    services::{
        Actor, Error, RequestMeta, Result,
        jobs::{Target, audit, email},
        on_constraint,
        work::{self, conn},
    },
    state::AppState,
};

/// An issued access + refresh token pair.
#[derive(Debug)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
}

fn email_taken() -> Error {
    Error::Conflict {
        code: "email_taken",
        detail: "An account with this e-mail already exists.".into(),
    }
}

/// Starts a session (a refresh-token family) for `user` inside the caller's transaction and
/// returns the plain refresh token.
pub(crate) async fn start_session(
    state: &AppState,
    conn: &mut AsyncPgConnection,
    user_id: UserId,
    meta: &RequestMeta,
) -> Result<(SessionId, OpaqueToken)> {
    let ttl = chrono::Duration::from_std(state.config.refresh_token_ttl).unwrap_or(chrono::Duration::days(30));
    let session = sessions::create(
        conn,
        &NewSession {
            id: SessionId::generate(),
            user_id,
            expires_at: Utc::now() + ttl,
            user_agent: meta.user_agent.as_deref(),
            ip: meta.ip.as_deref(),
        },
    )
    .await?;
    let token = OpaqueToken::generate();
    sessions::insert_refresh_token(conn, session.id, token.digest()).await?;
    Ok((session.id, token))
}

pub(crate) fn issue(state: &AppState, user: &User, session_id: SessionId, refresh: OpaqueToken) -> Result<Tokens> {
    Ok(Tokens {
        access_token: state
            .tokens
            .issue(user.id, session_id, user.role)
            .map_err(anyhow::Error::from)?,
        refresh_token: refresh.into_plain(),
        expires_in: state.tokens.ttl_secs(),
    })
}

pub struct NewAccount {
    pub email: Email,
    pub password: Password,
    pub name: UserName,
    pub role: Role,
}

/// Hashes a new account's password — after the cheap check that can still refuse the request (the
/// address is taken), so a request bound to fail never costs a bcrypt run. The unique index
/// still decides a race between two sign-ups.
pub async fn hash_new_account_password(state: &AppState, account: &NewAccount) -> Result<String> {
    let taken = users::find_active_by_email(&mut *conn(state).await?, account.email.as_str()).await?;
    if taken.is_some() {
        return Err(email_taken());
    }
    Ok(state.hasher.hash(&account.password).await?)
}

/// Inserts the account row with an already computed hash (hash before taking a connection:
/// 250 ms of bcrypt should not hold a pooled connection).
pub async fn insert_account(conn: &mut AsyncPgConnection, account: &NewAccount, hash: &str) -> Result<User> {
    users::insert(
        conn,
        &NewUser {
            id: UserId::generate(),
            email: account.email.as_str(),
            name: account.name.as_str(),
            password_hash: Some(hash),
            role: account.role.as_str(),
        },
    )
    .await
    .map_err(on_constraint(users::EMAIL_UNIQUE, email_taken))
}

pub async fn signup(state: &AppState, account: NewAccount, meta: &RequestMeta) -> Result<(User, Tokens)> {
    let hash = hash_new_account_password(state, &account).await?;
    let (user, session_id, refresh) = work::transaction(state, async |tx| {
        let user = insert_account(tx.conn(), &account, &hash).await?;
        let (session_id, refresh) = start_session(state, tx.conn(), user.id, meta).await?;
        tx.enqueue(email(EmailMessage::VerifyEmail { user_id: user.id }));
        tx.enqueue(audit(Ev::Signup, Some(user.id), Target::User(user.id), meta, json!({})));
        tx.invalidate(ns::USERS);
        Ok((user, session_id, refresh))
    })
    .await?;
    tracing::info!(user.id = %user.id, "signed up");
    let tokens = issue(state, &user, session_id, refresh)?;
    Ok((user, tokens))
}

pub async fn login(state: &AppState, email: &str, password: &str, meta: &RequestMeta) -> Result<Tokens> {
    // An unparseable e-mail cannot belong to an account, but it still costs one dummy verify so
    // that every failure looks and times the same.
    let parsed = Email::parse(email).ok();
    let user = match &parsed {
        Some(email) => users::find_active_by_email(&mut *conn(state).await?, email.as_str()).await?,
        None => None,
    };
    let ok = state
        .hasher
        .verify(password, user.as_ref().and_then(|u| u.password_hash.as_deref()))
        .await?;
    let user = match (ok, user) {
        (true, Some(user)) => user,
        (_, user) => {
            let redacted = parsed.as_ref().map_or_else(|| "invalid".to_owned(), Email::redacted);
            let target = user.as_ref().map_or(Target::None, |u| Target::User(u.id));
            work::transaction(state, async |tx| {
                tx.enqueue(audit(Ev::LoginFailed, None, target, meta, json!({ "email": redacted })));
                Ok(())
            })
            .await?;
            tracing::info!("login failed");
            return Err(Error::InvalidCredentials);
        }
    };
    let (session_id, refresh) = work::transaction(state, async |tx| {
        let (session_id, refresh) = start_session(state, tx.conn(), user.id, meta).await?;
        tx.enqueue(audit(
            Ev::LoginSucceeded,
            Some(user.id),
            Target::Session(session_id),
            meta,
            json!({}),
        ));
        Ok((session_id, refresh))
    })
    .await?;
    tracing::info!(user.id = %user.id, session.id = %session_id, "logged in");
    issue(state, &user, session_id, refresh)
}

enum RefreshOutcome {
    Rotated {
        user: Box<User>,
        session_id: SessionId,
        refresh: OpaqueToken,
    },
    Reused,
    Invalid,
}

/// A rotated token pair, and the REFRESH policy's decision (for the response's `RateLimit`
/// headers; `None` when limits are off).
pub struct Refreshed {
    pub tokens: Tokens,
    pub limit: Option<Decision>,
}

/// Rotates a refresh token. The old token is marked used in the same statement that checks it
/// was unused, so of N concurrent refreshes exactly one wins; a used token presented again revokes
/// its whole session (RFC 9700 §4.14.2) and that revocation — with its audit event and the
/// "sessions revoked" e-mail — is committed even though the request fails.
///
/// The REFRESH policy is per session: with limits on, the token is looked up once, before the
/// transaction (an unknown token ends there), and its session charged; a refused refresh
/// (`Error::RateLimited`) leaves the token unused.
pub async fn refresh(state: &AppState, presented: &str, meta: &RequestMeta) -> Result<Refreshed> {
    let hash = OpaqueToken::hash(presented);
    // The one lookup of the token: it names the session the refresh limit counts against and
    // the session a replay revokes. The limit is checked before the transaction (nothing outside
    // Postgres is called inside one), so a limited request consumes nothing.
    let Some(session_id) = sessions::session_of_token(&mut *conn(state).await?, &hash).await? else {
        return Err(Error::InvalidRefreshToken);
    };
    let limit = state
        .limits
        .check(state.limits.config.refresh, &session_id.to_string())
        .await;
    if let Some(d) = limit
        && !d.allowed
    {
        return Err(Error::RateLimited(d));
    }
    let outcome = work::transaction(state, async |tx| {
        match sessions::consume_refresh_token(tx.conn(), &hash).await? {
            Consumed::Reused => {
                let Some(user_id) = sessions::revoke(tx.conn(), session_id, None, RevokeReason::RefreshReuse).await?
                else {
                    // Already revoked (an earlier re-use, a logout): nothing new to record.
                    return Ok(RefreshOutcome::Reused);
                };
                tx.auth_changed(user_id);
                tx.enqueue(audit(
                    Ev::RefreshReuseDetected,
                    Some(user_id),
                    Target::Session(session_id),
                    meta,
                    json!({}),
                ));
                tx.enqueue(email(EmailMessage::SessionsRevoked { user_id }));
                tracing::warn!(session.id = %session_id, user.id = %user_id, "refresh token re-use; session revoked");
                Ok(RefreshOutcome::Reused)
            }
            Consumed::Fresh => match sessions::find_live_with_user(tx.conn(), session_id).await? {
                None => Ok(RefreshOutcome::Invalid),
                Some((_, user)) => {
                    let refresh = OpaqueToken::generate();
                    sessions::insert_refresh_token(tx.conn(), session_id, refresh.digest()).await?;
                    sessions::touch(tx.conn(), session_id).await?;
                    Ok(RefreshOutcome::Rotated {
                        user: Box::new(user),
                        session_id,
                        refresh,
                    })
                }
            },
        }
    })
    .await?;
    match outcome {
        RefreshOutcome::Rotated {
            user,
            session_id,
            refresh,
        } => Ok(Refreshed {
            tokens: issue(state, &user, session_id, refresh)?,
            limit,
        }),
        RefreshOutcome::Reused | RefreshOutcome::Invalid => Err(Error::InvalidRefreshToken),
    }
}

/// Revokes the session the refresh token belongs to. Unknown tokens are ignored (idempotent).
pub async fn logout(state: &AppState, presented: &str, meta: &RequestMeta) -> Result<()> {
    let hash = OpaqueToken::hash(presented);
    work::transaction(state, async |tx| {
        let Some(session_id) = sessions::session_of_token(tx.conn(), &hash).await? else {
            return Ok(());
        };
        let Some(user_id) = sessions::revoke(tx.conn(), session_id, None, RevokeReason::Logout).await? else {
            return Ok(());
        };
        tx.auth_changed(user_id);
        tx.enqueue(audit(
            Ev::Logout,
            Some(user_id),
            Target::Session(session_id),
            meta,
            json!({}),
        ));
        Ok(())
    })
    .await
}

pub async fn list_sessions(state: &AppState, actor: &Actor) -> Result<Vec<sessions::Session>> {
    Ok(sessions::list_live(&mut *conn(state).await?, actor.user_id).await?)
}

/// Revokes one of the caller's own sessions; another user's session is `NotFound`.
pub async fn revoke_session(state: &AppState, actor: &Actor, session_id: SessionId, meta: &RequestMeta) -> Result<()> {
    work::transaction(state, async |tx| {
        sessions::revoke(tx.conn(), session_id, Some(actor.user_id), RevokeReason::UserRevoked)
            .await?
            .ok_or(Error::NotFound)?;
        tx.auth_changed(actor.user_id);
        tx.enqueue(audit(
            Ev::SessionRevoked,
            Some(actor.user_id),
            Target::Session(session_id),
            meta,
            json!({}),
        ));
        Ok(())
    })
    .await
}

/// Consumes a verification token, marks the address verified and queues the welcome e-mail
/// (only the first time).
pub async fn verify_email(state: &AppState, token: &str, meta: &RequestMeta) -> Result<()> {
    let hash = OpaqueToken::hash(token);
    work::transaction(state, async |tx| {
        let user_id = db::email::consume_token(tx.conn(), &hash, TokenPurpose::VerifyEmail)
            .await?
            .ok_or(Error::InvalidEmailToken)?;
        if !users::mark_email_verified(tx.conn(), user_id).await? {
            // Already verified (a deleted account's token is not live): the token is spent.
            return Ok(());
        }
        tx.auth_changed(user_id);
        tx.enqueue(audit(
            Ev::EmailVerified,
            Some(user_id),
            Target::User(user_id),
            meta,
            json!({}),
        ));
        tx.enqueue(email(EmailMessage::Welcome { user_id }));
        tx.invalidate(ns::USERS);
        Ok(())
    })
    .await
}

/// Queues a reset e-mail if the account exists. The caller always answers 202: the response
/// never reveals whether the address has an account.
pub async fn forgot_password(state: &AppState, email_raw: &str, meta: &RequestMeta) -> Result<()> {
    let Ok(address) = Email::parse(email_raw) else {
        return Ok(());
    };
    work::transaction(state, async |tx| {
        let user = users::find_active_by_email(tx.conn(), address.as_str()).await?;
        tx.enqueue(audit(
            Ev::PasswordResetRequested,
            None,
            user.as_ref().map_or(Target::None, |u| Target::User(u.id)),
            meta,
            json!({ "email": address.redacted(), "account_exists": user.is_some() }),
        ));
        if let Some(user) = &user {
            tx.enqueue(email(EmailMessage::PasswordReset { user_id: user.id }));
        }
        Ok(())
    })
    .await
}

/// Consumes a reset token, sets the new password, revokes every session and every other reset
/// token of the account. The token is checked before the new password is hashed: a dead or made-up
/// token costs one primary-key read, never a bcrypt run.
pub async fn reset_password(state: &AppState, token: &str, new_password: &Password, meta: &RequestMeta) -> Result<()> {
    let hash = OpaqueToken::hash(token);
    let live = db::email::find_live_token(&mut *conn(state).await?, &hash, TokenPurpose::PasswordReset).await?;
    if live.is_none() {
        return Err(Error::InvalidEmailToken);
    }
    // No connection held during bcrypt; the conditional UPDATE below still decides between two
    // concurrent uses of the token.
    let password_hash = state.hasher.hash(new_password).await?;
    work::transaction(state, async |tx| {
        let user_id = db::email::consume_token(tx.conn(), &hash, TokenPurpose::PasswordReset)
            .await?
            .ok_or(Error::InvalidEmailToken)?;
        let changes = users::UserChanges {
            password_hash: Some(&password_hash),
            ..Default::default()
        };
        users::update(tx.conn(), user_id, &changes).await.map_err(|e| match e {
            db::DbError::NotFound => Error::InvalidEmailToken,
            other => other.into(),
        })?;
        let revoked = sessions::revoke_all_for_user(tx.conn(), user_id, None, RevokeReason::PasswordReset).await?;
        db::email::invalidate_tokens(tx.conn(), user_id, TokenPurpose::PasswordReset).await?;
        tx.auth_changed(user_id);
        tx.enqueue(audit(
            Ev::PasswordResetCompleted,
            Some(user_id),
            Target::User(user_id),
            meta,
            json!({ "sessions_revoked": revoked }),
        ));
        Ok(())
    })
    .await
}
