//! The per-instance cache behind every authenticated request: session id → the live session's
//! user row, trusted only while the user's **auth epoch** in Redis is the one it was cached under.
//!
//! **The lease.** An entry confirmed against Redis while the [invalidation bus](super::bus) was
//! live carries a bus lease; while the lease holds, the entry is used with no Redis round trip at
//! all. Every change below is announced on the bus in the same script that moves the epoch, and
//! the changing request waits for every instance's acknowledgement, so a lease never outlives the
//! epoch it stands for (the bus module explains why, and what happens when it is not live).
//!
//! **The read.** A request whose access token verifies and whose entry holds no lease reads its
//! user's epoch in one Redis round trip (`{prefix}:auth:{<user>}:epoch`, and whether a change of that user is in flight:
//! `…:pending`). A cached entry is used when it was stored under that same epoch *of the same
//! Redis server* (its `run_id`, read when a pooled connection is opened), the session has not
//! expired, and the entry is younger than `AUTH_CACHE_MAX_AGE`. Otherwise the exact Postgres
//! check runs (one primary-key join), and its result is cached under the epoch read *before* it.
//!
//! **A change** — logout, session revocation, password change or reset, refresh-token re-use,
//! account deletion, any update of the user row (role, e-mail, verification) — is staged by the
//! use case (`Tx::auth_changed`). The unit of work then, *before* its commit, marks the user
//! pending (`INCR …:pending` with a TTL, and a fresh random epoch), commits, and *after* the
//! commit ends the change (`DECR …:pending`, another fresh epoch) before the response is sent;
//! both scripts also publish the change on the bus, and both wait for its acknowledgements:
//! - a request that starts after the revoking response reads the new epoch, finds no entry
//!   under it, and asks Postgres — on every instance, with nothing to broadcast or wait for;
//! - while a change is pending nobody caches the user, so no entry can hold the state between
//!   the first bump and the commit; an entry read from Postgres before the first bump is stored
//!   under the old epoch, which no request reads any more;
//! - an instance that dies right after its commit leaves the pending mark, which expires after
//!   `PENDING_TTL` (far longer than any transaction may run) into a missing epoch: a fresh
//!   random one is set on the next read, so every entry misses and Postgres decides.
//!
//! **Redis away, slow or restarted.** Every Redis call has a 100 ms budget; a failure bypasses
//! the cache for a second (straight to Postgres: fail closed, never open) and it resumes by
//! itself. Epochs are random, never counters, so a key that vanished (restart without
//! persistence, eviction, `FLUSHALL`) comes back as a value no entry holds; a server restarted
//! *with* its old data (a snapshot, a failed-over replica) has a new `run_id`, which no entry
//! holds either. The one window left: if the revoking instance cannot reach Redis while the
//! others can (a partition of one), their entries stay trusted until `AUTH_CACHE_MAX_AGE`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use db::users::User;
use domain::{SessionId, UserId};
use uuid::Uuid;

use crate::infra::{
    bus::{self, Bus, Lease, Topic},
    redis_pool::{Bypass, RedisPool},
};

/// The budget of every Redis call here: the check must stay cheaper than the Postgres one.
const OP_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the cache is bypassed after a Redis failure.
const BYPASS_FOR: Duration = Duration::from_secs(1);
/// How long a change may stay pending when its instance dies between the marks.
pub const PENDING_TTL: Duration = Duration::from_secs(30);
/// How long an epoch key lives (a fresh random one replaces it: every entry misses once).
const EPOCH_TTL_SECS: u64 = 24 * 3600;
/// Entries kept at most (≈ 0.3 KB each: a user row); a full cache drops its expired entries,
/// then everything.
const MAX_ENTRIES: usize = 20_000;

/// KEYS: epoch, pending. ARGV: a fresh epoch, its TTL (s). Returns {epoch, pending count}.
const READ: &str = r"
local e = redis.call('GET', KEYS[1])
if not e then
  e = ARGV[1]
  redis.call('SET', KEYS[1], e, 'EX', ARGV[2])
end
return {e, tonumber(redis.call('GET', KEYS[2]) or '0')}
";

/// KEYS: epoch, pending (then the bus' registry). ARGV: a fresh epoch, its TTL (s), the pending
/// TTL (ms) (then the bus' arguments). Ends with [`bus::ANNOUNCE`]: returns who must acknowledge.
const BEGIN: &str = r"
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
";

/// KEYS: epoch, pending (then the bus' registry). ARGV: a fresh epoch, its TTL (s) (then the
/// bus' arguments). Ends with [`bus::ANNOUNCE`].
const END: &str = r"
if redis.call('DECR', KEYS[2]) <= 0 then redis.call('DEL', KEYS[2]) end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
";

/// What an entry was validated against: the Redis server and the user's epoch there, and the
/// bus lease taken before reading them (if the bus was live).
#[derive(Debug, Clone)]
pub struct Stamp {
    server: Arc<str>,
    epoch: String,
    lease: Option<Lease>,
}

impl Stamp {
    fn same_truth(&self, other: &Stamp) -> bool {
        self.server == other.server && self.epoch == other.epoch
    }
}

struct Entry {
    user: User,
    expires_at: DateTime<Utc>,
    stamp: Stamp,
    stored: Instant,
}

impl Entry {
    fn usable(&self, user: UserId, max_age: Duration) -> bool {
        self.user.id == user && self.expires_at > Utc::now() && self.stored.elapsed() < max_age
    }
}

/// What [`SessionCache::lookup`] found.
#[derive(Debug)]
pub enum Lookup {
    /// A live session of this user, as Postgres said under the current epoch.
    Hit(Box<User>),
    /// Ask Postgres; store its answer with [`SessionCache::store`] under this stamp, if any.
    Miss(Option<Stamp>),
}

#[derive(Clone)]
pub struct SessionCache(Arc<Inner>);

struct Inner {
    redis: RedisPool,
    bus: Bus,
    prefix: String,
    enabled: bool,
    max_age: Duration,
    entries: Mutex<HashMap<SessionId, Entry>>,
    bypass: Bypass,
    read: redis::Script,
    begin: redis::Script,
    end: redis::Script,
}

fn fresh_epoch() -> String {
    Uuid::new_v4().simple().to_string()
}

impl SessionCache {
    pub fn new(redis: RedisPool, bus: Bus, prefix: &str, enabled: bool, max_age: Duration) -> Self {
        Self(Arc::new(Inner {
            redis,
            bus,
            prefix: format!("{prefix}:auth"),
            enabled,
            max_age,
            entries: Mutex::new(HashMap::new()),
            bypass: Bypass::new(BYPASS_FOR),
            read: redis::Script::new(READ),
            begin: redis::Script::new(&format!("{BEGIN}{}", bus::ANNOUNCE)),
            end: redis::Script::new(&format!("{END}{}", bus::ANNOUNCE)),
        }))
    }

    /// The epoch and pending keys of a user (one hash slot: a cluster keeps them together).
    fn keys(&self, user: UserId) -> (String, String) {
        let base = format!("{}:{{{user}}}", self.0.prefix);
        (format!("{base}:epoch"), format!("{base}:pending"))
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Entry>> {
        self.0.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs one script for `user` within the budget; `None` (and a bypass of the reads) on any
    /// failure. Changes are announced even during a bypass: Redis may be back.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        user: UserId,
        args: &[String],
        announcement: Option<&bus::Announcement>,
        honour_bypass: bool,
    ) -> Option<(T, Arc<str>)> {
        if honour_bypass && self.0.bypass.active() {
            return None;
        }
        let result = async {
            let mut conn = tokio::time::timeout(OP_TIMEOUT, self.0.redis.get()).await.ok()?.ok()?;
            let (epoch_key, pending_key) = self.keys(user);
            let mut call = script.key(epoch_key);
            call.key(pending_key);
            for a in args {
                call.arg(a);
            }
            if let Some(announcement) = announcement {
                announcement.append_to(&mut call);
            }
            match tokio::time::timeout(OP_TIMEOUT, call.invoke_async::<T>(&mut **conn)).await {
                Ok(Ok(v)) => Some((v, conn.server())),
                _ => {
                    conn.mark_broken();
                    None
                }
            }
        }
        .await;
        if result.is_none() {
            self.0.bypass.trip();
        }
        result
    }

    /// The cached user of a live session, or what to store Postgres' answer under.
    pub async fn lookup(&self, session: SessionId, user: UserId) -> Lookup {
        if !self.0.enabled {
            return Lookup::Miss(None);
        }
        // An entry under a lease that holds: no Redis at all.
        let leased = self
            .entries()
            .get(&session)
            .and_then(|e| self.holds(e, user).then(|| e.user.clone()));
        if let Some(user) = leased {
            crate::metrics::cache_result(CACHE, true);
            return Lookup::Hit(Box::new(user));
        }
        // Taken before the epoch is read: a change announced after the read voids it.
        let lease = self.0.bus.lease(Topic::User(user));
        let args = [fresh_epoch(), EPOCH_TTL_SECS.to_string()];
        let Some(((epoch, pending), server)) = self
            .invoke::<(String, i64)>(&self.0.read, user, &args, None, true)
            .await
        else {
            crate::metrics::cache_result(CACHE, false);
            return Lookup::Miss(None);
        };
        if pending > 0 {
            crate::metrics::cache_result(CACHE, false);
            return Lookup::Miss(None);
        }
        let stamp = Stamp { server, epoch, lease };
        let hit = self.entries().get_mut(&session).and_then(|e| {
            (e.stamp.same_truth(&stamp) && e.usable(user, self.0.max_age)).then(|| {
                e.stamp.lease = stamp.lease;
                e.user.clone()
            })
        });
        crate::metrics::cache_result(CACHE, hit.is_some());
        match hit {
            Some(u) => Lookup::Hit(Box::new(u)),
            None => Lookup::Miss(Some(stamp)),
        }
    }

    /// Caches Postgres' answer for a live session, under the stamp read before asking it.
    pub fn store(&self, session: SessionId, user: &User, expires_at: DateTime<Utc>, stamp: Stamp) {
        let mut entries = self.entries();
        if entries.len() >= MAX_ENTRIES {
            let now = Utc::now();
            let max_age = self.0.max_age;
            entries.retain(|_, e| e.expires_at > now && e.stored.elapsed() < max_age);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            session,
            Entry {
                user: user.clone(),
                expires_at,
                stamp,
                stored: Instant::now(),
            },
        );
    }

    /// Whether the next request of this session would be answered from the cache (what tests
    /// look at): an entry stored under the user's current epoch, by the same lookup requests make.
    pub async fn answers(&self, session: SessionId, user: UserId) -> bool {
        matches!(self.lookup(session, user).await, Lookup::Hit(_))
    }

    /// Whether the next request of this session would be answered with no Redis round trip: its
    /// entry holds a bus lease (what tests look at).
    pub fn leased(&self, session: SessionId, user: UserId) -> bool {
        self.entries().get(&session).is_some_and(|e| self.holds(e, user))
    }

    /// Whether `entry` may answer for `user` under its lease, without Redis.
    fn holds(&self, entry: &Entry, user: UserId) -> bool {
        entry.stamp.lease.is_some_and(|l| self.0.bus.holds(&l)) && entry.usable(user, self.0.max_age)
    }

    /// Before the commit of a change to these users' sessions or rows: no instance trusts (or
    /// fills) an entry of theirs until [`end_change`](Self::end_change) or `PENDING_TTL`. Returns
    /// whether every mark was written (a failure is logged; see the module's "partition of one").
    pub async fn begin_change(&self, users: &[UserId]) -> bool {
        let mut all = true;
        for &user in users {
            let extra = [PENDING_TTL.as_millis().to_string()];
            if !self.announce(&self.0.begin, user, &extra).await {
                tracing::warn!(user.id = %user, "auth epoch: Redis unavailable, the change is not announced");
                all = false;
            }
        }
        all
    }

    /// Runs a change script for `user` and waits for the bus' acknowledgements; whether it ran.
    async fn announce(&self, script: &redis::Script, user: UserId, extra: &[String]) -> bool {
        let announcement = self.0.bus.announce(&[Topic::User(user)]);
        let mut args = vec![fresh_epoch(), EPOCH_TTL_SECS.to_string()];
        args.extend_from_slice(extra);
        match self
            .invoke::<Vec<String>>(script, user, &args, Some(&announcement), false)
            .await
        {
            Some((expected, _)) => {
                announcement.delivered(expected).await;
                true
            }
            None => {
                announcement.failed().await;
                false
            }
        }
    }

    /// After the commit (or the rollback) of a change begun with [`begin_change`](Self::begin_change).
    pub async fn end_change(&self, users: &[UserId]) {
        self.entries().retain(|_, e| !users.contains(&e.user.id));
        for &user in users {
            if !self.announce(&self.0.end, user, &[]).await {
                tracing::warn!(user.id = %user, "auth epoch: Redis unavailable at the end of a change");
            }
        }
    }
}

/// The `cache` label of this cache's hit/miss counters.
pub const CACHE: &str = "sessions";
