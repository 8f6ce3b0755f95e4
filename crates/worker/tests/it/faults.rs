//! Faults: Redis down at enqueue time, a worker SIGKILLed mid-job, SIGTERM during a job, and two
//! workers on one queue. Nothing is lost, nothing is done twice.

use std::time::Duration;

use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::RunQueryDsl;
use testkit::{StatusCode, TestApp};

use crate::support::{OwnRedis, Smtp, Worker, eventually};

const WAIT: Duration = Duration::from_secs(30);

async fn count_audit(app: &TestApp, kind: &str) -> i64 {
    use db::schema::audit_log::dsl::*;
    let mut conn = app.state.db.get().await.unwrap();
    audit_log
        .filter(event_type.eq(kind))
        .count()
        .get_result(&mut conn)
        .await
        .unwrap()
}

async fn pending_outbox(app: &TestApp) -> i64 {
    let mut conn = app.state.db.get().await.unwrap();
    db::outbox::pending_count(&mut conn).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_enqueue_then_the_mail_arrives_after_it_returns() {
    let mut redis = OwnRedis::start();
    let url = redis.url();
    let app = TestApp::spawn_with(|c| c.redis_url = url.clone().into()).await;
    let smtp = Smtp::start(0.0);
    let worker = Worker::spawn(&app, Some(&smtp), &[]);
    // Warm up: the pipeline works while Redis is up.
    app.signup("before@example.com").await;
    smtp.wait_for("before@example.com", "Confirm your e-mail address", WAIT)
        .await;

    redis.stop();
    let res = app
        .post(
            "/v1/auth/signup",
            None,
            serde_json::json!({"email": "during@example.com", "password": testkit::PASSWORD, "name": "During"}),
        )
        .await;
    assert_eq!(
        res.status,
        StatusCode::CREATED,
        "the request succeeds without Redis: {}",
        res.body
    );
    // The jobs wait in the outbox.
    eventually(WAIT, "pending outbox rows", || async {
        (pending_outbox(&app).await >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        smtp.find("during@example.com", "Confirm your e-mail address")
            .is_empty()
    );

    redis.restart();
    smtp.wait_for(
        "during@example.com",
        "Confirm your e-mail address",
        Duration::from_secs(45),
    )
    .await;
    eventually(WAIT, "outbox drained", || async {
        (pending_outbox(&app).await == 0).then_some(())
    })
    .await;
    eventually(WAIT, "both signups audited", || async {
        (count_audit(&app, "signup").await == 2).then_some(())
    })
    .await;
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_is_replaced_and_the_effect_happens_once() {
    let app = TestApp::spawn().await;
    // The SMTP server stalls 4 s before accepting the recipient: the send is in flight when we
    // kill the worker, and nothing has been delivered yet.
    let smtp = Smtp::start(4.0);
    let mut first = Worker::spawn(&app, Some(&smtp), &[]);
    app.signup("crash@example.com").await;
    // The handler stores the link's token just before it talks to SMTP.
    eventually(WAIT, "the e-mail job to start", || async {
        let mut conn = app.state.db.get().await.unwrap();
        let n: i64 = db::schema::email_tokens::table
            .count()
            .get_result(&mut conn)
            .await
            .unwrap();
        (n == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    first.kill9();

    let started = std::time::Instant::now();
    let _second = Worker::spawn(&app, Some(&smtp), &[]);
    smtp.wait_for(
        "crash@example.com",
        "Confirm your e-mail address",
        Duration::from_secs(45),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "re-delivered within 30 s, took {:?}",
        started.elapsed()
    );
    // Give a duplicate every chance to show up, then count.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(smtp.find("crash@example.com", "Confirm your e-mail address").len(), 1);
    assert_eq!(count_audit(&app, "signup").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_job_in_flight_and_exits_zero() {
    let app = TestApp::spawn().await;
    let smtp = Smtp::start(3.0);
    let mut worker = Worker::spawn(&app, Some(&smtp), &[]);
    app.signup("graceful@example.com").await;
    eventually(WAIT, "the signup audit row (the worker is busy)", || async {
        (count_audit(&app, "signup").await == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        smtp.find("graceful@example.com", "Confirm").is_empty(),
        "the send must still be in flight"
    );
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}\n{}", worker.log());
    assert_eq!(
        smtp.find("graceful@example.com", "Confirm your e-mail address").len(),
        1,
        "{}",
        worker.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_queues_without_doubling() {
    let app = TestApp::spawn().await;
    let smtp = Smtp::start(0.0);
    let _a = Worker::spawn(&app, Some(&smtp), &[]);
    let _b = Worker::spawn(&app, Some(&smtp), &[]);
    const N: usize = 12;
    for i in 0..N {
        app.signup(&format!("pair{i}@example.com")).await;
    }
    eventually(WAIT, "all verification mails", || async {
        (smtp.messages().len() >= N).then_some(())
    })
    .await;
    eventually(WAIT, "all signup audit rows", || async {
        (count_audit(&app, "signup").await == N as i64).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = smtp.messages();
    assert_eq!(mails.len(), N);
    for i in 0..N {
        assert_eq!(
            mails
                .iter()
                .filter(|m| m.contains(&format!("pair{i}@example.com")))
                .count(),
            1,
            "pair{i}"
        );
    }
    assert_eq!(count_audit(&app, "signup").await, N as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_delays_jobs_but_dead_letters_none() {
    let app = TestApp::spawn().await;
    let smtp = Smtp::start(0.0);
    let proxy = crate::support::PgProxy::start().await;
    // One attempt only: any failure that counted as an attempt would dead-letter the job.
    let worker = Worker::spawn(
        &app,
        Some(&smtp),
        &[
            ("DATABASE_URL", proxy.url(&app.db.url)),
            ("EMAIL_MAX_ATTEMPTS", "1".into()),
            ("AUDIT_MAX_ATTEMPTS", "1".into()),
        ],
    );
    app.signup("pre-outage@example.com").await;
    smtp.wait_for("pre-outage@example.com", "Confirm your e-mail address", WAIT)
        .await;

    proxy.cut();
    for i in 0..3 {
        // The API reaches Postgres directly; only the worker is cut off.
        app.signup(&format!("outage{i}@example.com")).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        smtp.find("outage0@example.com", "Confirm").is_empty(),
        "no mail while Postgres is unreachable"
    );
    proxy.resume().await;

    for i in 0..3 {
        smtp.wait_for(
            &format!("outage{i}@example.com"),
            "Confirm your e-mail address",
            Duration::from_secs(60),
        )
        .await;
    }
    for _ in 0..300 {
        if count_audit(&app, "signup").await == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count_audit(&app, "signup").await, 4, "{}", worker.log());
    assert!(
        !worker.log().contains("for the last time"),
        "nothing dead-lettered:\n{}",
        worker.log()
    );
    assert!(
        worker.log().contains("without consuming an attempt"),
        "transient retries were used"
    );
}
