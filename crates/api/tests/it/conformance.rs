//! HTTP conformance (issue 8, item 10): HEAD on every GET route, actix-http's own 400/408/431
//! as problems with a request id and the security headers (logged at WARN, not ERROR),
//! `Retry-After` on every 503, and 408 (not 503) for a client that stalls mid-body. Raw TCP where
//! reqwest would not send what a broken client sends.

use std::{
    fmt::Write as _,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use api::http::hardening::API_CSP;
use serde_json::{Value, json};
use testkit::{Method, StatusCode, TestApp};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tracing_subscriber::{Layer, layer::SubscriberExt};

/// One response read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    /// Lower-cased names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A problem body with this status and code, whose request id is the header's.
    #[track_caller]
    fn assert_problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["status"], status);
        let id = self.header("x-request-id").expect("x-request-id");
        assert_eq!(body["request_id"], id, "{body}");
        assert_eq!(self.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(self.header("x-frame-options"), Some("DENY"));
        assert_eq!(self.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(self.header("content-security-policy"), Some(API_CSP));
        assert_eq!(self.header("cache-control"), Some("no-store"));
        body
    }
}

/// Splits what a server wrote into responses (every response here has a `Content-Length`;
/// `head_requests` says which answer a HEAD and so have no body).
fn responses(mut raw: &[u8], head_requests: &[bool]) -> Vec<RawResponse> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let body_len = if head_requests.get(out.len()).copied().unwrap_or(false) {
            0
        } else {
            len
        };
        let body_end = (end + 4 + body_len).min(raw.len());
        out.push(RawResponse {
            status,
            headers,
            body: raw[end + 4..body_end].to_vec(),
        });
        raw = &raw[body_end..];
    }
    out
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Writes `bytes`, then reads until the server closes the connection (at most 10 s).
async fn exchange(app: &TestApp, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr(app)).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_to_close(&mut stream).await
}

async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the server did not close the connection; got {:?}",
        String::from_utf8_lossy(&out)
    );
    out
}

#[tokio::test]
async fn head_is_answered_by_every_get_route_like_get_without_a_body() {
    let app = TestApp::spawn().await;
    let admin = app.admin("head-admin@example.com").await;
    let task = app
        .post("/v1/tasks", Some(&admin.access), json!({"title": "Head"}))
        .await;
    let task_path = format!("/v1/tasks/{}", task.body["id"].as_str().unwrap());
    let user_path = format!("/v1/users/{}", admin.user_id);
    for path in [
        "/health/live",
        "/health/ready",
        "/metrics",
        "/openapi.json",
        "/docs/",
        "/v1/auth/sessions",
        "/v1/users/me",
        "/v1/users",
        user_path.as_str(),
        "/v1/audit-events",
        "/v1/categories",
        "/v1/tasks",
        task_path.as_str(),
    ] {
        let get = app
            .client
            .get(app.url(path))
            .bearer_auth(&admin.access)
            .send()
            .await
            .unwrap();
        let head = app
            .client
            .head(app.url(path))
            .bearer_auth(&admin.access)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), get.status(), "HEAD {path}");
        assert!(get.status().is_success(), "GET {path}: {}", get.status());
        assert_eq!(
            head.headers().get("content-type"),
            get.headers().get("content-type"),
            "HEAD {path}"
        );
        assert!(head.headers().contains_key("x-request-id"), "HEAD {path}");
        let get_len = get.bytes().await.unwrap().len();
        let head_len: usize = head.headers()["content-length"].to_str().unwrap().parse().unwrap();
        if path != "/metrics" && path != "/health/ready" {
            // (Metrics change between the two requests; readiness too, in principle.)
            assert_eq!(head_len, get_len, "HEAD {path}: the length of the GET body");
        }
        assert!(head.bytes().await.unwrap().is_empty(), "HEAD {path} has no body");
    }

    // Errors too: the head of the problem, without it.
    let unauthorized = app.client.head(app.url("/v1/users/me")).send().await.unwrap();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unauthorized.headers()["content-type"], "application/problem+json");
    assert!(unauthorized.bytes().await.unwrap().is_empty());

    // On the wire: HEAD /health/live is GET's head, and the connection stays usable.
    let raw = exchange(
        &app,
        b"HEAD /health/live HTTP/1.1\r\nHost: x\r\n\r\nGET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let answers = responses(&raw, &[true, false]);
    assert_eq!(answers.len(), 2, "{:?}", String::from_utf8_lossy(&raw));
    assert_eq!((answers[0].status, answers[1].status), (200, 200));
    assert!(answers[0].body.is_empty());
    assert_eq!(answers[1].json()["status"], "ok");
    assert_eq!(
        answers[0].header("content-length"),
        Some(answers[1].body.len().to_string().as_str())
    );

    // A POST-only route still refuses HEAD; a 405 on a GET route names HEAD as allowed.
    let head_login = app.client.head(app.url("/v1/auth/login")).send().await.unwrap();
    assert_eq!(head_login.status(), StatusCode::METHOD_NOT_ALLOWED);
    let put = app.request(Method::PUT, "/v1/tasks", None, None).await;
    put.assert_problem(405, "method_not_allowed");
    assert_eq!(put.header("allow"), Some("GET, HEAD, POST"));
}

/// Events at WARN and above, from every thread of this test binary.
fn captured() -> &'static Mutex<Vec<(tracing::Level, String, String)>> {
    static EVENTS: OnceLock<Mutex<Vec<(tracing::Level, String, String)>>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        struct Capture;
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                let _ = write!(self.0, "{}={value:?} ", field.name());
            }
        }
        impl<S: tracing::Subscriber> Layer<S> for Capture {
            fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
                let mut fields = Fields(String::new());
                event.record(&mut fields);
                let meta = event.metadata();
                if let Some(events) = EVENTS.get() {
                    events
                        .lock()
                        .unwrap()
                        .push((*meta.level(), meta.target().to_owned(), fields.0));
                }
            }
        }
        let subscriber =
            tracing_subscriber::registry().with(Capture.with_filter(tracing_subscriber::filter::LevelFilter::WARN));
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in this binary");
        Mutex::new(Vec::new())
    })
}

#[tokio::test]
async fn actix_codec_rejections_are_problems_logged_at_warn() {
    let events = captured();
    let app = TestApp::spawn_with(|c| {
        c.http.client_request_timeout = Duration::from_millis(300);
        c.http.hsts = true;
    })
    .await;

    // A header line without a colon: 400.
    let raw = exchange(&app, b"GET /health/live HTTP/1.1\r\nHost: x\r\nNot a header\r\n\r\n").await;
    let bad = responses(&raw, &[]);
    assert_eq!(bad.len(), 1, "{:?}", String::from_utf8_lossy(&raw));
    bad[0].assert_problem(400, "bad_request");
    assert_eq!(bad[0].header("connection"), Some("close"));
    assert_eq!(
        bad[0].header("strict-transport-security"),
        Some(api::http::hardening::HSTS_VALUE)
    );
    let bad_id = bad[0].header("x-request-id").unwrap().to_owned();

    // After a good request on the same connection: that one is answered first, then the 400.
    let raw = exchange(
        &app,
        b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\nGET /health/live HTTP/1.1\r\nHost x\r\n\r\n",
    )
    .await;
    let pipelined = responses(&raw, &[]);
    assert_eq!(pipelined.len(), 2, "{:?}", String::from_utf8_lossy(&raw));
    assert_eq!(pipelined[0].status, 200);
    pipelined[1].assert_problem(400, "bad_request");

    // A bad method token and a bad version: 400 too.
    for request in [
        &b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &b"GET / HTTP/9.1\r\nHost: x\r\n\r\n"[..],
    ] {
        let raw = exchange(&app, request).await;
        responses(&raw, &[])
            .first()
            .unwrap_or_else(|| panic!("no answer: {:?}", String::from_utf8_lossy(&raw)))
            .assert_problem(400, "bad_request");
    }

    // More headers than actix-http parses (96): 431.
    let mut many = String::from("GET /health/live HTTP/1.1\r\nHost: x\r\n");
    for i in 0..120 {
        let _ = write!(many, "X-H{i}: v\r\n");
    }
    many.push_str("\r\n");
    let raw = exchange(&app, many.as_bytes()).await;
    responses(&raw, &[])
        .first()
        .unwrap_or_else(|| panic!("no answer: {:?}", String::from_utf8_lossy(&raw)))
        .assert_problem(431, "headers_too_large");

    // A head over 128 KiB: 431.
    let huge = format!(
        "GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(140 * 1024)
    );
    let raw = exchange(&app, huge.as_bytes()).await;
    responses(&raw, &[])
        .first()
        .unwrap_or_else(|| panic!("no answer: {:?}", String::from_utf8_lossy(&raw)))
        .assert_problem(431, "headers_too_large");

    // A head that stops half-way: 408 once CLIENT_REQUEST_TIMEOUT has passed.
    let started = Instant::now();
    let raw = exchange(&app, b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Par").await;
    let slow = responses(&raw, &[]);
    assert_eq!(slow.len(), 1, "{:?}", String::from_utf8_lossy(&raw));
    slow[0].assert_problem(408, "request_timeout");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // A malformed HEAD gets the head of the problem only.
    let raw = exchange(&app, b"HEAD /health/live HTTP/1.1\r\nHost: x\r\nBroken\r\n\r\n").await;
    let head = responses(&raw, &[true]);
    assert_eq!(
        (head.len(), head[0].status),
        (1, 400),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(raw.ends_with(b"\r\n\r\n"), "no body after the head");

    // The server is fine afterwards.
    assert_eq!(app.get("/health/live", None).await.status, StatusCode::OK);

    let events = events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|(level, _, fields)| *level == tracing::Level::WARN && fields.contains(&bad_id)),
        "a WARN line names the refused request's id {bad_id}: {events:?}"
    );
    let errors: Vec<_> = events
        .iter()
        .filter(|(level, target, fields)| {
            *level == tracing::Level::ERROR && target.starts_with("actix") && fields.contains("parse error")
        })
        .collect();
    assert!(
        errors.is_empty(),
        "actix-http logged the rejections at ERROR: {errors:?}"
    );
}

#[tokio::test]
async fn every_503_carries_retry_after() {
    // Readiness with Redis down.
    let app = TestApp::spawn_with(|c| c.redis_url = "redis://127.0.0.1:1".to_owned().into()).await;
    let ready = app.get("/health/ready", None).await;
    ready.assert_problem(503, "dependency_unavailable");
    assert_eq!(ready.header("retry-after"), Some("5"), "{:?}", ready.headers);
    let head = app.client.head(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(head.headers().contains_key("retry-after"));

    // A request abandoned after REQUEST_TIMEOUT (a full bcrypt verification at cost 13).
    let app = TestApp::spawn_with(|c| {
        c.bcrypt_cost = 13;
        c.http.request_timeout = Duration::from_millis(100);
    })
    .await;
    let slow = app
        .post(
            "/v1/auth/login",
            None,
            json!({"email": "nobody@example.com", "password": "password-1234"}),
        )
        .await;
    slow.assert_problem(503, "request_timeout");
    assert_eq!(slow.header("retry-after"), Some("5"), "{:?}", slow.headers);

    // The pool exhausted (its one connection held here): 503 after the pool's 5 s wait.
    let app = TestApp::spawn_with(|c| c.database_pool_size = 1).await;
    let s = app.signup("pool@example.com").await;
    let held = app.state.db.get().await.unwrap();
    let starved = app.get("/v1/users/me", Some(&s.access)).await;
    drop(held);
    starved.assert_problem(503, "service_unavailable");
    assert_eq!(starved.header("retry-after"), Some("5"));
}

#[tokio::test]
async fn a_client_stalling_mid_body_gets_408_not_503() {
    let app = TestApp::spawn_with(|c| c.http.request_timeout = Duration::from_millis(300)).await;
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    // Content-Length promises 100 bytes; 10 arrive, then nothing.
    stream
        .write_all(
            b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":",
        )
        .await
        .unwrap();
    let raw = read_to_close(&mut stream).await;
    let answers = responses(&raw, &[]);
    assert_eq!(answers.len(), 1, "{:?}", String::from_utf8_lossy(&raw));
    answers[0].assert_problem(408, "request_timeout");
    assert_eq!(
        answers[0].header("connection"),
        Some("close"),
        "the rest of the body must not be read as a request"
    );
    assert!(answers[0].header("retry-after").is_none());
    // (A handler slow on its own is still a 503: `hardening::slow_requests_time_out_with_a_problem`.)
}
