//! The background worker: job handlers (e-mail, audit), the outbox dispatcher, the order expiry
//! sweep, the process runner, and operator commands for dead jobs. `main.rs` only parses the command line.

pub mod audit_batch;
pub mod config;
pub mod dead;
pub mod expiry;
pub mod handlers;
pub mod mailer;
pub mod metrics;
pub mod outbox;
pub mod run;
pub mod templates;
