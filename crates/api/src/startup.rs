//! Building the application: pools, state, the actix app and the server. Tests call [`build`]
//! with port 0 and get the very same app that `api serve` runs.

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_web::{App, HttpResponse, dev::Server, middleware::from_fn, web};
use anyhow::Context;
use auth::{PasswordHasher, TokenIssuer};
use bb8_redis::RedisConnectionManager;
use jobs::{Producer, QueueSettings};
use secrecy::ExposeSecret;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    config::{Config, JWT_AUDIENCE},
    edge, extract,
    openapi::ApiDoc,
    queue::Dispatcher,
    routes,
    state::{AppState, RedisPool},
};

/// Connects to Postgres (fails fast when unreachable) and sets up a lazy Redis pool (the API
/// starts and serves what it can while Redis is down; `/health/ready` reports it).
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    let db = db::connect_pool(config.database_url.expose_secret(), config.database_pool_size)
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
    let redis = redis_pool(&config)?;
    let tokens = TokenIssuer::new(
        config.jwt_keys()?,
        config.public_url.clone(),
        JWT_AUDIENCE,
        i64::try_from(config.access_token_ttl.as_secs()).unwrap_or(900),
    );
    let cost = config.bcrypt_cost;
    let hasher = tokio::task::spawn_blocking(move || PasswordHasher::new(cost)).await??;
    let producer = Producer::new(
        config.redis_url.expose_secret(),
        QueueSettings::new(config.redis_prefix.clone()),
    );
    let jobs = Dispatcher::new(Arc::new(producer), db.clone());
    Ok(AppState {
        config: Arc::new(config),
        db,
        redis,
        tokens,
        hasher,
        jobs,
    })
}

pub fn redis_pool(config: &Config) -> anyhow::Result<RedisPool> {
    let manager = RedisConnectionManager::new(config.redis_url.expose_secret()).context("REDIS_URL is invalid")?;
    Ok(bb8::Pool::builder()
        .max_size(config.redis_pool_size)
        .test_on_check_out(false)
        .connection_timeout(Duration::from_secs(2))
        .build_unchecked(manager))
}

/// The actix application factory: middleware, extractor configs, routes, docs and the fallback.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .app_data(web::PayloadConfig::new(extract::JSON_LIMIT))
        .configure(routes::configure)
        .service(web::redirect("/docs", "/docs/"))
        .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi()))
        .default_service(web::to(|| async { HttpResponse::NotFound().finish() }))
        .wrap(from_fn(edge::edge))
}

/// Binds the listener and returns the server with the port it got (use port 0 in tests).
pub fn build_server(state: AppState, listener: TcpListener, workers: Option<usize>) -> anyhow::Result<Server> {
    let data = web::Data::new(state);
    let mut server = actix_web::HttpServer::new(move || app(data.clone()))
        .listen(listener)?
        .client_request_timeout(Duration::from_secs(10))
        .client_disconnect_timeout(Duration::from_secs(2))
        .shutdown_timeout(30);
    if let Some(n) = workers {
        server = server.workers(n);
    }
    Ok(server.run())
}

/// Everything `api serve` does before running: state, listener, server. Returns the server, the
/// bound port and the state (tests use it to reach the database directly).
pub async fn build(config: Config) -> anyhow::Result<(Server, u16, AppState)> {
    let listener = TcpListener::bind(config.api_addr).with_context(|| format!("cannot bind {}", config.api_addr))?;
    let port = listener.local_addr()?.port();
    let workers = config.api_workers;
    let state = build_state(config).await?;
    Ok((build_server(state.clone(), listener, workers)?, port, state))
}
