//! Persistence: the Diesel schema, row models, one query module per aggregate, the diesel-async
//! connection pool and the embedded migrations.
//!
//! Query functions take `&mut AsyncPgConnection`, so the caller (a service function in `api` or a
//! job in `worker`) decides whether they run on a pooled connection or inside a transaction.

pub mod audit;
pub mod email;
pub mod error;
pub mod fragment;
pub mod identities;
pub mod orders;
pub mod outbox;
pub mod pool;
pub mod products;
pub mod schema;
pub mod seed;
pub mod sessions;
pub mod tasks;
pub mod users;

pub use diesel_async::AsyncPgConnection;
pub use error::{DbError, DbResult};
pub use pool::{PgPool, connect_pool, run_migrations};
