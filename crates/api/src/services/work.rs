//! The unit of work: one transaction per use case. The use case does its reads and guarded
//! writes through [`Tx::conn`] and stages what its change implies with [`Tx::enqueue`] (a job:
//! written to the outbox in the same transaction) and [`Tx::invalidate`] (a cache namespace, or
//! one user's part of one).
//! After commit — and only then — the jobs are handed to the dispatcher and the caches bumped.
//! Nothing outside Postgres is called inside the transaction. A change to a user's sessions or
//! row ([`Tx::auth_changed`]) is announced around the commit: marked pending in Redis just
//! before `COMMIT`, ended right after it, so that every instance's session cache asks Postgres
//! from the response on (see [`crate::infra::session_cache`]).
//!
//! ```ignore
//! let user = work::transaction(state, async |tx| {
//!     let user = users::insert(tx.conn(), &new).await?;
//!     tx.enqueue(jobs::email(EmailMessage::VerifyEmail { user_id: user.id }));
//!     tx.invalidate(ns::USERS);
//!     Ok(user)
//! })
//! .await?;
//! ```
//!
//! A use case whose failure must still commit something (a refresh-token re-use revokes the
//! session and then fails the request) returns `Ok` with an outcome and maps it afterwards.

use db::{AsyncPgConnection, DbError, outbox::Pending};
use diesel_async::{AnsiTransactionManager, TransactionManager};
use tracing::Instrument as _;

use crate::{infra::cache::Scope, services::Result, state::AppState};

/// An open transaction and what to do after it commits.
pub struct Tx {
    conn: db::pool::PooledConn<'static>,
    jobs: Vec<Pending>,
    invalidate: Vec<Scope>,
    auth_changed: Vec<domain::UserId>,
}

impl Tx {
    /// The transaction's connection.
    pub fn conn(&mut self) -> &mut AsyncPgConnection {
        &mut self.conn
    }

    /// Stages a job: it is written to the outbox with this transaction and dispatched after commit.
    /// The job carries the current trace context (the request's span, when traces are on), so
    /// the worker's span for it continues the request's trace.
    pub fn enqueue(&mut self, mut job: Pending) {
        if job.trace.is_none() {
            job.trace = telemetry::inject_current();
        }
        self.jobs.push(job);
    }

    /// Bumps a cache namespace, or one user's part of it, after commit (so no reader can cache
    /// the old value afterwards).
    pub fn invalidate(&mut self, scope: impl Into<Scope>) {
        let scope = scope.into();
        if !self.invalidate.contains(&scope) {
            self.invalidate.push(scope);
        }
    }

    /// The user's sessions or row change with this transaction (a revocation, a new password,
    /// a role, a deletion, any update of the row): no instance may answer from a cached session
    /// of theirs once the use case has returned.
    pub fn auth_changed(&mut self, user_id: domain::UserId) {
        if !self.auth_changed.contains(&user_id) {
            self.auth_changed.push(user_id);
        }
    }
}

/// Runs `work` in one transaction: commit on `Ok` (with the staged jobs written to the outbox),
/// roll back on `Err`; after a commit, dispatch the jobs and bump the caches.
pub async fn transaction<T, F>(state: &AppState, work: F) -> Result<T>
where
    F: AsyncFnOnce(&mut Tx) -> Result<T>,
{
    let span = tracing::info_span!(
        "postgres",
        otel.name = "unit of work",
        otel.kind = "client",
        db.system = "postgresql"
    );
    in_transaction(state, work).instrument(span).await
}

async fn in_transaction<T, F>(state: &AppState, work: F) -> Result<T>
where
    F: AsyncFnOnce(&mut Tx) -> Result<T>,
{
    let conn = state.db.get_owned().await.map_err(DbError::from)?;
    let mut tx = Tx {
        conn,
        jobs: Vec::new(),
        invalidate: Vec::new(),
        auth_changed: Vec::new(),
    };
    AnsiTransactionManager::begin_transaction(&mut *tx.conn)
        .await
        .map_err(DbError::from)?;
    let outcome = match work(&mut tx).await {
        Ok(value) => db::outbox::insert(&mut tx.conn, &tx.jobs)
            .await
            .map(|()| value)
            .map_err(Into::into),
        Err(e) => Err(e),
    };
    let value = match outcome {
        Ok(value) => {
            if !tx.auth_changed.is_empty() {
                state.sessions.begin_change(&tx.auth_changed).await;
            }
            let committed = AnsiTransactionManager::commit_transaction(&mut *tx.conn).await;
            if !tx.auth_changed.is_empty() {
                state.sessions.end_change(&tx.auth_changed).await;
            }
            committed.map_err(DbError::from)?;
            value
        }
        Err(e) => {
            // A failed rollback leaves the connection marked broken; the pool drops it.
            if let Err(rollback) = AnsiTransactionManager::rollback_transaction(&mut *tx.conn).await {
                tracing::warn!(error = %rollback, "rollback failed");
            }
            return Err(e);
        }
    };
    let Tx {
        conn, jobs, invalidate, ..
    } = tx;
    drop(conn);
    state.jobs.after_commit(jobs);
    for scope in invalidate {
        state.cache.invalidate(scope).await;
    }
    Ok(value)
}

/// A pooled connection for reads outside a transaction.
pub async fn conn(state: &AppState) -> Result<db::pool::PooledConn<'_>> {
    Ok(state.db.get().await.map_err(DbError::from)?)
}
