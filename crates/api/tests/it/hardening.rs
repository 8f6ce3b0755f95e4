//! Hardening and metrics: security headers (API, errors, the Swagger UI), CORS from the
//! allow-list, the request timeout, and `/metrics` on the API port or its own listener.

use std::time::{Duration, Instant};

use api::http::hardening::{API_CSP, DOCS_CSP, HSTS_VALUE};
use serde_json::json;
use testkit::{ApiProcess, Method, NewTask, Res, StatusCode, TestApp, eventually, metrics::Metrics};

const APP_ORIGIN: &str = "https://app.example.com";

#[track_caller]
fn assert_security_headers(res: &Res, csp: &str) {
    assert_eq!(
        res.header("x-content-type-options"),
        Some("nosniff"),
        "{:?}",
        res.headers
    );
    assert_eq!(res.header("x-frame-options"), Some("DENY"));
    assert_eq!(res.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(res.header("content-security-policy"), Some(csp));
}

#[tokio::test]
async fn security_headers_on_json_errors_and_docs() {
    let app = TestApp::spawn().await;

    let live = app.get("/health/live", None).await;
    assert_eq!(live.status, StatusCode::OK);
    assert_security_headers(&live, API_CSP);
    assert_eq!(live.header("cache-control"), Some("no-store"));
    assert_eq!(
        live.header("strict-transport-security"),
        None,
        "HSTS is off for http://"
    );

    // A 404 from the default service is replaced by a problem in the edge: the headers survive.
    let missing = app.get("/no/such/route", None).await;
    missing.assert_problem(404, "not_found");
    assert_security_headers(&missing, API_CSP);
    assert_eq!(missing.header("cache-control"), Some("no-store"));

    // Errors rendered by handlers (401) and by actix (405).
    let unauthorized = app.get("/v1/users/me", None).await;
    unauthorized.assert_problem(401, "unauthorized");
    assert_security_headers(&unauthorized, API_CSP);
    let not_allowed = app.request(Method::PUT, "/health/live", None, None).await;
    not_allowed.assert_problem(405, "method_not_allowed");
    assert_security_headers(&not_allowed, API_CSP);

    let docs = app.send(app.client.get(app.url("/docs/"))).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert_security_headers(&docs, DOCS_CSP);
    assert_ne!(
        docs.header("cache-control"),
        Some("no-store"),
        "docs assets may be cached"
    );
}

/// The Swagger UI renders under its CSP: the page has no inline script and no outside URL, every
/// script, stylesheet and icon it references loads from `/docs/` with the right type (nosniff
/// checks it), the stylesheet's only `url(...)`s are `data:` images, and the initializer points
/// at our spec with the outside validator off.
#[tokio::test]
async fn docs_render_with_their_assets() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = res.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "{html}");

    let mut assets = Vec::new();
    for tag in html.split('<').skip(1) {
        if tag.starts_with("script") {
            assert!(tag.contains("src="), "inline script would need 'unsafe-inline': <{tag}");
        }
        for attr in ["src=\"", "href=\""] {
            if let Some(start) = tag.find(attr) {
                let rest = &tag[start + attr.len()..];
                assets.push(rest[..rest.find('"').unwrap()].trim_start_matches("./").to_owned());
            }
        }
    }
    assert!(assets.iter().any(|a| a == "swagger-ui-bundle.js"), "{assets:?}");
    assert!(assets.iter().any(|a| a == "swagger-initializer.js"), "{assets:?}");
    assert!(assets.iter().any(|a| a == "swagger-ui.css"), "{assets:?}");

    for asset in &assets {
        let res = app.client.get(app.url(&format!("/docs/{asset}"))).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "/docs/{asset}");
        assert_eq!(res.headers()["content-security-policy"], DOCS_CSP);
        let ctype = res.headers()["content-type"].to_str().unwrap().to_owned();
        let expected = match asset.rsplit('.').next().unwrap() {
            "js" => "javascript",
            "css" => "text/css",
            "png" => "image/png",
            other => panic!("unexpected asset type {other}"),
        };
        assert!(ctype.contains(expected), "/docs/{asset}: {ctype}");
        let body = res.text().await.unwrap_or_default();
        if asset.ends_with(".css") {
            for (i, _) in body.match_indices("url(") {
                let target = body[i + 4..].trim_start_matches(['"', '\'']);
                assert!(
                    target.starts_with("data:"),
                    "/docs/{asset}: url({})",
                    &target[..40.min(target.len())]
                );
            }
        }
        if asset == "swagger-initializer.js" {
            assert!(body.contains("/openapi.json"), "{body}");
            assert!(body.contains(r#""validatorUrl": "none""#), "{body}");
        }
    }
    assert_eq!(app.get("/openapi.json", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn hsts_only_when_configured() {
    let app = TestApp::spawn_with(|c| c.http.hsts = true).await;
    for path in ["/health/live", "/nope", "/docs/"] {
        let res = app.send(app.client.get(app.url(path))).await;
        assert_eq!(res.header("strict-transport-security"), Some(HSTS_VALUE), "{path}");
    }
}

fn preflight(app: &TestApp, origin: &str, method: &str) -> reqwest::RequestBuilder {
    app.client
        .request(Method::OPTIONS, app.url("/v1/users/me"))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "authorization,content-type,idempotency-key",
        )
}

#[tokio::test]
async fn cors_serves_the_allow_list_only() {
    let app = TestApp::spawn_with(|c| {
        c.http.cors_origins = vec![APP_ORIGIN.to_owned(), "http://localhost:3000".to_owned()];
    })
    .await;

    // Preflight from an allowed origin.
    let pre = app.send(preflight(&app, APP_ORIGIN, "PATCH")).await;
    assert_eq!(pre.status, StatusCode::OK, "{}", pre.body);
    assert_eq!(pre.header("access-control-allow-origin"), Some(APP_ORIGIN));
    let methods = pre.header("access-control-allow-methods").unwrap().to_ascii_uppercase();
    for m in ["GET", "POST", "PATCH", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = pre.header("access-control-allow-headers").unwrap().to_ascii_lowercase();
    for h in ["authorization", "content-type", "idempotency-key", "x-request-id"] {
        assert!(headers.contains(h), "{headers}");
    }
    assert_eq!(pre.header("access-control-max-age"), Some("600"));
    assert_eq!(pre.header("access-control-allow-credentials"), None);
    assert_security_headers(&pre, API_CSP);

    // The actual request: the origin echoed (never `*`), the useful headers exposed.
    let s = app.signup("cors@example.com").await;
    let me = app
        .send(
            app.client
                .get(app.url("/v1/users/me"))
                .bearer_auth(&s.access)
                .header("origin", APP_ORIGIN),
        )
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.header("access-control-allow-origin"), Some(APP_ORIGIN));
    assert!(me.header("vary").unwrap().to_ascii_lowercase().contains("origin"));
    let exposed = me.header("access-control-expose-headers").unwrap().to_ascii_lowercase();
    for h in [
        "x-request-id",
        "x-cache",
        "ratelimit",
        "ratelimit-policy",
        "retry-after",
    ] {
        assert!(exposed.split(',').any(|e| e.trim() == h), "{exposed}");
    }
    // Errors too, including the ones the edge turns into problems, so browsers can read them.
    let missing = app
        .send(app.client.get(app.url("/v1/nothing")).header("origin", APP_ORIGIN))
        .await;
    missing.assert_problem(404, "not_found");
    assert_eq!(missing.header("access-control-allow-origin"), Some(APP_ORIGIN));

    // Other origins, `null`, a look-alike and the wrong port: no CORS headers at all. Simple
    // requests are still served (the browser hides the answer); preflights are refused with a
    // problem.
    for origin in [
        "https://evil.example.com",
        "null",
        "https://app.example.com.evil.io",
        "http://localhost:3001",
    ] {
        let res = app
            .send(app.client.get(app.url("/health/live")).header("origin", origin))
            .await;
        assert_eq!(res.status, StatusCode::OK, "{origin}");
        assert_eq!(res.header("access-control-allow-origin"), None, "{origin}");
        assert_security_headers(&res, API_CSP);

        let pre = app.send(preflight(&app, origin, "DELETE")).await;
        pre.assert_problem(400, "cors_rejected");
        assert_eq!(pre.header("access-control-allow-origin"), None, "{origin}");
        assert_security_headers(&pre, API_CSP);
    }

    // An allowed origin asking for a method or header outside the list.
    app.send(preflight(&app, APP_ORIGIN, "PUT"))
        .await
        .assert_problem(400, "cors_rejected");
    let odd_header = app.send(
        app.client
            .request(Method::OPTIONS, app.url("/v1/users/me"))
            .header("origin", APP_ORIGIN)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "x-secret-thing"),
    );
    odd_header.await.assert_problem(400, "cors_rejected");
}

#[tokio::test]
async fn cors_allows_nothing_by_default() {
    let app = TestApp::spawn().await;
    let res = app
        .send(app.client.get(app.url("/health/live")).header("origin", APP_ORIGIN))
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("access-control-allow-origin"), None);
    let pre = app.send(preflight(&app, APP_ORIGIN, "GET")).await;
    pre.assert_problem(400, "cors_rejected");
    assert_eq!(pre.header("access-control-allow-origin"), None);
}

/// A login for an unknown account runs a full bcrypt verification; at cost 13 that takes far
/// longer than the 100 ms budget, so the request is abandoned with a 503 problem. Fast requests
/// on the same app are unaffected.
#[tokio::test]
async fn slow_requests_time_out_with_a_problem() {
    let app = TestApp::spawn_with(|c| {
        c.bcrypt_cost = 13;
        c.http.request_timeout = Duration::from_millis(100);
        c.http.cors_origins = vec![APP_ORIGIN.to_owned()];
    })
    .await;
    let started = Instant::now();
    let res = app
        .send(
            app.client
                .post(app.url("/v1/auth/login"))
                .header("origin", APP_ORIGIN)
                .json(&json!({"email": "nobody@example.com", "password": "password-1234"})),
        )
        .await;
    let elapsed = started.elapsed();
    let body = res.assert_problem(503, "request_timeout");
    assert!(body["detail"].as_str().unwrap().contains("100 ms"), "{body}");
    // The 503 itself shows the handler was abandoned (finished, it answers 401); the bound is loose
    // because the whole suite shares two cores.
    assert!(elapsed < Duration::from_secs(2), "answered after {elapsed:?}");
    assert_security_headers(&res, API_CSP);
    assert_eq!(res.header("cache-control"), Some("no-store"));
    assert_eq!(res.header("access-control-allow-origin"), Some(APP_ORIGIN));

    assert_eq!(app.get("/health/live", None).await.status, StatusCode::OK);
    // Only this test times out a login, so the series is this test's even in the shared recorder.
    let metrics = scrape(&app.url("/metrics")).await;
    let timed_out = [("method", "POST"), ("route", "/v1/auth/login"), ("status", "503")];
    assert!(
        metrics.get("http_requests_total", &timed_out).is_some_and(|n| n >= 1.0),
        "the timeout is counted under its route:\n{}",
        metrics.text
    );
}

async fn scrape(url: &str) -> Metrics {
    let res = reqwest::get(url).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{url}");
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    Metrics::parse(&res.text().await.unwrap())
}

/// Counted in an `api` process of its own: the `metrics` recorder is process-global, so in this
/// test binary every app feeds the same counters; a separate process makes every number exact.
#[tokio::test]
async fn metrics_count_requests_by_route_pattern() {
    let api = ApiProcess::spawn(
        env!("CARGO_BIN_EXE_api"),
        &[("DATABASE_POOL_SIZE", "7"), ("REDIS_POOL_SIZE", "3")],
    )
    .await;
    let s = api.signup("metrics@example.com").await;
    for _ in 0..3 {
        api.me(&s.access).await;
    }
    let task = api.create_task(&s.access, &NewTask::titled("Counted")).await;
    api.task(&s.access, task.id).await;
    let secret_path = format!("/unknown-{}", uuid::Uuid::new_v4().simple());
    api.get(&secret_path, None).await.assert_problem(404, "not_found");

    // The sign-up's two jobs are pushed after commit, in the background.
    let m = eventually(Duration::from_secs(10), "the sign-up's jobs enqueued", || async {
        let m = api.metrics().await;
        let pushed = |queue| m.get("jobs_enqueued_total", &[("queue", queue)]);
        (pushed("audit") == Some(1.0) && pushed("email") == Some(1.0)).then_some(m)
    })
    .await;
    let requests = |method, route, status| {
        m.value(
            "http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("GET", "/v1/users/me", "200"), 3.0);
    assert_eq!(requests("POST", "/v1/auth/signup", "201"), 1.0);
    assert_eq!(requests("POST", "/v1/tasks", "201"), 1.0);
    assert_eq!(requests("GET", "/v1/tasks/{id}", "200"), 1.0);
    assert_eq!(requests("GET", "<unmatched>", "404"), 1.0);
    // Never a raw path: neither the id nor the unknown path appear.
    let id = task.id.to_string();
    assert!(!m.text.contains(&id) && !m.text.contains(&secret_path), "{}", m.text);
    assert!(m.has_type("http_request_duration_seconds", "histogram"), "{}", m.text);
    let me = [("method", "GET"), ("route", "/v1/users/me")];
    assert_eq!(m.value("http_request_duration_seconds_count", &me), 3.0);
    let mut le_inf = me.to_vec();
    le_inf.push(("le", "+Inf"));
    assert_eq!(m.value("http_request_duration_seconds_bucket", &le_inf), 3.0);

    // Pool gauges of this process's own pools, read at scrape time.
    assert_eq!(m.value("db_pool_max_connections", &[]), 7.0);
    assert_eq!(m.value("redis_pool_max_connections", &[]), 3.0);
    assert!(m.value("db_pool_connections", &[]) >= 1.0, "{}", m.text);
    for gauge in [
        "db_pool_idle_connections",
        "redis_pool_connections",
        "redis_pool_idle_connections",
    ] {
        m.value(gauge, &[]);
    }
    // The outbox backlog: the sign-up's two rows, unfinished (no worker runs here).
    assert_eq!(m.value("outbox_backlog", &[]), 2.0);
    // The invalidation bus has been live since shortly after start-up (Redis answers).
    assert_eq!(m.value("invalidation_bus_live", &[]), 1.0, "{}", m.text);
}

#[tokio::test]
async fn metrics_on_their_own_listener() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let app = TestApp::spawn_with(|c| c.http.metrics_addr = Some(addr)).await;
    assert_eq!(app.get("/health/live", None).await.status, StatusCode::OK);

    let m = scrape(&format!("http://{addr}/metrics")).await;
    let live = [("method", "GET"), ("route", "/health/live"), ("status", "200")];
    assert!(
        m.get("http_requests_total", &live).is_some_and(|n| n >= 1.0),
        "{}",
        m.text
    );
    m.value("db_pool_connections", &[]);
    // Not on the API port any more, and nothing but /metrics on the metrics port.
    app.get("/metrics", None).await.assert_problem(404, "not_found");
    let other = reqwest::get(format!("http://{addr}/health/live")).await.unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);

    // The metrics listener goes away with the API server.
    drop(app);
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "metrics listener still open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
