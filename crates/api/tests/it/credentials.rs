//! What a request can make bcrypt do (nothing, unless the request can still succeed), and the
//! single-use tokens of the e-mailed links (reset, verification).

use chrono::{Duration, Utc};
use db::email::TokenPurpose;
use serde_json::json;
use testkit::{PASSWORD, StatusCode, TestApp};
use uuid::Uuid;

/// A token as the worker issues it for a link: the plain value back, only its hash stored.
async fn issue_token(app: &TestApp, user_id: Uuid, purpose: TokenPurpose, valid_for: Duration) -> String {
    let token = auth::RefreshToken::generate();
    let mut conn = app.state.db.get().await.unwrap();
    db::email::insert_token(&mut conn, token.digest(), user_id, purpose, Utc::now() + valid_for)
        .await
        .unwrap();
    token.into_plain()
}

async fn reset(app: &TestApp, token: &str, new_password: &str) -> testkit::Res {
    app.post(
        "/v1/auth/password/reset",
        None,
        json!({"token": token, "new_password": new_password}),
    )
    .await
}

#[tokio::test]
async fn password_reset_checks_the_token_before_running_bcrypt() {
    let app = TestApp::spawn().await;
    let s = app.signup("reset-probe@example.com").await;
    let expired = issue_token(&app, s.user_id, TokenPurpose::PasswordReset, Duration::minutes(-1)).await;
    let wrong_purpose = issue_token(&app, s.user_id, TokenPurpose::VerifyEmail, Duration::hours(1)).await;
    let live = issue_token(&app, s.user_id, TokenPurpose::PasswordReset, Duration::hours(1)).await;

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
    assert_eq!(
        app.login("reset-probe@example.com", "new-password-99").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_taken_address_is_refused_before_running_bcrypt() {
    let app = TestApp::spawn().await;
    let admin = app.admin("bcrypt-admin@example.com").await;
    app.signup("taken@example.com").await;
    let before = app.state.hasher.runs();
    app.post(
        "/v1/auth/signup",
        None,
        json!({"email": "TAKEN@example.com", "password": PASSWORD, "name": "Again"}),
    )
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
    let token = issue_token(&app, s.user_id, TokenPurpose::PasswordReset, Duration::hours(1)).await;
    let res = app
        .patch(
            "/v1/users/me",
            Some(&s.access),
            json!({"password": "new-password-99", "current_password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    // …no longer undoes it.
    reset(&app, &token, "attacker-password-1")
        .await
        .assert_problem(400, "invalid_token");
    assert_eq!(
        app.login("changed@example.com", "new-password-99").await.status,
        StatusCode::OK
    );
    app.login("changed@example.com", "attacker-password-1")
        .await
        .assert_problem(401, "invalid_credentials");
    // A token issued after the change works as usual.
    let fresh = issue_token(&app, s.user_id, TokenPurpose::PasswordReset, Duration::hours(1)).await;
    assert_eq!(
        reset(&app, &fresh, "newer-password-99").await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn a_deleted_accounts_tokens_are_invalid() {
    let app = TestApp::spawn().await;
    let admin = app.admin("token-admin@example.com").await;
    let victim = app.signup("deleted@example.com").await;
    let verify = issue_token(&app, victim.user_id, TokenPurpose::VerifyEmail, Duration::hours(24)).await;
    let reset_token = issue_token(&app, victim.user_id, TokenPurpose::PasswordReset, Duration::hours(1)).await;
    // Control: the same kind of token of a live account verifies.
    let alive = app.signup("alive@example.com").await;
    let alive_verify = issue_token(&app, alive.user_id, TokenPurpose::VerifyEmail, Duration::hours(24)).await;
    assert_eq!(
        app.post("/v1/auth/verify-email", None, json!({"token": alive_verify}))
            .await
            .status,
        StatusCode::NO_CONTENT
    );

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
