//! Health, docs, and the problem+json contract for actix's own rejections.

use serde_json::json;
use testkit::{Method, StatusCode, TestApp};

#[tokio::test]
async fn health_live_and_ready() {
    let app = TestApp::spawn().await;
    let live = app.get("/health/live", None).await;
    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.body["status"], "ok");
    let ready = app.get("/health/ready", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(ready.body["checks"], json!({"postgres": "ok", "redis": "ok"}));
}

#[tokio::test]
async fn ready_names_the_failed_dependency() {
    // Nothing listens on port 1: Redis is "down" for this app.
    let app = TestApp::spawn_with(|c| c.redis_url = "redis://127.0.0.1:1".to_owned().into()).await;
    let res = app.get("/health/ready", None).await;
    let body = res.assert_problem(503, "dependency_unavailable");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("redis") && !detail.contains("postgres"), "{detail}");
    // Liveness does not depend on Redis.
    assert_eq!(app.get("/health/live", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn openapi_covers_every_route_and_docs_render() {
    let app = TestApp::spawn().await;
    let doc = app.get("/openapi.json", None).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.body["paths"].as_object().unwrap();
    for (path, method) in [
        ("/health/live", "get"),
        ("/health/ready", "get"),
        ("/metrics", "get"),
        ("/v1/auth/signup", "post"),
        ("/v1/auth/login", "post"),
        ("/v1/auth/refresh", "post"),
        ("/v1/auth/logout", "post"),
        ("/v1/auth/sessions", "get"),
        ("/v1/auth/sessions/{id}", "delete"),
        ("/v1/users/me", "get"),
        ("/v1/users/me", "patch"),
        ("/v1/users", "get"),
        ("/v1/users", "post"),
        ("/v1/users/{id}", "get"),
        ("/v1/users/{id}", "patch"),
        ("/v1/users/{id}", "delete"),
        ("/v1/auth/verify-email", "post"),
        ("/v1/auth/password/forgot", "post"),
        ("/v1/auth/password/reset", "post"),
        ("/v1/audit-events", "get"),
        ("/v1/categories", "get"),
        ("/v1/categories", "post"),
        ("/v1/categories/{id}", "patch"),
        ("/v1/categories/{id}", "delete"),
        ("/v1/tasks", "get"),
        ("/v1/tasks", "post"),
        ("/v1/tasks/{id}", "get"),
        ("/v1/tasks/{id}", "patch"),
        ("/v1/tasks/{id}", "delete"),
        ("/v1/tasks/{id}/restore", "post"),
    ] {
        let op = &paths.get(path).unwrap_or_else(|| panic!("{path} missing"))[method];
        assert!(op.is_object(), "{method} {path} missing");
        assert!(
            !op["responses"].as_object().unwrap().is_empty(),
            "{method} {path} has no responses"
        );
    }
    // The request-wide rate limit is charged on every /v1 operation: each documents its 429.
    for (path, item) in paths.iter().filter(|(p, _)| p.starts_with("/v1/")) {
        let ops = item.as_object().unwrap().iter();
        for (method, op) in ops.filter(|(m, _)| ["get", "head", "post", "put", "patch", "delete"].contains(&m.as_str()))
        {
            let limited = &op["responses"]["429"];
            assert!(limited.is_object(), "{method} {path}: no 429");
            assert!(
                limited["headers"]["Retry-After"].is_object(),
                "{method} {path}: 429 without Retry-After"
            );
        }
    }
    assert!(doc.body["components"]["schemas"]["Problem"].is_object());
    let ui = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(ui.text().await.unwrap().contains("swagger"));
    let redirect = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(redirect.status(), StatusCode::OK, "redirect followed to the UI");
}

#[tokio::test]
async fn actix_rejections_are_problems() {
    let app = TestApp::spawn().await;
    app.get("/no/such/route", None).await.assert_problem(404, "not_found");

    let res = app.request(Method::PUT, "/health/live", None, None).await;
    res.assert_problem(405, "method_not_allowed");

    let malformed = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("content-type", "application/json")
        .body("{\"email\":");
    app.send(malformed).await.assert_problem(400, "malformed_json");

    let trailing = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("content-type", "application/json")
        .body("{} {}");
    app.send(trailing).await.assert_problem(400, "malformed_json");

    let wrong_type = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("content-type", "text/plain")
        .body("{}");
    app.send(wrong_type).await.assert_problem(415, "unsupported_media_type");

    let no_type = app.client.post(app.url("/v1/auth/login")).body("{}");
    app.send(no_type).await.assert_problem(415, "unsupported_media_type");

    let huge = format!("{{\"email\":\"{}\",\"password\":\"x\"}}", "a".repeat(70 * 1024));
    let too_big = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("content-type", "application/json")
        .body(huge);
    app.send(too_big).await.assert_problem(413, "payload_too_large");

    // NUL anywhere in a JSON body (Postgres text cannot hold it): 422 naming where.
    let nul = app
        .post(
            "/v1/auth/login",
            None,
            json!({"email": "a\u{0}@example.com", "password": "x"}),
        )
        .await;
    assert_eq!(
        nul.assert_problem(422, "validation_failed")["errors"][0]["field"],
        "email"
    );

    let s = app.signup("edge@example.com").await;
    let bad_id = app.delete("/v1/auth/sessions/not-a-uuid", Some(&s.access)).await;
    let body = bad_id.assert_problem(422, "validation_failed");
    assert_eq!(body["errors"][0]["field"], "id");
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = TestApp::spawn().await;
    let echoed = app
        .send(
            app.client
                .get(app.url("/health/live"))
                .header("x-request-id", "client-abc.123"),
        )
        .await;
    assert_eq!(echoed.header("x-request-id"), Some("client-abc.123"));
    let replaced = app
        .send(
            app.client
                .get(app.url("/nope"))
                .header("x-request-id", "bad id with spaces"),
        )
        .await;
    let id = replaced.header("x-request-id").unwrap().to_owned();
    assert_ne!(id, "bad id with spaces");
    assert_eq!(replaced.body["request_id"], id.as_str());
    let generated = app.get("/health/live", None).await;
    assert!(generated.header("x-request-id").is_some_and(|v| v.len() == 36));
}
