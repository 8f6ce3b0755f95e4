//! Dead jobs: tasks that exhausted their attempts (or were aborted as malformed) sit in
//! `{queue}:dead` with their payload in `{queue}:data` and their metadata (attempts, last error)
//! in `{queue}:meta:{id}`. Operators list them and re-drive them with `worker dead …`.

use std::collections::HashMap;

use apalis_redis::ConnectionManager;
use domain::jobs::Queue;
use redis::AsyncCommands;

use crate::QueueSettings;

#[derive(Debug, Clone)]
pub struct DeadJob {
    pub queue: Queue,
    pub id: String,
    pub payload: Option<String>,
    pub attempts: Option<String>,
    pub error: Option<String>,
}

pub async fn list(
    conn: &mut ConnectionManager,
    settings: &QueueSettings,
    queue: Queue,
) -> redis::RedisResult<Vec<DeadJob>> {
    let config = settings.config(queue);
    let mut ids: Vec<String> = conn.smembers(config.dead_jobs_set()).await?;
    ids.sort();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let payload: Option<String> = conn.hget(config.job_data_hash(), &id).await?;
        let meta: HashMap<String, String> = conn.hgetall(format!("{}:{}", config.job_meta_hash(), id)).await?;
        out.push(DeadJob {
            queue,
            payload,
            attempts: meta.get("attempts").cloned(),
            error: meta.get("result").cloned(),
            id,
        });
    }
    Ok(out)
}

/// Moves a dead task back to the active list with its attempts reset. Atomic (one script).
/// Returns false when no dead task has that id.
const REDRIVE: &str = r"
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2] .. ':' .. ARGV[1], 'status', 'Pending', 'attempts', 0)
redis.call('HDEL', KEYS[2] .. ':' .. ARGV[1], 'result', 'done_at', 'lock_by', 'lock_at')
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4])
redis.call('LPUSH', KEYS[4], 1)
return 1
";

pub async fn retry(
    conn: &mut ConnectionManager,
    settings: &QueueSettings,
    queue: Queue,
    id: &str,
) -> redis::RedisResult<bool> {
    let config = settings.config(queue);
    let moved: i64 = redis::Script::new(REDRIVE)
        .key(config.dead_jobs_set())
        .key(config.job_meta_hash())
        .key(config.active_jobs_list())
        .key(config.signal_list())
        .arg(id)
        .invoke_async(conn)
        .await?;
    Ok(moved == 1)
}

/// Drops a dead task from the dead set (its outbox row was re-driven instead). Returns whether
/// it was there.
pub async fn forget(
    conn: &mut ConnectionManager,
    settings: &QueueSettings,
    queue: Queue,
    id: &str,
) -> redis::RedisResult<bool> {
    let removed: i64 = conn.srem(settings.config(queue).dead_jobs_set(), id).await?;
    Ok(removed == 1)
}
