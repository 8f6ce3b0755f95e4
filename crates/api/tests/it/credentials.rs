//! What a request can make bcrypt do (nothing, unless the request can still succeed), and the
//! single-use tokens of the e-mailed links (reset, verification). The links come from the mail
//! the worker's handlers send (run in-process); only a token no mail can give — an expired one —
//! is written straight into the database.

use chrono::{Duration, Utc};
use db::email::TokenPurpose;
use domain::UserId;
use serde_json::json;
use testkit::{NewUser, PASSWORD, StatusCode, TestApp};

const VERIFY: &str = "Confirm your e-mail address";
const RESET: &str = "Reset your password";

/// A token as the worker issues it for a link, with a validity of our choosing.
async fn issue_token(app: &TestApp, user_id: UserId, purpose: TokenPurpose, valid_for: Duration) -> String {
    let token = auth::OpaqueToken::generate();
    let mut conn = app.state.db.get().await.unwrap();
    db::email::insert_token(&mut conn, token.digest(), user_id, purpose, Utc::now() + valid_for)
        .await
        .unwrap();
    token.into_plain()
}

async fn reset(app: &TestApp, token: &str, new_password: &str) -> testkit::Res {
    app.try_reset_password(token, new_password).await
}

/// Asks for a reset link for `email`, runs the mail job, and returns the link's token (of the
/// newest reset mail to that address).
async fn mailed_reset_token(app: &TestApp, email: &str) -> String {
    app.forgot_password(email).await;
    app.run_jobs().await;
    let resets: Vec<_> = app.mail_to(email).into_iter().filter(|m| m.subject == RESET).collect();
    resets.last().expect("a reset mail").link_token("/reset-password")
}

/// Runs the sign-up's jobs and returns the token of its verification link.
async fn mailed_verify_token(app: &TestApp, email: &str) -> String {
    app.run_jobs().await;
    app.the_mail(email, VERIFY).link_token("/verify-email")
}

#[tokio::test]
async fn password_reset_checks_the_token_before_running_bcrypt() {
    let app = TestApp::spawn().await;
    let s = app.signup("reset-probe@example.com").await;
    let expired = issue_token(&app, s.user_id, TokenPurpose::PasswordReset, Duration::minutes(-1)).await;
    // The verification link's token is live, but for another purpose.
    let wrong_purpose = mailed_verify_token(&app, "reset-probe@example.com").await;
    let live = mailed_reset_token(&app, "reset-probe@example.com").await;

    let plausible = "A".repeat(43);
    let before = app.state.hasher.runs();
    for token in [
        "made-up",
        "x",
        expired.as_str(),
        wrong_purpose.as_str(),
        plausible.as_str(),
    ] {
        reset(&app, token, "new-password-99")
            .await
            .assert_problem(400, "invalid_token");
    }
    assert_eq!(
        app.state.hasher.runs(),
        before,
        "no bcrypt for a token that is not live"
    );

    assert_eq!(
        reset(&app, &live, "new-password-99").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.state.hasher.runs(), before + 1, "one hash for the live token");
    // Used now: refused as cheaply as a made-up one.
    reset(&app, &live, "another-password-1")
        .await
        .assert_problem(400, "invalid_token");
    assert_eq!(app.state.hasher.runs(), before + 1);
    app.login("reset-probe@example.com", "new-password-99").await;
}

#[tokio::test]
async fn a_taken_address_is_refused_before_running_bcrypt() {
    let app = TestApp::spawn().await;
    let admin = app.admin("bcrypt-admin@example.com").await;
    app.signup("taken@example.com").await;
    let before = app.state.hasher.runs();
    app.try_signup(&NewUser::new("TAKEN@example.com").name("Again"))
        .await
        .assert_problem(409, "email_taken");
    app.post(
        "/v1/users",
        Some(&admin.access),
        json!({"email": "taken@example.com", "password": PASSWORD, "name": "Again"}),
    )
    .await
    .assert_problem(409, "email_taken");
    assert_eq!(
        app.state.hasher.runs(),
        before,
        "a request bound to fail costs no bcrypt"
    );
}

#[tokio::test]
async fn a_password_change_invalidates_outstanding_reset_tokens() {
    let app = TestApp::spawn().await;
    let s = app.signup("changed@example.com").await;
    // A reset link mailed before the change (say, to an inbox an attacker reads)…
    let token = mailed_reset_token(&app, "changed@example.com").await;
    app.update_me(
        &s.access,
        json!({"password": "new-password-99", "current_password": PASSWORD}),
    )
    .await;
    // …no longer undoes it.
    reset(&app, &token, "attacker-password-1")
        .await
        .assert_problem(400, "invalid_token");
    app.login("changed@example.com", "new-password-99").await;
    app.try_login("changed@example.com", "attacker-password-1")
        .await
        .assert_problem(401, "invalid_credentials");
    // A link mailed after the change works as usual.
    let fresh = mailed_reset_token(&app, "changed@example.com").await;
    assert_ne!(fresh, token);
    app.reset_password(&fresh, "newer-password-99").await;
    app.login("changed@example.com", "newer-password-99").await;
}

#[tokio::test]
async fn a_deleted_accounts_tokens_are_invalid() {
    let app = TestApp::spawn().await;
    let admin = app.admin("token-admin@example.com").await;
    let victim = app.signup("deleted@example.com").await;
    let verify = mailed_verify_token(&app, "deleted@example.com").await;
    let reset_token = mailed_reset_token(&app, "deleted@example.com").await;
    // Control: the same kind of link of a live account verifies.
    let alive = app.signup("alive@example.com").await;
    let alive_verify = mailed_verify_token(&app, "alive@example.com").await;
    app.verify_email(&alive_verify).await;
    assert!(app.me(&alive.access).await.email_verified);

    let res = app
        .delete(&format!("/v1/users/{}", victim.user_id), Some(&admin.access))
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    app.post("/v1/auth/verify-email", None, json!({"token": verify}))
        .await
        .assert_problem(400, "invalid_token");
    let before = app.state.hasher.runs();
    reset(&app, &reset_token, "new-password-99")
        .await
        .assert_problem(400, "invalid_token");
    assert_eq!(app.state.hasher.runs(), before);
}
