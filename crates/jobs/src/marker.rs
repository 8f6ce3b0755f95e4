//! Noticing a Redis that lost its data. The worker keeps one key, `{prefix}:jobs:marker`, in
//! Redis; a Redis that restarted without persistence (or was flushed) no longer has it. The
//! outbox dispatcher checks it on every poll: when it is gone, every unfinished outbox row is due
//! at once (`db::outbox::redeliver_all`) instead of after the visibility timeout. With several
//! workers, `SET NX` lets exactly one of them see each loss.

use apalis_redis::ConnectionManager;

use crate::QueueSettings;

fn key(settings: &QueueSettings) -> String {
    format!("{}:jobs:marker", settings.prefix)
}

/// Sets the marker if it is missing. Returns true when it was missing: Redis is new, flushed or
/// restarted empty (or this is the first worker ever), and whatever the queues held is gone.
pub async fn reset_detected(conn: &mut ConnectionManager, settings: &QueueSettings) -> redis::RedisResult<bool> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let set: Option<String> = redis::cmd("SET")
        .arg(key(settings))
        .arg(stamp)
        .arg("NX")
        .query_async(conn)
        .await?;
    Ok(set.is_some())
}
