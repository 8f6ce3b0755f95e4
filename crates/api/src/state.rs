//! Shared application state, built once at start-up and handed to handlers as `web::Data`.

use std::sync::Arc;

use auth::{PasswordHasher, TokenIssuer};
use db::PgPool;

use crate::{cache::Cache, config::Config, queue::Dispatcher, ratelimit::RateLimiter};

pub use crate::redis_pool::RedisPool;

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
}
