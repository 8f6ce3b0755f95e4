//! Dead jobs: a malformed payload is dead-lettered at once; a job that keeps failing ends in the
//! dead set after its last attempt, and `worker dead retry` re-drives it.

use std::{process::Command, time::Duration};

use domain::jobs::Queue;
use jobs::{Envelope, Producer, QueueSettings};
use testkit::TestApp;

use crate::support::{Smtp, Worker, eventually, free_port};

const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn worker_cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(args)
        .env_clear()
        .envs(testkit::inherited_env())
        .env("APP_ENV", "test")
        .env("DATABASE_URL", &app.db.url)
        .env(
            "REDIS_URL",
            secrecy::ExposeSecret::expose_secret(&app.state.config.redis_url),
        )
        .env("REDIS_PREFIX", &app.state.config.redis_prefix)
        .env("SMTP_URL", "smtp://127.0.0.1:1")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub(crate) fn dead_ids(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.split('\t').nth(1))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_job_is_dead_lettered_at_once() {
    let app = TestApp::spawn().await;
    let smtp = Smtp::start(0.0);
    let worker = Worker::spawn_with_metrics(&app, Some(&smtp), &[]);
    let producer = Producer::new(
        secrecy::ExposeSecret::expose_secret(&app.state.config.redis_url),
        QueueSettings::new(app.state.config.redis_prefix.clone()),
    );
    let poison = Envelope {
        attempt: 1,
        job: serde_json::json!({"key": "not-a-uuid", "message": {"kind": "bogus"}}),
        outbox_id: None,
        trace: None,
    };
    producer.push_retry(Queue::Email, poison, Duration::ZERO).await.unwrap();

    let listing = eventually(WAIT, "the poison job in the dead set", || async {
        let (ok, out) = worker_cli(&app, &["dead", "list", "--queue", "email"]);
        (ok && out.contains("bogus")).then_some(out)
    })
    .await;
    assert!(listing.contains("malformed"), "{listing}");
    assert_eq!(dead_ids(&listing).len(), 1);
    // The dead task is the one pushed: its envelope is still the first attempt.
    assert!(listing.contains(r#""attempt":1"#), "{listing}");
    assert!(worker.log().contains("malformed"), "a clear log line");
    // One attempt only: counted once as malformed and dead, never retried. (The worker's own
    // process, so these counts are exact; the zero series exist from the start.)
    let m = worker.metrics().await;
    let email = [("queue", "email")];
    assert_eq!(
        m.value("jobs_failed_total", &[("queue", "email"), ("reason", "malformed")]),
        1.0
    );
    assert_eq!(m.value("jobs_dead_total", &email), 1.0);
    assert_eq!(m.value("jobs_retried_total", &email), 0.0);
    assert_eq!(
        m.value("jobs_failed_total", &[("queue", "email"), ("reason", "failed")]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_goes_dead_after_its_attempts_and_can_be_re_driven() {
    let app = TestApp::spawn().await;
    let port = free_port();
    // Nothing listens on `port` yet: every send fails.
    let smtp_url = format!("smtp://127.0.0.1:{port}");
    let worker = Worker::spawn(
        &app,
        None,
        &[("SMTP_URL", smtp_url), ("EMAIL_MAX_ATTEMPTS", "2".into())],
    );
    app.signup("unlucky@example.com").await;

    let listing = eventually(WAIT, "the failing job in the dead set", || async {
        let (ok, out) = worker_cli(&app, &["dead", "list"]);
        (ok && out.contains("verify_email")).then_some(out)
    })
    .await;
    let ids = dead_ids(&listing);
    assert_eq!(ids.len(), 1, "{listing}");
    assert!(worker.log().contains("job failed; retrying"), "first attempt retried");

    let smtp = Smtp::start_on(port, 0.0, None);
    let (ok, out) = worker_cli(&app, &["dead", "retry", "--queue", "email", &ids[0]]);
    assert!(ok, "{out}");
    smtp.wait_for("unlucky@example.com", "Confirm your e-mail address", WAIT)
        .await;
    let (_, after) = worker_cli(&app, &["dead", "list"]);
    assert!(dead_ids(&after).is_empty(), "{after}");
    let (ok, out) = worker_cli(&app, &["dead", "retry", "--queue", "email", &ids[0]]);
    assert!(!ok && out.contains("no dead job"), "{out}");
}
