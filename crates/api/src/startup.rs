//! Building the application: pools, state, the actix app and the server. Tests call [`build`]
//! with port 0 and get the very same app that `api serve` runs.

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_http::{HttpService, KeepAlive, error::DispatchError};
use actix_service::{IntoServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_web::{
    App, HttpResponse,
    dev::{AppConfig, Server, ServerHandle, ServiceRequest},
    middleware::{Condition, Next, from_fn},
    rt::net::TcpStream,
    web,
};
use anyhow::Context;
use auth::{PasswordHasher, TokenIssuer};
use jobs::{Producer, QueueSettings};
use secrecy::ExposeSecret;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    config::{AppEnv, Config, JWT_AUDIENCE, WireSettings},
    http::{edge, extract, hardening, ratelimit::RequestLimit, wire},
    infra::{
        bus::Bus,
        cache::{self, Cache},
        oidc::Providers,
        queue::Dispatcher,
        ratelimit::RateLimiter,
        redis_pool::{RedisManager, RedisPool},
        session_cache::{self, SessionCache},
    },
    openapi::ApiDoc,
    routes,
    state::AppState,
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
    let mut queues = QueueSettings::new(config.redis_prefix.clone());
    queues.visibility = config.outbox_visibility;
    let producer = Producer::new(config.redis_url.expose_secret(), queues);
    let jobs = Dispatcher::new(Arc::new(producer), db.clone());
    // The invalidation bus behind both per-instance caches (its own thread and connections).
    let bus = Bus::start(config.redis_url.expose_secret(), &config.redis_prefix).context("REDIS_URL is invalid")?;
    let cache = Cache::new(
        redis.clone(),
        bus.clone(),
        &config.redis_prefix,
        config.cache_ttl,
        config.cache_enabled,
    );
    let limits = RateLimiter::new(redis.clone(), &config.redis_prefix, config.rate_limits.clone());
    let sessions = SessionCache::new(
        redis.clone(),
        bus.clone(),
        &config.redis_prefix,
        config.auth_cache.enabled,
        config.auth_cache.max_age,
    );
    let oidc = Providers::new(&config.oidc)?;
    if config.app_env == AppEnv::Production {
        // Production refuses to start on a provider it cannot use; elsewhere discovery is lazy,
        // so `just run` works while a local provider is down.
        oidc.preload().await?;
    }
    Ok(AppState {
        config: Arc::new(config),
        db,
        redis,
        tokens,
        hasher,
        jobs,
        cache,
        limits,
        sessions,
        bus,
        oidc,
        draining: Default::default(),
    })
}

pub fn redis_pool(config: &Config) -> anyhow::Result<RedisPool> {
    let manager = RedisManager::new(config.redis_url.expose_secret()).context("REDIS_URL is invalid")?;
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
    let http = &state.config.http;
    let metrics_here = http.metrics_addr.is_none();
    let (hsts, request_timeout) = (http.hsts, http.request_timeout);
    let cors = hardening::cors(http);
    let request_limit = RequestLimit::new(state.limits.clone(), state.tokens.clone());
    // Error reporting (`SENTRY_DSN`): a Sentry hub per request that reports 5xx responses, and
    // the request id and route as tags. Not in the chain at all when off.
    let sentry_on = state.config.sentry.is_some();
    App::new()
        .app_data(state)
        .app_data(web::PayloadConfig::new(extract::JSON_LIMIT))
        .configure(routes::configure)
        .configure(|cfg| {
            if metrics_here {
                routes::metrics::configure(cfg);
            }
        })
        .service(web::redirect("/docs", "/docs/"))
        .service(
            SwaggerUi::new("/docs/{_:.*}")
                .url("/openapi.json", ApiDoc::openapi())
                // No badge from validator.swagger.io: the docs CSP allows no outside images, and
                // the spec's URL should not leak to a third party.
                .config(utoipa_swagger_ui::Config::default().validator_url("none")),
        )
        .default_service(web::to(|| async { HttpResponse::NotFound().finish() }))
        .wrap(from_fn(move |req: ServiceRequest, next: Next<_>| {
            request_limit.clone().call(req, next)
        }))
        // Innermost first; see `http/hardening.rs` for why this order. Each gets its settings here.
        .wrap(from_fn(move |req: ServiceRequest, next: Next<_>| {
            hardening::timeout(request_timeout, req, next)
        }))
        .wrap(cors)
        .wrap(from_fn(hardening::cors_rejection))
        .wrap(from_fn(move |req: ServiceRequest, next: Next<_>| {
            hardening::security_headers(hsts, req, next)
        }))
        .wrap(Condition::new(sentry_on, from_fn(edge::sentry_tags)))
        .wrap(Condition::new(
            sentry_on,
            sentry::integrations::actix::Sentry::builder()
                .capture_server_errors(true)
                .emit_header(false)
                .finish(),
        ))
        .wrap(from_fn(crate::http::metrics::track))
        .wrap(from_fn(edge::edge))
}

/// Binds the listener and returns the server with the port it got (use port 0 in tests).
///
/// This is what `actix_web::HttpServer::listen` assembles (actix-server, actix-http's HTTP/1
/// service, the app), with one addition: every accepted connection is wrapped in
/// [`wire::Guarded`], which answers malformed and late request heads with a problem (actix-http's
/// own head timer is off; the guard keeps `CLIENT_REQUEST_TIMEOUT`). HTTP/1.x only, as before.
pub fn build_server(state: AppState, listener: TcpListener, workers: Option<usize>) -> anyhow::Result<Server> {
    let http = state.config.http.clone();
    let data = web::Data::new(state);
    crate::metrics::handle(); // installs the recorder (once per process)
    let caches: Vec<&'static str> = cache::ns::ALL.iter().copied().chain([session_cache::CACHE]).collect();
    crate::metrics::register_known(&caches, data.config.rate_limits.policies().map(|p| p.name));
    // `/metrics` on its own listener: it lives as long as this server's app factory (the guard).
    let metrics_server = match http.metrics_addr {
        Some(addr) => {
            let l = TcpListener::bind(addr).with_context(|| format!("cannot bind METRICS_ADDR {addr}"))?;
            let handle = serve_metrics_separately(data.clone(), l)?;
            Some(Arc::new(StopOnDrop(handle)))
        }
        None => None,
    };
    let addr = listener.local_addr()?;
    let wire = WireSettings {
        head_timeout: http.client_request_timeout,
        hsts: http.hsts,
    };
    let mut builder = actix_server::Server::build()
        // Per worker; TLS ends at the proxy, so `max_connection_rate` (TLS handshakes) does not apply.
        .max_concurrent_connections(http.max_connections)
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        // Signals are [`stop_on_signals`]'s: SIGTERM drains first (SHUTDOWN_DELAY).
        .disable_signals();
    if let Some(n) = workers {
        builder = builder.workers(n);
    }
    // Lets keep-alive connections close at once on shutdown instead of idling out.
    let shutdown = builder.graceful_shutdown_signal();
    let keep_alive = http.keep_alive.map_or(KeepAlive::Disabled, KeepAlive::Timeout);
    let disconnect_timeout = http.client_disconnect_timeout;
    let server = builder
        .listen("api", listener, move || {
            let _metrics_server = &metrics_server;
            let shutdown = shutdown.clone();
            let app = app(data.clone())
                .into_factory()
                .map_err(|err: actix_web::Error| err.error_response());
            let h1 = HttpService::build()
                .graceful_shutdown_signal(move || {
                    let signal = shutdown.clone();
                    async move { signal.notified().await }
                })
                .keep_alive(keep_alive)
                // The guard times request heads and answers late ones with a problem.
                .client_request_timeout(Duration::ZERO)
                .client_disconnect_timeout(disconnect_timeout)
                // A refused head ends the stream: requests already in flight still get answered.
                .h1_allow_half_closed(true)
                .local_addr(addr)
                // Nothing in the app reads the host or scheme of `AppConfig` (only the peer address,
                // which the dispatcher sets), and actix-web builds the real one privately.
                .h1(map_config(app, |_| AppConfig::default()));
            fn_service(move |io: TcpStream| async move {
                let _ = io.set_nodelay(true);
                let peer = io.peer_addr().ok();
                Ok::<_, DispatchError>((wire::Guarded::new(io, peer, wire), peer))
            })
            .and_then(h1)
        })?
        .run();
    Ok(server)
}

/// How long in-flight requests get once the server stops accepting (then they are cut off).
pub const SHUTDOWN_TIMEOUT_SECS: u64 = 30;

/// Stops `server` on a signal, the way a load balancer needs it:
/// - SIGTERM: `/health/ready` answers 503 at once (`draining`), the listener keeps serving for
///   `delay` (`SHUTDOWN_DELAY`) so load balancers and Kubernetes endpoints stop routing here, then
///   the server stops accepting, finishes in-flight requests (≤ [`SHUTDOWN_TIMEOUT_SECS`]) and
///   `api serve` exits 0. A second SIGTERM or a Ctrl-C during the delay cuts it short.
/// - SIGINT (Ctrl-C, `just run`): the graceful stop at once, no delay.
/// - SIGQUIT: stop at once, in-flight requests dropped.
pub async fn stop_on_signals(server: ServerHandle, draining: crate::state::Draining, delay: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut quit)) = (signal(SignalKind::terminate()), signal(SignalKind::quit())) else {
        tracing::error!("cannot install signal handlers; stopping on Ctrl-C only");
        let _ = tokio::signal::ctrl_c().await;
        server.stop(true).await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {
            draining.start();
            tracing::info!(delay_ms = delay.as_millis() as u64, "SIGTERM: not ready any more; serving until SHUTDOWN_DELAY has passed");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = term.recv() => tracing::info!("second SIGTERM: stopping now"),
                _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: stopping now"),
            }
            tracing::info!("stopping: no new connections, finishing in-flight requests");
            server.stop(true).await;
        }
        _ = tokio::signal::ctrl_c() => {
            draining.start();
            server.stop(true).await;
        }
        _ = quit.recv() => {
            draining.start();
            server.stop(false).await;
        }
    }
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

/// Serves `/metrics` alone on `listener` (`METRICS_ADDR`): its own single worker, so scrapes work
/// even when the API's workers are saturated or at their connection limit. Spawned on the
/// current runtime; stop it with the returned handle (see [`StopOnDrop`]).
pub fn serve_metrics_separately(data: web::Data<AppState>, listener: TcpListener) -> anyhow::Result<ServerHandle> {
    let hsts = data.config.http.hsts;
    let server = actix_web::HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .configure(routes::metrics::configure)
            .default_service(web::to(|| async { HttpResponse::NotFound().finish() }))
            .wrap(from_fn(move |req: ServiceRequest, next: Next<_>| {
                hardening::security_headers(hsts, req, next)
            }))
            .wrap(from_fn(edge::edge))
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
