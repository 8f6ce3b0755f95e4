//! Test harness: [`TestApp::spawn`] starts the real API (the same `startup::build` as `api serve`)
//! on port 0 against a fresh Postgres database cloned from a migrated template, with its own Redis
//! key prefix, and drops the database when the test ends.
//!
//! - [`http`]: raw requests returning a [`Res`], and typed helpers that read like the API
//!   (`app.signup(email)` → [`Session`], `app.login(..)` → [`Tokens`],
//!   `app.create_task(token, &NewTask::titled("x"))` → [`Task`]); bodies are the test-side
//!   structs and builders of [`model`].
//! - [`TestApp::run_jobs`]: the outbox's pending jobs run in-process through the worker's own
//!   handlers, with the mail kept in memory ([`TestApp::mail_to`], [`Mail::link_token`]).
//! - [`ApiProcess`]: the real `api` binary as a child process, for what needs a process of its
//!   own (its metrics); [`metrics::Metrics`] reads an exposition by exact label set.
//! - [`browser::drive`]: the account pages in headless chromium, driven by pip playwright.
//! - [`oidc::OidcProvider`]: a real OpenID provider over HTTP (discovery, JWKS, authorize, token).
//! - [`OwnRedis`]: a `redis-server` a test can stop and restart.
//!
//! Environment: `TEST_DATABASE_URL` (an admin connection, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`).

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod browser;
pub mod http;
mod jobs;
pub mod metrics;
pub mod model;
pub mod oidc;
mod process;
pub mod shop;
pub mod sink;

use std::{ops::Deref, sync::OnceLock, time::Duration};

use api::{
    config::{AppEnv, Config, JwtKeySource, LogFormat},
    state::AppState,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

pub use domain::jobs::Job;
pub use http::{Http, Method, Res, StatusCode};
pub use jobs::{MAIL_FROM, Mail};
pub use model::{
    AuditEvent, Category, CategoryRef, NewTask, NewUser, Page, Role, Session, SessionInfo, SignedUp, Task, Tokens, User,
};
pub use process::{ApiProcess, WorkerProcess, worker_binary};

pub const TEMPLATE_DB: &str = "taskshop_test_template";
pub const TEST_JWT_SECRET: &str = "test-secret-that-is-long-enough-for-hs256-0123456789";
pub const PASSWORD: &str = "password-1234";

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A port nothing listens on right now (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `postgres://user@host:port/<name>` from the admin URL.
pub fn db_url(name: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

/// Creates (once per test process, serialised across processes by an advisory lock) the template
/// database with every migration applied. Runs on its own thread: the migration harness needs a
/// multi-thread runtime.
fn ensure_template() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut admin = AsyncPgConnection::establish(&admin_url())
                    .await
                    .expect("TEST_DATABASE_URL must answer");
                diesel::sql_query("SELECT pg_advisory_lock(727274)")
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let exists: i64 = diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
                    "SELECT count(*) FROM pg_database WHERE datname = '{TEMPLATE_DB}'"
                ))
                .get_result(&mut admin)
                .await
                .unwrap();
                if exists == 0 {
                    diesel::sql_query(format!("CREATE DATABASE {TEMPLATE_DB}"))
                        .execute(&mut admin)
                        .await
                        .unwrap();
                }
                db::run_migrations(&db_url(TEMPLATE_DB))
                    .await
                    .expect("migrating the template");
                diesel::sql_query("SELECT pg_advisory_unlock(727274)")
                    .execute(&mut admin)
                    .await
                    .unwrap();
            });
        })
        .join()
        .expect("template setup panicked");
    });
}

/// A fresh database cloned from the template; dropped (forcefully) when this value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        ensure_template();
        let name = format!("taskshop_t_{}", Uuid::new_v4().simple());
        let mut admin = AsyncPgConnection::establish(&admin_url()).await.unwrap();
        // Concurrent clones of one template can collide ("source database is being accessed"):
        // retry briefly.
        let mut attempt = 0;
        loop {
            match diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}"))
                .execute(&mut admin)
                .await
            {
                Ok(_) => break,
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50 + attempt * 10)).await;
                }
                Err(e) => panic!("cannot create test database: {e}"),
            }
        }
        Self {
            url: db_url(&name),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut admin) = AsyncPgConnection::establish(&admin_url()).await {
                    let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A configuration for tests: fast bcrypt, port 0, a unique Redis prefix.
pub fn test_config(database_url: &str) -> Config {
    Config {
        app_env: AppEnv::Test,
        database_url: database_url.to_owned().into(),
        database_pool_size: 10,
        redis_url: redis_url().into(),
        redis_pool_size: 4,
        redis_prefix: format!("test:{}", Uuid::new_v4().simple()),
        outbox_visibility: std::time::Duration::from_secs(60),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        api_workers: Some(2),
        jwt: JwtKeySource::Secret(TEST_JWT_SECRET.to_owned().into()),
        access_token_ttl: Duration::from_secs(900),
        refresh_token_ttl: Duration::from_secs(86_400),
        bcrypt_cost: 4,
        public_url: "http://localhost:8080".into(),
        log_format: LogFormat::Pretty,
        cache_enabled: true,
        cache_ttl: Duration::from_secs(60),
        auth_cache: api::config::AuthCacheConfig::default(),
        // Off by default (every test client is 127.0.0.1); the rate-limit tests turn it on.
        rate_limits: api::config::RateLimitConfig::disabled(),
        http: api::config::HttpSettings::default(),
        shop: api::config::ShopConfig {
            currencies: domain::shop::Currency::parse_list("EUR,USD,GBP,JPY").unwrap(),
            payment_timeout: Duration::from_secs(900),
            webhook_secret: TEST_WEBHOOK_SECRET.to_owned().into(),
        },
        oidc: api::config::oidc::OidcConfig::default(),
        sentry: None,
    }
}

/// The payment webhook secret of [`test_config`].
pub const TEST_WEBHOOK_SECRET: &str = "test-payment-webhook-secret";

/// A running API with its own database. Dereferences to its [`Http`] client: `app.get(..)`,
/// `app.signup(..)`, `app.create_task(..)`.
pub struct TestApp {
    http: Http,
    pub state: AppState,
    server: actix_web::dev::ServerHandle,
    jobs: jobs::JobRunner,
    // Dropped last: the database outlives the server (shared with siblings).
    pub db: std::sync::Arc<TestDb>,
}

impl Deref for TestApp {
    type Target = Http;
    fn deref(&self) -> &Http {
        &self.http
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns with a tweaked configuration.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::create().await;
        let mut config = test_config(&db.url);
        tweak(&mut config);
        Self::start(config, std::sync::Arc::new(db)).await
    }

    async fn start(config: Config, db: std::sync::Arc<TestDb>) -> Self {
        let (server, port, state) = api::startup::build(config).await.expect("app starts");
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            http: Http::new(format!("http://127.0.0.1:{port}")),
            jobs: jobs::JobRunner::new(&state),
            state,
            server: handle,
            db,
        }
    }

    /// An app whose `test` provider is `provider` (`OIDC_PROVIDERS=test`), reachable at its
    /// `PUBLIC_URL` (a port chosen up front), so redirect URIs and return URLs are real.
    pub async fn spawn_with_oidc(provider: &oidc::OidcProvider, tweak: impl FnOnce(&mut Config)) -> Self {
        let issuer = provider.issuer.clone();
        Self::spawn_with(move |c| {
            let port = free_port();
            c.api_addr = ([127, 0, 0, 1], port).into();
            c.public_url = format!("http://127.0.0.1:{port}");
            c.oidc = api::config::oidc::OidcConfig {
                providers: vec![api::config::oidc::OidcProvider {
                    name: "test".into(),
                    issuer,
                    client_id: oidc::CLIENT_ID.into(),
                    client_secret: oidc::CLIENT_SECRET.to_owned().into(),
                }],
                return_urls: vec![format!("http://127.0.0.1:{port}/login")],
            };
            tweak(c);
        })
        .await
    }

    /// A second API instance (its own server, pools, cache and limiter) on the same database and
    /// the same Redis prefix: what two instances behind a load balancer share.
    pub async fn sibling(&self) -> Self {
        let config = (*self.state.config).clone();
        Self::start(config, self.db.clone()).await
    }

    /// Signs up a user and makes it an admin (directly in the database: no endpoint grants the
    /// first admin); `user` is re-read, so it shows the role.
    pub async fn admin(&self, email: &str) -> Session {
        let mut s = self.signup(email).await;
        let mut conn = self.state.db.get().await.unwrap();
        let promoted = diesel::sql_query("UPDATE users SET role = 'admin' WHERE id = $1")
            .bind::<diesel::sql_types::Uuid, _>(s.user_id)
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(promoted, 1);
        s.user = self.me(&s.access).await;
        assert_eq!(s.user.role, Role::Admin);
        s
    }

    /// Runs every pending job of this app's outbox in-process, through the worker's handlers
    /// (see the `jobs` module), and returns them in the order they ran. Panics if one does
    /// not finish.
    pub async fn run_jobs(&self) -> Vec<Job> {
        self.jobs.run_pending().await
    }

    /// Every message the in-process jobs sent, oldest first.
    pub fn mail(&self) -> Vec<Mail> {
        self.jobs.mail()
    }

    /// The messages sent to `address`, oldest first.
    pub fn mail_to(&self, address: &str) -> Vec<Mail> {
        self.mail().into_iter().filter(|m| m.to == address).collect()
    }

    /// The one message sent to `address` with this subject; panics unless there is exactly one.
    #[track_caller]
    pub fn the_mail(&self, address: &str, subject: &str) -> Mail {
        let mut found: Vec<Mail> = self
            .mail_to(address)
            .into_iter()
            .filter(|m| m.subject == subject)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one {subject:?} to {address} expected; sent: {:#?}",
            self.mail().iter().map(|m| (&m.to, &m.subject)).collect::<Vec<_>>()
        );
        found.remove(0)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop accepting; the forced DROP DATABASE in TestDb closes what is left.
        drop(self.server.stop(false));
    }
}

/// A `redis-server` owned by one test, so the test can stop and restart it.
pub struct OwnRedis {
    child: Option<std::process::Child>,
    pub port: u16,
}

impl OwnRedis {
    pub fn start() -> Self {
        let port = free_port();
        let mut r = Self { child: None, port };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a child process started with `env_clear()` still inherits: `PATH`, and under
/// `just coverage` the profile path (`LLVM_PROFILE_FILE`), so spawned `api`/`worker` binaries
/// count towards the coverage figure.
pub fn inherited_env() -> Vec<(&'static str, String)> {
    ["PATH", "LLVM_PROFILE_FILE"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k, v)))
        .collect()
}

/// Stops a child process: SIGTERM, up to `grace` for it to exit, then SIGKILL.
pub fn stop_child(child: &mut std::process::Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let start = std::time::Instant::now();
    while start.elapsed() < grace {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
