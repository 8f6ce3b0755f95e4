//! Command line of the `api` binary.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "api", version, about = "Task Shop HTTP API")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Apply pending database migrations (embedded in the binary).
    Migrate,
    /// Insert idempotent demo data: an admin and a few users (refused in production). With
    /// `--tasks`, also bulk benchmark data: `--users` seed accounts owning `--tasks` tasks.
    Seed {
        /// Seed accounts for bulk data (`seed{i}@seed.example.com`, password `demo-password-123`).
        #[arg(long, default_value_t = 1000)]
        users: i64,
        /// Total tasks owned by the seed accounts (0 = no bulk data).
        #[arg(long, default_value_t = 0)]
        tasks: i64,
    },
    /// Create an admin account, or make an existing account an admin. Idempotent.
    CreateAdmin {
        #[arg(long)]
        email: String,
        /// Used only when the account does not exist yet.
        #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long, default_value = "Administrator")]
        name: String,
    },
    /// Development: sign a payment event with PAYMENT_WEBHOOK_SECRET and POST it to the API on
    /// API_ADDR, as the payment provider would. Amount and currency default to the order's.
    Webhook {
        /// `payment.succeeded`, `payment.failed`, `refund.succeeded` or `refund.failed`.
        #[arg(long = "type", default_value = "payment.succeeded")]
        kind: String,
        /// The order the event is about.
        #[arg(long)]
        order: uuid::Uuid,
        #[arg(long)]
        amount: Option<i64>,
        #[arg(long)]
        currency: Option<String>,
        /// The provider's event id (default: a fresh one). Send the same id twice to see a
        /// duplicate delivery ignored.
        #[arg(long)]
        id: Option<String>,
    },
    /// Exit 0 when `GET /health/live` on API_ADDR answers 200 (for container health checks).
    Healthcheck,
    /// Print the median wall time of one bcrypt hash at BCRYPT_COST, in ms (used by `just bench`
    /// to compute the login ceiling: cores ÷ time per hash).
    #[command(hide = true)]
    BcryptTiming {
        #[arg(long, default_value_t = 9)]
        rounds: usize,
    },
}
