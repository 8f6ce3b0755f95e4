//! `worker dead list|retry`: dead jobs from both places they live.
//!
//! - Jobs that came from the outbox (every job the API stages) are dead in Postgres: their outbox
//!   row has `dead_at` and the last error. That record survives a Redis that lost its data, and a
//!   re-drive goes through the outbox too (a new epoch, pushed by the dispatcher within a poll).
//! - Jobs pushed straight to a queue (benchmarks, tools) are dead only in Redis (`{queue}:dead`),
//!   re-driven there.
//!
//! Ids are apalis task ids; an outbox job's id is its row id as a ULID (a UUID is accepted too).

use anyhow::Context;
use domain::jobs::Queue;
use jobs::{Envelope, QueueSettings};

use crate::config::WorkerConfig;

/// One line per dead job: `queue \t id \t attempts=… \t error=… \t payload=…`.
pub async fn list(
    config: &WorkerConfig,
    settings: &QueueSettings,
    queue: Option<Queue>,
) -> anyhow::Result<Vec<String>> {
    let (db, mut redis) = connect(config).await?;
    let mut pg = db.get().await?;
    let queues = queue.map_or_else(|| Queue::ALL.to_vec(), |q| vec![q]);
    let mut lines = Vec::new();
    for q in queues {
        for row in db::outbox::list_dead(&mut pg, Some(q.as_str()), 10_000).await? {
            let payload = serde_json::to_string(&row.payload)?;
            lines.push(format!(
                "{q}\t{}\tattempts={}\terror={}\tpayload={payload}",
                jobs::task_id(row.id),
                row.attempts,
                row.last_error.unwrap_or_default(),
            ));
        }
        let in_redis = jobs::dead::list(&mut redis, settings, q).await?;
        // A Redis entry of an outbox job is shown (and re-driven) from the outbox.
        let outbox_ids: Vec<_> = in_redis
            .iter()
            .filter_map(|j| envelope_outbox_id(j.payload.as_deref()))
            .collect();
        let known = db::outbox::existing(&mut pg, &outbox_ids).await?;
        for job in in_redis {
            if envelope_outbox_id(job.payload.as_deref()).is_some_and(|id| known.contains(&id)) {
                continue;
            }
            lines.push(format!(
                "{}\t{}\tattempts={}\terror={}\tpayload={}",
                job.queue,
                job.id,
                job.attempts.unwrap_or_default(),
                job.error.unwrap_or_default(),
                job.payload.unwrap_or_default()
            ));
        }
    }
    Ok(lines)
}

/// Re-drives one dead job. Returns false when no dead job has that id.
pub async fn retry(config: &WorkerConfig, settings: &QueueSettings, queue: Queue, id: &str) -> anyhow::Result<bool> {
    let (db, mut redis) = connect(config).await?;
    let mut pg = db.get().await?;
    let outbox_id = jobs::outbox_id(id).or_else(|| id.parse().ok());
    if let Some(row) = outbox_id
        && db::outbox::redrive(&mut pg, row).await?
    {
        // The dead Redis entry (if Redis still has it) must not be re-driven a second time.
        jobs::dead::forget(&mut redis, settings, queue, id).await?;
        return Ok(true);
    }
    Ok(jobs::dead::retry(&mut redis, settings, queue, id).await?)
}

/// Both stores the dead jobs live in (one pooled connection is enough for a CLI).
async fn connect(config: &WorkerConfig) -> anyhow::Result<(db::PgPool, apalis_redis::ConnectionManager)> {
    let db = db::connect_pool(&config.database_url, 1)
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
    let redis = jobs::connect(&config.redis_url)
        .await
        .context("cannot connect to Redis")?;
    Ok((db, redis))
}

fn envelope_outbox_id(payload: Option<&str>) -> Option<uuid::Uuid> {
    serde_json::from_str::<Envelope>(payload?).ok()?.outbox_id
}
