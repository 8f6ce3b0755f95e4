//! Housekeeping that apalis-redis 1.0 does not do well on its own:
//!
//! - [`promote_due`]: every push lands in `{queue}:scheduled`, and apalis' fetch script moves *all*
//!   due ids to the active list with one `RPUSH … unpack(ids)`, which fails beyond ~8,000 ids and
//!   kills every worker of the queue. Promoting due ids in chunks of 1,000 keeps that set small.
//! - [`trim_done`]: finished tasks keep their payload (`{queue}:data`), metadata (`{queue}:meta:*`)
//!   and id (`{queue}:done`) forever. We drop them once done. (apalis' own `vacuum` would also
//!   delete dead tasks' payloads, which operators still need to re-drive them.)

use apalis_redis::{Config, ConnectionManager};

const PROMOTE: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[1], 'LIMIT', 0, 1000)
if #ids > 0 then
  redis.call('RPUSH', KEYS[2], unpack(ids))
  redis.call('ZREM', KEYS[1], unpack(ids))
  redis.call('DEL', KEYS[3])
  redis.call('LPUSH', KEYS[3], 1)
end
return #ids
";

const TRIM_DONE: &str = r"
local ids = redis.call('SPOP', KEYS[1], ARGV[1])
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[2], id)
  redis.call('DEL', KEYS[3] .. ':' .. id)
  redis.call('HDEL', KEYS[3] .. ':result', id)
end
return #ids
";

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Moves due scheduled tasks of the queue of `config` (`QueueSettings::config`) to its active
/// list, 1,000 per script call. Returns how many.
pub async fn promote_due(conn: &mut ConnectionManager, config: &Config) -> redis::RedisResult<usize> {
    let script = redis::Script::new(PROMOTE);
    let mut total = 0;
    loop {
        let n: usize = script
            .key(config.scheduled_jobs_set())
            .key(config.active_jobs_list())
            .key(config.signal_list())
            .arg(now_secs())
            .invoke_async(conn)
            .await?;
        total += n;
        if n < 1000 {
            return Ok(total);
        }
    }
}

/// Deletes finished tasks' ids, payloads and metadata, 1,000 per script call. Returns how many.
pub async fn trim_done(conn: &mut ConnectionManager, config: &Config) -> redis::RedisResult<usize> {
    let script = redis::Script::new(TRIM_DONE);
    let mut total = 0;
    loop {
        let n: usize = script
            .key(config.done_jobs_set())
            .key(config.job_data_hash())
            .key(config.job_meta_hash())
            .arg(1000)
            .invoke_async(conn)
            .await?;
        total += n;
        if n < 1000 {
            return Ok(total);
        }
    }
}
