//! `api`: the HTTP server and its operator commands. See `api --help`.

use std::process::ExitCode;

use api::{
    cli::{Cli, Command},
    config::Config,
    seed, startup, telemetry,
};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    match run(cli.command.unwrap_or(Command::Serve)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, with the chain of causes; never a backtrace.
            eprintln!("api: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    telemetry::init(config.log_format);
    match command {
        Command::Serve => {
            let addr = config.api_addr;
            let (server, port, _state) = startup::build(config).await?;
            tracing::info!(%addr, port, "api listening");
            server.await?;
            tracing::info!("api stopped");
        }
        Command::Migrate => {
            use secrecy::ExposeSecret;
            let applied = db::run_migrations(config.database_url.expose_secret())
                .await
                .map_err(|e| anyhow::anyhow!("migrate: {e}"))?;
            tracing::info!(count = applied.len(), versions = ?applied, "migrations applied");
        }
        Command::Seed { users, tasks } => {
            let state = startup::build_state(config).await?;
            seed::seed(&state).await?;
            if tasks > 0 {
                seed::bulk(&state, users, tasks).await?;
            }
        }
        Command::CreateAdmin { email, password, name } => {
            let state = startup::build_state(config).await?;
            let outcome = seed::ensure_account(&state, &email, &password, &name, domain::Role::Admin).await?;
            println!("{outcome:?}");
        }
        Command::Healthcheck => healthcheck(config.api_addr).await?,
        Command::BcryptTiming { rounds } => {
            let cost = config.bcrypt_cost;
            let mut times: Vec<f64> = (0..rounds.max(1))
                .map(|_| {
                    let t = std::time::Instant::now();
                    bcrypt::hash("benchmark password", cost).map(|_| t.elapsed().as_secs_f64() * 1000.0)
                })
                .collect::<Result<_, _>>()?;
            times.sort_by(f64::total_cmp);
            println!("{:.2}", times[times.len() / 2]);
        }
    }
    Ok(())
}

/// A minimal HTTP/1.1 GET of /health/live, so container images need no curl.
async fn healthcheck(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let mut stream = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        tokio::net::TcpStream::connect(target),
    )
    .await??;
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = vec![0u8; 64];
    let n = stream.read(&mut buf).await?;
    let head = String::from_utf8_lossy(&buf[..n]);
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "unhealthy: {}",
        head.lines().next().unwrap_or("")
    );
    Ok(())
}
