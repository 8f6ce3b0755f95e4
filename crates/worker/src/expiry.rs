//! The order expiry sweep and the Idempotency-Key purge.
//!
//! **Expiry.** An unpaid order past its own `expires_at` is cancelled (`cancel_reason: expired`),
//! its stock goes back to the shelf, and its cancellation e-mail and audit event are staged in
//! the same transaction (outbox rows, pushed after commit). One sweep is one transaction over at
//! most [`BATCH`] orders:
//! 1. `db::orders::lock_expired` locks the due orders `FOR UPDATE SKIP LOCKED`: another worker's
//!    sweep (or a payment or cancel that holds an order) is skipped, never waited for, so any
//!    number of workers sweep disjoint orders;
//! 2. the products of all those orders are locked in one statement, in id order (the order every
//!    checkout and cancel locks them in), so a batch never deadlocks with a checkout, a cancel or
//!    another batch — each order's own release then finds its products already held;
//! 3. per order, inside a savepoint: the guarded `UPDATE … WHERE status = 'pending_payment' AND
//!    expires_at <= now()` (`db::orders::transition` with `only_if_expired`) — its row count
//!    decides against any racer, and the database's clock, not ours, says the deadline passed, so
//!    an order is never cancelled early — then `db::orders::after_cancel` (release once, timeline)
//!    and the outbox rows. An order whose cancel fails is rolled back to its savepoint, logged and
//!    retried next sweep; the rest of the batch commits.
//!
//! The sweep runs every `ORDER_EXPIRY_INTERVAL` (1 s) at most, sooner when the next unpaid
//! order's deadline comes first (`db::orders::next_expiry`), and at once again while batches come
//! back full. So an order is cancelled within about a second of its deadline. A database error
//! is logged and counted (`sweep_failures_total`) and the sweep runs again next tick: it never
//! ends the worker.
//!
//! **Purge.** Every [`PURGE_EVERY`], expired Idempotency-Key records (kept 24 h) are deleted.

use std::time::{Duration, Instant};

use chrono::Utc;
use db::{DbError, PgPool, outbox::Pending};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use domain::{
    jobs::{AuditEvent, AuditEventType, AuditJob, EmailJob, EmailMessage, Job},
    orders::{Action, CancelReason, EventActor, OrderStatus},
};
use jobs::Producer;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics;

/// Orders cancelled per transaction at most.
pub const BATCH: i64 = 100;
/// How often expired Idempotency-Key records are deleted.
pub const PURGE_EVERY: Duration = Duration::from_secs(60);
/// The shortest pause between two sweeps that found nothing (clock skew between this host and
/// Postgres must not make the wake-up at a deadline a busy loop).
const MIN_PAUSE: Duration = Duration::from_millis(100);
/// The contract: an unpaid order is cancelled within this of its deadline.
const CONTRACT: Duration = Duration::from_secs(10);

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Orders cancelled (in the committed transaction).
    pub expired: Vec<domain::OrderId>,
    /// Orders locked but not cancelled (another writer moved them first, or their cancel failed).
    pub skipped: usize,
    /// Whether the batch was full (more may be due right now).
    pub full: bool,
}

/// The jobs an expired order implies: the cancellation e-mail and the audit event.
fn staged_jobs(order: &db::orders::OrderRow) -> [Pending; 2] {
    let mail = Uuid::now_v7();
    let audit = Uuid::now_v7();
    [
        Pending {
            id: mail,
            trace: telemetry::inject_current(),
            job: Job::Email(EmailJob {
                key: mail,
                message: EmailMessage::OrderCancelled {
                    user_id: order.user_id,
                    order_id: order.id,
                },
            }),
        },
        Pending {
            id: audit,
            trace: telemetry::inject_current(),
            job: Job::Audit(AuditJob {
                event: AuditEvent {
                    event_id: audit,
                    event_type: AuditEventType::OrderCancelled,
                    actor_id: None,
                    target_type: Some("order".into()),
                    target_id: Some(order.id.into()),
                    request_id: None,
                    ip: None,
                    user_agent: None,
                    data: serde_json::json!({
                        "reason": CancelReason::Expired.as_str(),
                        "number": order.number.to_string(),
                        "from": OrderStatus::PendingPayment,
                        "to": OrderStatus::Cancelled,
                    }),
                    occurred_at: Utc::now(),
                },
            }),
        },
    ]
}

/// Cancels one locked, expired order (inside the sweep's transaction). `None` when the guarded
/// update did not match (the order is no longer unpaid, or not yet due by the database's clock).
async fn expire_one(conn: &mut AsyncPgConnection, id: domain::OrderId) -> Result<Option<Vec<Pending>>, DbError> {
    let from = OrderStatus::PendingPayment;
    let effects = domain::orders::transition(from, Action::Expire).map_err(DbError::other)?;
    let fields = db::orders::TransitionFields {
        cancel_reason: Some(CancelReason::Expired),
        only_if_expired: true,
        ..Default::default()
    };
    let Some(order) = db::orders::transition(conn, id, None, from, effects.to, &fields).await? else {
        return Ok(None);
    };
    let done = db::orders::after_cancel(conn, &order, from, effects, EventActor::System, None).await?;
    let jobs = staged_jobs(&order);
    db::outbox::insert(conn, &jobs).await?;
    tracing::info!(
        order.id = %order.id,
        order.number = order.number,
        expires_at = %order.expires_at,
        stock_released = done.released,
        "unpaid order expired: cancelled"
    );
    Ok(Some(jobs.into()))
}

/// One sweep: cancels up to [`BATCH`] due orders in one transaction and returns them with the
/// jobs to push after commit.
async fn sweep_tx(conn: &mut AsyncPgConnection) -> Result<(Swept, Vec<Pending>), DbError> {
    conn.transaction::<_, DbError, _>(async |conn| {
        let ids = db::orders::lock_expired(conn, BATCH).await?;
        let mut swept = Swept {
            full: ids.len() as i64 == BATCH,
            ..Swept::default()
        };
        if ids.is_empty() {
            return Ok((swept, Vec::new()));
        }
        // Every product of the batch, locked once in id order (see the module docs).
        let mut products: Vec<domain::ProductId> = db::orders::items(conn, &ids)
            .await?
            .into_iter()
            .map(|i| i.product_id)
            .collect();
        products.sort_unstable();
        products.dedup();
        db::products::lock_for_checkout(conn, &products).await?;
        let mut staged = Vec::new();
        for id in ids {
            // A savepoint per order: one that fails does not take the batch down with it.
            match conn
                .transaction::<_, DbError, _>(async |conn| expire_one(conn, id).await)
                .await
            {
                Ok(Some(jobs)) => {
                    swept.expired.push(id);
                    staged.extend(jobs);
                }
                Ok(None) => swept.skipped += 1,
                Err(e @ DbError::Unavailable(_)) => return Err(e),
                Err(e) => {
                    tracing::error!(order.id = %id, error = %e, "could not expire the order; retrying next sweep");
                    metrics::sweep_failed("order_expiry");
                    swept.skipped += 1;
                }
            }
        }
        Ok((swept, staged))
    })
    .await
}

/// Runs one sweep and pushes its jobs after commit (as the API does; rows whose push fails stay
/// due for the outbox dispatcher).
pub async fn sweep_once(db: &PgPool, producer: &Producer) -> Result<Swept, DbError> {
    let (swept, staged) = {
        let mut conn = db.get().await?;
        sweep_tx(&mut conn).await?
    };
    if !swept.expired.is_empty() {
        metrics::orders_expired(swept.expired.len());
        tracing::info!(count = swept.expired.len(), "expired unpaid orders cancelled");
    }
    push_after_commit(db, producer, &staged).await;
    Ok(swept)
}

async fn push_after_commit(db: &PgPool, producer: &Producer, staged: &[Pending]) {
    if staged.is_empty() {
        return;
    }
    let mut pushed = Vec::with_capacity(staged.len());
    for p in staged {
        if let Err(e) = producer.push_outbox(p.id, 0, &p.job, p.trace.clone()).await {
            tracing::warn!(outbox.id = %p.id, error = %e, "push failed; the outbox dispatcher will retry");
            break;
        }
        pushed.push(p.id);
    }
    if pushed.is_empty() {
        return;
    }
    let marked = match db.get().await {
        Ok(mut conn) => db::outbox::mark_pushed(&mut conn, &pushed, producer.settings().visibility)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = marked {
        // Harmless: the dispatcher pushes the row again and the queue's idempotency key drops it.
        tracing::warn!(error = %e, "could not mark outbox rows pushed");
    }
}

/// Deletes expired Idempotency-Key records. Returns how many.
pub async fn purge_once(db: &PgPool) -> Result<usize, DbError> {
    let mut conn = db.get().await?;
    let n = db::orders::purge_idempotency_keys(&mut conn).await?;
    if n > 0 {
        metrics::idempotency_keys_purged(n);
        tracing::info!(count = n, "expired idempotency keys purged");
    }
    Ok(n)
}

/// How long to sleep after a sweep: not at all while batches come back full, else until the next
/// deadline, at most `interval`, at least [`MIN_PAUSE`].
async fn pause(db: &PgPool, interval: Duration, full: bool) -> Duration {
    if full {
        return Duration::ZERO;
    }
    let next = match db.get().await {
        Ok(mut conn) => db::orders::next_expiry(&mut conn).await.ok().flatten(),
        Err(_) => None,
    };
    let until = next.map_or(interval, |t| {
        (t - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            // The deadline is inclusive (`expires_at <= now()`): wake just after it.
            .saturating_add(Duration::from_millis(10))
    });
    until.clamp(MIN_PAUSE.min(interval), interval)
}

/// Runs until cancelled: a sweep every `interval` at most (see the module docs), the purge every
/// [`PURGE_EVERY`]. A sweep in progress finishes before the task returns.
pub async fn run(db: PgPool, producer: std::sync::Arc<Producer>, interval: Duration, stop: CancellationToken) {
    if interval > CONTRACT {
        tracing::warn!(
            interval_ms = interval.as_millis() as u64,
            "ORDER_EXPIRY_INTERVAL is above 10 s: an unpaid order may be cancelled later than the contract allows"
        );
    }
    let mut last_purge: Option<Instant> = None;
    loop {
        // `None`: the sweep failed, so the next one comes after a plain `interval` (no look-up of
        // the next deadline from a database that just failed).
        let full = match sweep_once(&db, &producer).await {
            Ok(swept) => Some(swept.full),
            Err(e) => {
                tracing::warn!(error = %e, "order expiry sweep failed; retrying next tick");
                metrics::sweep_failed("order_expiry");
                None
            }
        };
        if last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
            last_purge = Some(Instant::now());
            if let Err(e) = purge_once(&db).await {
                tracing::warn!(error = %e, "idempotency key purge failed; retrying next minute");
                metrics::sweep_failed("idempotency_purge");
            }
        }
        let pause = match full {
            None => interval,
            Some(full) => tokio::select! {
                () = stop.cancelled() => return,
                p = pause(&db, interval, full) => p,
            },
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
