//! `GET /metrics`: Prometheus text format. Gauges of pools and the outbox are read at scrape
//! time. Served on the API port, or only on `METRICS_ADDR` when that is set (then the API port
//! answers 404 there; see `startup::serve_metrics_separately`).

use std::time::Duration;

use actix_web::{HttpResponse, web};
use metrics::{counter, gauge};

use crate::state::AppState;

/// `/metrics` never waits longer than this on Postgres for the outbox backlog.
const BACKLOG_BUDGET: Duration = Duration::from_secs(1);

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
    let handle = crate::metrics::handle();
    pool_metrics("db", &state.db.state(), state.config.database_pool_size);
    pool_metrics("redis", &state.redis.state(), state.config.redis_pool_size);
    outbox_backlog(&state).await;
    gauge!("invalidation_bus_live").set(if state.bus.live() { 1.0 } else { 0.0 });
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}

/// Registers `/metrics` on an app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/metrics").route(web::get().to(scrape)));
}
