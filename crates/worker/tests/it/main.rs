//! Worker integration tests: the real API (in-process), the real `worker` binary, real Postgres,
//! Redis and an SMTP server process — what only processes show: crashes, shutdown, outages,
//! dead jobs, lost Redis data, the metrics endpoint, the order expiry sweep. The e-mail flows themselves run in-process
//! in the API's suite (`crates/api/tests/it/mail.rs`, `TestApp::run_jobs`).

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod audit_batch;
mod dead;
mod errors;
mod expiry;
mod faults;
mod metrics;
mod redis_loss;
mod shutdown;
mod support;
