//! Worker integration tests: the real API (in-process), the real `worker` binary, real Postgres,
//! Redis and an SMTP server process.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod dead;
mod faults;
mod flows;
mod metrics;
mod redis_loss;
mod support;
