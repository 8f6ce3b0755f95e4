//! Error reporting (issue 12): the real `api` binary with `SENTRY_DSN` pointing at a local sink.
//! A request that fails with a database error (its table renamed away) must arrive as one
//! envelope tagged with the request id, route, release and environment, and without the
//! request's password, e-mail address, bearer token or cookie.

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use testkit::{ApiProcess, sink::HttpSink};

const WAIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "correct-horse-battery-staple";
const EMAIL: &str = "private.person@example.com";
const BEARER: &str = "bearer-secret-0123456789";
const COOKIE: &str = "cookie-secret-9876543210";

#[tokio::test]
async fn a_500_reaches_sentry_with_its_request_id_and_without_secrets() {
    let sink = HttpSink::start();
    let dsn = format!("http://publickey@127.0.0.1:{}/1", sink.port());
    let api = ApiProcess::spawn(
        env!("CARGO_BIN_EXE_api"),
        &[
            ("SENTRY_DSN", &dsn),
            ("SENTRY_ENVIRONMENT", "it-errors"),
            ("SENTRY_RELEASE", "9.9.9-test"),
        ],
    )
    .await;

    // Sign-up writes `users`: with the table gone, the handler fails with a database error.
    let mut conn = AsyncPgConnection::establish(&api.db.url).await.unwrap();
    diesel::sql_query("ALTER TABLE users RENAME TO users_away")
        .execute(&mut conn)
        .await
        .unwrap();
    let res = api
        .send(
            api.client
                .post(api.url(&format!("/v1/auth/signup?token={BEARER}")))
                .bearer_auth(BEARER)
                .header("cookie", format!("session={COOKIE}"))
                .json(&serde_json::json!({"email": EMAIL, "password": PASSWORD, "name": "Private Person"})),
        )
        .await;
    assert_eq!(res.status, 500, "{:?}", res.body);
    let request_id = res.header("x-request-id").unwrap().to_owned();

    let envelope = sink.wait_for(WAIT, "the envelope of the 500", |received| {
        received
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/api/1/envelope/")
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .find(|body| body.contains(&request_id))
    });
    let event = envelope
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("event_id").is_some() && v.get("exception").is_some())
        .unwrap_or_else(|| panic!("no event in the envelope:\n{envelope}"));
    let tags = &event["tags"];
    assert_eq!(tags["request_id"], request_id.as_str(), "{event:#}");
    assert_eq!(tags["route"], "/v1/auth/signup", "{event:#}");
    assert_eq!(tags["service"], "api", "{event:#}");
    assert_eq!(event["release"], "9.9.9-test");
    assert_eq!(event["environment"], "it-errors");
    // Sentry leaves out the default level, `error`.
    assert!(event.get("level").is_none_or(|l| l == "error"), "{event:#}");
    assert_eq!(event["request"]["method"], "POST");
    for secret in [PASSWORD, EMAIL, BEARER, COOKIE, "private.person"] {
        assert!(!envelope.contains(secret), "{secret:?} was sent to Sentry:\n{envelope}");
    }
    if let Some(headers) = event["request"]["headers"].as_object() {
        for name in headers.keys() {
            assert!(
                !["authorization", "cookie"].contains(&name.to_ascii_lowercase().as_str()),
                "{name} was sent: {event:#}"
            );
        }
    }
}
