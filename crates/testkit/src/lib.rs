//! Test harness: [`TestApp::spawn`] starts the real API (the same `startup::build` as `api serve`)
//! on port 0 against a fresh Postgres database cloned from a migrated template, with its own Redis
//! key prefix, and drops the database when the test ends.
//!
//! Environment: `TEST_DATABASE_URL` (an admin connection, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`).

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::{sync::OnceLock, time::Duration};

use api::{
    config::{AppEnv, Config, JwtKeySource, LogFormat},
    state::AppState,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

pub use reqwest::{Method, StatusCode};

pub const TEMPLATE_DB: &str = "taskshop_test_template";
pub const TEST_JWT_SECRET: &str = "test-secret-that-is-long-enough-for-hs256-0123456789";
pub const PASSWORD: &str = "password-1234";

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
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
        // Off by default (every test client is 127.0.0.1); the rate-limit tests turn it on.
        rate_limits: api::ratelimit::RateLimitConfig::disabled(),
        http: api::hardening::HttpSettings::default(),
    }
}

/// A running API with its own database.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    server: actix_web::dev::ServerHandle,
    // Dropped last: the database outlives the server (shared with siblings).
    pub db: std::sync::Arc<TestDb>,
}

/// A signed-in user: ids and the token pair.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: Uuid,
    pub email: String,
    pub access: String,
    pub refresh: String,
}

/// A response: status, headers and the body parsed as JSON (Null when empty or not JSON).
#[derive(Debug)]
pub struct Res {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Res {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem+json body with this status and code; returns the body.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "body: {}",
            self.body
        );
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["detail"].is_string() && self.body["type"].is_string());
        assert_eq!(
            Some(self.body["request_id"].as_str().unwrap()),
            self.header("x-request-id")
        );
        &self.body
    }

    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.body.clone()).unwrap()
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
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            state,
            server: handle,
            db,
        }
    }

    /// A second API instance (its own server, pools, cache and limiter) on the same database and
    /// the same Redis prefix: what two instances behind a load balancer share.
    pub async fn sibling(&self) -> Self {
        let config = (*self.state.config).clone();
        Self::start(config, self.db.clone()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Res {
        let res = req.send().await.expect("request failed");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Res { status, headers, body }
    }

    pub async fn request(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Res {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Res {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Res {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Res {
        self.request(Method::PATCH, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Res {
        self.request(Method::DELETE, path, token, None).await
    }

    /// Signs up a new user with [`PASSWORD`].
    pub async fn signup(&self, email: &str) -> Session {
        let res = self
            .post(
                "/v1/auth/signup",
                None,
                json!({"email": email, "password": PASSWORD, "name": "Test User"}),
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "signup failed: {}", res.body);
        Session {
            user_id: res.body["user"]["id"].as_str().unwrap().parse().unwrap(),
            email: email.to_lowercase(),
            access: res.body["access_token"].as_str().unwrap().to_owned(),
            refresh: res.body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn login(&self, email: &str, password: &str) -> Res {
        self.post("/v1/auth/login", None, json!({"email": email, "password": password}))
            .await
    }

    /// Signs up a user and makes it an admin (directly in the database), then logs in again so
    /// the session is fresh.
    pub async fn admin(&self, email: &str) -> Session {
        let s = self.signup(email).await;
        let mut conn = self.state.db.get().await.unwrap();
        let changes = db::users::UserChanges {
            role: Some("admin"),
            ..Default::default()
        };
        db::users::update(&mut conn, s.user_id, &changes).await.unwrap();
        s
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
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
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
