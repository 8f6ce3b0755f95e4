//! Sign-up, login, refresh rotation and re-use detection, logout, sessions, JWT attacks.

use std::collections::BTreeSet;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures_util::future::join_all;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use testkit::{NewUser, PASSWORD, Role, SignedUp, StatusCode, TEST_JWT_SECRET, TestApp};
use uuid::Uuid;

#[tokio::test]
async fn signup_returns_user_and_tokens() {
    let app = TestApp::spawn().await;
    let res = app
        .try_signup(&NewUser::new(" New.User@Example.COM ").name("New User"))
        .await;
    let signed: SignedUp = res.expect(StatusCode::CREATED);
    assert_eq!(res.header("cache-control"), Some("no-store"));
    assert_eq!(signed.user.email, "new.user@example.com");
    assert_eq!(signed.user.name, "New User");
    assert_eq!(signed.user.role, Role::User);
    assert!(!signed.user.email_verified);
    // Exactly the public fields: no password hash, nothing else that is not meant to leave.
    let keys: BTreeSet<&str> = res.body["user"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["created_at", "email", "email_verified", "id", "name", "role"])
    );
    assert_eq!(signed.tokens.token_type, "Bearer");
    assert_eq!(signed.tokens.expires_in, 900);
    assert_eq!(app.me(&signed.tokens.access).await, signed.user);
}

#[tokio::test]
async fn signup_rejects_duplicates_case_insensitively() {
    let app = TestApp::spawn().await;
    app.signup("dup@example.com").await;
    app.try_signup(&NewUser::new("DUP@example.com").name("X"))
        .await
        .assert_problem(409, "email_taken");
}

#[tokio::test]
async fn signup_validates_every_field() {
    let app = TestApp::spawn().await;
    let res = app
        .try_signup(&NewUser::new("not-an-email").password("short").name(""))
        .await;
    let body = res.assert_problem(422, "validation_failed");
    let mut fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["email", "name", "password"]);

    // 73 bytes: rejected, never truncated to 72.
    let res = app
        .try_signup(&NewUser::new("long@example.com").password(&"a".repeat(73)))
        .await;
    assert_eq!(
        res.assert_problem(422, "validation_failed")["errors"][0]["field"],
        "password"
    );
    // Exactly 72 bytes is fine, and all 72 count.
    let seventy_two = "a".repeat(72);
    app.signup_as(&NewUser::new("l72@example.com").password(&seventy_two))
        .await;
    app.login("l72@example.com", &seventy_two).await;
    app.try_login("l72@example.com", &"a".repeat(71))
        .await
        .assert_problem(401, "invalid_credentials");
    // Header injection through the name.
    app.try_signup(&NewUser::new("inj@example.com").name("Eve\r\nBcc: x@y.z"))
        .await
        .assert_problem(422, "validation_failed");
    // Missing field.
    let res = app
        .post(
            "/v1/auth/signup",
            None,
            json!({"email": "m@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        res.assert_problem(422, "validation_failed")["errors"][0]["field"],
        "name"
    );
}

#[tokio::test]
async fn signup_rejects_mass_assignment() {
    let app = TestApp::spawn().await;
    for extra in [
        json!({"role": "admin"}),
        json!({"id": Uuid::now_v7()}),
        json!({"email_verified": true}),
    ] {
        let mut body = json!({"email": "mass@example.com", "password": PASSWORD, "name": "Mass"});
        let key = extra.as_object().unwrap().keys().next().unwrap().clone();
        body[&key] = extra[&key].clone();
        let res = app.post("/v1/auth/signup", None, body).await;
        assert_eq!(
            res.assert_problem(422, "validation_failed")["errors"][0]["field"],
            key.as_str()
        );
    }
    // Nothing was created by the rejected attempts.
    app.try_login("mass@example.com", PASSWORD)
        .await
        .assert_problem(401, "invalid_credentials");
}

#[tokio::test]
async fn login_failures_are_indistinguishable() {
    let app = TestApp::spawn().await;
    app.signup("known@example.com").await;
    // The e-mail is case-insensitive.
    app.login("KNOWN@example.com", PASSWORD).await;

    let wrong_pw = app.try_login("known@example.com", "wrong-password").await;
    let unknown = app.try_login("nobody@example.com", PASSWORD).await;
    let malformed = app.try_login("not an email", PASSWORD).await;
    for res in [&wrong_pw, &unknown, &malformed] {
        res.assert_problem(401, "invalid_credentials");
    }
    let strip = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("request_id");
        v
    };
    assert_eq!(strip(&wrong_pw.body), strip(&unknown.body));
    // An over-long password at login is a plain failure, not a truncated match.
    let long = format!("{PASSWORD}{}", "x".repeat(80));
    app.try_login("known@example.com", &long)
        .await
        .assert_problem(401, "invalid_credentials");
}

/// Refresh tokens are 32 random bytes in base64url: every one decodes to exactly 32 bytes, no two
/// of many are alike, and their bits are balanced as a uniform source's are (a counter, a
/// timestamp or a short random part padded out would fail one of the three).
#[tokio::test]
async fn refresh_tokens_are_256_random_bits() {
    let app = TestApp::spawn().await;
    let s = app.signup("entropy@example.com").await;
    let mut tokens = vec![s.refresh.clone()];
    for _ in 0..15 {
        tokens.push(app.login("entropy@example.com", PASSWORD).await.refresh);
    }
    tokens.push(app.refresh(&s.refresh).await.refresh);
    let mut seen = BTreeSet::new();
    let mut ones = 0;
    for token in &tokens {
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .unwrap_or_else(|e| panic!("{token:?} is not base64url without padding: {e}"));
        assert_eq!(bytes.len(), 32, "{token:?}");
        ones += bytes.iter().map(|b| b.count_ones()).sum::<u32>();
        assert!(seen.insert(bytes), "a refresh token repeated: {token:?}");
    }
    // 17 × 256 bits: a uniform source sets 2176 of them, give or take 33 (one σ); ±200 is six σ.
    let bits = 17 * 256;
    assert!(
        (bits / 2 - 200..=bits / 2 + 200).contains(&ones),
        "{ones} of {bits} bits set"
    );
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_session() {
    let app = TestApp::spawn().await;
    let s = app.signup("rot@example.com").await;
    let first = app.refresh(&s.refresh).await;
    assert_ne!(first.refresh, s.refresh);
    assert_eq!(app.me(&first.access).await.id, s.user_id);

    // Re-use of the rotated token: 401, and the whole family dies, including the new tokens.
    app.try_refresh(&s.refresh).await.assert_problem(401, "invalid_token");
    app.try_refresh(&first.refresh)
        .await
        .assert_problem(401, "invalid_token");
    app.get("/v1/users/me", Some(&first.access))
        .await
        .assert_problem(401, "invalid_token");
    app.get("/v1/users/me", Some(&s.access))
        .await
        .assert_problem(401, "invalid_token");

    // The revocation is recorded on the session.
    let mut conn = app.state.db.get().await.unwrap();
    use diesel::{ExpressionMethods, QueryDsl};
    use diesel_async::RunQueryDsl;
    let reasons: Vec<Option<String>> = db::schema::sessions::table
        .filter(db::schema::sessions::user_id.eq(s.user_id))
        .select(db::schema::sessions::revoked_reason)
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(reasons, [Some("refresh_reuse".to_owned())]);

    // Unknown tokens are a plain 401.
    app.try_refresh("nope").await.assert_problem(401, "invalid_token");
}

#[tokio::test]
async fn concurrent_refreshes_have_exactly_one_winner() {
    let app = TestApp::spawn().await;
    let s = app.signup("race@example.com").await;
    let attempts = (0..20).map(|_| app.try_refresh(&s.refresh));
    let results = join_all(attempts).await;
    let ok = results.iter().filter(|r| r.status == StatusCode::OK).count();
    assert_eq!(
        ok,
        1,
        "statuses: {:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in results.iter().filter(|r| r.status != StatusCode::OK) {
        r.assert_problem(401, "invalid_token");
    }
}

#[tokio::test]
async fn logout_revokes_at_once() {
    let app = TestApp::spawn().await;
    let s = app.signup("out@example.com").await;
    app.logout(&s.refresh).await;
    // The access token stops working now, not at its expiry.
    app.get("/v1/users/me", Some(&s.access))
        .await
        .assert_problem(401, "invalid_token");
    app.try_refresh(&s.refresh).await.assert_problem(401, "invalid_token");
    // Idempotent, and silent about unknown tokens.
    app.logout(&s.refresh).await;
    app.logout("unknown").await;
}

#[tokio::test]
async fn sessions_list_and_revoke_with_ownership() {
    let app = TestApp::spawn().await;
    let a = app.signup("sa@example.com").await;
    let a2_access = app.login("sa@example.com", PASSWORD).await.access;
    let b = app.signup("sb@example.com").await;

    let sessions = app.sessions(&a.access).await;
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s.current).count(), 1);
    let other_id = sessions.iter().find(|s| !s.current).unwrap().id;
    // The other session is the one `a2` uses: its own listing marks it current.
    let from_a2 = app.sessions(&a2_access).await;
    assert_eq!(from_a2.iter().find(|s| s.current).unwrap().id, other_id);

    // B cannot revoke A's session: 404, and it stays alive.
    app.delete(&format!("/v1/auth/sessions/{other_id}"), Some(&b.access))
        .await
        .assert_problem(404, "not_found");
    assert_eq!(app.get("/v1/users/me", Some(&a2_access)).await.status, StatusCode::OK);

    assert_eq!(
        app.delete(&format!("/v1/auth/sessions/{other_id}"), Some(&a.access))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    app.get("/v1/users/me", Some(&a2_access))
        .await
        .assert_problem(401, "invalid_token");
    app.delete(&format!("/v1/auth/sessions/{other_id}"), Some(&a.access))
        .await
        .assert_problem(404, "not_found");
    app.get("/v1/auth/sessions", None)
        .await
        .assert_problem(401, "unauthorized");
}

fn forge(claims: &Value, alg: Algorithm, secret: &[u8]) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

#[tokio::test]
async fn forged_and_malformed_tokens_are_rejected() {
    let app = TestApp::spawn().await;
    let s = app.signup("jwt@example.com").await;
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s.access.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let now = chrono::Utc::now().timestamp();
    let with = |k: &str, v: Value| {
        let mut c = payload.clone();
        c[k] = v;
        c
    };
    let secret = TEST_JWT_SECRET.as_bytes();
    // Sanity: a correctly forged token with the real secret works, so the failures below are
    // caused by the one thing each changes.
    assert_eq!(
        app.get("/v1/users/me", Some(&forge(&payload, Algorithm::HS256, secret)))
            .await
            .status,
        StatusCode::OK
    );

    let header_none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
    let parts: Vec<&str> = s.access.split('.').collect();
    let tampered_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&with("role", json!("admin"))).unwrap());
    let cases = [
        ("alg none", format!("{header_none}.{body}.")),
        ("tampered payload", format!("{}.{tampered_body}.{}", parts[0], parts[2])),
        (
            "tampered signature",
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                parts[2].chars().rev().collect::<String>()
            ),
        ),
        (
            "wrong secret",
            forge(&payload, Algorithm::HS256, b"another-secret-another-secret-another"),
        ),
        ("other alg", forge(&payload, Algorithm::HS384, secret)),
        (
            "wrong iss",
            forge(&with("iss", json!("https://evil.example")), Algorithm::HS256, secret),
        ),
        (
            "wrong aud",
            forge(&with("aud", json!("other-api")), Algorithm::HS256, secret),
        ),
        (
            "expired",
            forge(&with("exp", json!(now - 120)), Algorithm::HS256, secret),
        ),
        (
            "not yet valid",
            forge(&with("nbf", json!(now + 300)), Algorithm::HS256, secret),
        ),
        (
            "unknown session",
            forge(&with("sid", json!(Uuid::now_v7())), Algorithm::HS256, secret),
        ),
        ("refresh token as bearer", s.refresh.clone()),
        ("garbage", "abc".to_owned()),
    ];
    for (why, token) in cases {
        let res = app.get("/v1/users/me", Some(&token)).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{why}: {}", res.body);
        res.assert_problem(401, "invalid_token");
        assert_eq!(res.header("www-authenticate"), Some("Bearer"), "{why}");
    }
    let basic = app
        .send(
            app.client
                .get(app.url("/v1/users/me"))
                .header("authorization", "Basic Zm9vOmJhcg=="),
        )
        .await;
    basic.assert_problem(401, "unauthorized");
}
