//! What several API instances share through Redis: the cache (hits, invalidation across
//! instances, the stale-set race, stampede protection, Redis outages) and the rate limits
//! (exact across instances, spoofing-proof, fallbacks).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use api::{config::Policy, infra::cache::CacheStatus};
use bytes::Bytes;
use futures_util::future::join_all;
use serde_json::json;
use testkit::{OwnRedis, PASSWORD, StatusCode, TestApp};

fn limits(app_login: &str) -> impl FnOnce(&mut api::config::Config) {
    let login = Policy::parse("login", app_login).unwrap();
    move |c| {
        c.rate_limits.enabled = true;
        c.rate_limits.login = login;
    }
}

#[tokio::test]
async fn admin_user_list_is_cached_and_invalidated_on_write() {
    let app = TestApp::spawn().await;
    let admin = app.admin("cache-admin@example.com").await;
    let first = app.get("/v1/users", Some(&admin.access)).await;
    assert_eq!(
        first.header("x-cache"),
        Some("miss"),
        "{:?} {}",
        first.headers,
        first.body
    );
    let second = app.get("/v1/users", Some(&admin.access)).await;
    assert_eq!(second.header("x-cache"), Some("hit"));
    assert_eq!(first.body, second.body);

    // A sign-up changes the list: the next read misses and shows it.
    let newcomer = app.signup("newcomer@example.com").await;
    let third = app.get("/v1/users", Some(&admin.access)).await;
    assert_eq!(third.header("x-cache"), Some("miss"));
    assert!(
        third.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["email"] == "newcomer@example.com")
    );

    // Single users too, invalidated by an admin update.
    let path = format!("/v1/users/{}", newcomer.user_id);
    assert_eq!(
        app.get(&path, Some(&admin.access)).await.header("x-cache"),
        Some("miss")
    );
    assert_eq!(app.get(&path, Some(&admin.access)).await.header("x-cache"), Some("hit"));
    app.patch(&path, Some(&admin.access), json!({"name": "Renamed Newcomer"}))
        .await;
    let fresh = app.get(&path, Some(&admin.access)).await;
    assert_eq!(
        (fresh.header("x-cache"), fresh.body["name"].as_str()),
        (Some("miss"), Some("Renamed Newcomer"))
    );
    // Different pages and filters are different entries.
    assert_eq!(
        app.get("/v1/users?q=new", Some(&admin.access)).await.header("x-cache"),
        Some("miss")
    );
    // A 404 is never cached.
    let missing = format!("/v1/users/{}", uuid::Uuid::now_v7());
    app.get(&missing, Some(&admin.access))
        .await
        .assert_problem(404, "not_found");
    app.get(&missing, Some(&admin.access))
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn a_write_on_one_instance_is_seen_at_once_through_the_others_cache() {
    let a = TestApp::spawn().await;
    let b = a.sibling().await;
    let admin = a.admin("two-admin@example.com").await;
    let user = a.signup("two-user@example.com").await;
    let path = format!("/v1/users/{}", user.user_id);
    b.get(&path, Some(&admin.access)).await;
    assert_eq!(b.get(&path, Some(&admin.access)).await.header("x-cache"), Some("hit"));
    b.get("/v1/users", Some(&admin.access)).await;

    let res = a
        .patch(&path, Some(&admin.access), json!({"name": "Changed On A"}))
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let seen = b.get(&path, Some(&admin.access)).await;
    assert_eq!(seen.body["name"], "Changed On A", "B must not serve its stale entry");
    let list = b.get("/v1/users", Some(&admin.access)).await;
    assert!(
        list.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "Changed On A")
    );
}

/// Deletes every cache entry of `prefix` from Redis (the generations stay).
async fn drop_redis_entries(prefix: &str) {
    let client = redis::Client::open(testkit::redis_url()).unwrap();
    let mut r = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:cache:*"))
        .query_async(&mut r)
        .await
        .unwrap();
    let entries: Vec<&String> = keys.iter().filter(|k| !k.ends_with(":gen")).collect();
    assert!(!entries.is_empty(), "there were entries in Redis");
    let _: () = redis::cmd("DEL").arg(entries).query_async(&mut r).await.unwrap();
}

#[tokio::test]
async fn the_near_cache_answers_from_memory_and_a_write_elsewhere_voids_it_before_answering() {
    let a = TestApp::spawn().await;
    let b = a.sibling().await;
    let admin = a.admin("near-admin@example.com").await;
    let user = a.signup("near-user@example.com").await;
    let path = format!("/v1/users/{}", user.user_id);
    b.get(&path, Some(&admin.access)).await;
    // Kept in b's memory under a lease once b's bus is live (a hit read while it was not is
    // not kept): read until Redis' copy is no longer needed.
    let mut near = false;
    for _ in 0..100 {
        assert_eq!(b.get(&path, Some(&admin.access)).await.header("x-cache"), Some("hit"));
        if b.state.bus.live() {
            b.get(&path, Some(&admin.access)).await;
            near = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(near, "b's bus became live");
    drop_redis_entries(&a.state.config.redis_prefix).await;
    let from_memory = b.get(&path, Some(&admin.access)).await;
    assert_eq!(
        (from_memory.header("x-cache"), from_memory.body["name"].as_str()),
        (Some("hit"), Some(user.user.name.as_str())),
        "served from b's memory: Redis has no entry any more"
    );
    // A write on a voids b's copy before a answers.
    a.patch(&path, Some(&admin.access), json!({"name": "Renamed Near"}))
        .await
        .expect_status(StatusCode::OK);
    let seen = b.get(&path, Some(&admin.access)).await;
    assert_eq!(
        (seen.header("x-cache"), seen.body["name"].as_str()),
        (Some("miss"), Some("Renamed Near"))
    );
}

#[tokio::test]
async fn a_slow_reader_cannot_store_a_stale_value_after_an_invalidation() {
    let app = TestApp::spawn().await;
    let cache = app.state.cache.clone();
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let slow = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_load("race", "k", || async move {
                    // Read "from Postgres" before the write commits…
                    let _ = loaded_tx.send(());
                    let _ = release_rx.await;
                    Ok::<_, api::error::ApiError>("stale".to_owned())
                })
                .await
                .unwrap()
        })
    };
    loaded_rx.await.unwrap();
    // …the write commits and invalidates…
    cache.invalidate("race").await;
    // …and only then does the slow reader store what it read.
    release_tx.send(()).unwrap();
    assert_eq!(slow.await.unwrap(), (Bytes::from("stale"), CacheStatus::Miss));
    let (value, status) = cache
        .get_or_load("race", "k", || async {
            Ok::<_, api::error::ApiError>("fresh".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(
        (&value[..], status),
        (&b"fresh"[..], CacheStatus::Miss),
        "the stale value must not be served"
    );
    let (value, status) = cache
        .get_or_load("race", "k", || async {
            Ok::<_, api::error::ApiError>("never".to_owned())
        })
        .await
        .unwrap();
    assert_eq!((&value[..], status), (&b"fresh"[..], CacheStatus::Hit));
}

#[tokio::test]
async fn one_request_recomputes_an_expired_hot_key() {
    let app = TestApp::spawn().await;
    let cache = app.state.cache.clone();
    let loads = Arc::new(AtomicUsize::new(0));
    let results = join_all((0..20).map(|_| {
        let cache = cache.clone();
        let loads = loads.clone();
        async move {
            cache
                .get_or_load("stampede", "hot", || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, api::error::ApiError>("value".to_owned())
                })
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "one recompute for 20 concurrent misses"
    );
    assert!(results.iter().all(|(v, _)| v == "value"));
    assert_eq!(results.iter().filter(|(_, s)| *s == CacheStatus::Miss).count(), 1);
}

#[tokio::test]
async fn redis_going_away_degrades_to_postgres_and_recovers() {
    let mut redis = OwnRedis::start();
    let url = redis.url();
    let app = TestApp::spawn_with(|c| {
        c.redis_url = url.clone().into();
        c.rate_limits.enabled = true;
        c.rate_limits.login = Policy::parse("login", "3/60").unwrap();
    })
    .await;
    let admin = app.admin("outage-admin@example.com").await;
    app.get("/v1/users", Some(&admin.access)).await;
    assert_eq!(
        app.get("/v1/users", Some(&admin.access)).await.header("x-cache"),
        Some("hit")
    );

    redis.stop();
    // A body kept in memory under a bus lease may still answer (a hit) until the bus stops being
    // live, at most LIVE_FOR after its last heartbeat came back: no write can have answered in
    // between (a write whose bump fails waits that long). Then every read goes to Postgres.
    testkit::eventually(Duration::from_secs(3), "the bus no longer live", async || {
        let res = app.get("/v1/users", Some(&admin.access)).await;
        res.expect_status(StatusCode::OK);
        (!app.state.bus.live()).then_some(())
    })
    .await;
    for _ in 0..3 {
        let res = app.get("/v1/users", Some(&admin.access)).await;
        assert_eq!(
            res.status,
            StatusCode::OK,
            "reads fall through to Postgres: {}",
            res.body
        );
        assert_eq!(res.header("x-cache"), Some("miss"));
    }
    // A sign-up (whose commit bumps the users cache generation in Redis) still succeeds, and the
    // account it made is there: readable with its own token, and listed.
    let during = app.signup("During-Outage@Example.com").await;
    assert_eq!(during.user.email, "during-outage@example.com");
    assert_eq!(app.me(&during.access).await, during.user);
    let listed = app.users(&admin.access, "q=during").await;
    assert_eq!(listed.items, std::slice::from_ref(&during.user));
    // Login keeps a conservative in-process limit while Redis is away.
    let statuses: Vec<u16> = {
        let mut v = vec![];
        for _ in 0..5 {
            v.push(
                app.try_login("outage-admin@example.com", "wrong-password")
                    .await
                    .status
                    .as_u16(),
            );
        }
        v
    };
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    app.get("/health/ready", None)
        .await
        .assert_problem(503, "dependency_unavailable");

    redis.restart();
    let mut recovered = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if app.get("/v1/users", Some(&admin.access)).await.header("x-cache") == Some("hit") {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "the cache resumes by itself");
    assert_eq!(app.get("/health/ready", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn login_limit_is_exact_across_two_instances() {
    let a = TestApp::spawn_with(limits("10/60")).await;
    let b = a.sibling().await;
    a.signup("limited@example.com").await;
    let attempts = (0..100).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        app.try_login("limited@example.com", PASSWORD)
    });
    let results = join_all(attempts).await;
    let passed = results.iter().filter(|r| r.status == StatusCode::OK).count();
    let limited = results
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((passed, limited), (10, 90));
    let rejected = results
        .iter()
        .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .unwrap();
    rejected.assert_problem(429, "rate_limited");
    let retry: u64 = rejected.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(rejected.header("ratelimit-policy"), Some("\"login\";q=10;w=60"));
    let ok = results.iter().find(|r| r.status == StatusCode::OK).unwrap();
    assert!(
        ok.header("ratelimit").unwrap().starts_with("\"login\";r="),
        "{:?}",
        ok.headers
    );
}

#[tokio::test]
async fn a_spoofed_forwarded_for_does_not_reset_a_limit() {
    let app = TestApp::spawn_with(limits("3/60")).await;
    for i in 0..6 {
        // Different e-mails, so only the per-IP budget is shared.
        let req = app
            .client
            .post(app.url("/v1/auth/login"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&json!({"email": format!("nobody{i}@example.com"), "password": "whatever-123"}));
        let res = app.send(req).await;
        let expected = if i < 3 { 401 } else { 429 };
        assert_eq!(res.status.as_u16(), expected, "attempt {i}");
    }
}

#[tokio::test]
async fn forwarded_for_is_believed_from_a_trusted_proxy() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.login = Policy::parse("login", "2/60").unwrap();
        c.rate_limits.trusted_proxies = api::config::parse_proxies("127.0.0.1").unwrap();
    })
    .await;
    let login_from = |ip: &str, n: usize| {
        app.client
            .post(app.url("/v1/auth/login"))
            .header("x-forwarded-for", ip.to_owned())
            .json(&json!({"email": format!("proxy{n}@example.com"), "password": "whatever-123"}))
    };
    assert_eq!(app.send(login_from("203.0.113.1", 0)).await.status.as_u16(), 401);
    assert_eq!(app.send(login_from("203.0.113.1", 1)).await.status.as_u16(), 401);
    assert_eq!(app.send(login_from("203.0.113.1", 2)).await.status.as_u16(), 429);
    // Another client behind the same proxy has its own budget.
    let other = app.send(login_from("203.0.113.2", 3)).await;
    assert_eq!(other.status.as_u16(), 401, "{:?} {}", other.headers, other.body);
}

/// The request-wide budget is spent from each instance's reservation of it — a Redis round trip
/// per batch of tokens, not per request — and still admits no more than the policy across
/// instances.
#[tokio::test]
async fn the_per_user_limit_holds_across_two_instances_with_a_round_trip_per_batch() {
    // 320 a day: no token comes back while the test runs; batches of up to 320/16 = 20.
    let a = TestApp::spawn_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.user = Policy::parse("user", "320/86400").unwrap();
        c.rate_limits.signup = Policy::parse("signup", "100/60").unwrap();
    })
    .await;
    let b = a.sibling().await;
    let s = a.signup("reserved@example.com").await;
    let trips = || a.state.limits.round_trips() + b.state.limits.round_trips();
    let before = trips();
    let (mut passed, mut limited) = ([0usize; 2], 0);
    for i in 0..800 {
        let res = [&a, &b][i % 2].get("/v1/users/me", Some(&s.access)).await;
        match res.status {
            StatusCode::OK => passed[i % 2] += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                res.assert_problem(429, "rate_limited");
                assert!(res.header("retry-after").is_some());
                assert_eq!(res.header("ratelimit-policy"), Some("\"user\";q=320;w=86400"));
            }
            other => panic!("{other}: {}", res.body),
        }
    }
    let round_trips = trips() - before;
    // Never more than the policy; and not fewer either, since each instance went on receiving
    // requests and so spent (or gave back) every token it had reserved.
    assert_eq!(passed[0] + passed[1], 320, "{passed:?}");
    assert!(
        passed.iter().all(|&p| p >= 140),
        "both instances admitted their share: {passed:?}"
    );
    assert_eq!(limited, 480);
    // One request → one, then 2, 4, 8, 16, 20 … tokens per take; refusals stand locally.
    assert!(round_trips <= 40, "{round_trips} round trips for 800 requests");
}

#[tokio::test]
async fn per_user_and_anonymous_limits() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.user = Policy::parse("user", "3/60").unwrap();
        c.rate_limits.anon = Policy::parse("anon", "2/60").unwrap();
        c.rate_limits.signup = Policy::parse("signup", "100/60").unwrap();
    })
    .await;
    let s = app.signup("busy@example.com").await;
    let codes: Vec<u16> = {
        let mut v = vec![];
        for _ in 0..4 {
            v.push(app.get("/v1/users/me", Some(&s.access)).await.status.as_u16());
        }
        v
    };
    assert_eq!(codes, [200, 200, 200, 429]);
    // Anonymous traffic: the sign-up above used one of the two.
    assert_eq!(app.get("/v1/no-such-thing", None).await.status.as_u16(), 404);
    app.get("/v1/no-such-thing", None)
        .await
        .assert_problem(429, "rate_limited");
    // Health and docs are never limited.
    for _ in 0..5 {
        assert_eq!(app.get("/health/live", None).await.status, StatusCode::OK);
    }
}
