//! The worker's Prometheus metrics, served by `metrics-exporter-prometheus`' own HTTP listener on
//! `WORKER_METRICS_ADDR` (default `127.0.0.1:9464`, `off` disables; any path answers).
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `jobs_processed_total` | counter | `queue` | jobs that completed (including "nothing to do": duplicate, recipient gone) |
//! | `jobs_failed_total` | counter | `queue`, `reason` | failed attempts: `failed` (consumes an attempt), `transient` (dependency down), `malformed` |
//! | `jobs_retried_total` | counter | `queue` | failed attempts re-pushed for a later retry (either kind) |
//! | `jobs_dead_total` | counter | `queue` | jobs dead-lettered (malformed, or out of attempts) |
//! | `job_duration_seconds` | histogram | `queue` | time spent in the handler, whatever the outcome |
//! | `orders_expired_total` | counter | – | unpaid orders the expiry sweep cancelled (see `expiry`) |
//! | `idempotency_keys_purged_total` | counter | – | expired Idempotency-Key records deleted |
//! | `sweep_failures_total` | counter | `sweep` | a sweep that failed (database error) and is retried next tick: [`SWEEPS`] |
//!
//! Every series of every queue (and, for `jobs_failed_total`, every [`FAILURE_REASONS`] entry; for
//! `sweep_failures_total`, every [`SWEEPS`] entry) is registered at zero when the recorder is
//! installed, so a fresh worker already exposes `jobs_dead_total{queue="email"} 0` and an alert
//! on its rate has something to read.

use std::net::SocketAddr;

use anyhow::Context;
use domain::jobs::Queue;
use metrics::{counter, describe_counter, describe_histogram, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// The `reason` label values of `jobs_failed_total`.
pub const FAILURE_REASONS: [&str; 3] = ["failed", "transient", "malformed"];

/// The `sweep` label values of `sweep_failures_total`.
pub const SWEEPS: [&str; 2] = ["order_expiry", "idempotency_purge"];

pub const JOB_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Installs the process-wide recorder and starts the listener on the current runtime. A port
/// that cannot be bound is a start-up error, like the API's own address.
pub fn install(addr: SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Full("job_duration_seconds".into()), JOB_BUCKETS)?
        .install()
        .with_context(|| format!("cannot serve metrics on WORKER_METRICS_ADDR {addr}"))?;
    describe_counter!("jobs_processed_total", "Jobs completed, by queue.");
    describe_counter!("jobs_failed_total", "Failed job attempts, by queue and reason.");
    describe_counter!(
        "jobs_retried_total",
        "Failed attempts re-pushed for a later retry, by queue."
    );
    describe_counter!("jobs_dead_total", "Jobs dead-lettered, by queue.");
    describe_histogram!(
        "job_duration_seconds",
        metrics::Unit::Seconds,
        "Time spent handling one job, by queue."
    );
    describe_counter!("orders_expired_total", "Unpaid orders cancelled by the expiry sweep.");
    describe_counter!(
        "idempotency_keys_purged_total",
        "Expired Idempotency-Key records deleted."
    );
    describe_counter!(
        "sweep_failures_total",
        "Sweeps that failed (retried next tick), by sweep."
    );
    register_zeros();
    Ok(())
}

/// Registers every known series with no events yet: counters at 0, histograms empty.
fn register_zeros() {
    for queue in Queue::ALL {
        let q = queue.as_str();
        counter!("jobs_processed_total", "queue" => q).increment(0);
        for reason in FAILURE_REASONS {
            counter!("jobs_failed_total", "queue" => q, "reason" => reason).increment(0);
        }
        counter!("jobs_retried_total", "queue" => q).increment(0);
        counter!("jobs_dead_total", "queue" => q).increment(0);
        // Registering the handle is enough: the exporter renders an empty histogram.
        let _ = histogram!("job_duration_seconds", "queue" => q);
    }
    counter!("orders_expired_total").increment(0);
    counter!("idempotency_keys_purged_total").increment(0);
    for sweep in SWEEPS {
        counter!("sweep_failures_total", "sweep" => sweep).increment(0);
    }
}

pub fn processed(queue: Queue) {
    counter!("jobs_processed_total", "queue" => queue.as_str()).increment(1);
}

pub fn failed(queue: Queue, reason: &'static str) {
    debug_assert!(FAILURE_REASONS.contains(&reason), "{reason} is not in FAILURE_REASONS");
    counter!("jobs_failed_total", "queue" => queue.as_str(), "reason" => reason).increment(1);
}

pub fn retried(queue: Queue) {
    counter!("jobs_retried_total", "queue" => queue.as_str()).increment(1);
}

pub fn dead(queue: Queue) {
    counter!("jobs_dead_total", "queue" => queue.as_str()).increment(1);
}

pub fn duration(queue: Queue, secs: f64) {
    histogram!("job_duration_seconds", "queue" => queue.as_str()).record(secs);
}

pub fn orders_expired(n: usize) {
    counter!("orders_expired_total").increment(n as u64);
}

pub fn idempotency_keys_purged(n: usize) {
    counter!("idempotency_keys_purged_total").increment(n as u64);
}

pub fn sweep_failed(sweep: &'static str) {
    debug_assert!(SWEEPS.contains(&sweep), "{sweep} is not in SWEEPS");
    counter!("sweep_failures_total", "sweep" => sweep).increment(1);
}
