//! `worker`: processes jobs until SIGTERM; `worker dead list|retry` manages dead jobs.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use domain::jobs::Queue;
use tokio_util::sync::CancellationToken;
use worker::{config::WorkerConfig, run};

#[derive(Debug, Parser)]
#[command(name = "worker", version, about = "Task Shop background worker")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Process jobs (the default).
    Run,
    /// Push N synthetic audit jobs (for `just bench`; they write real audit rows), or with
    /// `--noop N` N jobs onto the bench-only no-op queue (consumed only by `WORKER_BENCH_NOOP=true`).
    #[command(hide = true)]
    BenchEnqueue {
        #[arg(long, default_value_t = 20_000, conflicts_with = "noop")]
        audit: usize,
        #[arg(long)]
        noop: Option<usize>,
    },
    /// Inspect and re-drive jobs that exhausted their attempts.
    Dead {
        #[command(subcommand)]
        action: DeadAction,
    },
}

#[derive(Debug, Subcommand)]
enum DeadAction {
    /// List dead jobs (id, attempts, last error, payload) of one queue or all.
    List {
        #[arg(long)]
        queue: Option<String>,
    },
    /// Put a dead job back on its queue with its attempts reset.
    Retry {
        #[arg(long)]
        queue: String,
        id: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    match dispatch(cli.command.unwrap_or(Command::Run)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// JSON lines in production and tests unless `LOG_FORMAT` says otherwise.
fn json_logs(production: bool) -> bool {
    match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("pretty") => false,
        _ => production || std::env::var("APP_ENV").as_deref().is_ok_and(|e| e == "test"),
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    let config = WorkerConfig::from_env()?;
    // Kept to the end of `dispatch`: dropping it exports the spans still buffered.
    let _telemetry = telemetry::init(&telemetry::Settings {
        service: "worker",
        version: env!("CARGO_PKG_VERSION"),
        json: json_logs(config.production),
        current_span: true,
        sentry: config.sentry.clone(),
    });
    match command {
        Command::Run => {
            let stop = CancellationToken::new();
            let on_signal = stop.clone();
            tokio::spawn(async move {
                run::shutdown_signal().await;
                on_signal.cancel();
            });
            run::run(config, stop).await
        }
        Command::BenchEnqueue { noop: Some(n), .. } => {
            let producer = jobs::Producer::new(config.redis_url.clone(), run::queue_settings(&config));
            let mut left = n;
            while left > 0 {
                let chunk = left.min(1000);
                let batch = vec![serde_json::json!({"noop": true}); chunk];
                producer.push_many_to(jobs::NOOP_QUEUE, batch).await?;
                left -= chunk;
            }
            println!("{n}");
            Ok(())
        }
        Command::BenchEnqueue { audit, noop: None } => {
            let producer = jobs::Producer::new(config.redis_url.clone(), run::queue_settings(&config));
            let now = chrono::Utc::now();
            let mut left = audit;
            while left > 0 {
                let n = left.min(1000);
                let batch = (0..n)
                    .map(|_| {
                        let event = domain::jobs::AuditEvent {
                            event_id: uuid::Uuid::now_v7(),
                            event_type: domain::jobs::AuditEventType::LoginSucceeded,
                            actor_id: Some(domain::UserId::generate()),
                            target_type: None,
                            target_id: None,
                            request_id: Some("bench".into()),
                            ip: None,
                            user_agent: None,
                            data: serde_json::json!({"bench": true}),
                            occurred_at: now,
                        };
                        serde_json::to_value(domain::jobs::AuditJob { event })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                producer.push_many(Queue::Audit, batch).await?;
                left -= n;
            }
            println!("{audit}");
            Ok(())
        }
        Command::Dead { action } => {
            let settings = run::queue_settings(&config);
            match action {
                DeadAction::List { queue } => {
                    let queue = queue
                        .map(|q| q.parse::<Queue>().map_err(anyhow::Error::msg))
                        .transpose()?;
                    for line in worker::dead::list(&config, &settings, queue).await? {
                        println!("{line}");
                    }
                }
                DeadAction::Retry { queue, id } => {
                    let q = queue.parse::<Queue>().map_err(anyhow::Error::msg)?;
                    if worker::dead::retry(&config, &settings, q, &id).await? {
                        println!("re-queued {q} {id}");
                    } else {
                        anyhow::bail!("no dead job {id} in queue {q}");
                    }
                }
            }
            Ok(())
        }
    }
}
