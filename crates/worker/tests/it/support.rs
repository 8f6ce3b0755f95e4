//! Real processes for the worker's tests: the `worker` binary, an SMTP server (aiosmtpd, see
//! `smtp_sink.py`) and, for outage tests, a test-owned `redis-server`.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use testkit::{TestApp, metrics::Metrics};
pub use testkit::{eventually, free_port};

fn wait_port(port: u16, timeout: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < timeout, "nothing listens on {port} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Smtp {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Smtp {
    pub fn start(rcpt_delay_secs: f64) -> Self {
        Self::start_on(free_port(), rcpt_delay_secs, None)
    }

    pub fn start_on(port: u16, rcpt_delay_secs: f64, dir: Option<PathBuf>) -> Self {
        let dir = dir.unwrap_or_else(|| std::env::temp_dir().join(format!("taskshop-mail-{}", uuid::Uuid::new_v4())));
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_sink.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(&dir)
            .arg(rcpt_delay_secs.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with aiosmtpd (deploy/scripts/ensure-tools.sh installs it)");
        wait_port(port, Duration::from_secs(15));
        Self { child, port, dir }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, oldest first, as raw RFC 5322 text.
    pub fn messages(&self) -> Vec<String> {
        self.files("eml")
    }

    /// The recipients of every RCPT TO received so far, oldest first: a send that has begun, even
    /// while the server holds its answer.
    pub fn recipients_seen(&self) -> Vec<String> {
        self.files("rcpt")
    }

    /// The contents of the sink's finished `*.<ext>` files, oldest first. The sink writes each
    /// to a hidden `.<name>` first and renames it when complete: those are not read.
    fn files(&self, ext: &str) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return vec![];
        };
        let mut names: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .filter(|p| p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.')))
            .collect();
        names.sort();
        names.iter().map(|p| fs::read_to_string(p).unwrap()).collect()
    }

    /// Messages whose headers name this recipient and subject.
    pub fn find(&self, to: &str, subject: &str) -> Vec<String> {
        self.messages()
            .into_iter()
            .filter(|m| m.contains(to) && m.contains(&format!("Subject: {subject}")))
            .collect()
    }

    pub async fn wait_for(&self, to: &str, subject: &str, timeout: Duration) -> String {
        eventually(timeout, &format!("mail '{subject}' to {to}"), || async {
            self.find(to, subject).into_iter().next()
        })
        .await
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub struct Worker {
    child: Child,
    pub log: PathBuf,
    /// `http://…/metrics` when started with [`Worker::spawn_with_metrics`].
    metrics_url: Option<String>,
}

impl Worker {
    /// Starts `worker` against the app's database and Redis prefix.
    pub fn spawn(app: &TestApp, smtp: Option<&Smtp>, extra: &[(&str, String)]) -> Self {
        let log = std::env::temp_dir().join(format!("taskshop-worker-{}.log", uuid::Uuid::new_v4()));
        let out = fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker"));
        cmd.env_clear()
            .envs(testkit::inherited_env())
            .env("APP_ENV", "test")
            .env("RUST_LOG", "info")
            .env("LOG_FORMAT", "json")
            .env("DATABASE_URL", &app.db.url)
            .env(
                "REDIS_URL",
                secrecy::ExposeSecret::expose_secret(&app.state.config.redis_url),
            )
            .env("REDIS_PREFIX", &app.state.config.redis_prefix)
            .env("PUBLIC_URL", "http://localhost:8080")
            .env("WORKER_HEARTBEAT", "2s")
            .env("JOB_BACKOFF_BASE", "200ms")
            .env("JOB_BACKOFF_CAP", "1s")
            .env("OUTBOX_POLL", "200ms")
            .env("MAIL_DIR", std::env::temp_dir().join("taskshop-eml-unused"))
            // Many workers run at once: no metrics listener unless a test asks for one (`extra`).
            .env("WORKER_METRICS_ADDR", "off")
            .current_dir(std::env::temp_dir())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        if let Some(smtp) = smtp {
            cmd.env("SMTP_URL", smtp.url());
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().unwrap(),
            log,
            metrics_url: None,
        }
    }

    /// [`Worker::spawn`] with its metrics listener on a free port (see [`Worker::metrics`]).
    pub fn spawn_with_metrics(app: &TestApp, smtp: Option<&Smtp>, extra: &[(&str, String)]) -> Self {
        let port = free_port();
        let mut extra = extra.to_vec();
        extra.push(("WORKER_METRICS_ADDR", format!("127.0.0.1:{port}")));
        let mut worker = Self::spawn(app, smtp, &extra);
        worker.metrics_url = Some(format!("http://127.0.0.1:{port}/metrics"));
        wait_port(port, Duration::from_secs(30));
        worker
    }

    /// Scrapes the worker's metrics (a process of its own, so every count is this worker's).
    pub async fn metrics(&self) -> Metrics {
        let url = self.metrics_url.as_deref().expect("started with spawn_with_metrics");
        testkit::metrics::scrape(url).await
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "worker did not exit within {timeout:?} of SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- worker log ({}) ----\n{}", self.log.display(), self.log());
        }
        // SIGTERM first, so the process exits normally (and writes its coverage profile under
        // `just coverage`); SIGKILL if it has not gone within 3 s.
        testkit::stop_child(&mut self.child, std::time::Duration::from_secs(3));
        let _ = fs::remove_file(&self.log);
    }
}

pub use testkit::OwnRedis;

/// A TCP proxy to Postgres that a test can cut (every connection dropped, new ones refused) and
/// restore: a Postgres outage as the worker sees it, without stopping the shared server.
pub struct PgProxy {
    pub port: u16,
    target: String,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    accept: Option<tokio::task::JoinHandle<()>>,
    conns: Vec<tokio::task::JoinHandle<()>>,
}

impl PgProxy {
    /// Proxies to the host:port of `TEST_DATABASE_URL` (default 127.0.0.1:5432).
    pub async fn start() -> Self {
        let admin =
            std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let hostport = admin
            .split('@')
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or("127.0.0.1:5432")
            .to_owned();
        let p = Self {
            port: free_port(),
            target: hostport,
            state: Default::default(),
        };
        p.resume().await;
        p
    }

    /// The database URL through this proxy.
    pub fn url(&self, direct: &str) -> String {
        direct.replacen(&self.target, &format!("127.0.0.1:{}", self.port), 1)
    }

    pub async fn resume(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let state = self.state.clone();
        let target = self.target.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                state.lock().unwrap().conns.push(conn);
            }
        });
        self.state.lock().unwrap().accept = Some(accept);
    }

    pub fn cut(&self) {
        let mut s = self.state.lock().unwrap();
        if let Some(a) = s.accept.take() {
            a.abort();
        }
        for c in s.conns.drain(..) {
            c.abort();
        }
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Audit rows of one event type in the app's database.
pub async fn count_audit(app: &TestApp, kind: &str) -> i64 {
    use db::schema::audit_log::dsl::*;
    use diesel::{ExpressionMethods, QueryDsl};
    use diesel_async::RunQueryDsl;
    let mut conn = app.state.db.get().await.unwrap();
    audit_log
        .filter(event_type.eq(kind))
        .count()
        .get_result(&mut conn)
        .await
        .unwrap()
}
