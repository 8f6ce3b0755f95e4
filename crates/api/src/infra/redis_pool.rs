//! The Redis pool: bb8 over bb8-redis' connection manager, plus one thing it lacks. A
//! multiplexed connection whose server went away (a Redis restart) fails every later command, but
//! bb8-redis' `has_broken` always answers false, and with `test_on_check_out(false)` (we skip the
//! per-checkout PING: it would double the round trips of every cache read and rate-limit check)
//! such a connection would be handed out forever. Callers therefore mark a connection broken when
//! a command fails, and the pool drops it instead of taking it back.

use std::ops::{Deref, DerefMut};

use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;

pub struct TrackedConnection {
    inner: MultiplexedConnection,
    broken: bool,
}

impl TrackedConnection {
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
        Ok(TrackedConnection {
            inner: self.0.connect().await?,
            broken: false,
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
