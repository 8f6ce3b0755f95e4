//! Job handlers. Each is idempotent:
//! - audit: `INSERT … ON CONFLICT (event_id) DO NOTHING`, so a re-delivered event adds nothing;
//! - e-mail: `email_log` is checked before sending and written after, keyed by the job's message
//!   key. The remaining window: a crash (or a Postgres failure) after the SMTP server accepted the
//!   message but before `email_log` was written sends it again on re-delivery. SMTP has no
//!   transactional hand-off, so at-least-once is the honest guarantee; the window is one INSERT.
//!
//! Failures are classified: [`JobError::Transient`] (Postgres unreachable) is retried without
//! consuming an attempt, so an outage of minutes never dead-letters work that would succeed later;
//! [`JobError::Failed`] consumes an attempt; [`JobError::Malformed`] is dead-lettered at once.

use std::{sync::Arc, time::Duration};

use apalis::prelude::{AbortError, BoxDynError, Data, TaskId};
use auth::OpaqueToken;
use chrono::Utc;
use db::{PgPool, email::TokenPurpose};
use domain::jobs::{AuditJob, EmailJob, EmailMessage, Queue};
use jobs::{Envelope, Producer, backoff::Backoff};
use lettre::message::Mailbox;
use serde::{Deserialize, Deserializer};
use tracing::Instrument as _;

use crate::{
    audit_batch::AuditBatcher,
    mailer::{Mailer, mailbox},
    metrics, templates,
};

#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    #[error("transient: {0}")]
    Transient(String),
    #[error("failed: {0}")]
    Failed(String),
    #[error("malformed payload: {0}")]
    Malformed(String),
}

impl From<db::DbError> for JobError {
    fn from(e: db::DbError) -> Self {
        match e {
            db::DbError::Unavailable(e) => JobError::Transient(e.to_string()),
            other => JobError::Failed(other.to_string()),
        }
    }
}

/// Everything a handler needs, shared by all jobs of the process.
pub struct Ctx {
    pub db: PgPool,
    pub producer: Arc<Producer>,
    pub mailer: Mailer,
    pub from: Mailbox,
    pub public_url: String,
    pub email_max_attempts: u32,
    pub audit_max_attempts: u32,
    pub backoff: Backoff,
    /// Audit events are written in batches through this (see [`crate::audit_batch`]); `None`
    /// (`AUDIT_BATCH_MAX=1`): one `INSERT` per job.
    pub audit_batch: Option<AuditBatcher>,
}

/// The task argument, decoded leniently: a payload that is not an [`Envelope`] still reaches the
/// handler (as `Err`), which dead-letters it at once instead of failing inside the queue.
#[derive(Debug, Clone)]
pub struct Lenient(pub Result<Envelope, String>);

impl serde::Serialize for Lenient {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Ok(e) => e.serialize(s),
            Err(_) => s.serialize_none(),
        }
    }
}

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(Lenient(
            serde_json::from_value::<Envelope>(v.clone()).map_err(|e| format!("{e}; payload: {v}")),
        ))
    }
}

/// The handler's data: which queue it serves and the shared context.
#[derive(Clone)]
pub struct QueueCtx {
    pub queue: Queue,
    pub ctx: Arc<Ctx>,
}

/// The apalis task function of every queue.
pub async fn handle(task: Lenient, id: TaskId, q: Data<QueueCtx>) -> Result<(), BoxDynError> {
    q.ctx.run(q.queue, task, &id).await
}

/// The handler of the bench-only no-op queue (`jobs::NOOP_QUEUE`): acknowledges the task.
pub async fn noop(_task: Lenient) -> Result<(), BoxDynError> {
    Ok(())
}

/// Transient failures are retried on this gentler schedule, without consuming attempts.
const TRANSIENT_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(30),
};

impl Ctx {
    fn max_attempts(&self, queue: Queue) -> u32 {
        match queue {
            Queue::Email => self.email_max_attempts,
            Queue::Audit => self.audit_max_attempts,
        }
    }

    /// Runs one task and decides its fate: done, retried later (re-pushed with a delay, this task
    /// acknowledged), or dead (`AbortError`: apalis-redis moves it to the dead set).
    pub async fn run(&self, queue: Queue, task: Lenient, id: &TaskId) -> Result<(), BoxDynError> {
        let envelope = match task.0 {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(queue = %queue, task.id = %id, error = %e, "malformed task: dead-lettered");
                metrics::failed(queue, "malformed");
                metrics::dead(queue);
                return Err(AbortError::new(format!("malformed task: {e}")).into());
            }
        };
        // The job's span continues the trace of the request that staged it (its context came
        // through the outbox in the envelope); the parent is set before the span is entered.
        let span = tracing::info_span!(
            "job",
            otel.name = %format_args!("job {queue}"),
            otel.kind = "consumer",
            queue = %queue,
            task.id = %id,
            attempt = envelope.attempt,
            outbox.id = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        if let Some(outbox_id) = envelope.outbox_id {
            span.record("outbox.id", tracing::field::display(outbox_id));
        }
        if let Some(trace) = &envelope.trace {
            telemetry::set_parent_from_map(&span, trace);
        }
        self.run_envelope(queue, envelope, id, &span)
            .instrument(span.clone())
            .await
    }

    async fn run_envelope(
        &self,
        queue: Queue,
        envelope: Envelope,
        id: &TaskId,
        span: &tracing::Span,
    ) -> Result<(), BoxDynError> {
        let started = std::time::Instant::now();
        let outbox_id = envelope.outbox_id;
        // Whether the effect's own transaction also finished the outbox row (a batched audit write).
        let mut finished = false;
        let mut result = match queue {
            Queue::Email => match serde_json::from_value::<EmailJob>(envelope.job.clone()) {
                Ok(job) => self.send_email(&job).await,
                Err(e) => Err(JobError::Malformed(e.to_string())),
            },
            Queue::Audit => match serde_json::from_value::<AuditJob>(envelope.job.clone()) {
                Ok(job) => match &self.audit_batch {
                    Some(batcher) => {
                        finished = true;
                        batcher.append(job.event, outbox_id).await
                    }
                    None => self.write_audit(&job).await,
                },
                Err(e) => Err(JobError::Malformed(e.to_string())),
            },
        };
        // The effect is done: only now is the outbox row finished. If Postgres cannot record
        // that, the job is retried (without consuming an attempt) and finds its effect done.
        if result.is_ok()
            && !finished
            && let Some(id) = outbox_id
        {
            result = self
                .finish(id)
                .instrument(tracing::info_span!(
                    "postgres",
                    otel.name = "outbox finish",
                    otel.kind = "client",
                    db.system = "postgresql"
                ))
                .await;
        }
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        metrics::duration(queue, started.elapsed().as_secs_f64());
        let attempt = envelope.attempt;
        match result {
            Ok(()) => {
                metrics::processed(queue);
                tracing::debug!(queue = %queue, task.id = %id, attempt, ms = started.elapsed().as_millis() as u64, "job done");
                Ok(())
            }
            Err(JobError::Malformed(e)) => {
                tracing::error!(queue = %queue, task.id = %id, error = %e, "malformed job payload: dead-lettered");
                metrics::failed(queue, "malformed");
                metrics::dead(queue);
                let error = format!("malformed job: {e}");
                self.mark_dead(outbox_id, &error).await;
                Err(AbortError::new(error).into())
            }
            Err(JobError::Failed(e)) if attempt >= self.max_attempts(queue) => {
                tracing::error!(queue = %queue, task.id = %id, attempt, error = %e, "job failed for the last time: dead");
                metrics::failed(queue, "failed");
                metrics::dead(queue);
                let error = format!("attempt {attempt}: {e}");
                self.mark_dead(outbox_id, &error).await;
                Err(AbortError::new(error).into())
            }
            Err(JobError::Failed(e)) => {
                metrics::failed(queue, "failed");
                let delay = self.backoff.delay(attempt);
                tracing::warn!(queue = %queue, task.id = %id, attempt, retry_in_ms = delay.as_millis() as u64, error = %e, "job failed; retrying");
                self.retry(
                    queue,
                    Envelope {
                        attempt: attempt + 1,
                        job: envelope.job,
                        outbox_id,
                        // The retry stays in the request's trace.
                        trace: envelope.trace,
                    },
                    delay,
                )
                .await
            }
            Err(JobError::Transient(e)) => {
                metrics::failed(queue, "transient");
                let delay = TRANSIENT_BACKOFF.delay(attempt.min(6));
                tracing::warn!(queue = %queue, task.id = %id, retry_in_ms = delay.as_millis() as u64, error = %e, "dependency unavailable; retrying without consuming an attempt");
                self.retry(queue, envelope, delay).await
            }
        }
    }

    async fn finish(&self, outbox_id: uuid::Uuid) -> Result<(), JobError> {
        let mut conn = self.conn().await?;
        db::outbox::finish(&mut conn, outbox_id).await?;
        Ok(())
    }

    /// Best effort: if Postgres cannot record the death now, the row falls due again after the
    /// visibility timeout, the job runs (and dies) once more, and is recorded then.
    async fn mark_dead(&self, outbox_id: Option<uuid::Uuid>, error: &str) {
        let Some(id) = outbox_id else { return };
        let marked = match self.conn().await {
            Ok(mut conn) => db::outbox::mark_dead(&mut conn, id, error)
                .await
                .map_err(JobError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = marked {
            tracing::warn!(outbox.id = %id, error = %e, "could not record the dead job in the outbox");
        }
    }

    async fn retry(&self, queue: Queue, envelope: Envelope, delay: Duration) -> Result<(), BoxDynError> {
        // The outbox must not push the row again while the retry waits for its backoff. Best
        // effort: when Postgres is down, a re-push (deduplicated by Redis) is the only cost.
        if let Some(id) = envelope.outbox_id {
            let visibility = self.producer.settings().visibility;
            if let Ok(mut conn) = self.conn().await
                && let Err(e) = db::outbox::postpone(&mut conn, id, delay + visibility).await
            {
                tracing::debug!(outbox.id = %id, error = %e, "could not postpone the outbox row");
            }
        }
        // If even the re-push fails (Redis down), fail the task: apalis-redis reschedules it.
        self.producer
            .push_retry(queue, envelope, delay)
            .await
            .inspect(|_| metrics::retried(queue))
            .map_err(|e| -> BoxDynError { Box::new(e) })
    }

    async fn conn(&self) -> Result<db::pool::PooledConn<'_>, JobError> {
        self.db.get().await.map_err(|e| JobError::Transient(e.to_string()))
    }

    pub async fn write_audit(&self, job: &AuditJob) -> Result<(), JobError> {
        let mut conn = self.conn().await?;
        let inserted = db::audit::append(&mut conn, &job.event).await?;
        if !inserted {
            tracing::info!(event.id = %job.event.event_id, "audit event already recorded (duplicate delivery)");
        }
        Ok(())
    }

    pub async fn send_email(&self, job: &EmailJob) -> Result<(), JobError> {
        let key = job.message_key();
        let user_id = job.message.user_id();
        // The connection goes back to the pool before the (slow) SMTP conversation.
        let prepared = self
            .prepare_email(job, &key, user_id)
            .instrument(tracing::info_span!(
                "postgres",
                otel.name = "email prepare",
                otel.kind = "client",
                db.system = "postgresql"
            ))
            .await?;
        let Some((to, body)) = prepared else {
            return Ok(());
        };
        self.mailer
            .send(&self.from, to, body)
            .instrument(tracing::info_span!(
                "mail",
                otel.name = "mail send",
                otel.kind = "client"
            ))
            .await
            .map_err(|e| JobError::Failed(format!("{e:#}")))?;
        async {
            let mut conn = self.conn().await?;
            db::email::record_sent(&mut conn, &key, job.message.kind(), Some(user_id))
                .await
                .map_err(JobError::from)
        }
        .instrument(tracing::info_span!(
            "postgres",
            otel.name = "email record",
            otel.kind = "client",
            db.system = "postgresql"
        ))
        .await?;
        tracing::info!(message.key = %key, user.id = %user_id, "e-mail sent");
        Ok(())
    }

    /// Reads what the e-mail needs (and issues its token); `None`: nothing to send (logged).
    async fn prepare_email(
        &self,
        job: &EmailJob,
        key: &str,
        user_id: domain::UserId,
    ) -> Result<Option<(Mailbox, templates::Rendered)>, JobError> {
        let key = key.to_owned();
        let mut conn = self.conn().await?;
        if db::email::already_sent(&mut conn, &key).await? {
            tracing::info!(message.key = %key, "e-mail already sent (duplicate delivery)");
            return Ok(None);
        }
        let Some(user) = db::users::find_active(&mut conn, user_id).await? else {
            tracing::info!(message.key = %key, user.id = %user_id, "recipient no longer exists; skipped");
            return Ok(None);
        };
        let body = match job.message {
            EmailMessage::VerifyEmail { .. } => {
                if user.email_verified_at.is_some() {
                    tracing::info!(message.key = %key, "address already verified; skipped");
                    return Ok(None);
                }
                let token = self
                    .issue_token(&mut conn, user.id, TokenPurpose::VerifyEmail, 24)
                    .await?;
                templates::verify_email(&user, &format!("{}/verify-email?token={token}", self.public_url))
            }
            EmailMessage::PasswordReset { .. } => {
                let token = self
                    .issue_token(&mut conn, user.id, TokenPurpose::PasswordReset, 1)
                    .await?;
                templates::password_reset(&user, &format!("{}/reset-password?token={token}", self.public_url))
            }
            EmailMessage::Welcome { .. } => templates::welcome(&user, &self.public_url),
            EmailMessage::SessionsRevoked { .. } => templates::sessions_revoked(&user),
            EmailMessage::OrderConfirmation { order_id, .. } => {
                let Some(order) = order_of(&mut conn, &key, order_id, user.id).await? else {
                    return Ok(None);
                };
                let items = db::orders::items(&mut conn, &[order.id]).await?;
                templates::order_confirmation(&user, &order, &items)
            }
            EmailMessage::OrderShipped { order_id, .. } => {
                let Some(order) = order_of(&mut conn, &key, order_id, user.id).await? else {
                    return Ok(None);
                };
                templates::order_shipped(&user, &order)
            }
            EmailMessage::OrderCancelled { order_id, .. } => {
                let Some(order) = order_of(&mut conn, &key, order_id, user.id).await? else {
                    return Ok(None);
                };
                let refund = db::orders::refunds(&mut conn, &[order.id]).await?.into_iter().next();
                templates::order_cancelled(&user, &order, refund.as_ref())
            }
        };
        let to = mailbox(&user.name, &user.email, user.email_verified_at.is_some())
            .map_err(|e| JobError::Malformed(e.to_string()))?;
        Ok(Some((to, body)))
    }

    /// A fresh single-use token: the plain value goes into the link, only its hash is stored.
    async fn issue_token(
        &self,
        conn: &mut db::AsyncPgConnection,
        user_id: domain::UserId,
        purpose: TokenPurpose,
        hours: i64,
    ) -> Result<String, JobError> {
        let token = OpaqueToken::generate();
        db::email::insert_token(
            conn,
            token.digest(),
            user_id,
            purpose,
            Utc::now() + chrono::Duration::hours(hours),
        )
        .await?;
        Ok(token.into_plain())
    }
}

/// The order an order e-mail is about, reloaded (jobs carry ids, not copies) and scoped to the
/// recipient; `None` (logged: the job is done, nothing to send) when it no longer exists.
async fn order_of(
    conn: &mut db::AsyncPgConnection,
    key: &str,
    order_id: domain::OrderId,
    user_id: domain::UserId,
) -> Result<Option<db::orders::OrderRow>, JobError> {
    let order = db::orders::find(conn, order_id, Some(user_id)).await?;
    if order.is_none() {
        tracing::info!(message.key = %key, order.id = %order_id, "order no longer exists; skipped");
    }
    Ok(order)
}
