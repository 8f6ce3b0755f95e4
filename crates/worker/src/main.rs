//! `worker`: the background job processor. In this slice it connects to Postgres and Redis,
//! logs, and stops cleanly on SIGTERM/Ctrl-C; the job handlers arrive with the jobs issue.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;

#[tokio::main]
async fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("pretty") => false,
        _ => std::env::var("APP_ENV").as_deref().unwrap_or("development") != "development",
    };
    let builder = fmt().with_env_filter(filter).with_target(false);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
}

async fn run() -> anyhow::Result<()> {
    init_logging();
    let database_url = std::env::var("DATABASE_URL").context("DATABASE_URL is not set")?;
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let db = db::connect_pool(&database_url, 4)
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
    let redis = redis::Client::open(redis_url.as_str()).context("REDIS_URL is invalid")?;
    let mut conn = tokio::time::timeout(Duration::from_secs(5), redis.get_multiplexed_async_connection())
        .await
        .context("Redis did not answer in 5 s")?
        .context("cannot connect to Redis (REDIS_URL)")?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .context("Redis PING failed")?;
    let name = format!("{}-{}", hostname(), std::process::id());
    tracing::info!(worker = %name, "worker started; waiting for jobs");
    shutdown_signal().await;
    tracing::info!(worker = %name, "shutdown signal received; stopping");
    drop(db);
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".into())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
