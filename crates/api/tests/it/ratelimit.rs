//! Who is charged to which policy: credentials that do not verify are anonymous, a verified token
//! is its user's everywhere, `current_password` guesses spend the account's login budget, reset
//! attempts have their own budget, a refresh is charged to its session without using up its
//! token when refused, IPv6 clients are counted per /64, and the client's own
//! `X-Forwarded-For` cannot win behind a trusted proxy.

use api::config::{Policy, parse_proxies};
use serde_json::json;
use testkit::{PASSWORD, StatusCode, TestApp};

/// Limits on, with the given policies (`("anon", "2/60")`…) and 127.0.0.1 as a trusted proxy
/// when `proxy` is set (every test client connects from there).
fn limits(policies: &[(&'static str, &str)], proxy: bool) -> impl FnOnce(&mut api::config::Config) {
    let parsed: Vec<Policy> = policies.iter().map(|(n, r)| Policy::parse(n, r).unwrap()).collect();
    move |c| {
        let l = &mut c.rate_limits;
        l.enabled = true;
        for p in parsed {
            let slot = match p.name {
                "login" => &mut l.login,
                "signup" => &mut l.signup,
                "forgot" => &mut l.forgot,
                "reset" => &mut l.reset,
                "refresh" => &mut l.refresh,
                "user" => &mut l.user,
                "anon" => &mut l.anon,
                other => panic!("no policy {other}"),
            };
            *slot = p;
        }
        if proxy {
            l.trusted_proxies = parse_proxies("127.0.0.1").unwrap();
        }
    }
}

/// `POST /v1/auth/password/forgot` (a cheap per-IP policy) as relayed by the trusted proxy, with
/// these `X-Forwarded-For` lines in order.
async fn forgot_via(app: &TestApp, forwarded_for: &[&str]) -> u16 {
    let mut req = app
        .client
        .post(app.url("/v1/auth/password/forgot"))
        .json(&json!({"email": "someone@example.com"}));
    for line in forwarded_for {
        req = req.header("x-forwarded-for", *line);
    }
    let res = app.send(req).await;
    if res.status == StatusCode::TOO_MANY_REQUESTS {
        res.assert_problem(429, "rate_limited");
        assert_eq!(res.header("ratelimit-policy"), Some("\"forgot\";q=2;w=3600"));
    }
    res.status.as_u16()
}

#[tokio::test]
async fn credentials_that_do_not_verify_are_charged_to_the_anonymous_limit() {
    let app = TestApp::spawn_with(limits(&[("anon", "3/60"), ("user", "100/60")], false)).await;
    let s = app.signup("anon-probe@example.com").await; // anonymous: 1 of 3
    let forged = {
        let mut parts: Vec<String> = s.access.split('.').map(str::to_owned).collect();
        parts[2] = parts[2].chars().rev().collect();
        parts.join(".")
    };
    let bad = [
        app.client.get(app.url("/v1/users/me")).bearer_auth(&forged),
        app.client.get(app.url("/v1/users/me")).bearer_auth("garbage"),
        app.client
            .get(app.url("/v1/users/me"))
            .header("authorization", "Basic Zm9vOmJhcg=="),
    ];
    let mut statuses = vec![];
    let mut last = None;
    for req in bad {
        let res = app.send(req).await;
        statuses.push(res.status.as_u16());
        last = Some(res);
    }
    assert_eq!(statuses, [401, 401, 429], "the third bad credential exceeds ANON");
    let limited = last.unwrap();
    limited.assert_problem(429, "rate_limited");
    assert_eq!(limited.header("ratelimit-policy"), Some("\"anon\";q=3;w=60"));
    assert!(limited.header("retry-after").is_some());
    // A token that verifies is its user's business: the spent anonymous budget does not touch it.
    let me = app.get("/v1/users/me", Some(&s.access)).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.header("ratelimit-policy"), Some("\"user\";q=100;w=60"));
}

#[tokio::test]
async fn a_verified_token_is_charged_to_its_user_on_every_route() {
    let app = TestApp::spawn_with(limits(&[("anon", "100/60"), ("user", "2/60")], false)).await;
    let s = app.signup("user-probe@example.com").await;
    // Routes that never look at the token are counted too (here: an unknown one).
    let mut statuses = vec![];
    for _ in 0..3 {
        statuses.push(app.get("/v1/no-such-thing", Some(&s.access)).await.status.as_u16());
    }
    assert_eq!(statuses, [404, 404, 429]);
    let res = app.get("/v1/users/me", Some(&s.access)).await;
    res.assert_problem(429, "rate_limited");
    assert_eq!(res.header("ratelimit-policy"), Some("\"user\";q=2;w=60"));
    // Anonymous traffic from the same address has its own budget.
    assert_eq!(app.get("/v1/no-such-thing", None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn wrong_current_passwords_spend_the_accounts_login_budget_and_revoke_nothing() {
    let app = TestApp::spawn_with(limits(&[("login", "4/60"), ("anon", "100/60")], false)).await;
    let s = app.signup("oracle@example.com").await;
    let other_access = app.login("oracle@example.com", PASSWORD).await.access; // 1 of the account's 4
    let change = |current: &str| json!({"password": "new-password-99", "current_password": current});

    for i in 0..3 {
        app.patch("/v1/users/me", Some(&s.access), change(&format!("guess-{i}")))
            .await
            .assert_problem(403, "invalid_current_password");
    }
    let runs = app.state.hasher.runs();
    // The budget is spent: even the right password is refused now, before any bcrypt run.
    let res = app.patch("/v1/users/me", Some(&s.access), change(PASSWORD)).await;
    res.assert_problem(429, "rate_limited");
    assert_eq!(res.header("ratelimit-policy"), Some("\"login\";q=4;w=60"));
    assert_eq!(app.state.hasher.runs(), runs, "a refused guess costs no bcrypt");
    // It is the account's login budget: logging in is refused as well.
    app.try_login("oracle@example.com", PASSWORD)
        .await
        .assert_problem(429, "rate_limited");
    // Failed attempts revoked nothing and changed nothing.
    assert_eq!(
        app.get("/v1/users/me", Some(&other_access)).await.status,
        StatusCode::OK
    );
    assert_eq!(app.get("/v1/users/me", Some(&s.access)).await.status, StatusCode::OK);
    // A name change needs no password and is not charged.
    let renamed = app
        .patch("/v1/users/me", Some(&s.access), json!({"name": "Still Here"}))
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
}

#[tokio::test]
async fn password_reset_has_its_own_limit_per_ip_and_per_token() {
    let app = TestApp::spawn_with(limits(&[("reset", "2/60"), ("anon", "100/60")], true)).await;
    let reset = |ip: &str, token: &str| {
        app.client
            .post(app.url("/v1/auth/password/reset"))
            .header("x-forwarded-for", ip.to_owned())
            .json(&json!({"token": token, "new_password": "new-password-99"}))
    };
    // One address, made-up tokens.
    let mut statuses = vec![];
    for i in 0..3 {
        let res = app.send(reset("203.0.113.1", &format!("made-up-{i}"))).await;
        statuses.push(res.status.as_u16());
        if i == 2 {
            res.assert_problem(429, "rate_limited");
            assert_eq!(res.header("ratelimit-policy"), Some("\"reset\";q=2;w=60"));
        }
    }
    assert_eq!(statuses, [400, 400, 429], "per IP");
    // One token, from ever new addresses.
    let mut statuses = vec![];
    for i in 0..3 {
        statuses.push(
            app.send(reset(&format!("198.51.100.{i}"), "one-token"))
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(statuses, [400, 400, 429], "per token");
}

#[tokio::test]
async fn a_refused_refresh_leaves_its_token_usable() {
    let app = TestApp::spawn_with(limits(&[("refresh", "1/1"), ("anon", "100/60")], false)).await;
    let s = app.signup("refresh-limit@example.com").await;
    let first = app.try_refresh(&s.refresh).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("ratelimit-policy"), Some("\"refresh\";q=1;w=1"));
    let next: String = first.json::<serde_json::Value>()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The session's budget is spent: refused, and the token is not consumed...
    let refused = app.try_refresh(&next).await;
    refused.assert_problem(429, "rate_limited");
    assert_eq!(refused.header("ratelimit-policy"), Some("\"refresh\";q=1;w=1"));
    // ...while an unknown token is no session's and stays a 401.
    app.try_refresh("not-a-token")
        .await
        .assert_problem(401, "invalid_token");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Not a re-use (which would revoke the session): the token still rotates.
    assert_eq!(app.try_refresh(&next).await.status, StatusCode::OK);
}

#[tokio::test]
async fn ipv6_clients_share_one_budget_per_64() {
    let app = TestApp::spawn_with(limits(&[("forgot", "2/3600"), ("anon", "100/60")], true)).await;
    assert_eq!(forgot_via(&app, &["2001:db8:1:2::1"]).await, 202);
    assert_eq!(forgot_via(&app, &["2001:db8:1:2:ffff:ffff:ffff:fffe"]).await, 202);
    // A third address of the same /64 is the same host.
    assert_eq!(forgot_via(&app, &["[2001:db8:1:2::3]:443"]).await, 429);
    // The next /64 is another client; IPv4 clients are still counted per address.
    assert_eq!(forgot_via(&app, &["2001:db8:1:3::1"]).await, 202);
    assert_eq!(forgot_via(&app, &["192.0.2.1"]).await, 202);
    assert_eq!(forgot_via(&app, &["192.0.2.2"]).await, 202);
}

#[tokio::test]
async fn the_ipv6_prefix_is_configurable() {
    let app = TestApp::spawn_with(|c| {
        limits(&[("forgot", "2/3600"), ("anon", "100/60")], true)(c);
        c.rate_limits.ipv6_prefix = 48;
    })
    .await;
    assert_eq!(forgot_via(&app, &["2001:db8:1:2::1"]).await, 202);
    assert_eq!(forgot_via(&app, &["2001:db8:1:3::1"]).await, 202);
    assert_eq!(forgot_via(&app, &["2001:db8:1:ffff::1"]).await, 429, "one /48");
    assert_eq!(forgot_via(&app, &["2001:db8:2::1"]).await, 202);
}

#[tokio::test]
async fn a_spoofed_leftmost_forwarded_for_does_not_escape_the_limit() {
    let app = TestApp::spawn_with(limits(&[("forgot", "2/3600"), ("anon", "100/60")], true)).await;
    // The client writes its own line with a fresh address each time; the proxy appends the
    // client's real address (with its port) on a line of its own.
    let mut statuses = vec![];
    for i in 0..4 {
        let spoofed = format!("203.0.113.{i}");
        statuses.push(forgot_via(&app, &[&spoofed, "198.51.100.7:51234"]).await);
    }
    assert_eq!(statuses, [202, 202, 429, 429], "all of them are 198.51.100.7");
    // The same on one line, with the proxy's entry in bracketed IPv6 form.
    let mut statuses = vec![];
    for i in 0..3 {
        let line = format!("203.0.113.{i}, [2001:db8:9::7]:443");
        statuses.push(forgot_via(&app, &[&line]).await);
    }
    assert_eq!(statuses, [202, 202, 429], "all of them are 2001:db8:9::7");
}
