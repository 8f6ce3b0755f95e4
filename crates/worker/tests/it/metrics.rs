//! The worker's Prometheus endpoint (`WORKER_METRICS_ADDR`): after a sign-up, its e-mail and
//! audit jobs show up as processed, with their durations.

use std::time::Duration;

use crate::support::{Smtp, Worker, eventually, free_port};

fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_metrics_count_processed_jobs() {
    let app = testkit::TestApp::spawn().await;
    let smtp = Smtp::start(0.0);
    let port = free_port();
    let _worker = Worker::spawn(
        &app,
        Some(&smtp),
        &[("WORKER_METRICS_ADDR", format!("127.0.0.1:{port}"))],
    );
    let url = format!("http://127.0.0.1:{port}/metrics");

    app.signup("metrics@example.com").await;
    smtp.wait_for(
        "metrics@example.com",
        "Confirm your e-mail address",
        Duration::from_secs(20),
    )
    .await;

    let text = eventually(Duration::from_secs(20), "processed jobs in /metrics", || async {
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        let audit = sample(&text, "jobs_processed_total", r#"queue="audit""#)?;
        let email = sample(&text, "jobs_processed_total", r#"queue="email""#)?;
        (audit >= 1.0 && email >= 1.0).then_some(text)
    })
    .await;
    assert!(text.contains("# TYPE job_duration_seconds histogram"), "{text}");
    assert!(
        sample(&text, "job_duration_seconds_count", r#"queue="email""#).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        text.contains(r#"job_duration_seconds_bucket{queue="audit",le="0.005"}"#),
        "{text}"
    );
    // Registered at start, and still zero: nothing died.
    assert_eq!(sample(&text, "jobs_dead_total", r#"queue="email""#), Some(0.0), "{text}");
}
