//! Sign-up, login, refresh-token rotation with re-use detection, logout and sessions.

use auth::RefreshToken;
use chrono::Utc;
use db::{
    AsyncPgConnection,
    sessions::{self, Consumed, NewSession, RevokeReason},
    users::{self, NewUser, User},
};
use diesel_async::AsyncConnection;
use domain::{Email, Password, Role, UserName};
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult},
    extract::ClientMeta,
    state::AppState,
};

/// An issued access + refresh token pair.
#[derive(Debug)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
}

fn invalid_credentials() -> ApiError {
    ApiError::Unauthorized {
        code: "invalid_credentials",
        detail: "The e-mail or password is wrong.",
    }
}

fn email_taken() -> ApiError {
    ApiError::Conflict {
        code: "email_taken",
        detail: "An account with this e-mail already exists.".into(),
    }
}

/// Maps the unique e-mail index to `email_taken`; everything else passes through.
pub fn map_email_conflict(e: db::DbError) -> ApiError {
    match e {
        db::DbError::UniqueViolation { constraint } if constraint == users::EMAIL_UNIQUE => email_taken(),
        other => other.into(),
    }
}

/// Starts a session (a refresh-token family) for `user` inside the caller's transaction and
/// returns the plain refresh token.
async fn start_session(
    state: &AppState,
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    meta: &ClientMeta,
) -> Result<(Uuid, RefreshToken), db::DbError> {
    let ttl = chrono::Duration::from_std(state.config.refresh_token_ttl).unwrap_or(chrono::Duration::days(30));
    let session = sessions::create(
        conn,
        &NewSession {
            id: Uuid::now_v7(),
            user_id,
            expires_at: Utc::now() + ttl,
            user_agent: meta.user_agent.as_deref(),
            ip: meta.ip.as_deref(),
        },
    )
    .await?;
    let token = RefreshToken::generate();
    sessions::insert_refresh_token(conn, session.id, token.digest()).await?;
    Ok((session.id, token))
}

fn issue(state: &AppState, user_id: Uuid, session_id: Uuid, role: Role, refresh: RefreshToken) -> ApiResult<Tokens> {
    Ok(Tokens {
        access_token: state
            .tokens
            .issue(user_id, session_id, role)
            .map_err(ApiError::internal)?,
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

/// Inserts the account row with an already computed hash (hash before taking a connection:
/// 250 ms of bcrypt should not hold a pooled connection).
pub async fn insert_account(conn: &mut AsyncPgConnection, account: &NewAccount, hash: &str) -> ApiResult<User> {
    users::insert(
        conn,
        &NewUser {
            id: Uuid::now_v7(),
            email: account.email.as_str(),
            name: account.name.as_str(),
            password_hash: hash,
            role: account.role.as_str(),
        },
    )
    .await
    .map_err(map_email_conflict)
}

pub async fn signup(state: &AppState, account: NewAccount, meta: &ClientMeta) -> ApiResult<(User, Tokens)> {
    debug_assert_eq!(account.role, Role::User);
    let hash = state.hasher.hash(&account.password).await?;
    let mut conn = state.db.get().await.map_err(db::DbError::from)?;
    let (user, session_id, refresh) = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let user = insert_account(conn, &account, &hash).await?;
            let (session_id, refresh) = start_session(state, conn, user.id, meta).await?;
            Ok((user, session_id, refresh))
        })
        .await?;
    tracing::info!(user.id = %user.id, "signed up");
    let tokens = issue(state, user.id, session_id, Role::User, refresh)?;
    Ok((user, tokens))
}

pub async fn login(state: &AppState, email: &str, password: &str, meta: &ClientMeta) -> ApiResult<Tokens> {
    // An unparseable e-mail cannot belong to an account, but it still costs one dummy verify so
    // that every failure looks and times the same.
    let user = match Email::parse(email) {
        Ok(email) => {
            let mut conn = state.db.get().await.map_err(db::DbError::from)?;
            users::find_active_by_email(&mut conn, email.as_str()).await?
        }
        Err(_) => None,
    };
    let ok = state
        .hasher
        .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
        .await?;
    let user = match (ok, user) {
        (true, Some(user)) => user,
        _ => {
            tracing::info!("login failed");
            return Err(invalid_credentials());
        }
    };
    let mut conn = state.db.get().await.map_err(db::DbError::from)?;
    let (session_id, refresh) = start_session(state, &mut conn, user.id, meta).await?;
    tracing::info!(user.id = %user.id, session.id = %session_id, "logged in");
    issue(
        state,
        user.id,
        session_id,
        user.role.parse().unwrap_or(Role::User),
        refresh,
    )
}

enum RefreshOutcome {
    Rotated {
        user: Box<User>,
        session_id: Uuid,
        refresh: RefreshToken,
    },
    Reused {
        session_id: Uuid,
        revoked: bool,
    },
    Invalid,
}

/// Rotates a refresh token. The old token is marked used in the same statement that checks it
/// was unused, so of N concurrent refreshes exactly one wins; a used token presented again revokes
/// its whole session (RFC 9700 §4.14.2) and that revocation is committed even though the request
/// fails.
pub async fn refresh(state: &AppState, presented: &str) -> ApiResult<Tokens> {
    let hash = RefreshToken::hash(presented);
    let mut conn = state.db.get().await.map_err(db::DbError::from)?;
    let outcome = conn
        .transaction::<_, ApiError, _>(async |conn| match sessions::consume_refresh_token(conn, &hash).await? {
            Consumed::Unknown => Ok(RefreshOutcome::Invalid),
            Consumed::Reused { session_id } => {
                let revoked = sessions::revoke(conn, session_id, None, RevokeReason::RefreshReuse).await?;
                Ok(RefreshOutcome::Reused { session_id, revoked })
            }
            Consumed::Fresh { session_id } => match sessions::find_live_with_user(conn, session_id).await? {
                None => Ok(RefreshOutcome::Invalid),
                Some((_, user)) => {
                    let refresh = RefreshToken::generate();
                    sessions::insert_refresh_token(conn, session_id, refresh.digest()).await?;
                    sessions::touch(conn, session_id).await?;
                    Ok(RefreshOutcome::Rotated {
                        user: Box::new(user),
                        session_id,
                        refresh,
                    })
                }
            },
        })
        .await?;
    match outcome {
        RefreshOutcome::Rotated {
            user,
            session_id,
            refresh,
        } => issue(
            state,
            user.id,
            session_id,
            user.role.parse().unwrap_or(Role::User),
            refresh,
        ),
        RefreshOutcome::Reused { session_id, revoked } => {
            if revoked {
                tracing::warn!(session.id = %session_id, "refresh token re-use detected; session revoked");
            }
            Err(ApiError::invalid_token())
        }
        RefreshOutcome::Invalid => Err(ApiError::invalid_token()),
    }
}

/// Revokes the session the refresh token belongs to. Unknown tokens are ignored (idempotent).
pub async fn logout(state: &AppState, presented: &str) -> ApiResult<()> {
    let hash = RefreshToken::hash(presented);
    let mut conn = state.db.get().await.map_err(db::DbError::from)?;
    if let Some(session_id) = sessions::session_of_token(&mut conn, &hash).await?
        && sessions::revoke(&mut conn, session_id, None, RevokeReason::Logout).await?
    {
        tracing::info!(session.id = %session_id, "logged out");
    }
    Ok(())
}
