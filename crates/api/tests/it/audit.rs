//! `GET /v1/audit-events` and the append-only rule of the audit log.

use chrono::{Duration, Utc};
use diesel_async::RunQueryDsl;
use domain::{
    UserId,
    jobs::{AuditEvent, AuditEventType},
};
use serde_json::json;
use testkit::{Job, NewUser, Page, SignedUp, StatusCode, TestApp};
use uuid::Uuid;

async fn seed_events(app: &TestApp, actor: UserId, other: UserId) -> Vec<Uuid> {
    let mut conn = app.state.db.get().await.unwrap();
    let base = Utc::now() - Duration::hours(1);
    let mut ids = vec![];
    for i in 0..7 {
        let (who, kind) = if i % 2 == 0 {
            (actor, AuditEventType::LoginSucceeded)
        } else {
            (other, AuditEventType::LoginFailed)
        };
        let e = AuditEvent {
            event_id: Uuid::now_v7(),
            event_type: kind,
            actor_id: Some(who),
            target_type: Some("user".into()),
            target_id: Some(who.into_uuid()),
            request_id: Some(format!("req-{i}")),
            ip: Some("127.0.0.1".into()),
            user_agent: None,
            data: json!({"i": i}),
            // Two events share a timestamp, to exercise the id tie-break.
            occurred_at: base + Duration::minutes(if i == 3 { 2 } else { i }),
        };
        assert!(db::audit::append(&mut conn, &e).await.unwrap());
        assert!(
            !db::audit::append(&mut conn, &e).await.unwrap(),
            "a re-delivered event inserts nothing"
        );
        ids.push(e.event_id);
    }
    ids
}

#[tokio::test]
async fn admins_page_and_filter_the_audit_log() {
    let app = TestApp::spawn().await;
    let admin = app.admin("auditor@example.com").await;
    let (a, b) = (UserId::generate(), UserId::generate());
    seed_events(&app, a, b).await;

    // All pages, newest first, no duplicates, across the timestamp tie.
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/audit-events?limit=3&actor_id={a}&cursor={c}"),
            None => format!("/v1/audit-events?limit=3&actor_id={a}"),
        };
        let page = app.get(&path, Some(&admin.access)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for item in page.body["items"].as_array().unwrap() {
            seen.push((
                item["occurred_at"].as_str().unwrap().to_owned(),
                item["data"]["i"].as_i64().unwrap(),
            ));
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let is: Vec<i64> = seen.iter().map(|(_, i)| *i).collect();
    assert_eq!(is.len(), 4, "{seen:?}");
    let mut sorted = is.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, [0, 2, 4, 6]);
    assert!(seen.windows(2).all(|w| w[0].0 >= w[1].0), "newest first: {seen:?}");

    let failed = app.get("/v1/audit-events?type=login_failed", Some(&admin.access)).await;
    let items = failed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(
        items
            .iter()
            .all(|e| e["type"] == "login_failed" && e["actor_id"] == b.to_string())
    );

    let from = (Utc::now() - Duration::minutes(57)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let recent = app
        .get(
            &format!("/v1/audit-events?actor_id={a}&from={from}"),
            Some(&admin.access),
        )
        .await;
    // Events at minutes 4 and 6 of the hour-old base.
    assert_eq!(recent.body["items"].as_array().unwrap().len(), 2, "{}", recent.body);

    for bad in [
        "type=drop_table",
        "actor_id=nope",
        "from=yesterday",
        "limit=0",
        "cursor=xyz",
        "bogus=1",
    ] {
        app.get(&format!("/v1/audit-events?{bad}"), Some(&admin.access))
            .await
            .assert_problem(422, "validation_failed");
    }
    let to = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    app.get(&format!("/v1/audit-events?from={to}&to={to}"), Some(&admin.access))
        .await
        .assert_problem(422, "validation_failed");
    let user = app.signup("nosy@example.com").await;
    app.get("/v1/audit-events", Some(&user.access))
        .await
        .assert_problem(403, "forbidden");
}

#[tokio::test]
async fn the_audit_log_is_append_only() {
    let app = TestApp::spawn().await;
    seed_events(&app, UserId::generate(), UserId::generate()).await;
    let mut conn = app.state.db.get().await.unwrap();
    for sql in [
        "UPDATE audit_log SET event_type = 'logout'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let err = diesel::sql_query(sql).execute(&mut conn).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

#[tokio::test]
async fn business_changes_write_their_jobs_to_the_outbox() {
    let app = TestApp::spawn().await;
    let s = app.signup("outboxed@example.com").await;
    app.try_login("outboxed@example.com", "wrong-password")
        .await
        .assert_problem(401, "invalid_credentials");
    let mut conn = app.state.db.get().await.unwrap();
    use diesel::{ExpressionMethods, QueryDsl};
    let rows: Vec<serde_json::Value> = db::schema::outbox::table
        .order(db::schema::outbox::created_at.asc())
        .select(db::schema::outbox::payload)
        .load(&mut conn)
        .await
        .unwrap();
    let kinds: Vec<String> = rows
        .iter()
        .map(|r| match r["queue"].as_str().unwrap() {
            "email" => format!("email:{}", r["job"]["message"]["kind"].as_str().unwrap()),
            _ => format!("audit:{}", r["job"]["event"]["event_type"].as_str().unwrap()),
        })
        .collect();
    assert_eq!(kinds, ["email:verify_email", "audit:signup", "audit:login_failed"]);
    assert_eq!(rows[0]["job"]["message"]["user_id"], s.user_id.to_string());
    // Payloads carry ids, never secrets.
    let all = serde_json::to_string(&rows).unwrap();
    assert!(!all.contains(&s.refresh) && !all.contains("wrong-password") && !all.contains("outboxed@example.com"));
}

async fn events(app: &TestApp, admin: &str, query: &str) -> Vec<testkit::AuditEvent> {
    app.get(&format!("/v1/audit-events?{query}"), Some(admin))
        .await
        .expect::<Page<testkit::AuditEvent>>(StatusCode::OK)
        .items
}

/// From the request to the audit log: the jobs the use cases wrote run through the worker's
/// handlers (in-process), and the events are listed with the request's id and the account they
/// concern.
#[tokio::test]
async fn a_sign_up_and_a_failed_login_are_audited_once_their_jobs_ran() {
    let app = TestApp::spawn().await;
    let admin = app.admin("audit-admin@example.com").await;
    app.run_jobs().await;
    let signup = app.try_signup(&NewUser::new("audited@example.com")).await;
    let user = signup.expect::<SignedUp>(StatusCode::CREATED).user;
    let failed = app.try_login("audited@example.com", "wrong-password").await;
    failed.assert_problem(401, "invalid_credentials");

    let ran = app.run_jobs().await;
    let audited: Vec<&str> = ran
        .iter()
        .filter_map(|j| match j {
            Job::Audit(a) => Some(a.event.event_type.as_str()),
            Job::Email(_) => None,
        })
        .collect();
    assert_eq!(audited, ["signup", "login_failed"]);
    assert_eq!(ran.len(), 3, "and the verification mail: {ran:?}");
    assert!(app.run_jobs().await.is_empty(), "every job finished");

    let by_user = events(&app, &admin.access, &format!("actor_id={}", user.id)).await;
    assert_eq!(by_user.len(), 1, "{by_user:?}");
    assert_eq!(
        (by_user[0].event_type.as_str(), by_user[0].target_id),
        ("signup", Some(user.id.into_uuid()))
    );
    assert_eq!(by_user[0].request_id.as_deref(), signup.header("x-request-id"));
    // A failed login has no actor; it names the account it tried.
    let failures = events(&app, &admin.access, "type=login_failed").await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(
        (failures[0].actor_id, failures[0].target_id),
        (None, Some(user.id.into_uuid()))
    );
    assert_eq!(failures[0].request_id.as_deref(), failed.header("x-request-id"));
    assert!(
        !failures[0].data.to_string().contains("audited@example.com"),
        "the address is redacted: {}",
        failures[0].data
    );
}
