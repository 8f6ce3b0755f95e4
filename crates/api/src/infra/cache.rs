//! A small cache-aside layer over Redis (bb8-redis), shared by every cached endpoint.
//!
//! **Keys and invalidation.** Entries live in namespaces (`users`, later `products`). Each
//! namespace has a generation counter `{prefix}:cache:{ns}:gen`; an entry's key embeds the
//! generation it was read under: `{prefix}:cache:{ns}:{gen}:{key}`. A write *commits first*, then
//! bumps the generation (`INCR`). A reader reads the generation and the entry in one script, and
//! only then reads Postgres on a miss; if a write commits and bumps in between, the reader stores
//! its (possibly stale) value under the *old* generation, which nobody reads any more. So a slow
//! reader can never put a stale value back after an invalidation, on any instance. Every entry
//! also has a TTL (`CACHE_TTL`), which bounds staleness if a bump is lost (Redis unreachable at
//! the moment of the write).
//!
//! **Stampede.** On a miss, one request takes a short lock (`SET … NX PX`) and recomputes; the
//! others poll for the value for up to 500 ms and only then fall back to Postgres themselves.
//!
//! **Redis down.** Every Redis call has a 250 ms budget; after a failure the cache is bypassed
//! for 2 s (reads go straight to Postgres, answered `X-Cache: miss`), then tried again, so it
//! resumes by itself when Redis returns. Failures never turn into 5xx.

use std::{future::Future, sync::Arc, time::Duration};

use crate::infra::redis_pool::{Bypass, RedisManager, RedisPool};

const OP_TIMEOUT: Duration = Duration::from_millis(250);
const BYPASS_FOR: Duration = Duration::from_secs(2);
const LOCK_TTL_MS: u64 = 3000;
const WAIT_FOR_OTHER: Duration = Duration::from_millis(500);

/// Reads the generation and the entry in one round trip. Returns {generation, value or false}.
const READ: &str = r"
local gen = redis.call('GET', KEYS[1]) or '0'
return {gen, redis.call('GET', ARGV[1] .. gen .. ':' .. ARGV[2])}
";

/// Whether a response came from the cache (`X-Cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
}

impl CacheStatus {
    pub fn header_value(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
        }
    }
}

#[derive(Clone)]
pub struct Cache {
    redis: RedisPool,
    prefix: String,
    ttl: Duration,
    enabled: bool,
    bypass: Arc<Bypass>,
    read: Arc<redis::Script>,
}

impl Cache {
    pub fn new(redis: RedisPool, prefix: &str, ttl: Duration, enabled: bool) -> Self {
        Self {
            redis,
            prefix: format!("{prefix}:cache"),
            ttl,
            enabled,
            bypass: Arc::new(Bypass::new(BYPASS_FOR)),
            read: Arc::new(redis::Script::new(READ)),
        }
    }

    fn usable(&self) -> bool {
        self.enabled && !self.bypass.active()
    }

    fn trip(&self, what: &str, error: &str) {
        self.bypass.trip();
        tracing::warn!(%error, op = what, "cache unavailable; bypassing Redis for 2 s");
    }

    async fn conn(&self) -> Option<bb8::PooledConnection<'_, RedisManager>> {
        match tokio::time::timeout(OP_TIMEOUT, self.redis.get()).await {
            Ok(Ok(c)) => Some(c),
            Ok(Err(e)) => {
                self.trip("connect", &e.to_string());
                None
            }
            Err(_) => {
                self.trip("connect", "timeout");
                None
            }
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, what: &str, cmd: redis::Cmd) -> Option<T> {
        let mut conn = self.conn().await?;
        match tokio::time::timeout(OP_TIMEOUT, cmd.query_async::<T>(&mut **conn)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                conn.mark_broken();
                self.trip(what, &e.to_string());
                None
            }
            Err(_) => {
                conn.mark_broken();
                self.trip(what, "timeout");
                None
            }
        }
    }

    async fn read(&self, ns: &str, key: &str) -> Option<(String, Option<String>)> {
        let mut conn = self.conn().await?;
        let mut invocation = self.read.key(format!("{}:{ns}:gen", self.prefix));
        invocation.arg(format!("{}:{ns}:", self.prefix)).arg(key);
        match tokio::time::timeout(
            OP_TIMEOUT,
            invocation.invoke_async::<(String, Option<String>)>(&mut **conn),
        )
        .await
        {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                conn.mark_broken();
                self.trip("read", &e.to_string());
                None
            }
            Err(_) => {
                conn.mark_broken();
                self.trip("read", "timeout");
                None
            }
        }
    }

    /// Cache-aside: the cached JSON for `ns`/`key`, or `load()`'s JSON (stored for next time).
    pub async fn get_or_load<F, Fut, E>(&self, ns: &'static str, key: &str, load: F) -> Result<(String, CacheStatus), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, E>>,
    {
        if !self.usable() {
            return Ok((load().await?, CacheStatus::Miss));
        }
        let Some((generation, cached)) = self.read(ns, key).await else {
            return Ok((load().await?, CacheStatus::Miss));
        };
        if let Some(v) = cached {
            crate::metrics::cache_result(ns, true);
            return Ok((v, CacheStatus::Hit));
        }
        crate::metrics::cache_result(ns, false);
        let full = format!("{}:{ns}:{generation}:{key}", self.prefix);
        let lock = format!("{full}:lock");
        let got_lock: Option<Option<String>> = self
            .run(
                "lock",
                redis::cmd("SET")
                    .arg(&lock)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(LOCK_TTL_MS)
                    .clone(),
            )
            .await;
        if matches!(got_lock, Some(Some(_))) {
            let value = load().await;
            if let Ok(v) = &value {
                let ttl = ns::max_age(ns).map_or(self.ttl, |m| m.min(self.ttl));
                let ttl_ms = (ttl.as_millis() as u64).max(1);
                let _: Option<()> = self
                    .run("set", redis::cmd("SET").arg(&full).arg(v).arg("PX").arg(ttl_ms).clone())
                    .await;
            }
            let _: Option<i64> = self.run("unlock", redis::cmd("DEL").arg(&lock).clone()).await;
            return Ok((value?, CacheStatus::Miss));
        }
        // Someone else is recomputing: wait briefly for their value.
        let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHER;
        while got_lock.is_some() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(15)).await;
            let v: Option<Option<String>> = self.run("poll", redis::cmd("GET").arg(&full).clone()).await;
            match v {
                Some(Some(v)) => return Ok((v, CacheStatus::Hit)),
                Some(None) => {}
                None => break,
            }
        }
        Ok((load().await?, CacheStatus::Miss))
    }

    /// Invalidates every entry of the namespace. Call after the write has committed.
    pub async fn invalidate(&self, ns: &'static str) {
        if !self.enabled {
            return;
        }
        let key = format!("{}:{ns}:gen", self.prefix);
        // Not gated by the bypass window: a bump should be attempted whenever possible.
        let bumped = match tokio::time::timeout(OP_TIMEOUT, self.redis.get()).await {
            Ok(Ok(mut conn)) => {
                let bumped =
                    tokio::time::timeout(OP_TIMEOUT, redis::cmd("INCR").arg(&key).query_async::<i64>(&mut **conn))
                        .await
                        .ok()
                        .and_then(Result::ok);
                if bumped.is_none() {
                    conn.mark_broken();
                }
                bumped
            }
            _ => None,
        };
        if bumped.is_none() {
            tracing::warn!(cache = ns, "cache invalidation failed; entries expire within CACHE_TTL");
        }
    }
}

/// The cache namespaces.
pub mod ns {
    use std::time::Duration;

    /// Admin user list pages and single users.
    pub const USERS: &str = "users";
    /// Catalogue pages and single products. Admin writes bump it; stock moved by orders does not
    /// (a checkout would empty the cache each time), so its entries live at most 900 ms: an
    /// order's stock change shows in cached reads within 1 s.
    pub const PRODUCTS: &str = "products";

    /// Every namespace (their hit and miss counters exist from the start). A new one belongs here.
    pub const ALL: [&str; 2] = [USERS, PRODUCTS];

    /// A namespace's own upper bound on an entry's life (below `CACHE_TTL`), if it has one.
    pub fn max_age(ns: &str) -> Option<Duration> {
        (ns == PRODUCTS).then_some(Duration::from_millis(900))
    }
}
