//! The Redis pool: bb8 over bb8-redis' connection manager, plus one thing it lacks. A
//! multiplexed connection whose server went away (a Redis restart) fails every later command, but
//! bb8-redis' `has_broken` always answers false, and with `test_on_check_out(false)` (we skip the
//! per-checkout PING: it would double the round trips of every cache read and rate-limit check)
//! such a connection would be handed out forever. Callers therefore mark a connection broken when
//! a command fails, and the pool drops it instead of taking it back.
//!
//! Each connection also knows which server process it talks to (`run_id`, read once when it is
//! opened): the session cache trusts what it read only from the same server.

use std::{
    ops::{Deref, DerefMut},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;

pub struct TrackedConnection {
    inner: MultiplexedConnection,
    broken: bool,
    server: Arc<str>,
}

impl TrackedConnection {
    /// The `run_id` of the server process behind this connection (new at every restart).
    pub fn server(&self) -> Arc<str> {
        self.server.clone()
    }

    /// The last command failed: do not reuse this connection.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }
}

impl Deref for TrackedConnection {
    type Target = MultiplexedConnection;
    fn deref(&self) -> &MultiplexedConnection {
        &self.inner
    }
}

impl DerefMut for TrackedConnection {
    fn deref_mut(&mut self) -> &mut MultiplexedConnection {
        &mut self.inner
    }
}

pub struct RedisManager(RedisConnectionManager);

impl RedisManager {
    pub fn new(url: &str) -> redis::RedisResult<Self> {
        Ok(Self(RedisConnectionManager::new(url)?))
    }
}

impl bb8::ManageConnection for RedisManager {
    type Connection = TrackedConnection;
    type Error = redis::RedisError;

    async fn connect(&self) -> Result<TrackedConnection, redis::RedisError> {
        let mut inner = self.0.connect().await?;
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut inner).await?;
        let server = run_id(&info).ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "INFO server has no run_id"))
        })?;
        Ok(TrackedConnection {
            inner,
            broken: false,
            server: server.into(),
        })
    }

    async fn is_valid(&self, conn: &mut TrackedConnection) -> Result<(), redis::RedisError> {
        self.0.is_valid(&mut conn.inner).await
    }

    fn has_broken(&self, conn: &mut TrackedConnection) -> bool {
        conn.broken
    }
}

pub type RedisPool = bb8::Pool<RedisManager>;

/// What a Redis caller that can do without Redis keeps: after a failure, Redis is not tried for
/// `period` (requests go the Postgres way at once instead of each waiting out a timeout), then
/// tried again, so the caller resumes by itself.
#[derive(Debug)]
pub struct Bypass {
    /// Unix millis until which Redis is not tried.
    until_ms: AtomicU64,
    period: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Bypass {
    pub const fn new(period: Duration) -> Self {
        Self {
            until_ms: AtomicU64::new(0),
            period,
        }
    }

    /// Whether Redis is being bypassed right now.
    pub fn active(&self) -> bool {
        now_ms() < self.until_ms.load(Ordering::Relaxed)
    }

    /// A call failed: bypass Redis for the period.
    pub fn trip(&self) {
        self.until_ms
            .store(now_ms() + self.period.as_millis() as u64, Ordering::Relaxed);
    }
}

/// The `run_id` line of `INFO server`.
fn run_id(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(str::trim)
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_id_is_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:4f1c0e\r\ntcp_port:6379\r\n";
        assert_eq!(super::run_id(info), Some("4f1c0e"));
        assert_eq!(super::run_id("# Server\r\nrun_id:\r\n"), None);
        assert_eq!(super::run_id(""), None);
    }
}
