//! E-mail flows end to end, with the jobs run in-process through the worker's own handlers
//! (`TestApp::run_jobs`, mail kept in memory): sign-up → verification mail → the link's token
//! verifies → welcome mail; forgot → reset → every session dead; refresh-token re-use → a warning
//! mail; and the audit trail each leaves. What needs a worker process (crashes, shutdown, outages)
//! is in the worker's suite.

use diesel::{BoolExpressionMethods, ExpressionMethods, QueryDsl};
use diesel_async::RunQueryDsl;
use serde_json::json;
use testkit::{Job, PASSWORD, TestApp};

const VERIFY: &str = "Confirm your e-mail address";
const WELCOME: &str = "Welcome to Task Shop";
const RESET: &str = "Reset your password";
const SIGNED_OUT: &str = "We signed you out of a session";

async fn audit_types(app: &TestApp, user: domain::UserId) -> Vec<String> {
    use db::schema::audit_log::dsl::*;
    let mut conn = app.state.db.get().await.unwrap();
    let mut v: Vec<String> = audit_log
        .filter(actor_id.eq(user).or(target_id.eq(user)))
        .select(event_type)
        .load(&mut conn)
        .await
        .unwrap();
    v.sort();
    v
}

/// The jobs that ran, as `queue:kind`, sorted (one transaction's jobs have no order of interest).
fn kinds(jobs: &[Job]) -> Vec<String> {
    let mut kinds: Vec<String> = jobs
        .iter()
        .map(|j| match j {
            Job::Email(e) => format!("email:{}", e.message.kind()),
            Job::Audit(a) => format!("audit:{}", a.event.event_type.as_str()),
        })
        .collect();
    kinds.sort();
    kinds
}

#[tokio::test]
async fn signup_mail_verifies_the_account() {
    let app = TestApp::spawn().await;
    let s = app.signup("Verify.Me@example.com").await;
    assert_eq!(kinds(&app.run_jobs().await), ["audit:signup", "email:verify_email"]);
    let mail = app.the_mail("verify.me@example.com", VERIFY);
    assert!(
        mail.raw.contains("multipart/alternative") && mail.raw.contains("text/html") && mail.raw.contains("text/plain"),
        "{}",
        mail.raw
    );
    let headers: Vec<&str> = mail.raw.lines().take_while(|l| !l.is_empty()).collect();
    assert!(
        headers.contains(&r#"From: "Task Shop" <noreply@example.com>"#),
        "{headers:?}"
    );
    // Nothing the sign-up typed reaches an unverified address: not the name in the header, not in
    // the greeting.
    assert!(headers.contains(&"To: verify.me@example.com"), "{headers:?}");
    assert!(!mail.text.contains("Test User") && !mail.html.contains("Test User"));
    let token = mail.link_token("http://localhost:8080/verify-email");
    assert!(mail.html.contains(&token), "the HTML part carries the same link");

    app.verify_email(&token).await;
    assert!(app.me(&s.access).await.email_verified);
    // Single use.
    app.post("/v1/auth/verify-email", None, json!({"token": token}))
        .await
        .assert_problem(400, "invalid_token");
    app.post("/v1/auth/verify-email", None, json!({"token": "made-up"}))
        .await
        .assert_problem(400, "invalid_token");

    assert_eq!(kinds(&app.run_jobs().await), ["audit:email_verified", "email:welcome"]);
    // Verified now: the welcome mail greets by name.
    assert!(
        app.the_mail("verify.me@example.com", WELCOME)
            .text
            .contains("Test User")
    );
    assert_eq!(app.mail().len(), 2);
    assert_eq!(audit_types(&app, s.user_id).await, ["email_verified", "signup"]);
    // The stored token is a hash, never the token itself.
    let mut conn = app.state.db.get().await.unwrap();
    let hashes: Vec<Vec<u8>> = db::schema::email_tokens::table
        .select(db::schema::email_tokens::token_hash)
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(hashes.len(), 1);
    assert!(hashes.iter().all(|h| h.len() == 32 && h != token.as_bytes()));
}

#[tokio::test]
async fn forgot_then_reset_kills_every_session() {
    let app = TestApp::spawn().await;
    let s = app.signup("forgetful@example.com").await;
    let other = app.login("forgetful@example.com", PASSWORD).await;
    app.run_jobs().await;

    app.forgot_password("FORGETFUL@example.com").await;
    // No enumeration: an unknown or malformed address gets the same answer and no mail.
    app.forgot_password("ghost@example.com").await;
    app.forgot_password("not-an-email").await;
    let ran = kinds(&app.run_jobs().await);
    assert_eq!(
        ran.iter().filter(|k| *k == "email:password_reset").count(),
        1,
        "one reset mail, for the one real account: {ran:?}"
    );
    let token = app
        .the_mail("forgetful@example.com", RESET)
        .link_token("http://localhost:8080/reset-password");

    app.try_reset_password(&token, "short")
        .await
        .assert_problem(422, "validation_failed");
    app.reset_password(&token, "brand-new-password").await;

    for access in [&s.access, &other.access] {
        app.get("/v1/users/me", Some(access))
            .await
            .assert_problem(401, "invalid_token");
    }
    for refresh in [&s.refresh, &other.refresh] {
        app.try_refresh(refresh).await.assert_problem(401, "invalid_token");
    }
    app.try_login("forgetful@example.com", PASSWORD)
        .await
        .assert_problem(401, "invalid_credentials");
    app.login("forgetful@example.com", "brand-new-password").await;
    app.try_reset_password(&token, "another-password")
        .await
        .assert_problem(400, "invalid_token");

    app.run_jobs().await;
    let types = audit_types(&app, s.user_id).await;
    for expected in ["password_reset_requested", "password_reset_completed"] {
        assert!(types.iter().any(|t| t == expected), "{expected}: {types:?}");
    }
    // Only the one real account ever got mail: its verification and its reset.
    let to: Vec<String> = app.mail().into_iter().map(|m| m.to).collect();
    assert_eq!(to, ["forgetful@example.com", "forgetful@example.com"]);
}

#[tokio::test]
async fn refresh_reuse_sends_a_warning_and_is_audited() {
    let app = TestApp::spawn().await;
    let s = app.signup("victim@example.com").await;
    app.refresh(&s.refresh).await;
    app.try_refresh(&s.refresh).await.assert_problem(401, "invalid_token");
    let ran = kinds(&app.run_jobs().await);
    assert!(
        ran.contains(&"email:sessions_revoked".to_owned()) && ran.contains(&"audit:refresh_reuse_detected".to_owned()),
        "{ran:?}"
    );
    app.the_mail("victim@example.com", SIGNED_OUT);
    assert!(
        audit_types(&app, s.user_id)
            .await
            .contains(&"refresh_reuse_detected".to_owned())
    );
}
