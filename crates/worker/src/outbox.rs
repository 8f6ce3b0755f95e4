//! The outbox dispatcher: pushes rows the API could not (Redis was down, or the API died between
//! commit and push), and prunes dispatched rows after the retention period. Safe with any number
//! of workers: rows are claimed with `FOR UPDATE SKIP LOCKED`, and a row pushed twice is enqueued
//! once (its id is the task's idempotency key).

use std::time::Duration;

use chrono::Utc;
use db::{DbError, PgPool};
use diesel_async::AsyncConnection;
use jobs::Producer;
use tokio_util::sync::CancellationToken;

/// Rows younger than this are left to the API's own after-commit push.
const GRACE: Duration = Duration::from_secs(2);
const BATCH: i64 = 200;

/// Pushes one batch of pending rows. Returns how many were dispatched.
pub async fn dispatch_once(db: &PgPool, producer: &Producer) -> Result<usize, DbError> {
    let mut conn = db.get().await?;
    let older_than = Utc::now() - chrono::Duration::from_std(GRACE).unwrap_or_default();
    conn.transaction::<_, DbError, _>(async |conn| {
        let rows = db::outbox::lock_pending(conn, older_than, BATCH).await?;
        let mut pushed = Vec::with_capacity(rows.len());
        let mut failed = None;
        for row in &rows {
            let job = match row.job() {
                Ok(job) => job,
                Err(e) => {
                    // Cannot happen for rows the API wrote; never block the queue on one.
                    tracing::error!(outbox.id = %row.id, error = %e, "undecodable outbox row; skipped");
                    db::outbox::record_failure(conn, &[row.id], &e.to_string()).await?;
                    continue;
                }
            };
            if let Err(e) = producer.push_outbox(row.id, &job).await {
                failed = Some((row.id, e.to_string()));
                break;
            }
            pushed.push(row.id);
        }
        db::outbox::mark_dispatched(conn, &pushed).await?;
        if let Some((id, error)) = failed {
            tracing::warn!(outbox.id = %id, %error, "outbox push failed; will retry");
            db::outbox::record_failure(conn, &[id], &error).await?;
        }
        Ok(pushed.len())
    })
    .await
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
                    Ok(n) => tracing::info!(count = n, "pruned dispatched outbox rows"),
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
