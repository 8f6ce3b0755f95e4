//! OpenID Connect login: authorize (state, nonce and PKCE verifier kept in Redis, single use,
//! 10 minutes, bound to the provider), callback (code exchange, ID-token verification, the
//! identity found, linked or created), the `return_to` variant's single-use login code (60 s), and
//! the user's identities (list, unlink). The provider protocol itself is [`crate::infra::oidc`].
//!
//! Linking rule: an identity is (issuer, `sub`). A first login with an e-mail that belongs to an
//! account links to it only when the provider asserts `email_verified` and the account's address
//! is verified too; otherwise `account_exists` (sign in with the password, then link). Without an
//! account, one is created with no password (e-mail verified when the provider says so).

use auth::OpaqueToken;
use db::{
    identities::{self, Identity, NewIdentity},
    users::{self, NewUser, User},
};
use domain::{
    Email, Role, UserId, UserName,
    jobs::{AuditEventType as Ev, EmailMessage},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::{
    infra::{cache::ns, oidc::OidcError},
    services::{
        Actor, Error, RequestMeta, Result,
        auth::{Tokens, issue, start_session},
        jobs::{Target, audit, email},
        on_constraint,
        work::{self, conn},
    },
    state::AppState,
};

/// How long an authorize request may take to come back.
pub const STATE_TTL_SECS: u64 = 600;
/// How long a `login_code` can be exchanged.
pub const LOGIN_CODE_TTL_SECS: u64 = 60;

/// Why an OpenID step failed; `crate::error` maps each to its status and `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// 404 `unknown_provider`.
    UnknownProvider,
    /// 400 `invalid_state`: unknown, expired, used, or for another provider.
    InvalidState,
    /// 400 `oauth_denied`: the provider answered with `error`.
    Denied,
    /// 400 `invalid_code`: the exchange failed, or an unknown/used login code.
    InvalidCode,
    /// 400 `invalid_id_token`.
    InvalidIdToken,
    /// 503 `provider_unavailable`.
    ProviderUnavailable,
    /// 503 `service_unavailable`: Redis did not answer.
    StoreUnavailable,
}

fn fail(f: Failure) -> Error {
    Error::OAuth(f)
}

impl From<OidcError> for Error {
    fn from(e: OidcError) -> Self {
        match e {
            OidcError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "OpenID provider unavailable");
                fail(Failure::ProviderUnavailable)
            }
            OidcError::InvalidCode(detail) => {
                tracing::info!(error = %detail, "OpenID code exchange refused");
                fail(Failure::InvalidCode)
            }
            OidcError::InvalidIdToken(detail) => {
                tracing::warn!(error = %detail, "OpenID ID token refused");
                fail(Failure::InvalidIdToken)
            }
        }
    }
}

/// What the authorize step keeps server-side, under the hash of the state.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    provider: String,
    nonce: String,
    verifier: String,
    return_to: Option<String>,
}

/// What a login code stands for: a user who completed the flow, whose session starts at the
/// exchange.
#[derive(Debug, Serialize, Deserialize)]
struct LoginCode {
    user_id: UserId,
    provider: String,
}

fn key(state: &AppState, kind: &str, secret: &str) -> String {
    format!(
        "{}:oauth:{kind}:{}",
        state.config.redis_prefix,
        hex_of(&OpaqueToken::hash(secret))
    )
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn redis_cmd<T: redis::FromRedisValue>(state: &AppState, cmd: redis::Cmd) -> Result<T> {
    let store_down = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "redis unavailable for the OpenID login state");
        fail(Failure::StoreUnavailable)
    };
    let mut c = state.redis.get().await.map_err(|e| store_down(&e))?;
    match tokio::time::timeout(std::time::Duration::from_secs(2), cmd.query_async::<T>(&mut **c)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            c.mark_broken();
            Err(store_down(&e))
        }
        Err(e) => {
            c.mark_broken();
            Err(store_down(&e))
        }
    }
}

async fn put(state: &AppState, key: &str, value: &impl Serialize, ttl: u64) -> Result<()> {
    let json = serde_json::to_string(value).map_err(anyhow::Error::from)?;
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(json).arg("EX").arg(ttl).arg("NX");
    let _: Option<String> = redis_cmd(state, cmd).await?;
    Ok(())
}

/// Reads and deletes in one step: whoever gets the value is its only user.
async fn take<T: serde::de::DeserializeOwned>(state: &AppState, key: &str) -> Result<Option<T>> {
    let mut cmd = redis::cmd("GETDEL");
    cmd.arg(key);
    let raw: Option<String> = redis_cmd(state, cmd).await?;
    Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
}

fn redirect_uri(state: &AppState, provider: &str) -> String {
    format!("{}/v1/auth/oauth/{provider}/callback", state.config.public_url)
}

fn provider<'a>(state: &'a AppState, name: &str) -> Result<&'a std::sync::Arc<crate::infra::oidc::Provider>> {
    state.oidc.get(name).ok_or(fail(Failure::UnknownProvider))
}

/// Starts a login: the provider's authorization URL (the 302's `Location`).
pub async fn authorize(state: &AppState, provider_name: &str, return_to: Option<&str>) -> Result<String> {
    let p = provider(state, provider_name)?;
    if let Some(r) = return_to
        && !state.config.oidc.return_urls.iter().any(|u| u == r)
    {
        return Err(Error::field(
            "return_to",
            "is not one of the allowed return URLs (OAUTH_RETURN_URLS)",
        ));
    }
    let req = state.oidc.authorize(p, &redirect_uri(state, provider_name)).await?;
    let pending = Pending {
        provider: provider_name.to_owned(),
        nonce: req.nonce,
        verifier: req.pkce_verifier,
        return_to: return_to.map(str::to_owned),
    };
    put(state, &key(state, "state", &req.state), &pending, STATE_TTL_SECS).await?;
    Ok(req.url)
}

/// The callback's query.
#[derive(Debug, Default)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
}

/// How a completed callback answers.
#[derive(Debug)]
pub enum Completed {
    /// No `return_to`: the token pair in the body.
    Tokens(Box<User>, Tokens),
    /// `return_to`: a 302 there with `#login_code=…`.
    Redirect(String),
}

pub async fn callback(state: &AppState, provider_name: &str, q: Callback, meta: &RequestMeta) -> Result<Completed> {
    let p = provider(state, provider_name)?;
    let presented = q.state.as_deref().filter(|s| !s.is_empty() && s.len() <= 512);
    let Some(presented) = presented else {
        return Err(fail(Failure::InvalidState));
    };
    // Taken (deleted) before anything else: a state is spent by its first callback, good or bad.
    let pending: Pending = take(state, &key(state, "state", presented))
        .await?
        .ok_or(fail(Failure::InvalidState))?;
    if pending.provider != provider_name {
        return Err(fail(Failure::InvalidState));
    }
    if let Some(error) = &q.error {
        tracing::info!(provider = provider_name, error = %error.chars().take(64).collect::<String>(), "OpenID login denied by the provider");
        return Err(fail(Failure::Denied));
    }
    let code = q
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= 2048)
        .ok_or(fail(Failure::InvalidCode))?;
    let claims = state
        .oidc
        .exchange(
            p,
            &redirect_uri(state, provider_name),
            code,
            &pending.verifier,
            &pending.nonce,
        )
        .await?;
    let user = resolve_account(state, provider_name, &p.config.issuer, &claims, meta).await?;
    match pending.return_to {
        Some(return_to) => {
            let code = OpaqueToken::generate();
            let value = LoginCode {
                user_id: user.id,
                provider: provider_name.to_owned(),
            };
            put(state, &key(state, "code", code.plain()), &value, LOGIN_CODE_TTL_SECS).await?;
            Ok(Completed::Redirect(format!("{return_to}#login_code={}", code.plain())))
        }
        None => {
            let tokens = login_session(state, &user, provider_name, meta).await?;
            Ok(Completed::Tokens(Box::new(user), tokens))
        }
    }
}

/// Exchanges a login code (single use, 60 s) for a token pair.
pub async fn exchange(state: &AppState, login_code: &str, meta: &RequestMeta) -> Result<(User, Tokens)> {
    let found: LoginCode = take(state, &key(state, "code", login_code))
        .await?
        .ok_or(fail(Failure::InvalidCode))?;
    let user = users::find_active(&mut *conn(state).await?, found.user_id)
        .await?
        .ok_or(fail(Failure::InvalidCode))?;
    let tokens = login_session(state, &user, &found.provider, meta).await?;
    Ok((user, tokens))
}

/// A session like any other (refresh rotation, revocation), audited as `oauth_login`.
async fn login_session(state: &AppState, user: &User, provider: &str, meta: &RequestMeta) -> Result<Tokens> {
    let (session_id, refresh) = work::transaction(state, async |tx| {
        let (session_id, refresh) = start_session(state, tx.conn(), user.id, meta).await?;
        tx.enqueue(audit(
            Ev::OauthLogin,
            Some(user.id),
            Target::Session(session_id),
            meta,
            json!({ "provider": provider }),
        ));
        Ok((session_id, refresh))
    })
    .await?;
    tracing::info!(user.id = %user.id, session.id = %session_id, provider, "logged in with OpenID Connect");
    issue(state, user, session_id, refresh)
}

fn account_exists() -> Error {
    Error::Conflict {
        code: "account_exists",
        detail: "An account with this e-mail already exists; sign in with its password first.".into(),
    }
}

/// The account of these claims: the identity's, or one linked or created under the rule above.
async fn resolve_account(
    state: &AppState,
    provider: &str,
    issuer: &str,
    claims: &crate::infra::oidc::IdClaims,
    meta: &RequestMeta,
) -> Result<User> {
    let email = claims.email.as_deref().and_then(|e| Email::parse(e).ok());
    work::transaction(state, async |tx| {
        if let Some((identity, user)) = identities::find_live(tx.conn(), issuer, &claims.sub).await? {
            identities::touch(tx.conn(), identity.id, email.as_ref().map(Email::as_str)).await?;
            return Ok(user);
        }
        let Some(email) = &email else {
            // No account can be found or made without an address.
            tracing::warn!(provider, "ID token without a usable e-mail for a first login");
            return Err(fail(Failure::InvalidIdToken));
        };
        let (user, created) = match users::find_active_by_email(tx.conn(), email.as_str()).await? {
            Some(user) if claims.email_verified && user.email_verified_at.is_some() => (user, false),
            Some(_) => return Err(account_exists()),
            None => {
                let name = claims
                    .name
                    .as_deref()
                    .and_then(|n| UserName::parse(n).ok())
                    .or_else(|| UserName::parse(email.as_str().split('@').next().unwrap_or("user")).ok())
                    .map_or_else(|| "User".to_owned(), |n| n.as_str().to_owned());
                let mut user = users::insert(
                    tx.conn(),
                    &NewUser {
                        id: UserId::generate(),
                        email: email.as_str(),
                        name: &name,
                        password_hash: None,
                        role: Role::User.as_str(),
                    },
                )
                .await
                .map_err(on_constraint(users::EMAIL_UNIQUE, account_exists))?;
                if claims.email_verified {
                    users::mark_email_verified(tx.conn(), user.id).await?;
                    user = users::find_active(tx.conn(), user.id).await?.ok_or(Error::NotFound)?;
                    tx.enqueue(email_job(EmailMessage::Welcome { user_id: user.id }));
                } else {
                    tx.enqueue(email_job(EmailMessage::VerifyEmail { user_id: user.id }));
                }
                tx.enqueue(audit(
                    Ev::Signup,
                    Some(user.id),
                    Target::User(user.id),
                    meta,
                    json!({ "provider": provider }),
                ));
                tx.invalidate(ns::USERS);
                (user, true)
            }
        };
        let identity = identities::insert(
            tx.conn(),
            &NewIdentity {
                id: Uuid::now_v7(),
                user_id: user.id,
                provider,
                issuer,
                subject: &claims.sub,
                email: Some(email.as_str()),
            },
        )
        .await
        .map_err(on_constraint(identities::ISSUER_SUBJECT_UNIQUE, || {
            // Two callbacks of one new identity raced; the other one won.
            Error::Conflict {
                code: "identity_exists",
                detail: "This identity was just linked; sign in again.".into(),
            }
        }))?;
        tx.enqueue(audit(
            Ev::IdentityLinked,
            Some(user.id),
            Target::User(user.id),
            meta,
            json!({ "provider": provider, "identity_id": identity.id, "account_created": created }),
        ));
        Ok(user)
    })
    .await
}

fn email_job(message: EmailMessage) -> db::outbox::Pending {
    email(message)
}

pub async fn list_identities(state: &AppState, actor: &Actor) -> Result<Vec<Identity>> {
    Ok(identities::list_for_user(&mut *conn(state).await?, actor.user_id).await?)
}

/// Unlinks one of the caller's identities; refused (409 `last_login_method`) when the account
/// has no password and this is its only identity.
pub async fn unlink_identity(state: &AppState, actor: &Actor, id: Uuid, meta: &RequestMeta) -> Result<()> {
    work::transaction(state, async |tx| {
        let (password_hash, count) = identities::lock_and_count(tx.conn(), actor.user_id).await?;
        let identity = identities::delete(tx.conn(), actor.user_id, id)
            .await?
            .ok_or(Error::NotFound)?;
        if password_hash.is_none() && count <= 1 {
            return Err(Error::Conflict {
                code: "last_login_method",
                detail: "This is the account's only way to sign in; set a password first (the reset flow).".into(),
            });
        }
        tx.enqueue(audit(
            Ev::IdentityUnlinked,
            Some(actor.user_id),
            Target::User(actor.user_id),
            meta,
            json!({ "provider": identity.provider, "identity_id": identity.id }),
        ));
        Ok(())
    })
    .await
}
