//! E-mail flows end to end: sign-up → verification mail over SMTP → the link's token verifies;
//! forgot → reset → old sessions dead; and the audit trail they leave.

use std::time::Duration;

use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::RunQueryDsl;
use serde_json::json;
use testkit::{PASSWORD, StatusCode, TestApp};

use crate::support::{Smtp, Worker, eventually, token_from};

const WAIT: Duration = Duration::from_secs(20);

async fn audit_types(app: &TestApp, user: uuid::Uuid) -> Vec<String> {
    use db::schema::audit_log::dsl::*;
    let mut conn = app.state.db.get().await.unwrap();
    let mut v: Vec<String> = audit_log
        .filter(actor_id.eq(user))
        .select(event_type)
        .load(&mut conn)
        .await
        .unwrap();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_mail_verifies_the_account() {
    let app = TestApp::spawn().await;
    let smtp = Smtp::start(0.0);
    let _worker = Worker::spawn(&app, Some(&smtp), &[]);

    let s = app.signup("Verify.Me@example.com").await;
    let mail = smtp
        .wait_for("verify.me@example.com", "Confirm your e-mail address", WAIT)
        .await;
    assert!(mail.contains("multipart/alternative") && mail.contains("text/html") && mail.contains("text/plain"));
    assert!(mail.contains("Test User"));
    let token = token_from(&mail, "http://localhost:8080/verify-email");
    assert!(token.len() >= 43, "{token}");

    let res = app.post("/v1/auth/verify-email", None, json!({"token": token})).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.body);
    assert_eq!(
        app.get("/v1/users/me", Some(&s.access)).await.body["email_verified"],
        true
    );
    // Single use.
    app.post("/v1/auth/verify-email", None, json!({"token": token}))
        .await
        .assert_problem(400, "invalid_token");
    app.post("/v1/auth/verify-email", None, json!({"token": "made-up"}))
        .await
        .assert_problem(400, "invalid_token");

    smtp.wait_for("verify.me@example.com", "Welcome to Task Shop", WAIT)
        .await;
    let types = eventually(WAIT, "audit events", || async {
        let t = audit_types(&app, s.user_id).await;
        (t.len() == 2).then_some(t)
    })
    .await;
    assert_eq!(types, ["email_verified", "signup"]);
    // The stored token is a hash, never the token itself.
    let mut conn = app.state.db.get().await.unwrap();
    let hashes: Vec<Vec<u8>> = db::schema::email_tokens::table
        .select(db::schema::email_tokens::token_hash)
        .load(&mut conn)
        .await
        .unwrap();
    assert!(hashes.iter().all(|h| h.len() == 32 && h != token.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgot_then_reset_kills_every_session() {
    let app = TestApp::spawn().await;
    let smtp = Smtp::start(0.0);
    let _worker = Worker::spawn(&app, Some(&smtp), &[]);
    let s = app.signup("forgetful@example.com").await;
    let other = app.login("forgetful@example.com", PASSWORD).await;
    let other_access = other.body["access_token"].as_str().unwrap().to_owned();

    let res = app
        .post(
            "/v1/auth/password/forgot",
            None,
            json!({"email": "FORGETFUL@example.com"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    // No enumeration: an unknown or malformed address gets the same answer and no mail.
    assert_eq!(
        app.post("/v1/auth/password/forgot", None, json!({"email": "ghost@example.com"}))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.post("/v1/auth/password/forgot", None, json!({"email": "not-an-email"}))
            .await
            .status,
        StatusCode::ACCEPTED
    );

    let mail = smtp
        .wait_for("forgetful@example.com", "Reset your password", WAIT)
        .await;
    let token = token_from(&mail, "http://localhost:8080/reset-password");

    app.post(
        "/v1/auth/password/reset",
        None,
        json!({"token": token, "new_password": "short"}),
    )
    .await
    .assert_problem(422, "validation_failed");
    let res = app
        .post(
            "/v1/auth/password/reset",
            None,
            json!({"token": token, "new_password": "brand-new-password"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.body);

    for access in [&s.access, &other_access] {
        app.get("/v1/users/me", Some(access))
            .await
            .assert_problem(401, "invalid_token");
    }
    app.post("/v1/auth/refresh", None, json!({"refresh_token": s.refresh}))
        .await
        .assert_problem(401, "invalid_token");
    app.login("forgetful@example.com", PASSWORD)
        .await
        .assert_problem(401, "invalid_credentials");
    assert_eq!(
        app.login("forgetful@example.com", "brand-new-password").await.status,
        StatusCode::OK
    );
    app.post(
        "/v1/auth/password/reset",
        None,
        json!({"token": token, "new_password": "another-password"}),
    )
    .await
    .assert_problem(400, "invalid_token");

    eventually(WAIT, "reset audit events", || async {
        let t = audit_types(&app, s.user_id).await;
        t.contains(&"password_reset_completed".to_owned()).then_some(())
    })
    .await;
    // Only the one real account got mail.
    assert!(smtp.messages().iter().all(|m| !m.contains("ghost@example.com")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_reuse_sends_a_warning_and_is_audited() {
    let app = TestApp::spawn().await;
    let smtp = Smtp::start(0.0);
    let _worker = Worker::spawn(&app, Some(&smtp), &[]);
    let s = app.signup("victim@example.com").await;
    assert_eq!(
        app.post("/v1/auth/refresh", None, json!({"refresh_token": s.refresh}))
            .await
            .status,
        StatusCode::OK
    );
    app.post("/v1/auth/refresh", None, json!({"refresh_token": s.refresh}))
        .await
        .assert_problem(401, "invalid_token");
    smtp.wait_for("victim@example.com", "We signed you out of a session", WAIT)
        .await;
    eventually(WAIT, "reuse audit event", || async {
        audit_types(&app, s.user_id)
            .await
            .contains(&"refresh_reuse_detected".to_owned())
            .then_some(())
    })
    .await;
}
