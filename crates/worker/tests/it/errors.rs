//! Error reporting from the worker (issue 12): with `SENTRY_DSN` pointing at a local sink, a job
//! whose payload cannot be decoded (an `error!` inside the job's span) arrives as an event
//! tagged with the service, release and environment, carrying the job span's fields.

use std::time::Duration;

use domain::jobs::Queue;
use jobs::{Envelope, Producer, QueueSettings};
use testkit::{TestApp, sink::HttpSink};

use crate::support::Worker;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_job_reaches_sentry_with_its_queue_and_tags() {
    let app = TestApp::spawn().await;
    let sink = HttpSink::start();
    let dsn = format!("http://publickey@127.0.0.1:{}/7", sink.port());
    let _worker = Worker::spawn(
        &app,
        None,
        &[("SENTRY_DSN", dsn), ("SENTRY_RELEASE", "9.9.9-worker".into())],
    );
    let producer = Producer::new(
        secrecy::ExposeSecret::expose_secret(&app.state.config.redis_url),
        QueueSettings::new(app.state.config.redis_prefix.clone()),
    );
    // An envelope that decodes, with a job that does not.
    let poison = Envelope {
        attempt: 1,
        job: serde_json::json!({"key": "not-a-uuid", "message": {"kind": "bogus"}}),
        outbox_id: None,
        trace: None,
    };
    producer.push_retry(Queue::Email, poison, Duration::ZERO).await.unwrap();

    let envelope = sink.wait_for(WAIT, "the worker's error event", |received| {
        received
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/api/7/envelope/")
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .find(|body| body.contains("malformed job payload"))
    });
    let event = envelope
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("event_id").is_some() && v.get("release").is_some())
        .unwrap_or_else(|| panic!("no event in the envelope:\n{envelope}"));
    assert_eq!(event["tags"]["service"], "worker", "{event:#}");
    assert_eq!(event["release"], "9.9.9-worker");
    assert_eq!(event["environment"], "test");
    assert!(
        envelope.contains("\"queue\":\"email\""),
        "the job span's fields: {envelope}"
    );
}
