//! Liveness and readiness.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use actix_web::http::StatusCode;

use crate::{error::Problem, state::AppState};

#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when a dependency failed.
    pub status: String,
    /// Per dependency: `ok` or `unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Checks>,
}

#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Checks {
    pub postgres: String,
    pub redis: String,
}

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, body = Health)))]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
        checks: None,
    })
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

async fn postgres_ok(state: &AppState) -> bool {
    use diesel_async::RunQueryDsl;
    let check = async {
        let mut conn = state.db.get().await.ok()?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await.ok()
    };
    matches!(tokio::time::timeout(CHECK_TIMEOUT, check).await, Ok(Some(_)))
}

async fn redis_ok(state: &AppState) -> bool {
    let check = async {
        let mut conn = state.redis.get().await.ok()?;
        let pong = redis::cmd("PING").query_async::<String>(&mut **conn).await;
        if pong.is_err() {
            conn.mark_broken();
        }
        pong.ok()
    };
    matches!(tokio::time::timeout(CHECK_TIMEOUT, check).await, Ok(Some(_)))
}

/// Postgres and Redis both answer, and the process is not shutting down. Otherwise 503
/// problem+json: `dependency_unavailable` with `detail` naming what failed, or `shutting_down`.
#[utoipa::path(get, path = "/health/ready", tag = "health", responses(
    (status = 200, body = Health),
    (status = 503, body = Problem, content_type = "application/problem+json",
     description = "A dependency failed (`detail` names it: `postgres`, `redis`), or the process is shutting down"),
))]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    // Shutting down (SIGTERM, `SHUTDOWN_DELAY`): still serving, but take me out of rotation.
    if state.draining.is_draining() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "Shutting down: this instance takes no new traffic".to_owned(),
        )
        .into_response();
    }
    let (pg, redis) = tokio::join!(postgres_ok(&state), redis_ok(&state));
    if pg && redis {
        let ok = || "ok".to_owned();
        return HttpResponse::Ok().json(Health {
            status: ok(),
            checks: Some(Checks {
                postgres: ok(),
                redis: ok(),
            }),
        });
    }
    let failed: Vec<&str> = [(!pg).then_some("postgres"), (!redis).then_some("redis")]
        .into_iter()
        .flatten()
        .collect();
    tracing::warn!(failed = ?failed, "not ready");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "dependency_unavailable",
        format!("Unavailable: {}", failed.join(", ")),
    )
    .into_response()
}
