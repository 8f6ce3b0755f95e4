//! Shared application state, built once at start-up and handed to handlers as `web::Data`.

use std::sync::Arc;

use auth::{PasswordHasher, TokenIssuer};
use bb8_redis::RedisConnectionManager;
use db::PgPool;

use crate::{config::Config, queue::Dispatcher};

pub type RedisPool = bb8::Pool<RedisConnectionManager>;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub redis: RedisPool,
    pub tokens: TokenIssuer,
    pub hasher: PasswordHasher,
    pub jobs: Dispatcher,
}
