//! Prometheus metrics of the API: the recorder, the descriptions, the counters the Redis-backed
//! pieces record, and the zero series. The HTTP middleware is [`crate::http::metrics::track`];
//! the scrape handler is [`crate::routes::metrics`].
//!
//! Built on the `metrics` facade with `metrics-exporter-prometheus` (default features off: a
//! recorder and a handle, rendered by our own actix handler). Chosen over `prometheus-client`
//! because the facade's macros record from anywhere without threading a registry through
//! `AppState`: the cache, the rate limiter and the job dispatcher just call [`cache_result`],
//! [`rate_limited`] and [`job_enqueued`]. The recorder is process-global and installed once
//! ([`handle`], a `OnceLock`), so tests that start many apps in one process share it and a second
//! install never happens (if another recorder was installed first, `/metrics` is empty, no panic).
//!
//! Served at `GET /metrics` on the API port, or only on `METRICS_ADDR` when that is set (then the
//! API port answers 404 there). Gauges of pools and the outbox are read at scrape time.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `http_requests_total` | counter | `method`, `route`, `status` | requests; `route` is the route pattern (`/v1/users/{id}`), `<unmatched>` when none matched (404) — never the raw path; `status` 499 when the client went away first |
//! | `http_request_duration_seconds` | histogram | `method`, `route` | time to produce the response head |
//! | `http_requests_in_flight` | gauge | – | requests being handled |
//! | `db_pool_connections`, `db_pool_idle_connections`, `db_pool_max_connections` | gauge | – | Postgres pool (bb8 `state()`) |
//! | `db_pool_waited_total`, `db_pool_timeouts_total` | counter | – | checkouts that had to wait / gave up |
//! | `redis_pool_connections`, `redis_pool_idle_connections`, `redis_pool_max_connections`, `redis_pool_waited_total`, `redis_pool_timeouts_total` | | | the same for the Redis pool |
//! | `outbox_backlog` | gauge | – | outbox rows whose job is not finished yet (counted at scrape time, 1 s budget) |
//! | `invalidation_bus_live` | gauge | – | 1 while the [invalidation bus](crate::infra::bus) is live (leases in use: sessions and cached bodies answered from memory), 0 while every lookup asks Redis (read at scrape time) |
//! | `jobs_enqueued_total` | counter | `queue` | jobs pushed by this API after commit |
//! | `cache_hits_total`, `cache_misses_total` | counter | `cache` | cache lookups |
//! | `rate_limit_rejections_total` | counter | `policy` | 429s |
//! | `metrics_scrape_errors_total` | counter | `source` | a scrape-time reading that failed (`outbox_backlog`); the gauge keeps its last value |
//!
//! Series with a known label set exist from the start, at zero: every cache namespace
//! (`infra::cache::ns::ALL`) and every rate-limit policy ([`register_known`], called by
//! `startup`), every queue, every scrape-time source, and the in-flight
//! gauge — so a fresh process already answers `cache_hits_total{cache="users"} 0` and a
//! dashboard or an alert on a rate has a series to read before the first event. HTTP series are
//! labelled by what requests arrive and appear with the first one.

use std::{sync::OnceLock, time::Duration};

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counts a cache lookup (`cache_hits_total` / `cache_misses_total`).
pub fn cache_result(cache: &'static str, hit: bool) {
    if hit {
        counter!("cache_hits_total", "cache" => cache).increment(1);
    } else {
        counter!("cache_misses_total", "cache" => cache).increment(1);
    }
}

/// Counts a request rejected by a rate-limit policy (`rate_limit_rejections_total`).
pub fn rate_limited(policy: &'static str) {
    counter!("rate_limit_rejections_total", "policy" => policy).increment(1);
}

/// Counts a job pushed to its queue (`jobs_enqueued_total`).
pub fn job_enqueued(queue: &'static str) {
    counter!("jobs_enqueued_total", "queue" => queue).increment(1);
}

/// The `source` label values of `metrics_scrape_errors_total`.
pub const SCRAPE_SOURCES: [&str; 1] = ["outbox_backlog"];

/// Registers, with no events yet, the series whose labels other modules own: every cache
/// namespace and every rate-limit policy name. Called at start-up, after [`handle`].
pub fn register_known(caches: &[&'static str], policies: impl IntoIterator<Item = &'static str>) {
    for &cache in caches {
        counter!("cache_hits_total", "cache" => cache).increment(0);
        counter!("cache_misses_total", "cache" => cache).increment(0);
    }
    for policy in policies {
        counter!("rate_limit_rejections_total", "policy" => policy).increment(0);
    }
}

/// Registers the series whose labels this module knows (queues, scrape sources, the in-flight
/// gauge), with no events yet.
fn register_zeros() {
    for queue in domain::jobs::Queue::ALL {
        counter!("jobs_enqueued_total", "queue" => queue.as_str()).increment(0);
    }
    for source in SCRAPE_SOURCES {
        counter!("metrics_scrape_errors_total", "source" => source).increment(0);
    }
    gauge!("http_requests_in_flight").increment(0.0);
}

/// Buckets of `http_request_duration_seconds` (the timeout default is 30 s).
pub const HTTP_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Histogram samples are folded into buckets at least this often, scraped or not.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process-wide recorder's handle, installing the recorder on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("http_request_duration_seconds".into()), HTTP_BUCKETS)
            // Only fails for an empty bucket list.
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "another metrics recorder is installed; /metrics stays empty");
        }
        describe();
        register_zeros();
        // A thread, not a task: tests start apps on short-lived runtimes.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no metrics upkeep thread; histograms are folded at scrape time only");
        }
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "http_requests_total",
        "HTTP requests by method, route pattern and status."
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time to produce the response head, by method and route pattern."
    );
    describe_gauge!("http_requests_in_flight", "HTTP requests being handled.");
    for pool in ["db", "redis"] {
        describe_gauge!(format!("{pool}_pool_connections"), "Open connections of the pool.");
        describe_gauge!(format!("{pool}_pool_idle_connections"), "Idle connections of the pool.");
        describe_gauge!(format!("{pool}_pool_max_connections"), "Configured pool size.");
        describe_counter!(
            format!("{pool}_pool_waited_total"),
            "Checkouts that waited for a connection."
        );
        describe_counter!(format!("{pool}_pool_timeouts_total"), "Checkouts that timed out.");
    }
    describe_gauge!("outbox_backlog", "Outbox rows whose job is not finished yet.");
    describe_gauge!(
        "invalidation_bus_live",
        "1 while the invalidation bus is live (cached sessions and bodies answer from memory), else 0."
    );
    describe_counter!("jobs_enqueued_total", "Jobs pushed to their queue by the API.");
    describe_counter!(
        "cache_hits_total",
        "Cache lookups answered from Redis or from memory under a lease."
    );
    describe_counter!("cache_misses_total", "Cache lookups that went to Postgres.");
    describe_counter!("rate_limit_rejections_total", "Requests refused with 429, by policy.");
    describe_counter!(
        "metrics_scrape_errors_total",
        "Scrape-time readings that failed, by source."
    );
}
