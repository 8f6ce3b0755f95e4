//! Worker configuration, from the same environment as the API plus the mail and job settings.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DATABASE_URL` | – (required) | Postgres |
//! | `REDIS_URL` | `redis://127.0.0.1:6379` | Redis (queues) |
//! | `REDIS_PREFIX` | `app` | key prefix; must match the API's |
//! | `APP_ENV` | `development` | `production` refuses the file mailer |
//! | `PUBLIC_URL` | `http://localhost:8080` | base of links in e-mails |
//! | `SMTP_URL` | – | `smtp://host:port`, `smtp://h:587?tls=required`, `smtps://user:pass@host`; unset → `.eml` files (not in production) |
//! | `MAIL_FROM` | `Task Shop <no-reply@localhost>` | sender |
//! | `MAIL_DIR` | `var/mail` | folder for `.eml` files when `SMTP_URL` is unset |
//! | `WORKER_CONCURRENCY` | `32` | jobs in flight per queue (the audit queue: `AUDIT_CONCURRENCY`) |
//! | `WORKER_FETCH_BATCH` | `32` | tasks taken from Redis per fetch (one script call); a worker holds at most concurrency + this many |
//! | `AUDIT_CONCURRENCY` | `128` (`WORKER_CONCURRENCY` when `AUDIT_BATCH_MAX=1`) | audit jobs in flight: with batching, one waiting for its batch costs a future, and more of them make bigger batches |
//! | `AUDIT_BATCH_MAX` | `256` | most audit events written by one `INSERT` (`1`: one per job, no batching; at most 5,000) |
//! | `AUDIT_BATCH_WAIT` | `0ms` | how long a batch waits for more events once it has one (`0`: it takes what is already waiting) |
//! | `EMAIL_MAX_ATTEMPTS` / `AUDIT_MAX_ATTEMPTS` | `8` / `12` | attempts before a job is dead |
//! | `JOB_BACKOFF_BASE` / `JOB_BACKOFF_CAP` | `2s` / `10m` | retry delay: exponential with jitter |
//! | `WORKER_HEARTBEAT` | `5s` | a killed worker's jobs are re-delivered after 3 missed heartbeats |
//! | `OUTBOX_POLL` | `500ms` | outbox dispatcher period |
//! | `OUTBOX_RETENTION` | `7d` | finished outbox rows older than this are pruned (dead rows are kept) |
//! | `OUTBOX_VISIBILITY_TIMEOUT` | `60s` | a pushed outbox row not finished within this is pushed again (a Redis that restarted empty is noticed at once) |
//! | `ORDER_EXPIRY_INTERVAL` | `1s` | longest pause of the order expiry sweep (it also wakes at the next deadline); an unpaid order is cancelled at most this long after its `expires_at` (the contract allows 10 s) |
//! | `WORKER_NAME` | `{host}-{pid}-{random}` | unique instance name |
//! | `WORKER_METRICS_ADDR` | `127.0.0.1:9464` | Prometheus metrics listener (`off`: none); two workers on one host need different ports |
//! | `WORKER_BENCH_NOOP` | `false` | benchmarks only: also consume the no-op queue `{prefix}:jobs:noop` (`worker bench-enqueue --noop N`) |
//! | `SENTRY_DSN` | – | error reporting (panics, `error!` events); off when unset |
//! | `SENTRY_ENVIRONMENT` / `SENTRY_RELEASE` | `APP_ENV` / crate version | tags of every reported event |
//!
//! Traces: the standard `OTEL_*` variables, read by the OpenTelemetry SDK (see `telemetry`).

use std::{env, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use anyhow::{Context, bail};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub production: bool,
    pub database_url: String,
    pub redis_url: String,
    pub redis_prefix: String,
    pub public_url: String,
    pub smtp_url: Option<String>,
    pub mail_from: String,
    pub mail_dir: PathBuf,
    pub concurrency: usize,
    /// Tasks per fetch from Redis (`jobs::QueueSettings::fetch_batch`).
    pub fetch_batch: usize,
    /// Audit jobs in flight (the audit queue's concurrency).
    pub audit_concurrency: usize,
    /// Most audit events per batched `INSERT`; 1 = no batching (see `audit_batch`).
    pub audit_batch_max: usize,
    /// How long a batch waits for more events once it has one.
    pub audit_batch_wait: Duration,
    pub email_max_attempts: u32,
    pub audit_max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub heartbeat: Duration,
    pub outbox_poll: Duration,
    pub outbox_retention: Duration,
    pub outbox_visibility: Duration,
    /// Longest pause between two runs of the order expiry sweep.
    pub order_expiry_interval: Duration,
    pub name: String,
    /// `None`: no metrics listener.
    pub metrics_addr: Option<SocketAddr>,
    /// Benchmarks only: also consume the no-op queue (`jobs::NOOP_QUEUE`).
    pub bench_noop: bool,
    /// `SENTRY_DSN`, `SENTRY_ENVIRONMENT`, `SENTRY_RELEASE`: error reporting (off without a DSN).
    pub sentry: Option<telemetry::SentrySettings>,
}

fn var(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parsed<T: FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e| anyhow::anyhow!("{name}={v:?} is invalid: {e}")),
    }
}

/// `500ms`, `30s`, `15m`, `12h`, `7d`, or plain seconds (see `domain::duration`).
pub fn parse_duration(raw: &str) -> anyhow::Result<Duration> {
    domain::duration::parse(raw).map_err(anyhow::Error::msg)
}

fn duration(name: &str, default: &str) -> anyhow::Result<Duration> {
    let d = parse_duration(&var(name).unwrap_or_else(|| default.to_owned())).with_context(|| name.to_owned())?;
    if d.is_zero() {
        bail!("{name} must be positive");
    }
    Ok(d)
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() { "worker".to_owned() } else { host };
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

impl WorkerConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        let app_env = var("APP_ENV").unwrap_or_else(|| "development".into());
        if !matches!(app_env.as_str(), "development" | "dev" | "test" | "production" | "prod") {
            bail!("APP_ENV must be development, test or production, not {app_env:?}");
        }
        let production = matches!(app_env.as_str(), "production" | "prod");
        let smtp_url = var("SMTP_URL");
        if production && smtp_url.is_none() {
            bail!("SMTP_URL is required in production (the .eml file fallback is for development only)");
        }
        let concurrency: usize = parsed("WORKER_CONCURRENCY", 32)?;
        if concurrency == 0 {
            bail!("WORKER_CONCURRENCY must be positive");
        }
        let fetch_batch: usize = parsed("WORKER_FETCH_BATCH", jobs::DEFAULT_FETCH_BATCH)?;
        if fetch_batch == 0 {
            bail!("WORKER_FETCH_BATCH must be positive");
        }
        let audit_batch_max: usize = parsed("AUDIT_BATCH_MAX", 256)?;
        if !(1..=crate::audit_batch::MAX_BATCH).contains(&audit_batch_max) {
            bail!(
                "AUDIT_BATCH_MAX must be between 1 and {}",
                crate::audit_batch::MAX_BATCH
            );
        }
        let audit_batch_wait = match var("AUDIT_BATCH_WAIT") {
            None => Duration::ZERO,
            // `0`, `0ms`, `0s`: no wait (the duration parser wants a positive one).
            Some(v) if v.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0" => Duration::ZERO,
            Some(v) => parse_duration(&v).context("AUDIT_BATCH_WAIT")?,
        };
        if audit_batch_wait > Duration::from_secs(1) {
            bail!("AUDIT_BATCH_WAIT must be at most 1s (every audit job waits for it under light load)");
        }
        let audit_concurrency: usize =
            parsed("AUDIT_CONCURRENCY", if audit_batch_max > 1 { 128 } else { concurrency })?;
        if audit_concurrency == 0 {
            bail!("AUDIT_CONCURRENCY must be positive");
        }
        let email_max_attempts: u32 = parsed("EMAIL_MAX_ATTEMPTS", 8)?;
        let audit_max_attempts: u32 = parsed("AUDIT_MAX_ATTEMPTS", 12)?;
        if email_max_attempts == 0 || audit_max_attempts == 0 {
            bail!("max attempts must be at least 1");
        }
        Ok(Self {
            production,
            database_url: var("DATABASE_URL").context("DATABASE_URL is not set")?,
            redis_url: var("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
            redis_prefix: var("REDIS_PREFIX").unwrap_or_else(|| "app".into()),
            public_url: var("PUBLIC_URL")
                .unwrap_or_else(|| "http://localhost:8080".into())
                .trim_end_matches('/')
                .to_owned(),
            smtp_url,
            mail_from: var("MAIL_FROM").unwrap_or_else(|| "Task Shop <no-reply@localhost>".into()),
            mail_dir: var("MAIL_DIR").unwrap_or_else(|| "var/mail".into()).into(),
            concurrency,
            fetch_batch,
            audit_concurrency,
            audit_batch_max,
            audit_batch_wait,
            email_max_attempts,
            audit_max_attempts,
            backoff_base: duration("JOB_BACKOFF_BASE", "2s")?,
            backoff_cap: duration("JOB_BACKOFF_CAP", "10m")?,
            heartbeat: duration("WORKER_HEARTBEAT", "5s")?,
            outbox_poll: duration("OUTBOX_POLL", "500ms")?,
            outbox_retention: duration("OUTBOX_RETENTION", "7d")?,
            outbox_visibility: duration("OUTBOX_VISIBILITY_TIMEOUT", "60s")?,
            order_expiry_interval: duration("ORDER_EXPIRY_INTERVAL", "1s")?,
            name: var("WORKER_NAME").unwrap_or_else(default_name),
            metrics_addr: match var("WORKER_METRICS_ADDR").as_deref().map(str::trim) {
                Some("off") => None,
                Some(v) => Some(
                    v.parse()
                        .with_context(|| format!("WORKER_METRICS_ADDR={v:?} must be host:port or off"))?,
                ),
                None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            },
            bench_noop: parsed("WORKER_BENCH_NOOP", false)?,
            sentry: var("SENTRY_DSN").map(|dsn| telemetry::SentrySettings {
                dsn,
                environment: var("SENTRY_ENVIRONMENT").unwrap_or_else(|| app_env.clone()),
                release: var("SENTRY_RELEASE").unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
            }),
        })
    }
}
