//! The worker process: one apalis worker per queue under one `Monitor`, the outbox dispatcher,
//! the order expiry sweep, and graceful shutdown (SIGTERM/Ctrl-C: stop fetching, finish in-flight jobs, exit 0).

use std::{sync::Arc, time::Duration};

use apalis::{layers::retry::RetryPolicy, prelude::*};
use apalis_redis::RedisStorage;
use domain::jobs::Queue;
use jobs::{Producer, QueueSettings, backoff::Backoff};
use tokio_util::sync::CancellationToken;

use crate::{
    audit_batch::AuditBatcher,
    config::WorkerConfig,
    expiry,
    handlers::{self, Ctx, Lenient, QueueCtx},
    mailer::Mailer,
    outbox,
};

/// How often an idle worker looks for new jobs (apalis otherwise waits for its heartbeat).
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Upper bound on one job; a stuck SMTP conversation must not hold a slot forever.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

pub fn queue_settings(config: &WorkerConfig) -> QueueSettings {
    let mut settings = QueueSettings::new(config.redis_prefix.clone());
    settings.heartbeat = config.heartbeat;
    settings.visibility = config.outbox_visibility;
    settings.fetch_batch = config.fetch_batch;
    settings
}

pub async fn build_ctx(config: &WorkerConfig) -> anyhow::Result<(Arc<Ctx>, Arc<Producer>)> {
    use anyhow::Context;
    let db = db::connect_pool(&config.database_url, 16)
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
    let producer = Arc::new(Producer::new(config.redis_url.clone(), queue_settings(config)));
    let mailer = match &config.smtp_url {
        Some(url) => Mailer::smtp(url)?,
        None => {
            tracing::warn!(dir = %config.mail_dir.display(), "SMTP_URL not set: writing e-mails as .eml files");
            Mailer::file(config.mail_dir.clone())?
        }
    };
    let from = config.mail_from.parse().context("MAIL_FROM is not a valid mailbox")?;
    let ctx = Arc::new(Ctx {
        db: db.clone(),
        producer: producer.clone(),
        mailer,
        from,
        public_url: config.public_url.clone(),
        email_max_attempts: config.email_max_attempts,
        audit_max_attempts: config.audit_max_attempts,
        backoff: Backoff {
            base: config.backoff_base,
            cap: config.backoff_cap,
        },
        audit_batch: (config.audit_batch_max > 1)
            .then(|| AuditBatcher::spawn(db.clone(), config.audit_batch_max, config.audit_batch_wait)),
    });
    Ok((ctx, producer))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// The worker every lane of this process runs, up to its data and handler: polling `lane` on
/// `conn`, `concurrency` jobs at once, our own retries (re-push with backoff, see handlers; apalis'
/// in-process retry stays off), a timeout per job, a span per job, a panic caught as a failure.
/// `name` must be unique per process and per restart: apalis refuses a name whose previous
/// holder is still within its heartbeat window. (A macro: apalis' layered builder types cannot
/// be named in a function's signature.)
macro_rules! lane_worker {
    ($name:expr, $conn:expr, $lane:expr, $concurrency:expr) => {
        WorkerBuilder::new($name)
            .backend(
                RedisStorage::<Lenient>::new($conn.clone())
                    .with_config($lane)
                    .poll_with_interval(POLL_INTERVAL),
            )
            .concurrency($concurrency)
            .retry(RetryPolicy::retries(0))
            .timeout(JOB_TIMEOUT)
            .enable_tracing()
            .catch_panic()
    };
}

/// Runs until `stop` is cancelled, then drains in-flight jobs and returns.
pub async fn run(config: WorkerConfig, stop: CancellationToken) -> anyhow::Result<()> {
    if let Some(addr) = config.metrics_addr {
        crate::metrics::install(addr)?;
        tracing::info!(%addr, "metrics listening");
    }
    let (ctx, producer) = build_ctx(&config).await?;
    let conn = producer
        .connection()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to Redis (REDIS_URL): {e}"))?;
    let settings = queue_settings(&config);
    tracing::info!(
        worker = %config.name,
        concurrency = config.concurrency,
        audit_concurrency = config.audit_concurrency,
        "worker started"
    );

    let dispatcher = tokio::spawn(outbox::run(
        ctx.db.clone(),
        producer.clone(),
        config.outbox_poll,
        config.outbox_retention,
        stop.clone(),
    ));
    let sweeper = tokio::spawn(expiry::run(
        ctx.db.clone(),
        producer.clone(),
        config.order_expiry_interval,
        stop.clone(),
    ));

    // A backlog built up while no worker ran must be promoted in chunks *before* apalis' first
    // fetch, which fails beyond ~8,000 due tasks (see `jobs::maintenance`).
    let lanes = lanes(&settings, config.bench_noop);
    for (queue, lane) in &lanes {
        let mut c = conn.clone();
        if let Err(e) = jobs::maintenance::promote_due(&mut c, lane).await {
            tracing::warn!(%queue, error = %e, "initial promotion of due tasks failed");
        }
    }
    let housekeeping = tokio::spawn(maintain(conn.clone(), lanes, stop.clone()));

    let mut monitor = Monitor::new();
    for queue in Queue::ALL {
        let conn = conn.clone();
        let ctx = ctx.clone();
        let settings = settings.clone();
        let base = format!("{}-{}", config.name, queue.as_str());
        let concurrency = match queue {
            Queue::Audit => config.audit_concurrency,
            Queue::Email => config.concurrency,
        };
        monitor = monitor.register(move |run: usize| {
            lane_worker!(format!("{base}-{run}"), &conn, settings.config(queue), concurrency)
                .data(QueueCtx {
                    queue,
                    ctx: ctx.clone(),
                })
                .build(handlers::handle)
        });
    }
    if config.bench_noop {
        tracing::warn!("WORKER_BENCH_NOOP: also consuming the bench-only no-op queue");
        let conn = conn.clone();
        let lane = settings.config_named(jobs::NOOP_QUEUE);
        let base = format!("{}-{}", config.name, jobs::NOOP_QUEUE);
        let concurrency = config.concurrency;
        // The same worker as the real queues', with a handler that does nothing.
        monitor = monitor.register(move |run: usize| {
            lane_worker!(format!("{base}-{run}"), &conn, lane.clone(), concurrency).build(handlers::noop)
        });
    }
    let monitor = monitor.should_restart(|worker, error| {
        // A lost Redis connection ends the worker; start a fresh one (it re-registers) after a
        // pause, so an outage is a slow retry loop rather than a hot one or an exit.
        tracing::warn!(worker = %worker.name(), %error, "worker stopped with an error; restarting");
        tokio::task::block_in_place(|| std::thread::sleep(Duration::from_secs(1)));
        true
    });

    let stopped = stop.clone();
    let result = monitor
        .run_with_signal(async move {
            stopped.cancelled().await;
            tracing::info!("shutdown requested: finishing in-flight jobs");
            Ok(())
        })
        .await;
    stop.cancel();
    let _ = dispatcher.await;
    let _ = sweeper.await;
    let _ = housekeeping.await;
    result.map_err(|e| anyhow::anyhow!("monitor: {e}"))?;
    tracing::info!(worker = %config.name, "worker stopped");
    Ok(())
}

/// The queues this process consumes, by name, with their apalis configuration: every [`Queue`],
/// and the bench-only no-op queue when `WORKER_BENCH_NOOP` is set.
fn lanes(settings: &QueueSettings, bench_noop: bool) -> Vec<(&'static str, apalis_redis::Config)> {
    let mut lanes: Vec<_> = Queue::ALL.iter().map(|q| (q.as_str(), settings.config(*q))).collect();
    if bench_noop {
        lanes.push((jobs::NOOP_QUEUE, settings.config_named(jobs::NOOP_QUEUE)));
    }
    lanes
}

/// Keeps the queues healthy while the worker runs: promotes due scheduled tasks in chunks (often)
/// and drops finished tasks' data (every 10 s). See `jobs::maintenance`.
async fn maintain(
    mut conn: apalis_redis::ConnectionManager,
    lanes: Vec<(&'static str, apalis_redis::Config)>,
    stop: CancellationToken,
) {
    let mut tick = 0u64;
    loop {
        for (queue, lane) in &lanes {
            if let Err(e) = jobs::maintenance::promote_due(&mut conn, lane).await {
                tracing::debug!(%queue, error = %e, "promote failed");
            }
            if tick.is_multiple_of(40)
                && let Err(e) = jobs::maintenance::trim_done(&mut conn, lane).await
            {
                tracing::debug!(%queue, error = %e, "trim failed");
            }
        }
        tick += 1;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}
