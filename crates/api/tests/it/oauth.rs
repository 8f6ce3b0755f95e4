//! OpenID Connect login against a real provider over HTTP (`testkit::oidc::OidcProvider`: its
//! own server with discovery, JWKS, authorize and token endpoints that check the client secret,
//! the code, the redirect URI and PKCE). Each step is a real request: the API's authorize
//! redirect, the provider's redirect back, the API's callback.

use std::collections::HashMap;

use diesel::QueryDsl;
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};
use testkit::{
    PASSWORD, Res, TestApp,
    oidc::{CLIENT_ID, Login, OidcProvider, Tamper},
};

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn query(url: &str) -> HashMap<String, String> {
    reqwest::Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

fn location(res: &reqwest::Response) -> String {
    assert_eq!(res.status(), 302, "{res:?}");
    res.headers()["location"].to_str().unwrap().to_owned()
}

/// The API's authorize step: the provider URL it redirects to.
async fn authorize(app: &TestApp, provider: &str, return_to: Option<&str>) -> String {
    let mut url = app.url(&format!("/v1/auth/oauth/{provider}/authorize"));
    if let Some(r) = return_to {
        url = format!(
            "{url}?return_to={}",
            form_urlencoded::byte_serialize(r.as_bytes()).collect::<String>()
        );
    }
    location(&no_redirects().get(url).send().await.unwrap())
}

/// The provider's answer to its authorize URL: the callback URL it sends the browser to.
async fn at_provider(provider_url: &str) -> String {
    location(&no_redirects().get(provider_url).send().await.unwrap())
}

async fn get(app: &TestApp, url: &str) -> Res {
    app.send(no_redirects().get(url)).await
}

/// A whole login without `return_to`: the callback's response.
async fn login(app: &TestApp) -> Res {
    let callback = at_provider(&authorize(app, "test", None).await).await;
    get(app, &callback).await
}

async fn audit_types(app: &TestApp) -> Vec<String> {
    use db::schema::audit_log::dsl::*;
    app.run_jobs().await;
    let mut conn = app.state.db.get().await.unwrap();
    let mut v: Vec<String> = audit_log.select(event_type).load(&mut conn).await.unwrap();
    v.sort();
    v
}

#[tokio::test]
async fn authorize_redirects_with_code_flow_pkce_state_and_nonce() {
    let idp = OidcProvider::start().await;
    let app = TestApp::spawn_with_oidc(&idp, |_| {}).await;
    let url = authorize(&app, "test", None).await;
    assert!(url.starts_with(&format!("{}/authorize?", idp.issuer)), "{url}");
    let q = query(&url);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], app.url("/v1/auth/oauth/test/callback"));
    assert_eq!(q["scope"], "openid email profile");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert!(q["state"].len() >= 22 && q["nonce"].len() >= 22, "{q:?}");
    // Nothing secret in the browser: no verifier, no client secret.
    assert!(!url.contains("secret") && !q.contains_key("code_verifier"), "{url}");
    // Every authorize has a state and nonce of its own.
    let again = query(&authorize(&app, "test", None).await);
    assert_ne!(again["state"], q["state"]);
    assert_ne!(again["nonce"], q["nonce"]);
}

#[tokio::test]
async fn a_first_login_creates_the_account_and_a_returning_one_finds_it_by_issuer_and_subject() {
    let idp = OidcProvider::start().await;
    let app = TestApp::spawn_with_oidc(&idp, |_| {}).await;
    idp.next_login(Login::new("sub-new", "New.Person@Example.com"));
    let res = login(&app).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.header("cache-control"), Some("no-store"));
    let user = res.body["user"].clone();
    assert_eq!(user["email"], "new.person@example.com");
    assert_eq!(user["email_verified"], true);
    assert_eq!(res.body["token_type"], "Bearer");
    let access = res.body["access_token"].as_str().unwrap().to_owned();
    let refresh = res.body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(app.me(&access).await.email, "new.person@example.com");
    // A session like any other: it refreshes (rotating the refresh token).
    let rotated = app.refresh(&refresh).await;
    assert_ne!(rotated.refresh, refresh);

    let ids = app.get("/v1/users/me/identities", Some(&access)).await;
    assert_eq!(ids.status, 200);
    let items = ids.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["provider"], "test");
    assert_eq!(items[0]["email"], "new.person@example.com");

    // The provider changed the e-mail: the identity (issuer, sub) still finds the same account.
    idp.next_login(Login::new("sub-new", "renamed@example.com"));
    let again = login(&app).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["user"]["id"], user["id"]);
    assert_eq!(app.sessions(&access).await.len(), 2);

    // No password: password login answers as for a wrong one.
    app.try_login("new.person@example.com", PASSWORD)
        .await
        .assert_problem(401, "invalid_credentials");
    assert_eq!(
        audit_types(&app).await,
        [
            "identity_linked",
            "login_failed",
            "oauth_login",
            "oauth_login",
            "signup"
        ]
    );
}

#[tokio::test]
async fn linking_by_email_needs_both_sides_verified() {
    let idp = OidcProvider::start().await;
    let app = TestApp::spawn_with_oidc(&idp, |_| {}).await;

    // Local account unverified, provider verified → 409.
    app.signup("local@example.com").await;
    idp.next_login(Login::new("sub-local", "LOCAL@example.com"));
    login(&app).await.assert_problem(409, "account_exists");

    // Local verified, provider unverified → 409.
    let verified = app.signup("verified@example.com").await;
    app.run_jobs().await;
    let token = app
        .the_mail("verified@example.com", "Confirm your e-mail address")
        .link_token("/verify-email");
    app.verify_email(&token).await;
    idp.next_login(Login::new("sub-verified", "verified@example.com").unverified());
    login(&app).await.assert_problem(409, "account_exists");

    // Both verified → linked to the existing account, which keeps its password.
    idp.next_login(Login::new("sub-verified", "Verified@Example.com"));
    let linked = login(&app).await;
    assert_eq!(linked.status, 200, "{}", linked.body);
    assert_eq!(linked.body["user"]["id"], json!(verified.user_id));
    app.login("verified@example.com", PASSWORD).await;

    // A new account from an unverified provider e-mail is created unverified.
    idp.next_login(Login::new("sub-fresh", "fresh@example.com").unverified());
    let fresh = login(&app).await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert_eq!(fresh.body["user"]["email_verified"], false);
}

#[tokio::test]
async fn state_is_single_use_bound_to_its_provider_and_expires() {
    let idp = OidcProvider::start().await;
    let app = TestApp::spawn_with_oidc(&idp, |c| {
        let mut other = c.oidc.providers[0].clone();
        other.name = "other".into();
        c.oidc.providers.push(other);
    })
    .await;
    // Made up.
    get(&app, &app.url("/v1/auth/oauth/test/callback?code=x&state=made-up"))
        .await
        .assert_problem(400, "invalid_state");
    get(&app, &app.url("/v1/auth/oauth/test/callback?code=x"))
        .await
        .assert_problem(400, "invalid_state");

    // Used: the same callback twice.
    let callback = at_provider(&authorize(&app, "test", None).await).await;
    assert_eq!(get(&app, &callback).await.status, 200);
    get(&app, &callback).await.assert_problem(400, "invalid_state");

    // For another provider: a state from `test` presented at `other`'s callback (and spent).
    let callback = at_provider(&authorize(&app, "test", None).await).await;
    let cross = callback.replace("/oauth/test/", "/oauth/other/");
    get(&app, &cross).await.assert_problem(400, "invalid_state");
    get(&app, &callback).await.assert_problem(400, "invalid_state");

    // Expired: the state's key outlived its 10 minutes (made to expire now).
    let callback = at_provider(&authorize(&app, "test", None).await).await;
    let mut redis = redis::Client::open(testkit::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pattern = format!("{}:oauth:state:*", app.state.config.redis_prefix);
    let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut redis).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = redis::cmd("TTL").arg(&keys[0]).query_async(&mut redis).await.unwrap();
    assert!((590..=600).contains(&ttl), "{ttl}");
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(&keys[0])
        .arg(1)
        .query_async(&mut redis)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    get(&app, &callback).await.assert_problem(400, "invalid_state");
}

#[tokio::test]
async fn the_code_is_bound_to_its_pkce_verifier_and_used_once() {
    let idp = OidcProvider::start().await;
    let app = TestApp::spawn_with_oidc(&idp, |_| {}).await;
    // An injected code: the code of one authorize request with the state (and so the PKCE
    // verifier) of another → the provider refuses the verifier.
    let first = at_provider(&authorize(&app, "test", None).await).await;
    let second = at_provider(&authorize(&app, "test", None).await).await;
    let injected = format!(
        "{}?code={}&state={}",
        app.url("/v1/auth/oauth/test/callback"),
        query(&first)["code"],
        query(&second)["state"]
    );
    get(&app, &injected).await.assert_problem(400, "invalid_code");

    // A replayed code: used once, then presented with a fresh state.
    let callback = at_provider(&authorize(&app, "test", None).await).await;
    assert_eq!(get(&app, &callback).await.status, 200);
    let fresh = at_provider(&authorize(&app, "test", None).await).await;
    let replay = format!(
        "{}?code={}&state={}",
        app.url("/v1/auth/oauth/test/callback"),
        query(&callback)["code"],
        query(&fresh)["state"]
    );
    get(&app, &replay).await.assert_problem(400, "invalid_code");
    // Without a code at all.
    let bare = at_provider(&authorize(&app, "test", None).await).await;
    let no_code = format!(
        "{}?state={}",
        app.url("/v1/auth/oauth/test/callback"),
        query(&bare)["state"]
    );
    get(&app, &no_code).await.assert_problem(400, "invalid_code");
}

#[tokio::test]
async fn a_denied_login_is_oauth_denied() {
    let idp = OidcProvider::start().await;
    let app = TestApp::spawn_with_oidc(&idp, |_| {}).await;
    let mut who = Login::new("sub-deny", "deny@example.com");
    who.deny = true;
    idp.next_login(who);
    let callback = at_provider(&authorize(&app, "test", None).await).await;
    assert_eq!(query(&callback)["error"], "access_denied");
    get(&app, &callback).await.assert_problem(400, "oauth_denied");
    assert_eq!(idp.token_calls(), 0);
}

#[tokio::test]
async fn id_tokens_that_do_not_verify_are_refused() {
    let idp = OidcProvider::start().await;
    let app = TestApp::spawn_with_oidc(&idp, |_| {}).await;
    let cases = [
        (
            "HS256 signed with the public key as the secret",
            Tamper {
                hs256: true,
                ..Tamper::default()
            },
        ),
        (
            "bad signature",
            Tamper {
                wrong_key: true,
                ..Tamper::default()
            },
        ),
        (
            "wrong iss",
            Tamper {
                iss: Some("http://127.0.0.1:1/evil".into()),
                ..Tamper::default()
            },
        ),
        (
            "wrong aud",
            Tamper {
                aud: Some(json!("another-client")),
                ..Tamper::default()
            },
        ),
        (
            "several audiences without azp",
            Tamper {
                aud: Some(json!([CLIENT_ID, "another-client"])),
                ..Tamper::default()
            },
        ),
        (
            "azp of another client",
            Tamper {
                azp: Some("another-client".into()),
                ..Tamper::default()
            },
        ),
        (
            "wrong nonce",
            Tamper {
                nonce: Some("another-nonce".into()),
                ..Tamper::default()
            },
        ),
        (
            "expired",
            Tamper {
                exp_offset: Some(-120),
                ..Tamper::default()
            },
        ),
    ];
    for (what, tamper) in cases {
        idp.tamper(tamper);
        let res = login(&app).await;
        assert_eq!(res.body["code"], "invalid_id_token", "{what}: {}", res.body);
        res.assert_problem(400, "invalid_id_token");
    }
    // Several audiences are fine with the right azp.
    idp.tamper(Tamper {
        aud: Some(json!([CLIENT_ID, "another-client"])),
        azp: Some(CLIENT_ID.into()),
        ..Tamper::default()
    });
    assert_eq!(login(&app).await.status, 200);
    idp.tamper(Tamper::default());
    assert_eq!(login(&app).await.status, 200);
    // Nothing of the refused logins reached the database.
    let mut conn = app.state.db.get().await.unwrap();
    let n: i64 = db::schema::identities::table
        .count()
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_unknown_kids_cannot_hammer_the_provider() {
    let idp = OidcProvider::start().await;
    let app = TestApp::spawn_with_oidc(&idp, |_| {}).await;
    assert_eq!(login(&app).await.status, 200);
    assert_eq!(login(&app).await.status, 200);
    assert_eq!(idp.jwks_fetches(), 1, "the JWKS is cached");
    idp.rotate_key();
    assert_eq!(
        login(&app).await.status,
        200,
        "the new key is fetched on its unknown kid"
    );
    assert_eq!(idp.jwks_fetches(), 2);
    // A flood of tokens naming unknown keys: refused, and no further fetch (cooldown).
    idp.tamper(Tamper {
        kid: Some("no-such-key".into()),
        ..Tamper::default()
    });
    for _ in 0..5 {
        login(&app).await.assert_problem(400, "invalid_id_token");
    }
    assert_eq!(idp.jwks_fetches(), 2);
}

#[tokio::test]
async fn return_to_redirects_with_a_single_use_login_code() {
    let idp = OidcProvider::start().await;
    let app = TestApp::spawn_with_oidc(&idp, |_| {}).await;
    let here = app.url("/login");
    // Not on the allow-list (matched exactly).
    let res = app
        .send(no_redirects().get(app.url(&format!(
            "/v1/auth/oauth/test/authorize?return_to={}",
            form_urlencoded::byte_serialize(format!("{here}/x").as_bytes()).collect::<String>()
        ))))
        .await;
    res.assert_problem(422, "validation_failed");
    assert_eq!(res.body["errors"][0]["field"], "return_to");

    let callback = at_provider(&authorize(&app, "test", Some(&here)).await).await;
    let res = no_redirects().get(&callback).send().await.unwrap();
    let to = location(&res);
    let (base, fragment) = to.split_once('#').unwrap();
    assert_eq!(base, here);
    let code = fragment.strip_prefix("login_code=").unwrap();
    assert!(code.len() >= 40, "{code}");

    let exchanged = app
        .post("/v1/auth/oauth/exchange", None, json!({"login_code": code}))
        .await;
    assert_eq!(exchanged.status, 200, "{}", exchanged.body);
    let access = exchanged.body["access_token"].as_str().unwrap();
    assert_eq!(app.me(access).await.email, "oidc.user@example.com");
    app.post("/v1/auth/oauth/exchange", None, json!({"login_code": code}))
        .await
        .assert_problem(400, "invalid_code");
    app.post("/v1/auth/oauth/exchange", None, json!({"login_code": "made-up"}))
        .await
        .assert_problem(400, "invalid_code");
}

#[tokio::test]
async fn identities_are_listed_and_unlinked_but_never_the_last_way_in() {
    let idp = OidcProvider::start().await;
    let app = TestApp::spawn_with_oidc(&idp, |_| {}).await;
    // An account created by the provider: no password, one identity.
    let res = login(&app).await;
    let access = res.body["access_token"].as_str().unwrap().to_owned();
    let ids = app.get("/v1/users/me/identities", Some(&access)).await;
    let id = ids.body["items"][0]["id"].as_str().unwrap().to_owned();
    app.delete(&format!("/v1/users/me/identities/{id}"), Some(&access))
        .await
        .assert_problem(409, "last_login_method");

    // Someone else cannot see or unlink it.
    let other = app.signup("someone@example.com").await;
    app.delete(&format!("/v1/users/me/identities/{id}"), Some(&other.access))
        .await
        .assert_problem(404, "not_found");
    let none = app.get("/v1/users/me/identities", Some(&other.access)).await;
    assert_eq!(none.body, json!({"items": []}));

    // With a password (set through the reset flow), the identity can go.
    app.forgot_password("oidc.user@example.com").await;
    app.run_jobs().await;
    let token = app
        .the_mail("oidc.user@example.com", "Reset your password")
        .link_token("/reset-password");
    app.reset_password(&token, "a-password-of-my-own").await;
    let tokens = app.login("oidc.user@example.com", "a-password-of-my-own").await;
    app.delete(&format!("/v1/users/me/identities/{id}"), Some(&tokens.access))
        .await
        .expect_status(testkit::StatusCode::NO_CONTENT);
    let after = app.get("/v1/users/me/identities", Some(&tokens.access)).await;
    assert_eq!(after.body, json!({"items": []}));
    assert!(audit_types(&app).await.contains(&"identity_unlinked".to_owned()));
}

#[tokio::test]
async fn without_providers_the_routes_answer_unknown_provider() {
    let app = TestApp::spawn().await;
    app.get("/v1/auth/oauth/google/authorize", None)
        .await
        .assert_problem(404, "unknown_provider");
    app.get("/v1/auth/oauth/google/callback?code=x&state=y", None)
        .await
        .assert_problem(404, "unknown_provider");
}

#[tokio::test]
async fn an_unreachable_provider_is_503_never_500() {
    let port = testkit::free_port();
    let app = TestApp::spawn_with(|c| {
        c.oidc.providers.push(api::config::oidc::OidcProvider {
            name: "down".into(),
            issuer: format!("http://127.0.0.1:{port}"),
            client_id: "x".into(),
            client_secret: "y".to_owned().into(),
        });
    })
    .await;
    let res = app.get("/v1/auth/oauth/down/authorize", None).await;
    res.assert_problem(503, "provider_unavailable");
    assert!(res.header("retry-after").is_some());
}

#[tokio::test]
async fn the_provider_going_down_between_authorize_and_callback_is_503() {
    let idp = OidcProvider::start().await;
    let app = TestApp::spawn_with_oidc(&idp, |_| {}).await;
    let callback = at_provider(&authorize(&app, "test", None).await).await;
    drop(idp);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let _: Value = get(&app, &callback)
        .await
        .assert_problem(503, "provider_unavailable")
        .clone();
}

#[tokio::test]
async fn signing_in_through_the_provider_by_clicking() {
    let idp = OidcProvider::start().await;
    let app = TestApp::spawn_with_oidc(&idp, |_| {}).await;
    idp.next_login(Login::new("sub-browser", "browser@example.com"));
    let page = reqwest::get(app.url("/login")).await.unwrap().text().await.unwrap();
    assert!(page.contains("Sign in with Test"), "{page}");
    let out = testkit::browser::drive(&["provider", &app.base, "Test"]).await;
    assert_eq!(out["who"], "Signed in as browser@example.com.", "{out}");
    // The fragment with the login code is gone from the address bar.
    assert_eq!(out["url"], app.url("/login"), "{out}");
    assert_eq!(audit_types(&app).await, ["identity_linked", "oauth_login", "signup"]);
}

#[tokio::test]
async fn production_refuses_to_start_on_a_provider_whose_discovery_it_cannot_read() {
    let db = testkit::TestDb::create().await;
    let mut config = testkit::test_config(&db.url);
    config.app_env = api::config::AppEnv::Production;
    config.oidc.providers.push(api::config::oidc::OidcProvider {
        name: "down".into(),
        issuer: format!("http://127.0.0.1:{}", testkit::free_port()),
        client_id: "x".into(),
        client_secret: "y".to_owned().into(),
    });
    let Err(e) = api::startup::build_state(config).await else {
        panic!("started without its provider's discovery")
    };
    assert!(format!("{e:#}").contains("OIDC provider \"down\""), "{e:#}");

    // Outside production the same configuration starts (discovery is lazy).
    let mut config = testkit::test_config(&db.url);
    config.oidc.providers.push(api::config::oidc::OidcProvider {
        name: "down".into(),
        issuer: format!("http://127.0.0.1:{}", testkit::free_port()),
        client_id: "x".into(),
        client_secret: "y".to_owned().into(),
    });
    assert!(api::startup::build_state(config).await.is_ok());
}

#[tokio::test]
async fn authorize_and_callback_are_rate_limited_per_ip() {
    let idp = OidcProvider::start().await;
    let app = TestApp::spawn_with_oidc(&idp, |c| {
        c.rate_limits.enabled = true;
        c.rate_limits.oauth = api::config::Policy::parse("oauth", "3/60").unwrap();
    })
    .await;
    let callback = at_provider(&authorize(&app, "test", None).await).await;
    assert_eq!(get(&app, &callback).await.status, 200);
    authorize(&app, "test", None).await;
    let res = get(&app, &app.url("/v1/auth/oauth/test/authorize")).await;
    res.assert_problem(429, "rate_limited");
    assert!(res.header("retry-after").is_some());
    get(&app, &callback).await.assert_problem(429, "rate_limited");
}
