//! The outbox dispatcher: pushes every unfinished row that is due — rows the API could not push
//! (Redis was down, or the API died between commit and push), and rows pushed but not finished
//! within the visibility timeout (the queue may have lost them) — and prunes finished rows after
//! the retention period. Safe with any number of workers: rows are claimed with
//! `FOR UPDATE SKIP LOCKED`, and a row pushed twice is enqueued once while Redis remembers it (its
//! id is the task's idempotency key). On every poll it also checks the Redis marker
//! (`jobs::marker`): a Redis that came back empty makes every unfinished row due at once.

use std::time::Duration;

use chrono::Utc;
use db::{DbError, PgPool};
use diesel_async::AsyncConnection;
use jobs::Producer;
use tokio_util::sync::CancellationToken;

const BATCH: i64 = 200;
/// A row whose push failed (Redis down) is tried again after this.
const PUSH_RETRY: Duration = Duration::from_secs(1);

/// Pushes one batch of due rows. Returns how many were pushed.
pub async fn dispatch_once(db: &PgPool, producer: &Producer) -> Result<usize, DbError> {
    let visibility = producer.settings().visibility;
    let mut conn = db.get().await?;
    conn.transaction::<_, DbError, _>(async |conn| {
        let rows = db::outbox::lock_due(conn, BATCH).await?;
        let mut pushed = Vec::with_capacity(rows.len());
        let mut failed = None;
        for row in &rows {
            let job = match row.job() {
                Ok(job) => job,
                Err(e) => {
                    // Cannot happen for rows the API wrote; never block the queue on one, and
                    // keep it where operators look for dead jobs.
                    tracing::error!(outbox.id = %row.id, error = %e, "undecodable outbox row: dead");
                    db::outbox::mark_dead(conn, row.id, &format!("undecodable outbox row: {e}")).await?;
                    continue;
                }
            };
            if let Err(e) = producer.push_outbox(row.id, row.epoch, &job, row.trace_context()).await {
                failed = Some((row.id, e.to_string()));
                break;
            }
            if row.dispatched_at.is_some() {
                tracing::info!(outbox.id = %row.id, queue = %row.queue, "pushed again: not finished within the visibility timeout");
            }
            pushed.push(row.id);
        }
        db::outbox::mark_pushed(conn, &pushed, visibility).await?;
        if let Some((id, error)) = failed {
            tracing::warn!(outbox.id = %id, %error, "outbox push failed; will retry");
            db::outbox::record_failure(conn, &[id], &error, PUSH_RETRY).await?;
        }
        Ok(pushed.len())
    })
    .await
}

/// When Redis lost its data (the marker is gone), makes every unfinished row due now.
async fn redeliver_after_redis_reset(db: &PgPool, producer: &Producer) {
    let mut redis = match producer.connection().await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "marker check: Redis unavailable");
            return;
        }
    };
    match jobs::marker::reset_detected(&mut redis, producer.settings()).await {
        Ok(false) => {}
        Ok(true) => match db.get().await {
            Ok(mut conn) => match db::outbox::redeliver_all(&mut conn).await {
                Ok(n) => tracing::warn!(
                    rows = n,
                    "Redis holds no queue marker (new, flushed or restarted empty): every unfinished outbox row is pushed again"
                ),
                Err(e) => tracing::warn!(error = %e, "could not schedule the redelivery of unfinished outbox rows"),
            },
            Err(e) => tracing::warn!(error = %e, "could not schedule the redelivery of unfinished outbox rows"),
        },
        Err(e) => tracing::debug!(error = %e, "marker check failed"),
    }
}

/// Runs until cancelled: dispatch every `poll` (at once again while batches are full), prune
/// once a minute.
pub async fn run(
    db: PgPool,
    producer: std::sync::Arc<Producer>,
    poll: Duration,
    retention: Duration,
    stop: CancellationToken,
) {
    let mut last_prune = std::time::Instant::now() - Duration::from_secs(3600);
    loop {
        redeliver_after_redis_reset(&db, &producer).await;
        let n = match dispatch_once(&db, &producer).await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(count = n, "outbox rows dispatched");
                }
                n
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox dispatch failed");
                0
            }
        };
        if last_prune.elapsed() >= Duration::from_secs(60) {
            last_prune = std::time::Instant::now();
            let before = Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(7));
            match db.get().await {
                Ok(mut conn) => match db::outbox::prune(&mut conn, before, 10_000).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(count = n, "pruned finished outbox rows"),
                    Err(e) => tracing::warn!(error = %e, "outbox prune failed"),
                },
                Err(e) => tracing::warn!(error = %e, "outbox prune: no connection"),
            }
        }
        let pause = if n as i64 == BATCH { Duration::ZERO } else { poll };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
