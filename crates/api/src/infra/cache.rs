//! A small cache-aside layer over Redis (bb8-redis), shared by every cached endpoint.
//!
//! **Keys and invalidation.** Entries live in namespaces (`users`, `products`, `tasks`). Each
//! namespace has a generation counter `{prefix}:cache:{ns}:gen`; an entry's key embeds the
//! generation it was read under: `{prefix}:cache:{ns}:{gen}:{key}`. A namespace of per-user data
//! (`tasks`) is also split by owner ([`Scope::owned`]): each owner's part has its own generation
//! `{prefix}:cache:{ns}:{owner}:gen`, and its entries' keys embed both,
//! `{prefix}:cache:{ns}:{gen}:{owner}:{owner's gen}:{key}`, so that one user's write voids that
//! user's pages only, while a bump of the whole namespace still voids everyone's. A write *commits first*, then
//! bumps the generation (`INCR`). A reader reads the generation and the entry in one script, and
//! only then reads Postgres on a miss; if a write commits and bumps in between, the reader stores
//! its (possibly stale) value under the *old* generation, which nobody reads any more. So a slow
//! reader can never put a stale value back after an invalidation, on any instance. Every entry
//! also has a TTL (`CACHE_TTL`), which bounds staleness if a bump is lost (Redis unreachable at
//! the moment of the write).
//!
//! **Near cache.** A hit read while the [invalidation bus](super::bus) is live is also kept in
//! this instance's memory (at most `NEAR_BYTES` of bodies per namespace, so that many users' task
//! pages cannot push the catalogue out), under a bus lease taken before the
//! generation was read, and for no longer than the Redis entry had left to live (`PTTL`). While
//! the lease holds, the body is served from memory, as bytes, with no Redis round trip. A write's
//! bump publishes on the bus in the same script and waits for every instance's acknowledgement,
//! so no instance serves a body from before the bump once the write has answered (the bus module
//! explains why, and what happens while it is not live).
//!
//! **Stampede.** On a miss, one request takes a short lock (`SET … NX PX`) and recomputes; the
//! others poll for the value for up to 500 ms and only then fall back to Postgres themselves.
//!
//! **Redis down.** Every Redis call has a 250 ms budget; after a failure the cache is bypassed
//! for 2 s (reads go straight to Postgres, answered `X-Cache: miss`), then tried again, so it
//! resumes by itself when Redis returns. Failures never turn into 5xx.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;

use crate::infra::{
    bus::{self, Bus, Lease, Topic},
    redis_pool::{Bypass, RedisManager, RedisPool},
};

const OP_TIMEOUT: Duration = Duration::from_millis(250);
const BYPASS_FOR: Duration = Duration::from_secs(2);
const LOCK_TTL_MS: u64 = 3000;
const WAIT_FOR_OTHER: Duration = Duration::from_millis(500);

/// The near cache's budget per namespace: bodies kept in this instance's memory, in bytes.
const NEAR_BYTES: usize = 4 << 20;

/// Reads the generation(s) and the entry in one round trip. KEYS: the namespace's generation,
/// then the owner's (scoped reads). ARGV: the namespace's key prefix, the key, then the owner.
/// Returns {generation, value or false, the entry's remaining life in ms}.
const READ: &str = r"
local gen = redis.call('GET', KEYS[1]) or '0'
if #KEYS > 1 then gen = gen .. ':' .. ARGV[3] .. ':' .. (redis.call('GET', KEYS[2]) or '0') end
local key = ARGV[1] .. gen .. ':' .. ARGV[2]
local v = redis.call('GET', key)
if not v then return {gen, false, 0} end
return {gen, v, redis.call('PTTL', key)}
";

/// KEYS: the generation (then the bus' registry). ARGV: the generation's life in ms, then the
/// bus' arguments. Ends with [`bus::ANNOUNCE`]: returns the instances that must acknowledge the
/// bump. A generation outlives by far every entry stored under it (see [`GENERATION_LIFE`]), so
/// one that expires (a user who stopped writing) and restarts from 0 finds nothing left of its
/// earlier values.
const BUMP: &str = r"
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
";

/// How much longer than `CACHE_TTL` a generation lives after its last bump: more than any load
/// can take between reading a generation and storing under it.
const GENERATION_LIFE: Duration = Duration::from_secs(3600);

/// A set of entries invalidated together: a whole namespace, or one owner's part of it.
/// Invalidating the namespace also voids every owner's part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    ns: &'static str,
    owner: Option<uuid::Uuid>,
}

impl Scope {
    /// One owner's part of a namespace (a user's task pages).
    pub fn owned(ns: &'static str, owner: domain::UserId) -> Self {
        Self {
            ns,
            owner: Some(owner.into_uuid()),
        }
    }

    /// The bus topic its changes are announced on: the namespace's, or the owner's part's.
    fn topic_name(self) -> String {
        match self.owner {
            None => self.ns.to_owned(),
            Some(owner) => format!("{}:{owner}", self.ns),
        }
    }
}

impl From<&'static str> for Scope {
    fn from(ns: &'static str) -> Self {
        Self { ns, owner: None }
    }
}

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
    bus: Bus,
    prefix: String,
    ttl: Duration,
    enabled: bool,
    bypass: Arc<Bypass>,
    read: Arc<redis::Script>,
    bump: Arc<redis::Script>,
    near: Arc<Mutex<HashMap<&'static str, Near>>>,
}

/// Bodies kept in memory under a bus lease, keyed `{ns}:{key}`.
#[derive(Default)]
struct Near {
    entries: HashMap<String, NearEntry>,
    bytes: usize,
}

struct NearEntry {
    body: Bytes,
    /// The namespace's lease, then the owner's part's (scoped entries): all must hold.
    leases: Leases,
    until: Instant,
}

/// The bus leases an entry was read under.
#[derive(Clone, Copy)]
struct Leases([Option<Lease>; 2]);

impl Leases {
    /// Taken before the generations are read; `None` unless the bus grants every lease needed.
    fn take(bus: &Bus, scope: Scope, topic: &str) -> Option<Self> {
        let ns = bus.lease(Topic::Cache(scope.ns))?;
        let owner = match scope.owner {
            None => None,
            Some(_) => Some(bus.lease(Topic::Cache(topic))?),
        };
        Some(Self([Some(ns), owner]))
    }

    fn hold(&self, bus: &Bus) -> bool {
        self.0.iter().flatten().all(|l| bus.holds(l))
    }
}

impl Near {
    /// The body under `key` while its lease holds and its Redis entry would still live.
    fn get(&mut self, key: &str, bus: &Bus) -> Option<Bytes> {
        let entry = self.entries.get(key)?;
        if entry.until > Instant::now() && entry.leases.hold(bus) {
            return Some(entry.body.clone());
        }
        self.remove(key);
        None
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= key.len() + old.body.len();
        }
    }

    /// Keeps a body; a full near cache first drops what has expired, then everything.
    fn insert(&mut self, key: String, entry: NearEntry) {
        let size = key.len() + entry.body.len();
        if size > NEAR_BYTES {
            return;
        }
        self.remove(&key);
        if self.bytes + size > NEAR_BYTES {
            let now = Instant::now();
            self.entries.retain(|_, e| e.until > now);
            self.bytes = self.entries.iter().map(|(k, e)| k.len() + e.body.len()).sum();
            if self.bytes + size > NEAR_BYTES {
                self.entries.clear();
                self.bytes = 0;
            }
        }
        self.bytes += size;
        self.entries.insert(key, entry);
    }
}

impl Cache {
    pub fn new(redis: RedisPool, bus: Bus, prefix: &str, ttl: Duration, enabled: bool) -> Self {
        Self {
            redis,
            bus,
            prefix: format!("{prefix}:cache"),
            ttl,
            enabled,
            bypass: Arc::new(Bypass::new(BYPASS_FOR)),
            read: Arc::new(redis::Script::new(READ)),
            bump: Arc::new(redis::Script::new(&format!("{BUMP}{}", bus::ANNOUNCE))),
            near: Arc::default(),
        }
    }

    /// Runs `f` on the namespace's near cache, locked.
    fn near<T>(&self, ns: &'static str, f: impl FnOnce(&mut Near) -> T) -> T {
        let mut all = self.near.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(all.entry(ns).or_default())
    }

    /// Keeps `body` in the namespace's near cache under `leases` for `life`, if there are leases.
    fn keep_near(&self, ns: &'static str, key: String, body: &Bytes, leases: Option<Leases>, life: Duration) {
        if let Some(leases) = leases
            && !life.is_zero()
        {
            self.near(ns, |near| {
                near.insert(
                    key,
                    NearEntry {
                        body: body.clone(),
                        leases,
                        until: Instant::now() + life,
                    },
                )
            });
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

    /// The key of a scope's generation.
    fn generation_key(&self, scope: Scope) -> String {
        format!("{}:{}:gen", self.prefix, scope.topic_name())
    }

    /// The generation(s), the entry under them (if any) and its remaining life.
    async fn read(&self, scope: Scope, key: &str) -> Option<(String, Option<Vec<u8>>, Duration)> {
        let mut conn = self.conn().await?;
        let mut invocation = self.read.key(self.generation_key(scope.ns.into()));
        invocation.arg(format!("{}:{}:", self.prefix, scope.ns)).arg(key);
        if let Some(owner) = scope.owner {
            invocation.key(self.generation_key(scope)).arg(owner.to_string());
        }
        match tokio::time::timeout(
            OP_TIMEOUT,
            invocation.invoke_async::<(String, Option<Vec<u8>>, i64)>(&mut **conn),
        )
        .await
        {
            Ok(Ok((generation, value, pttl))) => Some((
                generation,
                value,
                Duration::from_millis(u64::try_from(pttl).unwrap_or(0)),
            )),
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

    /// Cache-aside: the cached JSON for `key` in `scope`, or `load()`'s JSON (stored for next
    /// time).
    pub async fn get_or_load<F, Fut, E>(
        &self,
        scope: impl Into<Scope>,
        key: &str,
        load: F,
    ) -> Result<(Bytes, CacheStatus), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, E>>,
    {
        if !self.usable() {
            return Ok((load().await?.into(), CacheStatus::Miss));
        }
        let scope = scope.into();
        let ns = scope.ns;
        let topic = scope.topic_name();
        let near_key = format!("{topic}:{key}");
        let near = self.near(ns, |near| near.get(&near_key, &self.bus));
        if let Some(body) = near {
            crate::metrics::cache_result(ns, true);
            return Ok((body, CacheStatus::Hit));
        }
        // Taken before the generations are read: a bump announced after the read voids them.
        let lease = Leases::take(&self.bus, scope, &topic);
        let Some((generation, cached, life)) = self.read(scope, key).await else {
            return Ok((load().await?.into(), CacheStatus::Miss));
        };
        if let Some(v) = cached {
            let body = Bytes::from(v);
            self.keep_near(ns, near_key, &body, lease, life);
            crate::metrics::cache_result(ns, true);
            return Ok((body, CacheStatus::Hit));
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
            let value = load().await.map(Bytes::from);
            if let Ok(v) = &value {
                let ttl = ns::max_age(ns).map_or(self.ttl, |m| m.min(self.ttl));
                let ttl_ms = (ttl.as_millis() as u64).max(1);
                let stored: Option<()> = self
                    .run(
                        "set",
                        redis::cmd("SET").arg(&full).arg(&v[..]).arg("PX").arg(ttl_ms).clone(),
                    )
                    .await;
                if stored.is_some() {
                    self.keep_near(ns, near_key, v, lease, ttl);
                }
            }
            let _: Option<i64> = self.run("unlock", redis::cmd("DEL").arg(&lock).clone()).await;
            return Ok((value?, CacheStatus::Miss));
        }
        // Someone else is recomputing: wait briefly for their value.
        let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHER;
        while got_lock.is_some() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(15)).await;
            let v: Option<Option<Vec<u8>>> = self.run("poll", redis::cmd("GET").arg(&full).clone()).await;
            match v {
                Some(Some(v)) => return Ok((v.into(), CacheStatus::Hit)),
                Some(None) => {}
                None => break,
            }
        }
        Ok((load().await?.into(), CacheStatus::Miss))
    }

    /// Invalidates every entry of the scope, on every instance (Redis and near caches), before
    /// it returns. Call after the write has committed.
    pub async fn invalidate(&self, scope: impl Into<Scope>) {
        if !self.enabled {
            return;
        }
        let scope = scope.into();
        let ns = scope.ns;
        let topic = scope.topic_name();
        let announcement = self.bus.announce(&[Topic::Cache(&topic)]);
        let mut invocation = self.bump.key(self.generation_key(scope));
        invocation.arg((self.ttl + GENERATION_LIFE).as_millis() as u64);
        announcement.append_to(&mut invocation);
        // Not gated by the bypass window: a bump should be attempted whenever possible.
        let bumped = match tokio::time::timeout(OP_TIMEOUT, self.redis.get()).await {
            Ok(Ok(mut conn)) => {
                let bumped = tokio::time::timeout(OP_TIMEOUT, invocation.invoke_async::<Vec<String>>(&mut **conn))
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
        match bumped {
            Some(expected) => announcement.delivered(expected).await,
            None => {
                tracing::warn!(cache = ns, "cache invalidation failed; entries expire within CACHE_TTL");
                announcement.failed().await;
            }
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

    /// Each user's task list pages, split by owner ([`super::Scope::owned`]): a user's task or
    /// category write voids that user's pages only.
    pub const TASKS: &str = "tasks";

    /// Every namespace (their hit and miss counters exist from the start). A new one belongs here.
    pub const ALL: [&str; 3] = [USERS, PRODUCTS, TASKS];

    /// A namespace's own upper bound on an entry's life (below `CACHE_TTL`), if it has one.
    pub fn max_age(ns: &str) -> Option<Duration> {
        (ns == PRODUCTS).then_some(Duration::from_millis(900))
    }
}
