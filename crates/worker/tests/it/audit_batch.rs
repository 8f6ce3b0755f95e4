//! Batched audit writes (`worker::audit_batch`): a worker SIGKILLed in the middle of a burst loses
//! no event and doubles none; a batch answers each job only after its commit; an event Postgres
//! rejects fails only its own job; an event twice in one batch is one row.

use std::time::Duration;

use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::RunQueryDsl;
use domain::jobs::{AuditEvent, AuditEventType, AuditJob, Queue};
use jobs::{Producer, QueueSettings};
use testkit::TestApp;
use uuid::Uuid;
use worker::{audit_batch::AuditBatcher, handlers::JobError};

use crate::support::{Worker, eventually};

fn event(request_id: &str) -> AuditEvent {
    AuditEvent {
        event_id: Uuid::now_v7(),
        event_type: AuditEventType::LoginSucceeded,
        actor_id: Some(domain::UserId::generate()),
        target_type: None,
        target_id: None,
        request_id: Some(request_id.into()),
        ip: None,
        user_agent: None,
        data: serde_json::json!({"test": true}),
        occurred_at: chrono::Utc::now(),
    }
}

/// `(event_id, rows)` of every event of this request id, as Postgres has them.
async fn rows_per_event(app: &TestApp, request: &str) -> Vec<(Uuid, i64)> {
    use db::schema::audit_log::dsl::*;
    let mut conn = app.state.db.get().await.unwrap();
    audit_log
        .filter(request_id.eq(request))
        .group_by(event_id)
        .select((event_id, diesel::dsl::count_star()))
        .load(&mut conn)
        .await
        .unwrap()
}

async fn rows(app: &TestApp, request: &str) -> i64 {
    use db::schema::audit_log::dsl::*;
    let mut conn = app.state.db.get().await.unwrap();
    audit_log
        .filter(request_id.eq(request))
        .count()
        .get_result(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_in_the_middle_of_an_audit_burst_loses_nothing_and_doubles_nothing() {
    const N: usize = 6000;
    let app = TestApp::spawn().await;
    let producer = Producer::new(
        secrecy::ExposeSecret::expose_secret(&app.state.config.redis_url),
        QueueSettings::new(app.state.config.redis_prefix.clone()),
    );
    let events: Vec<AuditEvent> = (0..N).map(|_| event("burst")).collect();
    for chunk in events.chunks(1000) {
        let jobs = chunk
            .iter()
            .map(|e| serde_json::to_value(AuditJob { event: e.clone() }).unwrap())
            .collect();
        producer.push_many(Queue::Audit, jobs).await.unwrap();
    }
    // Batches of up to 64 events, each waiting 5 ms for more: several are in flight at any time.
    let batching = [
        ("AUDIT_BATCH_MAX", "64".to_owned()),
        ("AUDIT_BATCH_WAIT", "5ms".to_owned()),
    ];
    let mut first = Worker::spawn(&app, None, &batching);
    eventually(Duration::from_secs(60), "the first worker's first batches", || async {
        (rows(&app, "burst").await >= 200).then_some(())
    })
    .await;
    first.kill9();
    let at_kill = rows(&app, "burst").await;
    assert!(
        (at_kill as usize) < N,
        "the burst was over before the kill ({at_kill} rows): raise N"
    );

    // The second worker takes the first one's in-flight tasks over after its missed heartbeats
    // (2 s × 3 in these tests) and works off the rest.
    let second = Worker::spawn(&app, None, &batching);
    eventually(Duration::from_secs(90), "every event of the burst written", || async {
        (rows(&app, "burst").await as usize >= N).then_some(())
    })
    .await;
    // Re-deliveries still in flight must not add anything either.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let written = rows_per_event(&app, "burst").await;
    assert_eq!(written.len(), N, "{at_kill} rows when killed\n{}", second.log());
    assert!(written.iter().all(|(_, n)| *n == 1));
    let mut ids: Vec<Uuid> = written.into_iter().map(|(id, _)| id).collect();
    let mut sent: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    ids.sort_unstable();
    sent.sort_unstable();
    assert_eq!(ids, sent, "exactly the events pushed");
}

/// The batcher in-process: a burst of appends at once, so they share batches.
async fn append_all(batcher: &AuditBatcher, events: Vec<(AuditEvent, Option<Uuid>)>) -> Vec<Result<(), JobError>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (e, outbox)) in events.into_iter().enumerate() {
        let b = batcher.clone();
        tasks.spawn(async move { (i, b.append(e, outbox).await) });
    }
    let mut results: Vec<(usize, Result<(), JobError>)> = tasks.join_all().await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_postgres_rejects_fails_only_its_own_job() {
    let app = TestApp::spawn().await;
    // Every event of the burst waits for the others: one batch.
    let batcher = AuditBatcher::spawn(app.state.db.clone(), 256, Duration::from_millis(300));
    let mut events: Vec<(AuditEvent, Option<Uuid>)> = (0..20).map(|_| (event("poison"), None)).collect();
    let mut poison = event("poison");
    poison.user_agent = Some("x".repeat(600)); // the column allows 512 characters
    events.insert(7, (poison, None));
    let ids: Vec<Uuid> = events.iter().map(|(e, _)| e.event_id).collect();
    let results = append_all(&batcher, events).await;
    for (i, r) in results.iter().enumerate() {
        if i == 7 {
            assert!(matches!(r, Err(JobError::Failed(_))), "the rejected event fails: {r:?}");
        } else {
            assert!(r.is_ok(), "event {i}: {r:?}");
        }
    }
    // Each answer came after its row was committed.
    let written = rows_per_event(&app, "poison").await;
    assert_eq!(written.len(), 20);
    assert!(!written.iter().any(|(id, _)| *id == ids[7]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_after_its_commit_and_writes_a_repeated_event_once() {
    let app = TestApp::spawn().await;
    let batcher = AuditBatcher::spawn(app.state.db.clone(), 256, Duration::from_millis(300));
    let twice = event("repeat");
    let mut events: Vec<(AuditEvent, Option<Uuid>)> = (0..10).map(|_| (event("repeat"), None)).collect();
    events.push((twice.clone(), None));
    events.push((twice.clone(), None));
    let results = append_all(&batcher, events).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let written = rows_per_event(&app, "repeat").await;
    assert_eq!(written.len(), 11);
    assert!(written.iter().all(|(_, n)| *n == 1));
    // A re-delivery of an event already written is answered Ok and adds nothing.
    batcher.append(twice.clone(), None).await.unwrap();
    assert_eq!(rows(&app, "repeat").await, 11);
}
