//! Shared application state, built once at start-up and handed to handlers as `web::Data`.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use auth::{PasswordHasher, TokenIssuer};
use db::PgPool;

pub use crate::infra::redis_pool::RedisPool;
use crate::{
    config::Config,
    infra::{
        bus::Bus, cache::Cache, oidc::Providers, queue::Dispatcher, ratelimit::RateLimiter, session_cache::SessionCache,
    },
};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub redis: RedisPool,
    pub tokens: TokenIssuer,
    pub hasher: PasswordHasher,
    pub jobs: Dispatcher,
    pub cache: Cache,
    pub limits: RateLimiter,
    /// Live sessions, trusted while their user's auth epoch in Redis is unchanged.
    pub sessions: SessionCache,
    /// The invalidation bus behind the session cache's and the cache's leases.
    pub bus: Bus,
    /// The OpenID Connect providers (`OIDC_PROVIDERS`) and their cached discovery and keys.
    pub oidc: Providers,
    /// Set on SIGTERM: `/health/ready` answers 503 while the server still serves (`SHUTDOWN_DELAY`).
    pub draining: Draining,
}

/// Whether the server is draining before its shutdown; shared by every clone of the state.
#[derive(Clone, Default, Debug)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
