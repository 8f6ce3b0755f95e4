//! The account pages behind our e-mails' links, in a real browser (headless chromium driven by
//! pip playwright, see `testkit::browser`): verify an account, reset a password, sign in. Plus
//! what a plain HTTP client sees: the pages' CSP, and that a GET (a prefetch) verifies nothing.

use api::routes::pages::PAGES_CSP;
use testkit::{PASSWORD, TestApp, browser::drive};

const VERIFY: &str = "Confirm your e-mail address";
const RESET: &str = "Reset your password";

#[tokio::test]
async fn pages_are_html_under_a_strict_csp_and_assets_are_served() {
    let app = TestApp::spawn().await;
    for path in ["/verify-email?token=x", "/reset-password?token=x", "/login"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(res.headers()["content-security-policy"], PAGES_CSP);
        assert_eq!(res.headers()["x-frame-options"], "DENY");
        assert_eq!(res.headers()["referrer-policy"], "no-referrer");
        let html = res.text().await.unwrap();
        assert!(
            html.contains(r#"<script src="/assets/account.js" defer></script>"#),
            "{html}"
        );
        // No inline script, no outside resource.
        assert_eq!(html.matches("<script").count(), 1, "{html}");
        assert!(!html.contains("https://"), "{html}");
    }
    let js = app.client.get(app.url("/assets/account.js")).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
    let css = app.client.get(app.url("/assets/account.css")).send().await.unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
}

#[tokio::test]
async fn verifying_an_account_in_the_browser_takes_a_click_never_a_prefetch() {
    let app = TestApp::spawn().await;
    let s = app.signup("page.verify@example.com").await;
    app.run_jobs().await;
    let token = app
        .the_mail("page.verify@example.com", VERIFY)
        .link_token("http://localhost:8080/verify-email");
    let link = app.url(&format!("/verify-email?token={token}"));

    // A mail scanner or a browser prefetch GETs the link: nothing is verified.
    let prefetch = app.client.get(&link).send().await.unwrap();
    assert_eq!(prefetch.status(), 200);
    assert!(!app.me(&s.access).await.email_verified);

    let out = drive(&["verify", &link]).await;
    assert_eq!(out["before"], serde_json::Value::Null, "{out}");
    assert_eq!(out["status"], "Thank you: your e-mail address is verified.", "{out}");
    assert_eq!(out["button"], false);
    assert!(app.me(&s.access).await.email_verified);

    // The link is spent: a second click says so.
    let again = drive(&["verify", &link]).await;
    assert_eq!(
        again["status"], "This link is invalid, expired or was already used.",
        "{again}"
    );
}

#[tokio::test]
async fn resetting_a_password_in_the_browser_then_signing_in_with_it() {
    let app = TestApp::spawn().await;
    let s = app.signup("page.reset@example.com").await;
    app.forgot_password("page.reset@example.com").await;
    app.run_jobs().await;
    let token = app
        .the_mail("page.reset@example.com", RESET)
        .link_token("http://localhost:8080/reset-password");
    let link = app.url(&format!("/reset-password?token={token}"));

    let out = drive(&["reset", &link, "a-brand-new-password"]).await;
    assert_eq!(
        out["status"], "Your password is changed, and every session was signed out. You can sign in now.",
        "{out}"
    );
    app.try_login("page.reset@example.com", PASSWORD)
        .await
        .assert_problem(401, "invalid_credentials");
    app.try_refresh(&s.refresh).await.assert_problem(401, "invalid_token");

    let signed_in = drive(&["login", &app.base, "page.reset@example.com", "a-brand-new-password"]).await;
    assert_eq!(signed_in["who"], "Signed in as page.reset@example.com.", "{signed_in}");
}
