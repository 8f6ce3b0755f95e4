//! The shop under faults and races that need more than one request path: a process killed while
//! it holds an Idempotency-Key, and the expiry sweep racing payments on orders at their deadline.

use std::time::Duration;

use chrono::Utc;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::future::join_all;
use serde_json::json;
use testkit::{
    ApiProcess, StatusCode, TestApp,
    shop::{Order, payment_event},
};

/// A request killed with its process mid-transaction leaves no key behind: the key row lives in
/// the order's transaction, which dies with the connection.
#[tokio::test]
async fn a_process_killed_mid_checkout_leaves_no_key_stuck() {
    let mut api = ApiProcess::spawn(env!("CARGO_BIN_EXE_api"), &[]).await;
    let user = api.signup("killed@shop.example").await;
    let admin = api.signup("admin@shop.example").await;
    let mut conn = AsyncPgConnection::establish(&api.db.url).await.unwrap();
    diesel::sql_query("UPDATE users SET role = 'admin' WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(admin.user_id)
        .execute(&mut conn)
        .await
        .unwrap();
    let product = api.create_product(&admin.access, "K-1", 100, "EUR", 5).await;

    // Hold the product's row lock so the checkout stops inside its transaction, after its key.
    let mut holder = AsyncPgConnection::establish(&api.db.url).await.unwrap();
    diesel::sql_query("BEGIN").execute(&mut holder).await.unwrap();
    diesel::sql_query("SELECT 1 FROM products WHERE id = $1 FOR UPDATE")
        .bind::<diesel::sql_types::Uuid, _>(product.id)
        .execute(&mut holder)
        .await
        .unwrap();
    let client = api.client.clone();
    let url = api.url("/v1/orders");
    let token = user.access.clone();
    let stalled = tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(token)
            .header("Idempotency-Key", "crash-key")
            .json(&json!({"items": [{"product_id": product.id, "quantity": 1}]}))
            .send()
            .await
    });
    testkit::eventually(
        Duration::from_secs(10),
        "the checkout waits on the row lock",
        || async {
            #[derive(diesel::QueryableByName)]
            struct N {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let mut c = AsyncPgConnection::establish(&api.db.url).await.unwrap();
            let n: N = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'",
        )
        .get_result(&mut c)
        .await
        .unwrap();
            (n.n > 0).then_some(())
        },
    )
    .await;
    api.kill();
    assert!(stalled.await.unwrap().is_err(), "the killed process never answered");
    diesel::sql_query("ROLLBACK").execute(&mut holder).await.unwrap();

    api.restart().await;
    let retried = api.place_order(&user.access, "crash-key", &[(product.id, 1)]).await;
    assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.json);
    assert!(!retried.replayed, "the dead request stored nothing");
    assert_eq!(api.product(product.id).await.stock, 4);
    let bad = db::products::unreconciled(&mut conn).await.unwrap();
    assert!(bad.is_empty(), "{bad:?}");
}

/// 30 orders reach their deadline while their payments arrive: each ends paid or cancelled
/// (expired), never both, never neither; a payment that lost the race is a late payment with a
/// pending refund; stock is released exactly for the expired ones.
#[tokio::test]
async fn expiry_racing_payments_ends_each_order_once() {
    let app = TestApp::spawn().await;
    let other = app.sibling().await;
    let admin = app.admin("admin@race.example").await.access;
    let user = app.signup("race@race.example").await.access;
    let product = app.create_product(&admin, "R-1", 300, "EUR", 30).await;
    let mut orders: Vec<Order> = Vec::new();
    for _ in 0..30 {
        orders.push(app.order_now(&user, &[(product.id, 1)]).await);
    }
    let deadline = Utc::now() + chrono::Duration::milliseconds(800);
    for o in &orders {
        app.set_expires_at(o.id, deadline).await;
    }
    let config = &app.state.config;
    let producer = jobs::Producer::new(
        secrecy::ExposeSecret::expose_secret(&config.redis_url),
        jobs::QueueSettings::new(config.redis_prefix.clone()),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let sweeper = async {
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < until {
            worker::expiry::sweep_once(&app.state.db, &producer).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let payments = join_all(orders.iter().enumerate().map(|(i, o)| {
        let target = if i % 2 == 0 { &*app } else { &*other };
        async move {
            // Spread around the deadline: some before, most just after.
            tokio::time::sleep(Duration::from_millis((i as u64 % 10) * 30)).await;
            target
                .webhook(&payment_event(&format!("evt_race_{i}"), "payment.succeeded", o))
                .await
        }
    }));
    let ((), results) = tokio::join!(sweeper, payments);
    assert!(results.iter().all(|r| r.status == StatusCode::OK));
    let (mut paid, mut expired) = (0, 0);
    for (o, r) in orders.iter().zip(&results) {
        let now = app.order(&user, o.id).await;
        let events = app.order_events(&user, o.id).await;
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        match now.status.as_str() {
            "paid" => {
                paid += 1;
                assert_eq!(r.body["outcome"], "applied");
                assert!(!kinds.contains(&"expired"), "{kinds:?}");
            }
            "cancelled" => {
                expired += 1;
                assert_eq!(now.cancel_reason.as_deref(), Some("expired"));
                assert_eq!(r.body["outcome"], "late", "{kinds:?}");
                assert_eq!(now.refund.as_ref().unwrap().status, "pending");
                assert_eq!(kinds.iter().filter(|k| **k == "expired").count(), 1);
                assert!(!kinds.contains(&"payment_succeeded"), "{kinds:?}");
            }
            other => panic!("order ended {other}"),
        }
    }
    assert_eq!(paid + expired, 30);
    assert_eq!(app.product(product.id).await.stock, expired);
    app.assert_stock_reconciles().await;
}
