//! `api`: the HTTP server and its operator commands. See `api --help`.

use std::process::ExitCode;

use api::{
    cli::{Cli, Command},
    config::{Config, LogFormat},
    seed, startup,
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
    // Kept to the end of `run`: dropping it exports the spans still buffered.
    let _telemetry = telemetry::init(&telemetry::Settings {
        service: "api",
        version: env!("CARGO_PKG_VERSION"),
        json: config.log_format == LogFormat::Json,
        current_span: true,
        sentry: config.sentry.clone(),
    });
    match command {
        Command::Serve => {
            let addr = config.api_addr;
            let (server, port, state) = startup::build(config).await?;
            tokio::spawn(startup::stop_on_signals(
                server.handle(),
                state.draining.clone(),
                state.config.http.shutdown_delay,
            ));
            tracing::info!(%addr, port, "api listening");
            server.await?;
            state.bus.leave().await;
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
            state.bus.leave().await;
        }
        Command::CreateAdmin { email, password, name } => {
            let state = startup::build_state(config).await?;
            let outcome = seed::ensure_account(&state, &email, &password, &name, domain::Role::Admin).await?;
            state.bus.leave().await;
            println!("{outcome:?}");
        }
        Command::Healthcheck => healthcheck(config.api_addr).await?,
        Command::Webhook {
            kind,
            order,
            amount,
            currency,
            id,
        } => webhook(config, kind, order, amount, currency, id).await?,
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

/// Signs and sends one payment event (see `api webhook --help`); prints the answer.
async fn webhook(
    config: Config,
    kind: String,
    order: uuid::Uuid,
    amount: Option<i64>,
    currency: Option<String>,
    id: Option<String>,
) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    anyhow::ensure!(
        config.app_env != api::config::AppEnv::Production,
        "refusing to forge payment events in production"
    );
    let (amount, currency) = match (amount, currency) {
        (Some(a), Some(c)) => (a, c),
        (a, c) => {
            let state = startup::build_state(config.clone()).await?;
            let mut conn = state.db.get().await.map_err(db::DbError::from)?;
            let row = db::orders::find(&mut conn, order.into(), None)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no order {order}"))?;
            (
                a.unwrap_or(row.total_cents),
                c.unwrap_or_else(|| row.currency.to_string()),
            )
        }
    };
    let id = id.unwrap_or_else(|| format!("evt_{}", uuid::Uuid::now_v7().simple()));
    let body = serde_json::to_vec(&serde_json::json!({
        "id": id, "type": kind, "data": {"order_id": order, "amount_cents": amount, "currency": currency}
    }))?;
    let signature = auth::webhook::header(
        config.shop.webhook_secret.expose_secret().as_bytes(),
        chrono::Utc::now().timestamp(),
        &body,
    );
    let head = format!(
        "POST /v1/webhooks/payments HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Payment-Signature: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let answer = http_exchange(config.api_addr, [head.as_bytes(), &body].concat()).await?;
    println!("{answer}");
    Ok(())
}

/// Sends one raw HTTP/1.1 request to the API's address (loopback when it listens on all
/// interfaces) and returns the whole answer.
async fn http_exchange(addr: std::net::SocketAddr, request: Vec<u8>) -> anyhow::Result<String> {
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
    stream.write_all(&request).await?;
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut out)).await??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A minimal HTTP/1.1 GET of /health/live, so container images need no curl.
async fn healthcheck(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let answer = http_exchange(
        addr,
        b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await?;
    anyhow::ensure!(
        answer.starts_with("HTTP/1.1 200"),
        "unhealthy: {}",
        answer.lines().next().unwrap_or("")
    );
    Ok(())
}
