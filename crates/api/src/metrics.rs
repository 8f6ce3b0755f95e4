//! Prometheus metrics of the API.
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
//! | `jobs_enqueued_total` | counter | `queue` | jobs pushed by this API after commit |
//! | `cache_hits_total`, `cache_misses_total` | counter | `cache` | cache lookups |
//! | `rate_limit_rejections_total` | counter | `policy` | 429s |
//! | `metrics_scrape_errors_total` | counter | `source` | a scrape-time reading that failed (`outbox_backlog`); the gauge keeps its last value |
//!
//! Series with a known label set exist from the start, at zero: every cache namespace
//! ([`CACHES`]), every rate-limit policy, every queue, every scrape-time source, and the in-flight
//! gauge — so a fresh process already answers `cache_hits_total{cache="users"} 0` and a
//! dashboard or an alert on a rate has a series to read before the first event. HTTP series are
//! labelled by what requests arrive and appear with the first one.

use std::{
    net::TcpListener,
    sync::OnceLock,
    time::{Duration, Instant},
};

use actix_web::{
    App, Error, HttpResponse,
    body::MessageBody,
    dev::{ServerHandle, ServiceRequest, ServiceResponse},
    http::Method,
    middleware::{Next, from_fn},
    web,
};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

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

/// The cache namespaces (`cache::ns`) whose hit and miss counters exist from the start. A new
/// namespace belongs here too.
pub const CACHES: [&str; 1] = [crate::cache::ns::USERS];

/// The `source` label values of `metrics_scrape_errors_total`.
const SCRAPE_SOURCES: [&str; 1] = ["outbox_backlog"];

/// Registers every series whose labels are known in advance, with no events yet.
fn register_zeros() {
    for cache in CACHES {
        counter!("cache_hits_total", "cache" => cache).increment(0);
        counter!("cache_misses_total", "cache" => cache).increment(0);
    }
    // The policy label is the policy's name: its environment name in lower case.
    for (policy, _) in crate::ratelimit::RateLimitConfig::DEFAULTS {
        counter!("rate_limit_rejections_total", "policy" => policy.to_ascii_lowercase()).increment(0);
    }
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
/// `/metrics` never waits longer than this on Postgres for the outbox backlog.
const BACKLOG_BUDGET: Duration = Duration::from_secs(1);

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
    describe_counter!("jobs_enqueued_total", "Jobs pushed to their queue by the API.");
    describe_counter!("cache_hits_total", "Cache lookups answered from Redis.");
    describe_counter!("cache_misses_total", "Cache lookups that went to Postgres.");
    describe_counter!("rate_limit_rejections_total", "Requests refused with 429, by policy.");
    describe_counter!(
        "metrics_scrape_errors_total",
        "Scrape-time readings that failed, by source."
    );
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// One request being measured. Recorded once: with the response's status, or on drop — 500 if a
/// panic unwinds through it, 499 if the request future was dropped (client gone).
struct Tracked {
    method: &'static str,
    route: String,
    started: Instant,
    done: bool,
}

impl Tracked {
    fn start(req: &ServiceRequest) -> Self {
        gauge!("http_requests_in_flight").increment(1.0);
        Self {
            method: method_label(req.method()),
            // Matched against the route table here, before routing, so a panic or an error
            // travelling as `Err` is still labelled by its route.
            route: req.match_pattern().unwrap_or_else(|| "<unmatched>".to_owned()),
            started: Instant::now(),
            done: false,
        }
    }

    fn record(&mut self, status: u16) {
        self.done = true;
        gauge!("http_requests_in_flight").decrement(1.0);
        let route = std::mem::take(&mut self.route);
        histogram!("http_request_duration_seconds", "method" => self.method, "route" => route.clone())
            .record(self.started.elapsed().as_secs_f64());
        counter!("http_requests_total", "method" => self.method, "route" => route, "status" => status.to_string())
            .increment(1);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.done {
            self.record(if std::thread::panicking() { 500 } else { 499 });
        }
    }
}

/// Middleware: `http_requests_total`, `http_request_duration_seconds`, `http_requests_in_flight`.
pub async fn track<B: MessageBody + 'static>(req: ServiceRequest, next: Next<B>) -> Result<ServiceResponse<B>, Error> {
    let mut tracked = Tracked::start(&req);
    let res = next.call(req).await;
    let status = match &res {
        Ok(res) => res.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    tracked.record(status.as_u16());
    res
}

fn pool_metrics(pool: &'static str, state: &bb8::State, max: u32) {
    gauge!(format!("{pool}_pool_connections")).set(f64::from(state.connections));
    gauge!(format!("{pool}_pool_idle_connections")).set(f64::from(state.idle_connections));
    gauge!(format!("{pool}_pool_max_connections")).set(f64::from(max));
    counter!(format!("{pool}_pool_waited_total")).absolute(state.statistics.get_waited);
    counter!(format!("{pool}_pool_timeouts_total")).absolute(state.statistics.get_timed_out);
}

async fn outbox_backlog(state: &AppState) {
    let count = async {
        let mut conn = state.db.get().await.ok()?;
        db::outbox::pending_count(&mut conn).await.ok()
    };
    match tokio::time::timeout(BACKLOG_BUDGET, count).await {
        Ok(Some(n)) => gauge!("outbox_backlog").set(n as f64),
        _ => counter!("metrics_scrape_errors_total", "source" => "outbox_backlog").increment(1),
    }
}

/// Prometheus metrics (text format). Served here unless `METRICS_ADDR` moves it to a separate
/// listener; then this port answers 404.
#[utoipa::path(get, path = "/metrics", tag = "health", responses(
    (status = 200, content_type = "text/plain", body = String, description = "Prometheus text exposition format"),
))]
pub async fn scrape(state: web::Data<AppState>) -> HttpResponse {
    let handle = handle();
    pool_metrics("db", &state.db.state(), state.config.database_pool_size);
    pool_metrics("redis", &state.redis.state(), state.config.redis_pool_size);
    outbox_backlog(&state).await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}

/// Registers `/metrics` on an app.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/metrics").route(web::get().to(scrape)));
}

/// Serves `/metrics` alone on `listener` (`METRICS_ADDR`): its own single worker, so scrapes work
/// even when the API's workers are saturated or at their connection limit. Spawned on the
/// current runtime; stop it with the returned handle (see [`StopOnDrop`]).
pub fn serve_separately(data: web::Data<AppState>, listener: TcpListener) -> anyhow::Result<ServerHandle> {
    let server = actix_web::HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .configure(routes)
            .default_service(web::to(|| async { HttpResponse::NotFound().finish() }))
            .wrap(from_fn(crate::hardening::security_headers))
            .wrap(from_fn(crate::edge::edge))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok(handle)
}

/// Stops a server when dropped. The API server's app factory owns one for the metrics server, so
/// the metrics listener closes when the API server has stopped and released its workers.
pub struct StopOnDrop(pub ServerHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        // `stop` sends the command at once; the returned future only waits for completion.
        drop(self.0.stop(true));
    }
}

#[cfg(test)]
mod tests {
    use crate::ratelimit::RateLimitConfig;

    /// The zero series are registered under `DEFAULTS`' names in lower case: they must be the
    /// names the policies count their rejections under.
    #[test]
    fn zero_series_use_the_policies_own_names() {
        let c = RateLimitConfig::disabled();
        let mut used: Vec<&str> = [c.login, c.signup, c.forgot, c.reset, c.refresh, c.user, c.anon]
            .iter()
            .map(|p| p.name)
            .collect();
        let mut registered: Vec<String> = RateLimitConfig::DEFAULTS
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        used.sort_unstable();
        registered.sort_unstable();
        assert_eq!(used, registered);
    }
}
