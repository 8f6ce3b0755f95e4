//! The worker's Prometheus endpoint (`WORKER_METRICS_ADDR`): every series exists at zero in a
//! fresh process, and after a sign-up its e-mail and audit jobs show up as processed, with their
//! durations. Each worker is a process of its own, so every count is exact.

use std::time::Duration;

use domain::jobs::Queue;
use worker::metrics::FAILURE_REASONS;

use crate::support::{Smtp, Worker, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_worker_has_every_series_at_zero() {
    let app = testkit::TestApp::spawn().await;
    let worker = Worker::spawn_with_metrics(&app, None, &[]);
    let m = worker.metrics().await;
    let zero = |name: &str, labels: &[(&str, &str)]| {
        assert_eq!(m.value(name, labels), 0.0, "{name}{labels:?}");
    };
    // Spelled out, so a renamed series or label fails here; then the lists the code keeps.
    for queue in ["email", "audit"] {
        zero("jobs_processed_total", &[("queue", queue)]);
        zero("jobs_retried_total", &[("queue", queue)]);
        zero("jobs_dead_total", &[("queue", queue)]);
        for reason in ["failed", "transient", "malformed"] {
            zero("jobs_failed_total", &[("queue", queue), ("reason", reason)]);
        }
        zero("job_duration_seconds_count", &[("queue", queue)]);
        zero("job_duration_seconds_bucket", &[("queue", queue), ("le", "+Inf")]);
    }
    for queue in Queue::ALL {
        for reason in FAILURE_REASONS {
            zero("jobs_failed_total", &[("queue", queue.as_str()), ("reason", reason)]);
        }
    }
    zero("orders_expired_total", &[]);
    zero("idempotency_keys_purged_total", &[]);
    for sweep in ["order_expiry", "idempotency_purge"] {
        zero("sweep_failures_total", &[("sweep", sweep)]);
    }
    for sweep in worker::metrics::SWEEPS {
        zero("sweep_failures_total", &[("sweep", sweep)]);
    }
    assert!(m.has_type("job_duration_seconds", "histogram"), "{}", m.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_metrics_count_processed_jobs() {
    let app = testkit::TestApp::spawn().await;
    let smtp = Smtp::start(0.0);
    let worker = Worker::spawn_with_metrics(&app, Some(&smtp), &[]);

    app.signup("metrics@example.com").await;
    smtp.wait_for(
        "metrics@example.com",
        "Confirm your e-mail address",
        Duration::from_secs(20),
    )
    .await;

    // One verification mail, one audit event.
    let m = eventually(Duration::from_secs(20), "processed jobs in /metrics", || async {
        let m = worker.metrics().await;
        let processed = |queue| m.get("jobs_processed_total", &[("queue", queue)]);
        (processed("audit") == Some(1.0) && processed("email") == Some(1.0)).then_some(m)
    })
    .await;
    assert!(m.has_type("job_duration_seconds", "histogram"), "{}", m.text);
    for queue in ["email", "audit"] {
        assert_eq!(m.value("job_duration_seconds_count", &[("queue", queue)]), 1.0);
        assert_eq!(
            m.value("job_duration_seconds_bucket", &[("queue", queue), ("le", "+Inf")]),
            1.0
        );
        // The exporter's bucket boundaries are ours.
        m.value("job_duration_seconds_bucket", &[("queue", queue), ("le", "0.005")]);
        assert_eq!(m.value("jobs_dead_total", &[("queue", queue)]), 0.0);
        assert_eq!(m.value("jobs_retried_total", &[("queue", queue)]), 0.0);
    }
}
