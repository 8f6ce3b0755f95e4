//! The outbox stays the source of truth until a job's effect is done (issue 8.1): a Redis that
//! loses its data — restarted without persistence, or partly — loses no job, and a job waiting
//! for its retry is not pushed again early.

use std::time::{Duration, Instant};

use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::RunQueryDsl;
use testkit::TestApp;

use crate::support::{OwnRedis, Smtp, Worker, count_audit, eventually, free_port};

const WAIT: Duration = Duration::from_secs(30);
const USERS: usize = 4;

/// (rows, rows the API has pushed to Redis, rows finished)
async fn outbox_state(app: &TestApp) -> (i64, i64, i64) {
    use db::schema::outbox::dsl::*;
    let mut conn = app.state.db.get().await.unwrap();
    let all: i64 = outbox.count().get_result(&mut conn).await.unwrap();
    let pushed: i64 = outbox
        .filter(dispatched_at.is_not_null())
        .count()
        .get_result(&mut conn)
        .await
        .unwrap();
    let finished: i64 = outbox
        .filter(finished_at.is_not_null())
        .count()
        .get_result(&mut conn)
        .await
        .unwrap();
    (all, pushed, finished)
}

/// Signs up `USERS` accounts while no worker runs and waits until the API has pushed every job
/// to Redis (on the old code, the point where the outbox forgot them).
async fn stage_work(app: &TestApp, tag: &str) -> i64 {
    for i in 0..USERS {
        app.signup(&format!("{tag}{i}@example.com")).await;
    }
    eventually(WAIT, "the API to push every job", || async {
        let (all, pushed, _) = outbox_state(app).await;
        (all >= 2 * USERS as i64 && pushed == all).then_some(all)
    })
    .await
}

async fn assert_every_effect_once(app: &TestApp, smtp: &Smtp, tag: &str) {
    for i in 0..USERS {
        smtp.wait_for(&format!("{tag}{i}@example.com"), "Confirm your e-mail address", WAIT)
            .await;
    }
    eventually(WAIT, "every signup audited", || async {
        (count_audit(app, "signup").await == USERS as i64).then_some(())
    })
    .await;
    // Give a duplicate every chance to show up, then count.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..USERS {
        let to = format!("{tag}{i}@example.com");
        assert_eq!(smtp.find(&to, "Confirm your e-mail address").len(), 1, "{to}");
    }
    assert_eq!(count_audit(app, "signup").await, USERS as i64);
    let (all, _, finished) = outbox_state(app).await;
    assert_eq!(finished, all, "every outbox row finished by its handler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_loses_no_job() {
    let mut redis = OwnRedis::start();
    let url = redis.url();
    let app = TestApp::spawn_with(|c| c.redis_url = url.clone().into()).await;
    let smtp = Smtp::start(0.0);

    // The worker is stopped: the jobs wait in Redis, then Redis restarts without its data.
    stage_work(&app, "lost").await;
    redis.stop();
    redis.restart();

    let started = Instant::now();
    let worker = Worker::spawn(&app, Some(&smtp), &[]);
    assert_every_effect_once(&app, &smtp, "lost").await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(30) + Duration::from_secs(3),
        "jobs ran again within 30 s of Redis and a worker being back, took {took:?}"
    );
    assert!(worker.log().contains("no queue marker"), "{}", worker.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_redis_lost_while_it_kept_the_rest_is_pushed_again_after_the_visibility_timeout() {
    let redis = OwnRedis::start();
    let url = redis.url();
    let app = TestApp::spawn_with(|c| {
        c.redis_url = url.clone().into();
        c.outbox_visibility = Duration::from_secs(2);
    })
    .await;
    let smtp = Smtp::start(0.0);
    stage_work(&app, "partial").await;

    // A Redis that lost the queues but not the marker (e.g. the last second of an AOF): the
    // dispatcher cannot tell, so only the visibility timeout brings the jobs back.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let marker = format!("{}:jobs:marker", app.state.config.redis_prefix);
    let _: () = redis::cmd("SET")
        .arg(&marker)
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();

    let worker = Worker::spawn(&app, Some(&smtp), &[("OUTBOX_VISIBILITY_TIMEOUT", "2s".into())]);
    assert_every_effect_once(&app, &smtp, "partial").await;
    let log = worker.log();
    assert!(!log.contains("no queue marker"), "{log}");
    assert!(log.contains("not finished within the visibility timeout"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waiting_for_its_backoff_is_not_pushed_again_early() {
    let app = TestApp::spawn().await;
    // Nothing listens on this port: every send fails, and the retry waits 20 s.
    let smtp_url = format!("smtp://127.0.0.1:{}", free_port());
    let worker = Worker::spawn(
        &app,
        None,
        &[
            ("SMTP_URL", smtp_url),
            ("OUTBOX_VISIBILITY_TIMEOUT", "1s".into()),
            ("JOB_BACKOFF_BASE", "20s".into()),
            ("JOB_BACKOFF_CAP", "20s".into()),
        ],
    );
    // Let the worker's dispatcher make its first polls (a fresh prefix has no queue marker, and
    // that first check makes every unfinished row due at once) before the job exists.
    eventually(WAIT, "the worker started", || async {
        worker.log().contains("worker started").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    app.signup("patient@example.com").await;
    eventually(WAIT, "the first attempt to fail", || async {
        worker.log().contains("job failed; retrying").then_some(())
    })
    .await;
    // Several visibility timeouts pass while the retry waits.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = worker.log();
    assert!(!log.contains("not finished within the visibility timeout"), "{log}");
    use db::schema::outbox::dsl::*;
    let mut conn = app.state.db.get().await.unwrap();
    let due: Vec<chrono::DateTime<chrono::Utc>> = outbox
        .filter(queue.eq("email"))
        .filter(finished_at.is_null())
        .select(next_push_at)
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(due.len(), 1, "the e-mail job is not finished");
    assert!(
        due[0] > chrono::Utc::now() + chrono::Duration::seconds(5),
        "due after the backoff, not before: {due:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_job_outlives_a_redis_restarted_empty_and_can_be_re_driven() {
    use crate::dead::{dead_ids, worker_cli};
    let mut redis = OwnRedis::start();
    let url = redis.url();
    let app = TestApp::spawn_with(|c| c.redis_url = url.clone().into()).await;
    let port = free_port();
    let mut worker = Worker::spawn(
        &app,
        None,
        &[
            ("SMTP_URL", format!("smtp://127.0.0.1:{port}")),
            ("EMAIL_MAX_ATTEMPTS", "1".into()),
        ],
    );
    app.signup("doomed@example.com").await;
    let listing = eventually(WAIT, "the failing job dead", || async {
        let (ok, out) = worker_cli(&app, &["dead", "list"]);
        (ok && out.contains("verify_email")).then_some(out)
    })
    .await;
    let ids = dead_ids(&listing);
    assert_eq!(ids.len(), 1, "{listing}");
    worker.kill9();

    redis.stop();
    redis.restart();
    let (ok, after) = worker_cli(&app, &["dead", "list", "--queue", "email"]);
    assert!(ok, "{after}");
    assert_eq!(dead_ids(&after), ids, "the dead job is still listed: {after}");

    let smtp = Smtp::start_on(port, 0.0, None);
    let (ok, out) = worker_cli(&app, &["dead", "retry", "--queue", "email", &ids[0]]);
    assert!(ok, "{out}");
    let _worker = Worker::spawn(&app, Some(&smtp), &[]);
    smtp.wait_for("doomed@example.com", "Confirm your e-mail address", WAIT)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.find("doomed@example.com", "Confirm your e-mail address").len(), 1);
    let (_, listing) = worker_cli(&app, &["dead", "list"]);
    assert!(dead_ids(&listing).is_empty(), "{listing}");
}
