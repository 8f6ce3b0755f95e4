//! Authenticated reads are answered from each instance's session cache — under a bus lease, with
//! no Redis round trip — and every revocation is still immediate on every instance
//! (`infra::session_cache`, `infra::bus`): the invariants of issue 13.

use std::time::{Duration, Instant};

use api::infra::{
    bus::{ACK_WAIT, HEARTBEAT},
    session_cache::PENDING_TTL,
};
use serde_json::json;
use testkit::{OwnRedis, PASSWORD, StatusCode, TestApp};

/// Whether `app` would answer the next request with this access token from its session cache.
async fn answers_from_cache(app: &TestApp, access: &str) -> bool {
    let claims = app.state.tokens.verify(access).unwrap();
    app.state.sessions.answers(claims.sid, claims.sub).await
}

/// Whether `app` would answer the next request with this access token without asking Redis.
fn leased(app: &TestApp, access: &str) -> bool {
    let claims = app.state.tokens.verify(access).unwrap();
    app.state.sessions.leased(claims.sid, claims.sub)
}

/// Reads `/v1/users/me` on `app` and checks that its session cache now answers for the session,
/// under a bus lease (so that what follows tests the lease path; the bus may take a moment to be
/// live after start-up, or after a heartbeat delayed by a loaded machine).
async fn cached(app: &TestApp, access: &str) {
    app.get("/v1/users/me", Some(access))
        .await
        .expect_status(StatusCode::OK);
    assert!(
        answers_from_cache(app, access).await,
        "the session is cached after a read"
    );
    for _ in 0..200 {
        if leased(app, access) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        answers_from_cache(app, access).await;
    }
    panic!("the session was never leased: the invalidation bus is not live");
}

fn refused(res: &testkit::Res, what: &str) {
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{what}: {}", res.body);
    res.assert_problem(401, "invalid_token");
}

#[tokio::test]
async fn a_revoked_session_is_refused_on_every_instance_at_once() {
    let a = TestApp::spawn().await;
    let b = a.sibling().await;
    a.signup("revoked-everywhere@example.com").await;
    let mut leaks = 0;
    for i in 0..1000 {
        let (revoker, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let tokens = revoker.login("revoked-everywhere@example.com", PASSWORD).await;
        cached(&a, &tokens.access).await;
        cached(&b, &tokens.access).await;
        if i % 4 < 2 {
            revoker.logout(&tokens.refresh).await;
        } else {
            let current = revoker
                .sessions(&tokens.access)
                .await
                .into_iter()
                .find(|s| s.current)
                .unwrap();
            revoker
                .delete(&format!("/v1/auth/sessions/{}", current.id), Some(&tokens.access))
                .await
                .expect_status(StatusCode::NO_CONTENT);
        }
        // Both requests start after the revoking response was received.
        let (x, y) = tokio::join!(
            other.get("/v1/users/me", Some(&tokens.access)),
            revoker.get("/v1/users/me", Some(&tokens.access)),
        );
        leaks += usize::from(x.status != StatusCode::UNAUTHORIZED) + usize::from(y.status != StatusCode::UNAUTHORIZED);
    }
    assert_eq!(leaks, 0, "requests answered for a revoked session");
}

#[tokio::test]
async fn every_kind_of_change_applies_to_the_next_request_on_every_instance() {
    let a = TestApp::spawn().await;
    let b = a.sibling().await;
    let admin = a.admin("changes-admin@example.com").await;

    // A role change: the other instance serves the new role on the very next request.
    let user = a.signup("promoted@example.com").await;
    cached(&b, &user.access).await;
    b.get("/v1/users", Some(&user.access))
        .await
        .assert_problem(403, "forbidden");
    a.patch(
        &format!("/v1/users/{}", user.user_id),
        Some(&admin.access),
        json!({"role": "admin"}),
    )
    .await
    .expect_status(StatusCode::OK);
    b.get("/v1/users", Some(&user.access))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(b.me(&user.access).await.role, testkit::Role::Admin);

    // A renamed account reads back renamed everywhere.
    cached(&b, &user.access).await;
    a.update_me(&user.access, json!({"name": "New Name"})).await;
    assert_eq!(b.me(&user.access).await.name, "New Name");

    // A password change revokes the other sessions (and keeps the one that changed it).
    let other = a.login("promoted@example.com", PASSWORD).await;
    cached(&b, &other.access).await;
    a.update_me(
        &user.access,
        json!({"password": "another-password-42", "current_password": PASSWORD}),
    )
    .await;
    refused(&b.get("/v1/users/me", Some(&other.access)).await, "password change");
    b.get("/v1/users/me", Some(&user.access))
        .await
        .expect_status(StatusCode::OK);

    // Refresh-token re-use kills the family on every instance.
    let victim = a.signup("replayed@example.com").await;
    let rotated = a.refresh(&victim.refresh).await;
    cached(&b, &rotated.access).await;
    a.try_refresh(&victim.refresh)
        .await
        .assert_problem(401, "invalid_token");
    refused(&b.get("/v1/users/me", Some(&rotated.access)).await, "refresh re-use");

    // A password reset revokes every session.
    let forgetful = a.signup("forgetful@example.com").await;
    cached(&b, &forgetful.access).await;
    a.forgot_password("forgetful@example.com").await;
    a.run_jobs().await;
    let mail = a.the_mail("forgetful@example.com", "Reset your password");
    a.reset_password(&mail.link_token("/reset-password"), "a-brand-new-password-7")
        .await;
    refused(&b.get("/v1/users/me", Some(&forgetful.access)).await, "password reset");

    // An account deleted by an admin is gone for the next request.
    let doomed = a.signup("doomed@example.com").await;
    cached(&b, &doomed.access).await;
    a.delete(&format!("/v1/users/{}", doomed.user_id), Some(&admin.access))
        .await
        .expect_status(StatusCode::NO_CONTENT);
    refused(&b.get("/v1/users/me", Some(&doomed.access)).await, "account deletion");
}

#[tokio::test]
async fn an_instance_that_never_acknowledges_delays_a_change_but_cannot_make_it_leak() {
    let a = TestApp::spawn().await;
    let b = a.sibling().await;
    // A third instance that is registered (its heartbeats reach Redis) but never acknowledges
    // a change: stuck, or its subscription gone without its noticing — `PUBLISH` would not
    // even count it as a receiver.
    let client = redis::Client::open(testkit::redis_url()).unwrap();
    let mut r = client.get_multiplexed_async_connection().await.unwrap();
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut r).await.unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(format!("{}:bus:instances", a.state.config.redis_prefix))
        .arg(secs * 1000 + micros / 1000 + 60_000)
        .arg("mute-peer")
        .query_async(&mut r)
        .await
        .unwrap();
    a.signup("mute-peer@example.com").await;
    let tokens = a.login("mute-peer@example.com", PASSWORD).await;
    cached(&a, &tokens.access).await;
    cached(&b, &tokens.access).await;
    let started = Instant::now();
    a.logout(&tokens.refresh).await;
    assert!(
        started.elapsed() >= ACK_WAIT,
        "the logout waited out the missing acknowledgement"
    );
    refused(&b.get("/v1/users/me", Some(&tokens.access)).await, "mute peer");
    refused(&a.get("/v1/users/me", Some(&tokens.access)).await, "mute peer");
}

/// An instance that stops (`api serve` after its last request, a CLI command at its end)
/// deregisters, and no later heartbeat registers it again: changes announced right after its
/// exit do not wait out [`ACK_WAIT`] for it.
#[tokio::test]
async fn an_instance_that_leaves_is_not_waited_for() {
    let a = TestApp::spawn().await;
    let b = a.sibling().await;
    let registry = format!("{}:bus:instances", a.state.config.redis_prefix);
    let client = redis::Client::open(testkit::redis_url()).unwrap();
    let r = client.get_multiplexed_async_connection().await.unwrap();
    let registered = async |who: &str| {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(&registry)
            .arg(who)
            .query_async(&mut r.clone())
            .await
            .unwrap();
        score.is_some()
    };
    let b_name = b.state.bus.instance().to_owned();
    testkit::eventually(Duration::from_secs(5), "b registered", async || {
        registered(&b_name).await.then_some(())
    })
    .await;
    b.state.bus.leave().await;
    assert!(!registered(&b_name).await, "b deregistered");
    tokio::time::sleep(HEARTBEAT * 4).await;
    assert!(!registered(&b_name).await, "no heartbeat registered b again");
    assert!(registered(a.state.bus.instance()).await, "a stays registered");
}

#[tokio::test]
async fn a_change_whose_instance_dies_after_its_commit_is_not_lost() {
    let a = TestApp::spawn().await;
    let b = a.sibling().await;
    let user = a.signup("dies-after-commit@example.com").await;
    cached(&b, &user.access).await;
    // What the unit of work does before its commit, then the commit, then nothing: the
    // instance died before it could end the change. Between the mark and the commit the
    // session is still live, and reads of it must not be cached then.
    assert!(a.state.sessions.begin_change(&[user.user_id]).await);
    b.get("/v1/users/me", Some(&user.access))
        .await
        .expect_status(StatusCode::OK);
    b.get("/v1/users/me", Some(&user.access))
        .await
        .expect_status(StatusCode::OK);
    let mut conn = a.state.db.get().await.unwrap();
    db::sessions::revoke_all_for_user(&mut conn, user.user_id, None, db::sessions::RevokeReason::Logout)
        .await
        .unwrap();
    refused(&b.get("/v1/users/me", Some(&user.access)).await, "while pending");
    // After the pending mark expires, the epoch is new: still refused, never trusted again.
    let redis = redis::Client::open(testkit::redis_url()).unwrap();
    let mut r = redis.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}:auth:{{{}}}:pending", a.state.config.redis_prefix, user.user_id);
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut r).await.unwrap();
    assert!(
        ttl > 0 && ttl <= PENDING_TTL.as_millis() as i64,
        "the mark expires: {ttl}"
    );
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut r).await.unwrap();
    refused(
        &b.get("/v1/users/me", Some(&user.access)).await,
        "after the mark expired",
    );
}

#[tokio::test]
async fn redis_away_or_restarted_falls_back_to_postgres_and_recovers() {
    let mut redis = OwnRedis::start();
    let url = redis.url();
    let a = TestApp::spawn_with(|c| c.redis_url = url.clone().into()).await;
    let b = a.sibling().await;
    let user = a.signup("redis-away@example.com").await;
    cached(&b, &user.access).await;

    // Redis gone: reads still work (Postgres), and a revocation made meanwhile holds at once.
    redis.stop();
    b.get("/v1/users/me", Some(&user.access))
        .await
        .expect_status(StatusCode::OK);
    let second = a.login("redis-away@example.com", PASSWORD).await;
    b.get("/v1/users/me", Some(&second.access))
        .await
        .expect_status(StatusCode::OK);
    a.logout(&user.refresh).await;
    refused(&b.get("/v1/users/me", Some(&user.access)).await, "Redis away");

    // Back (empty): the cache fills again by itself.
    redis.restart();
    let mut resumed = false;
    for _ in 0..50 {
        b.get("/v1/users/me", Some(&second.access))
            .await
            .expect_status(StatusCode::OK);
        if answers_from_cache(&b, &second.access).await {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "the session cache resumes when Redis returns");

    // Restarted behind everyone's back, *with* the user's old epoch (as from a snapshot): a
    // change written straight to Postgres (no epoch bump at all) is still seen, because an
    // entry is only believed from the server process it was read from.
    let epoch_key = format!("{}:auth:{{{}}}:epoch", a.state.config.redis_prefix, user.user_id);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut r = client.get_multiplexed_async_connection().await.unwrap();
    let old: String = redis::cmd("GET").arg(&epoch_key).query_async(&mut r).await.unwrap();
    redis.stop();
    redis.restart();
    // Until b talks to the new server again (its broken connections dropped, the bypass over):
    // a probe user's session gets cached.
    let probe = a.signup("redis-probe@example.com").await;
    let mut reconnected = false;
    for _ in 0..50 {
        b.get("/v1/users/me", Some(&probe.access))
            .await
            .expect_status(StatusCode::OK);
        if answers_from_cache(&b, &probe.access).await {
            reconnected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reconnected, "b reads from the restarted Redis");
    let mut r = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(&epoch_key)
        .arg(&old)
        .query_async(&mut r)
        .await
        .unwrap();
    let mut conn = a.state.db.get().await.unwrap();
    db::sessions::revoke_all_for_user(&mut conn, user.user_id, None, db::sessions::RevokeReason::Logout)
        .await
        .unwrap();
    for _ in 0..5 {
        refused(
            &b.get("/v1/users/me", Some(&second.access)).await,
            "after a Redis restart",
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
