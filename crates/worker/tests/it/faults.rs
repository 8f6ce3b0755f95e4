//! Faults: Redis down at enqueue time, a worker SIGKILLed mid-job, SIGTERM during a job, and two
//! workers on one queue. Nothing is lost, nothing is done twice.

use std::time::Duration;

use diesel::QueryDsl;
use diesel_async::RunQueryDsl;
use testkit::{NewUser, SignedUp, StatusCode, TestApp};

use crate::support::{OwnRedis, Smtp, Worker, count_audit, eventually};

const WAIT: Duration = Duration::from_secs(30);

async fn pending_outbox(app: &TestApp) -> i64 {
    let mut conn = app.state.db.get().await.unwrap();
    db::outbox::pending_count(&mut conn).await.unwrap()
}

/// One outbox row as these tests look at it.
#[derive(Debug)]
struct Row {
    queue: String,
    /// The user the job is about (the mail's recipient, the audit event's actor).
    user: Option<domain::UserId>,
    pushed: bool,
    finished: bool,
    dead: bool,
    attempts: i32,
    last_error: Option<String>,
}

async fn outbox_rows(app: &TestApp) -> Vec<Row> {
    use db::schema::outbox::dsl::*;
    let mut conn = app.state.db.get().await.unwrap();
    type Raw = (
        String,
        serde_json::Value,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
        i32,
        Option<String>,
    );
    let rows: Vec<Raw> = outbox
        .select((
            queue,
            payload,
            dispatched_at,
            finished_at,
            dead_at,
            attempts,
            last_error,
        ))
        .load(&mut conn)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(q, p, pushed, finished, dead, n, error)| {
            let user = [&p["job"]["message"]["user_id"], &p["job"]["event"]["actor_id"]]
                .into_iter()
                .find_map(|v| v.as_str()?.parse().ok());
            Row {
                queue: q,
                user,
                pushed: pushed.is_some(),
                finished: finished.is_some(),
                dead: dead.is_some(),
                attempts: n,
                last_error: error,
            }
        })
        .collect()
}

/// How many messages `email_log` records as sent.
async fn mails_logged(app: &TestApp) -> i64 {
    let mut conn = app.state.db.get().await.unwrap();
    db::schema::email_log::table
        .count()
        .get_result(&mut conn)
        .await
        .unwrap()
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
    let res = app.try_signup(&NewUser::new("during@example.com")).await;
    // The request succeeds without Redis.
    let during = res.expect::<SignedUp>(StatusCode::CREATED).user;
    // The jobs wait in the outbox: the API's push failed (never marked pushed), the worker's
    // dispatcher tried too and recorded why, and no handler has finished them.
    let waiting = eventually(WAIT, "the dispatcher's failed pushes recorded", || async {
        let rows: Vec<Row> = outbox_rows(&app)
            .await
            .into_iter()
            .filter(|r| r.user == Some(during.id))
            .collect();
        (rows.len() == 2 && rows.iter().all(|r| r.attempts >= 1 && r.last_error.is_some())).then_some(rows)
    })
    .await;
    assert!(waiting.iter().all(|r| !r.pushed && !r.finished), "{waiting:?}");
    let mut queues: Vec<&str> = waiting.iter().map(|r| r.queue.as_str()).collect();
    queues.sort_unstable();
    assert_eq!(queues, ["audit", "email"]);

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
    // The send has begun: the server has the recipient and holds its answer for 3 s.
    eventually(WAIT, "the SMTP conversation to reach RCPT TO", || async {
        smtp.recipients_seen()
            .iter()
            .any(|r| r == "graceful@example.com")
            .then_some(())
    })
    .await;
    let rcpt_seen = std::time::Instant::now();
    let email_row = |rows: Vec<Row>| rows.into_iter().find(|r| r.queue == "email").unwrap();
    assert!(
        !email_row(outbox_rows(&app).await).finished,
        "the e-mail job is in flight, not done"
    );
    assert!(
        rcpt_seen.elapsed() < Duration::from_secs(2),
        "SIGTERM must arrive while the server still holds RCPT"
    );
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}\n{}", worker.log());
    // The job in flight was finished before the exit, not abandoned to a re-delivery.
    assert_eq!(
        smtp.find("graceful@example.com", "Confirm your e-mail address").len(),
        1,
        "{}",
        worker.log()
    );
    let row = email_row(outbox_rows(&app).await);
    assert!(row.finished && !row.dead, "{row:?}");
    assert_eq!(mails_logged(&app).await, 1);
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
    let worker = Worker::spawn_with_metrics(
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
    // The worker has met the outage: jobs failed as transient (the API pushed them to Redis).
    eventually(WAIT, "transient failures while Postgres is cut off", || async {
        let m = worker.metrics().await;
        let transient = |queue| m.value("jobs_failed_total", &[("queue", queue), ("reason", "transient")]);
        (transient("email") >= 1.0 && transient("audit") >= 1.0).then_some(())
    })
    .await;
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
    eventually(WAIT, "all four signups audited", || async {
        (count_audit(&app, "signup").await == 4).then_some(())
    })
    .await;
    // Nothing was dead-lettered: every job's outbox row was finished by its handler, alive.
    let rows = eventually(WAIT, "every outbox row finished", || async {
        let rows = outbox_rows(&app).await;
        rows.iter().all(|r| r.finished).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 8, "two jobs per sign-up: {rows:?}");
    assert!(rows.iter().all(|r| !r.dead), "{rows:?}");
    assert_eq!(mails_logged(&app).await, 4, "one verification mail per account");
    assert_eq!(count_audit(&app, "signup").await, 4);
    // The worker's own counts: transient failures retried, none that consumed an attempt, no death.
    let m = worker.metrics().await;
    for queue in ["email", "audit"] {
        let q = [("queue", queue)];
        assert_eq!(m.value("jobs_dead_total", &q), 0.0, "{queue}");
        assert_eq!(
            m.value("jobs_failed_total", &[("queue", queue), ("reason", "failed")]),
            0.0,
            "{queue}"
        );
        assert!(m.value("jobs_retried_total", &q) >= 1.0, "{queue}: {}", m.text);
    }
}
