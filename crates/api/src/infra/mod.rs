//! The Redis-backed pieces, below the HTTP layer and the services: the pool, the cache, the rate
//! limiter and the after-commit job dispatcher. They depend on `config` and `metrics` only, never
//! on `state`, `error` or `http`.

pub mod bus;
pub mod cache;
pub mod oidc;
pub mod queue;
pub mod ratelimit;
pub mod redis_pool;
pub mod session_cache;
