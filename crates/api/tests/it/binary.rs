//! The `api` binary's start-up checks: bad configuration and an unreachable database exit
//! non-zero with a one-line reason.

use std::process::Command;

fn api(envs: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_api"));
    cmd.arg("serve")
        .env_clear()
        .envs(testkit::inherited_env())
        .env("API_ADDR", "127.0.0.1:0");
    // Run from an empty directory so a developer's .env is not picked up.
    let dir = std::env::temp_dir();
    cmd.current_dir(dir);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_one_line_failure(envs: &[(&str, &str)], expect: &str) {
    let (ok, stderr) = api(envs);
    assert!(!ok, "should fail: {envs:?}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {stderr}");
    assert!(lines[0].contains(expect), "{:?} should mention {expect:?}", lines[0]);
}

const DB: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[test]
fn refuses_bad_configuration() {
    assert_one_line_failure(&[], "DATABASE_URL");
    assert_one_line_failure(&[("DATABASE_URL", DB), ("APP_ENV", "production")], "JWT_SECRET");
    assert_one_line_failure(
        &[
            ("DATABASE_URL", DB),
            ("APP_ENV", "production"),
            ("JWT_SECRET", api::config::DEV_JWT_SECRET),
        ],
        "JWT_SECRET",
    );
    assert_one_line_failure(
        &[
            ("DATABASE_URL", DB),
            ("APP_ENV", "production"),
            ("JWT_SECRET", api::config::EXAMPLE_JWT_SECRET),
        ],
        "JWT_SECRET",
    );
    let real = "a-real-random-secret-for-this-test-0123456789";
    assert_one_line_failure(
        &[
            ("DATABASE_URL", DB),
            ("APP_ENV", "production"),
            ("JWT_SECRET", real),
            ("BCRYPT_COST", "10"),
        ],
        "BCRYPT_COST",
    );
    assert_one_line_failure(&[("DATABASE_URL", DB), ("JWT_SECRET", "short")], "32 bytes");
    assert_one_line_failure(&[("DATABASE_URL", DB), ("APP_ENV", "staging")], "APP_ENV");
    assert_one_line_failure(
        &[("DATABASE_URL", DB), ("ACCESS_TOKEN_TTL", "soon")],
        "ACCESS_TOKEN_TTL",
    );
}

#[test]
fn refuses_an_unreachable_database() {
    assert_one_line_failure(
        &[
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none"),
            ("BCRYPT_COST", "4"),
        ],
        "database",
    );
}

/// A fresh process exposes every series whose labels are known in advance, at zero, before its
/// first event: each cache's hits and misses, each rate-limit policy's rejections, each queue's
/// pushes, each scrape-time source's errors. (A process of its own: in this test binary the
/// recorder is shared by every app, and other tests feed it.)
#[tokio::test]
async fn a_fresh_process_has_every_known_series_at_zero() {
    let api = testkit::ApiProcess::spawn(env!("CARGO_BIN_EXE_api"), &[]).await;
    let m = api.metrics().await;
    let zero = |name: &str, labels: &[(&str, &str)]| {
        assert_eq!(m.value(name, labels), 0.0, "{name}{labels:?}");
    };
    // Spelled out, so a renamed label or series fails here; then the lists the code keeps, so a
    // namespace, policy or queue added later is covered too.
    zero("cache_hits_total", &[("cache", "users")]);
    zero("cache_misses_total", &[("cache", "users")]);
    for policy in ["login", "signup", "forgot", "reset", "refresh", "user", "anon"] {
        zero("rate_limit_rejections_total", &[("policy", policy)]);
    }
    for queue in ["email", "audit"] {
        zero("jobs_enqueued_total", &[("queue", queue)]);
    }
    zero("metrics_scrape_errors_total", &[("source", "outbox_backlog")]);
    for cache in api::infra::cache::ns::ALL {
        zero("cache_hits_total", &[("cache", cache)]);
        zero("cache_misses_total", &[("cache", cache)]);
    }
    for (policy, _) in api::config::RateLimitConfig::DEFAULTS {
        zero(
            "rate_limit_rejections_total",
            &[("policy", &policy.to_ascii_lowercase())],
        );
    }
    for queue in domain::jobs::Queue::ALL {
        zero("jobs_enqueued_total", &[("queue", queue.as_str())]);
    }
    // The scrape itself is the one request in flight.
    assert_eq!(m.value("http_requests_in_flight", &[]), 1.0);
}
