//! The diesel-async bb8 pool and the embedded migrations (no libpq needed).

use std::time::Duration;

use diesel_async::{
    AsyncConnection, AsyncMigrationHarness, AsyncPgConnection,
    pooled_connection::{AsyncDieselConnectionManager, bb8::Pool},
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::{DbError, DbResult};

pub type PgPool = Pool<AsyncPgConnection>;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Builds the pool and checks out one connection, so a wrong URL or an unreachable server is
/// reported at start-up. Connections are not pinged on every checkout (that would double the
/// round trips of every query); a broken connection surfaces as an error the caller handles.
pub async fn connect_pool(url: &str, max_size: u32) -> DbResult<PgPool> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    let pool = Pool::builder()
        .max_size(max_size)
        .test_on_check_out(false)
        .connection_timeout(Duration::from_secs(5))
        .build(manager)
        .await
        .map_err(DbError::unavailable)?;
    drop(pool.get().await?);
    Ok(pool)
}

/// Runs every pending migration over a dedicated connection. Returns the versions applied.
///
/// Needs tokio's multi-thread runtime (the harness uses `block_in_place`).
pub async fn run_migrations(url: &str) -> DbResult<Vec<String>> {
    let conn = AsyncPgConnection::establish(url).await?;
    let mut harness = AsyncMigrationHarness::new(conn);
    let applied = harness
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| DbError::other(format!("migration failed: {e}")))?;
    Ok(applied.iter().map(ToString::to_string).collect())
}

/// A connection checked out of the pool.
pub type PooledConn<'a> = diesel_async::pooled_connection::bb8::PooledConnection<'a, AsyncPgConnection>;
