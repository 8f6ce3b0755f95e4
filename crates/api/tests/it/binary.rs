//! The `api` binary's start-up checks: bad configuration and an unreachable database exit
//! non-zero with a one-line reason.

use std::process::Command;

fn api(envs: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_api"));
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
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
