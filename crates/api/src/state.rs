//! Shared application state, built once at start-up and handed to handlers as `web::Data`.

use std::sync::Arc;

use auth::{PasswordHasher, TokenIssuer};
use db::PgPool;

pub use crate::infra::redis_pool::RedisPool;
use crate::{
    config::Config,
    infra::{cache::Cache, oidc::Providers, queue::Dispatcher, ratelimit::RateLimiter},
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
    /// The OpenID Connect providers (`OIDC_PROVIDERS`) and their cached discovery and keys.
    pub oidc: Providers,
}
