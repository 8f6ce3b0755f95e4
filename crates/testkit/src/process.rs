//! The real `api` binary as a child process against a fresh test database: for what only a
//! process of its own shows, such as its metrics. The `metrics` recorder is process-global, so
//! every [`crate::TestApp`] of a test binary feeds the same one; a child process has its own, and
//! its counters are exact.

use std::{
    fs,
    ops::Deref,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use uuid::Uuid;

use crate::{Http, TEST_JWT_SECRET, TestDb, free_port, metrics::Metrics, redis_url};

/// A running `api serve`. Dereferences to its [`Http`] client, so the typed helpers work on it.
pub struct ApiProcess {
    http: Http,
    child: Child,
    log: PathBuf,
    bin: String,
    extra: Vec<(String, String)>,
    port: u16,
    pub redis_prefix: String,
    /// Dropped after the process (see `Drop`).
    pub db: TestDb,
}

impl ApiProcess {
    /// Starts `bin` (pass `env!("CARGO_BIN_EXE_api")`) on a free port with test settings plus
    /// `extra` variables, and waits until `/health/live` answers.
    pub async fn spawn(bin: &str, extra: &[(&str, &str)]) -> Self {
        let db = TestDb::create().await;
        let port = free_port();
        let redis_prefix = format!("test:{}", Uuid::new_v4().simple());
        let log = std::env::temp_dir().join(format!("taskshop-api-{}.log", Uuid::new_v4()));
        let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let child = Self::start(bin, &db, port, &redis_prefix, &log, &extra);
        let mut this = Self {
            http: Http::new(format!("http://127.0.0.1:{port}")),
            child,
            log,
            bin: bin.to_owned(),
            extra,
            port,
            redis_prefix,
            db,
        };
        this.wait_live().await;
        this
    }

    fn start(
        bin: &str,
        db: &TestDb,
        port: u16,
        redis_prefix: &str,
        log: &PathBuf,
        extra: &[(String, String)],
    ) -> Child {
        let out = fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env_clear()
            .envs(crate::inherited_env())
            .env("APP_ENV", "test")
            .env("RUST_LOG", "warn")
            .env("DATABASE_URL", &db.url)
            .env("REDIS_URL", redis_url())
            .env("REDIS_PREFIX", redis_prefix)
            .env("JWT_SECRET", TEST_JWT_SECRET)
            .env("BCRYPT_COST", "4")
            .env("API_WORKERS", "1")
            .env("API_ADDR", format!("127.0.0.1:{port}"))
            // Tests stop it with SIGTERM: no drain delay unless a test asks for one (`extra`).
            .env("SHUTDOWN_DELAY", "0s")
            // An empty directory: a developer's .env is not picked up.
            .current_dir(std::env::temp_dir())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap_or_else(|e| panic!("cannot start {bin}: {e}"))
    }

    /// Kills the process at once (SIGKILL: no shutdown, no cleanup), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The child's process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the process again (same database, Redis prefix and port) after [`Self::kill`].
    pub async fn restart(&mut self) {
        self.child = Self::start(
            &self.bin,
            &self.db,
            self.port,
            &self.redis_prefix,
            &self.log,
            &self.extra,
        );
        self.wait_live().await;
    }

    async fn wait_live(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("api exited with {status} before answering:\n{}", self.log());
            }
            if let Ok(res) = self.client.get(self.url("/health/live")).send().await
                && res.status().is_success()
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "api did not answer /health/live within 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /metrics`, parsed.
    pub async fn metrics(&self) -> Metrics {
        crate::metrics::scrape(&self.url("/metrics")).await
    }
}

impl Deref for ApiProcess {
    type Target = Http;
    fn deref(&self) -> &Http {
        &self.http
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- api log ({}) ----\n{}", self.log.display(), self.log());
        }
        // SIGTERM first, so the process exits normally (and writes its coverage profile under
        // `just coverage`); SIGKILL if it has not gone within 3 s.
        crate::stop_child(&mut self.child, std::time::Duration::from_secs(3));
        let _ = fs::remove_file(&self.log);
    }
}

/// The `worker` binary beside `api_bin` (pass `env!("CARGO_BIN_EXE_api")`), built first: an
/// api test does not build the worker's binary by itself (`cargo test --workspace` does, and
/// then this is a no-op). Built once per test process.
pub fn worker_binary(api_bin: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let api = PathBuf::from(api_bin);
            let dir = api.parent().expect("the api binary's directory").to_path_buf();
            let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_owned();
            let target_dir = dir.parent().expect("the target directory");
            let profile = if profile == "debug" { "dev".to_owned() } else { profile };
            let status = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "worker",
                    "--bin",
                    "worker",
                    "--profile",
                    &profile,
                ])
                .arg("--target-dir")
                .arg(target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build for the worker");
            assert!(status.success(), "cargo build -p worker failed");
            dir.join("worker")
        })
        .clone()
}

/// A running `worker` (see [`worker_binary`]) against an [`ApiProcess`]'s database and Redis
/// prefix, with test settings plus `extra` variables. JSON logs at `RUST_LOG=warn`.
pub struct WorkerProcess {
    child: Child,
    log: PathBuf,
}

impl WorkerProcess {
    pub fn spawn(bin: &std::path::Path, api: &ApiProcess, extra: &[(&str, &str)]) -> Self {
        let log = std::env::temp_dir().join(format!("taskshop-worker-{}.log", Uuid::new_v4()));
        let out = fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .env_clear()
            .envs(crate::inherited_env())
            .env("APP_ENV", "test")
            .env("RUST_LOG", "warn")
            .env("DATABASE_URL", &api.db.url)
            .env("REDIS_URL", redis_url())
            .env("REDIS_PREFIX", &api.redis_prefix)
            .env("PUBLIC_URL", "http://localhost:8080")
            .env("OUTBOX_POLL", "200ms")
            .env(
                "MAIL_DIR",
                std::env::temp_dir().join(format!("taskshop-eml-{}", Uuid::new_v4())),
            )
            .env("WORKER_METRICS_ADDR", "off")
            .current_dir(std::env::temp_dir())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Self {
            child: cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display())),
            log,
        }
    }

    /// What the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then up to `grace` to exit (flushing its exporters), then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        crate::stop_child(&mut self.child, grace);
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- worker log ({}) ----\n{}", self.log.display(), self.log());
        }
        crate::stop_child(&mut self.child, Duration::from_secs(3));
        let _ = fs::remove_file(&self.log);
    }
}
