//! The shop end to end: catalogue and its cache, the stock ledger, checkout with
//! Idempotency-Key, the transitions, and the payment webhook — single requests and the races
//! the contract promises to survive (two API instances where it matters). Every stock test ends
//! with the ledger reconciliation.

use std::collections::HashSet;

use chrono::{Duration, Utc};
use futures_util::future::join_all;
use serde_json::json;
use testkit::{
    StatusCode, TEST_WEBHOOK_SECRET, TestApp,
    shop::{Order, OrderEvent, Product, StockMovement, payment_event},
};
use uuid::Uuid;

async fn shop() -> (TestApp, String, String) {
    let app = TestApp::spawn().await;
    let admin = app.admin("admin@shop.example").await.access;
    let user = app.signup("buyer@shop.example").await.access;
    (app, admin, user)
}

fn types(events: &[OrderEvent]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

#[tokio::test]
async fn catalogue_crud_filters_and_cache() {
    let (app, admin, user) = shop().await;
    let mug = app.create_product(&admin, "MUG-1", 1250, "EUR", 5).await;
    assert_eq!(
        (mug.price_cents, mug.currency.as_str(), mug.stock, mug.active),
        (1250, "EUR", 5, true)
    );
    let tea = app.create_product(&admin, "TEA-1", 500, "JPY", 0).await;

    // SKU unique case-insensitively; bad fields all reported; non-admin refused.
    app.post(
        "/v1/products",
        Some(&admin),
        json!({"sku": "mug-1", "name": "x", "price_cents": 1, "currency": "EUR"}),
    )
    .await
    .assert_problem(409, "sku_taken");
    let bad = app
        .post(
            "/v1/products",
            Some(&admin),
            json!({"sku": "a b", "name": " ", "price_cents": -1, "currency": "XXX", "stock": -2}),
        )
        .await;
    let fields: HashSet<&str> = bad.assert_problem(422, "validation_failed")["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        HashSet::from(["sku", "name", "price_cents", "currency", "stock"])
    );
    app.post(
        "/v1/products",
        Some(&user),
        json!({"sku": "U-1", "name": "x", "price_cents": 1, "currency": "EUR"}),
    )
    .await
    .assert_problem(403, "forbidden");
    app.post("/v1/products", None, json!({}))
        .await
        .assert_problem(401, "unauthorized");

    // Filters and sorts.
    let list = |q: &str| {
        let app = &app;
        let q = q.to_owned();
        async move {
            let res = app.get(&format!("/v1/products?{q}"), None).await;
            let page: testkit::Page<Product> = res.expect(StatusCode::OK);
            page.items.into_iter().map(|p| p.sku).collect::<Vec<_>>()
        }
    };
    assert_eq!(list("sort=price_cents").await, vec!["TEA-1", "MUG-1"]);
    assert_eq!(list("sort=-price_cents").await, vec!["MUG-1", "TEA-1"]);
    assert_eq!(list("in_stock=true").await, vec!["MUG-1"]);
    assert_eq!(list("currency=JPY").await, vec!["TEA-1"]);
    assert_eq!(list("q=product%20mug").await, vec!["MUG-1"]);
    assert_eq!(list("min_price=501&max_price=1250").await, vec!["MUG-1"]);
    assert_eq!(list("sort=name&limit=1").await, vec!["MUG-1"]);
    app.get("/v1/products?sort=bogus", None)
        .await
        .assert_problem(422, "validation_failed");
    app.get("/v1/products?cursor=x", None)
        .await
        .assert_problem(422, "validation_failed");

    // Pages follow the cursor.
    let first = app.get("/v1/products?sort=name&limit=1", None).await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second: testkit::Page<Product> = app
        .get(&format!("/v1/products?sort=name&limit=1&cursor={cursor}"), None)
        .await
        .expect(StatusCode::OK);
    assert_eq!(second.items[0].sku, "TEA-1");
    assert!(second.next_cursor.is_none());

    // Cache: a second read hits; an admin change is visible at once.
    let path = format!("/v1/products/{}", mug.id);
    app.get(&path, None).await;
    let hit = app.get(&path, None).await;
    assert_eq!(hit.header("x-cache"), Some("hit"));
    let renamed: Product = app
        .patch(&path, Some(&admin), json!({"name": "Blue mug", "price_cents": 1300}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(renamed.name, "Blue mug");
    assert_eq!(app.product(mug.id).await.price_cents, 1300);
    assert_eq!(list("sort=price_cents").await, vec!["TEA-1", "MUG-1"]);
    app.patch(&path, Some(&admin), json!({"price_cents": null}))
        .await
        .assert_problem(422, "validation_failed");

    // DELETE deactivates: gone from the catalogue and 404 for the public, visible to admins.
    app.delete(&format!("/v1/products/{}", tea.id), Some(&admin))
        .await
        .expect_status(StatusCode::NO_CONTENT);
    assert_eq!(list("").await, vec!["MUG-1"]);
    app.get(&format!("/v1/products/{}", tea.id), None)
        .await
        .assert_problem(404, "not_found");
    app.get(&format!("/v1/products/{}", tea.id), Some(&user))
        .await
        .assert_problem(404, "not_found");
    let seen: Product = app
        .get(&format!("/v1/products/{}", tea.id), Some(&admin))
        .await
        .expect(StatusCode::OK);
    assert!(!seen.active);
    app.get(&format!("/v1/products/{}", Uuid::new_v4()), None)
        .await
        .assert_problem(404, "not_found");
    app.get(&path, Some("not-a-token"))
        .await
        .assert_problem(401, "invalid_token");

    // Stock moved by an order shows in cached reads within 1 s (the namespace's entries live
    // 900 ms; orders do not invalidate).
    app.get(&path, None).await;
    assert_eq!(app.get(&path, None).await.header("x-cache"), Some("hit"));
    app.order_now(&user, &[(mug.id, 2)]).await;
    testkit::eventually(
        std::time::Duration::from_secs(2),
        "cached stock follows the order",
        || async { (app.product(mug.id).await.stock == 3).then_some(()) },
    )
    .await;
    app.assert_stock_reconciles().await;
}

#[tokio::test]
async fn stock_adjustments_are_a_ledger() {
    let (app, admin, user) = shop().await;
    let p = app.create_product(&admin, "BOX-1", 100, "EUR", 3).await;
    let path = format!("/v1/products/{}/stock", p.id);
    let up: Product = app
        .post(&path, Some(&admin), json!({"delta": 7, "reason": "delivery"}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(up.stock, 10);
    app.post(&path, Some(&admin), json!({"delta": -11, "reason": "recount"}))
        .await
        .assert_problem(409, "insufficient_stock");
    assert_eq!(
        app.product(p.id).await.stock,
        10,
        "a refused adjustment changes nothing"
    );
    for bad in [json!({"delta": 0, "reason": "x"}), json!({"delta": 1, "reason": ""})] {
        app.post(&path, Some(&admin), bad)
            .await
            .assert_problem(422, "validation_failed");
    }
    app.post(&path, Some(&user), json!({"delta": 1, "reason": "x"}))
        .await
        .assert_problem(403, "forbidden");
    app.post(
        &format!("/v1/products/{}/stock", Uuid::new_v4()),
        Some(&admin),
        json!({"delta": 1, "reason": "x"}),
    )
    .await
    .assert_problem(404, "not_found");
    let order = app.order_now(&user, &[(p.id, 4)]).await;
    let ledger: testkit::Page<StockMovement> = app
        .get(&format!("/v1/products/{}/stock-movements", p.id), Some(&admin))
        .await
        .expect(StatusCode::OK);
    let rows: Vec<(&str, i64, i64)> = ledger
        .items
        .iter()
        .map(|m| (m.kind.as_str(), m.delta, m.stock_after))
        .collect();
    assert_eq!(rows, vec![("order_reserved", -4, 6), ("adjustment", 7, 10)]);
    assert_eq!(ledger.items[0].order_id, Some(order.id));
    assert_eq!(ledger.items[1].reason, "delivery");
    let page1 = app
        .get(&format!("/v1/products/{}/stock-movements?limit=1", p.id), Some(&admin))
        .await;
    let cursor = page1.body["next_cursor"].as_str().unwrap();
    let page2: testkit::Page<StockMovement> = app
        .get(
            &format!("/v1/products/{}/stock-movements?limit=1&cursor={cursor}", p.id),
            Some(&admin),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(page2.items[0].kind, "adjustment");
    app.get(&format!("/v1/products/{}/stock-movements", p.id), Some(&user))
        .await
        .assert_problem(403, "forbidden");
    app.assert_stock_reconciles().await;
}

#[tokio::test]
async fn checkout_rules() {
    let (app, admin, user) = shop().await;
    let a = app.create_product(&admin, "A", 250, "EUR", 10).await;
    let b = app.create_product(&admin, "B", 1000, "EUR", 1).await;
    let yen = app.create_product(&admin, "Y", 500, "JPY", 10).await;

    // Lines of one product are summed; prices copied; total = Σ lines.
    let order = app.order_now(&user, &[(a.id, 2), (b.id, 1), (a.id, 1)]).await;
    assert_eq!(order.status, "pending_payment");
    assert_eq!(order.total_cents, 3 * 250 + 1000);
    assert_eq!(order.items.len(), 2);
    assert_eq!((order.items[0].quantity, order.items[0].unit_price_cents), (3, 250));
    assert!(order.number.parse::<u64>().unwrap() >= 10001);
    let expires = order.expires_at.unwrap();
    assert!((expires - order.created_at - Duration::minutes(15)).num_seconds().abs() <= 1);
    assert_eq!(app.product(a.id).await.stock, 7);
    // A later price change leaves the order alone.
    app.patch(
        &format!("/v1/products/{}", a.id),
        Some(&admin),
        json!({"price_cents": 999}),
    )
    .await
    .expect_status(StatusCode::OK);
    assert_eq!(app.order(&user, order.id).await.items[0].unit_price_cents, 250);

    // Short lines: 409 naming each, nothing reserved.
    let short = app.place_order(&user, "short-1", &[(a.id, 1), (b.id, 5)]).await;
    assert_eq!(short.status, StatusCode::CONFLICT);
    assert_eq!(short.json["code"], "insufficient_stock");
    assert_eq!(short.json["errors"][0]["field"], "items[1].quantity");
    assert_eq!(app.product(a.id).await.stock, 7);

    // Lines naming unknown, inactive or other-currency products: 422 naming the line.
    let ghost = domain::ProductId::generate();
    let r = app
        .place_order(&user, "bad-1", &[(a.id, 1), (ghost, 1), (yen.id, 1)])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.json);
    let fields: Vec<&str> = r.json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["items[1].product_id", "items[2].product_id"]);
    for bad in [
        json!({"items": []}),
        json!({"items": [{"product_id": a.id, "quantity": 0}]}),
    ] {
        let r = app.place_order_body(&user, Some("v"), &bad).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.json);
    }
    // A 422 stored nothing: the same key now places the order.
    app.place_order(&user, "bad-1", &[(a.id, 1), (ghost, 1), (yen.id, 1)])
        .await;
    let retry = app.place_order(&user, "v", &[(a.id, 1)]).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.json);

    // The key is required and must be visible ASCII.
    let none = app
        .place_order_body(&user, None, &json!({"items": [{"product_id": a.id, "quantity": 1}]}))
        .await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST);
    assert_eq!(none.json["code"], "idempotency_key_required");
    let spaced = app.place_order(&user, "has space", &[(a.id, 1)]).await;
    assert_eq!(spaced.json["code"], "idempotency_key_required");
    let r = app
        .send(app.client.post(app.url("/v1/orders")).json(&json!({"items": []})))
        .await;
    r.assert_problem(401, "unauthorized");
    app.assert_stock_reconciles().await;
}

#[tokio::test]
async fn idempotency_replays_and_refuses_reuse() {
    let (app, admin, user) = shop().await;
    let a = app.create_product(&admin, "A", 100, "EUR", 5).await;
    let first = app.place_order(&user, "key-1", &[(a.id, 2)]).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.replayed);
    let again = app.place_order(&user, "key-1", &[(a.id, 2)]).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert!(again.replayed);
    assert_eq!(again.body, first.body, "replayed byte for byte");
    assert_eq!(app.product(a.id).await.stock, 3, "a replay reserves nothing");
    // Same key, another body → 422; another user's same key is theirs.
    let reused = app.place_order(&user, "key-1", &[(a.id, 1)]).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.json["code"], "idempotency_key_reused");
    let other = app.signup("other@shop.example").await.access;
    assert_eq!(
        app.place_order(&other, "key-1", &[(a.id, 1)]).await.status,
        StatusCode::CREATED
    );
    // A stored 409 is replayed too, even after stock came back.
    let short = app.place_order(&user, "key-2", &[(a.id, 50)]).await;
    assert_eq!(short.status, StatusCode::CONFLICT);
    app.post(
        &format!("/v1/products/{}/stock", a.id),
        Some(&admin),
        json!({"delta": 100, "reason": "restock"}),
    )
    .await
    .expect_status(StatusCode::OK);
    let replay = app.place_order(&user, "key-2", &[(a.id, 50)]).await;
    assert_eq!(replay.status, StatusCode::CONFLICT);
    assert!(replay.replayed);
    assert_eq!(replay.body, short.body);
    // Expired keys are free again (purged by the worker; taken over here).
    {
        use diesel_async::RunQueryDsl;
        let mut conn = app.state.db.get().await.unwrap();
        diesel::sql_query("UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'key-1'")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let fresh = app.place_order(&user, "key-1", &[(a.id, 1)]).await;
    assert_eq!(fresh.status, StatusCode::CREATED);
    assert!(!fresh.replayed);
    app.assert_stock_reconciles().await;
}

#[tokio::test]
async fn twenty_identical_concurrent_checkouts_make_one_order() {
    let (app, admin, user) = shop().await;
    let other = app.sibling().await;
    let a = app.create_product(&admin, "A", 100, "EUR", 100).await;
    let attempts = (0..20).map(|i| {
        let target = if i % 2 == 0 { &*app } else { &*other };
        let user = user.clone();
        async move { target.place_order(&user, "same-key", &[(a.id, 1)]).await }
    });
    let results = join_all(attempts).await;
    let created: Vec<_> = results.iter().filter(|r| r.status == StatusCode::CREATED).collect();
    assert_eq!(
        created.len(),
        20,
        "every duplicate waits and replays: {:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(created.iter().filter(|r| !r.replayed).count(), 1);
    assert!(created.iter().all(|r| r.body == created[0].body));
    assert_eq!(app.product(a.id).await.stock, 99);
    app.assert_stock_reconciles().await;
}

#[tokio::test]
async fn two_hundred_checkouts_over_two_instances_sell_exactly_the_stock() {
    let (app, admin, _) = shop().await;
    let other = app.sibling().await;
    let hot = app.create_product(&admin, "HOT", 100, "EUR", 10).await;
    let mut buyers = Vec::new();
    for i in 0..20 {
        buyers.push(app.signup(&format!("b{i}@shop.example")).await.access);
    }
    let attempts = (0..200).map(|i| {
        let target = if i % 2 == 0 { &*app } else { &*other };
        let token = buyers[i % buyers.len()].clone();
        async move { target.place_order(&token, &format!("k-{i}"), &[(hot.id, 1)]).await }
    });
    let results = join_all(attempts).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 190, "{statuses:?}");
    assert_eq!(app.product(hot.id).await.stock, 0);
    app.assert_stock_reconciles().await;
}

#[tokio::test]
async fn crossed_carts_never_deadlock() {
    let (app, admin, user) = shop().await;
    let other = app.sibling().await;
    let a = app.create_product(&admin, "A", 100, "EUR", 1000).await;
    let b = app.create_product(&admin, "B", 100, "EUR", 1000).await;
    let attempts = (0..100).map(|i| {
        let target = if i % 2 == 0 { &*app } else { &*other };
        let user = user.clone();
        let lines = if i % 2 == 0 {
            [(a.id, 1), (b.id, 1)]
        } else {
            [(b.id, 1), (a.id, 1)]
        };
        async move { target.place_order(&user, &format!("x-{i}"), &lines).await }
    });
    let results = join_all(attempts).await;
    assert!(
        results.iter().all(|r| r.status == StatusCode::CREATED),
        "{:?}",
        results.iter().map(|r| &r.json).find(|j| j["code"].is_string())
    );
    assert_eq!(app.product(a.id).await.stock, 900);
    assert_eq!(app.product(b.id).await.stock, 900);
    app.assert_stock_reconciles().await;
}

#[tokio::test]
async fn transitions_ownership_and_the_timeline() {
    let (app, admin, user) = shop().await;
    let stranger = app.signup("stranger@shop.example").await.access;
    let a = app.create_product(&admin, "A", 100, "EUR", 10).await;
    let order = app.order_now(&user, &[(a.id, 2)]).await;

    // Ownership: another user's order is not found, on every route.
    for path in [
        format!("/v1/orders/{}", order.id),
        format!("/v1/orders/{}/events", order.id),
    ] {
        app.get(&path, Some(&stranger)).await.assert_problem(404, "not_found");
    }
    app.order_action(&stranger, order.id, "cancel")
        .await
        .assert_problem(404, "not_found");
    let mine: testkit::Page<Order> = app.get("/v1/orders", Some(&stranger)).await.expect(StatusCode::OK);
    assert!(mine.items.is_empty());
    app.get(&format!("/v1/orders?user_id={}", Uuid::new_v4()), Some(&user))
        .await
        .assert_problem(422, "validation_failed");
    // Admin-only transitions.
    app.order_action(&user, order.id, "ship")
        .await
        .assert_problem(403, "forbidden");
    app.order_action(&admin, order.id, "ship")
        .await
        .assert_problem(409, "invalid_transition");

    // Pay → ship → deliver, each with its timestamps; a cancel is then refused.
    app.webhook(&payment_event("evt_pay_1", "payment.succeeded", &order))
        .await
        .expect_status(StatusCode::OK);
    let shipped: Order = app
        .post(
            &format!("/v1/orders/{}/ship", order.id),
            Some(&admin),
            json!({"tracking_number": "TRACK-42"}),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (shipped.status.as_str(), shipped.tracking_number.as_deref()),
        ("shipped", Some("TRACK-42"))
    );
    assert!(shipped.paid_at.is_some() && shipped.shipped_at.is_some() && shipped.expires_at.is_none());
    let delivered: Order = app
        .order_action(&admin, order.id, "deliver")
        .await
        .expect(StatusCode::OK);
    assert!(delivered.delivered_at.is_some());
    app.order_action(&user, order.id, "cancel")
        .await
        .assert_problem(409, "invalid_transition");
    let events = app.order_events(&user, order.id).await;
    assert_eq!(
        types(&events),
        vec!["order_created", "payment_succeeded", "shipped", "delivered"]
    );
    assert_eq!(events[1].actor, "payment_provider");
    assert_eq!(events[2].actor, "admin");

    // Admin search: by status, user, number.
    let by_status: testkit::Page<Order> = app
        .get("/v1/orders?status=delivered,cancelled", Some(&admin))
        .await
        .expect(StatusCode::OK);
    assert_eq!(by_status.items.len(), 1);
    let by_number: testkit::Page<Order> = app
        .get(&format!("/v1/orders?number={}", order.number), Some(&admin))
        .await
        .expect(StatusCode::OK);
    assert_eq!(by_number.items[0].id, order.id);
    let second = app.order_now(&user, &[(a.id, 1)]).await;
    let page: testkit::Page<Order> = app.get("/v1/orders?limit=1", Some(&user)).await.expect(StatusCode::OK);
    assert_eq!(page.items[0].id, second.id, "newest first");
    let cursor = page.next_cursor.unwrap();
    let rest: testkit::Page<Order> = app
        .get(&format!("/v1/orders?limit=1&cursor={cursor}"), Some(&user))
        .await
        .expect(StatusCode::OK);
    assert_eq!(rest.items[0].id, order.id);

    // Paid then cancelled: stock back, refund pending; settled by the provider.
    let third = app.order_now(&user, &[(a.id, 3)]).await;
    app.webhook(&payment_event("evt_pay_3", "payment.succeeded", &third))
        .await;
    let cancelled: Order = app.order_action(&user, third.id, "cancel").await.expect(StatusCode::OK);
    assert_eq!(cancelled.cancel_reason.as_deref(), Some("user"));
    let refund = cancelled.refund.unwrap();
    assert_eq!((refund.status.as_str(), refund.amount_cents), ("pending", 300));
    app.webhook(&payment_event("evt_ref_3", "refund.succeeded", &third))
        .await;
    assert_eq!(app.order(&user, third.id).await.refund.unwrap().status, "succeeded");
    assert_eq!(
        types(&app.order_events(&user, third.id).await),
        vec![
            "order_created",
            "payment_succeeded",
            "cancelled",
            "refund_pending",
            "refund_succeeded"
        ]
    );
    app.assert_stock_reconciles().await;
    // The jobs the transitions staged ran: confirmation, shipped and cancelled e-mails.
    app.run_jobs().await;
    let subjects: Vec<String> = app
        .mail_to("buyer@shop.example")
        .iter()
        .map(|m| m.subject.clone())
        .collect();
    assert!(subjects.len() >= 4, "{subjects:?}");
}

#[tokio::test]
async fn ten_concurrent_cancels_release_once() {
    let (app, admin, user) = shop().await;
    let other = app.sibling().await;
    let a = app.create_product(&admin, "A", 100, "EUR", 10).await;
    let order = app.order_now(&user, &[(a.id, 4)]).await;
    let attempts = (0..10).map(|i| {
        let target = if i % 2 == 0 { &*app } else { &*other };
        let token = if i % 3 == 0 { admin.clone() } else { user.clone() };
        async move { target.order_action(&token, order.id, "cancel").await }
    });
    let results = join_all(attempts).await;
    assert_eq!(results.iter().filter(|r| r.status == StatusCode::OK).count(), 1);
    assert!(
        results
            .iter()
            .filter(|r| r.status != StatusCode::OK)
            .all(|r| r.body["code"] == "invalid_transition")
    );
    assert_eq!(app.product(a.id).await.stock, 10);
    app.assert_stock_reconciles().await;
}

#[tokio::test]
async fn webhook_signatures_and_windows() {
    let (app, admin, user) = shop().await;
    let a = app.create_product(&admin, "A", 100, "EUR", 10).await;
    let order = app.order_now(&user, &[(a.id, 1)]).await;
    let body = serde_json::to_vec(&payment_event("evt_sig", "payment.succeeded", &order)).unwrap();
    let now = Utc::now().timestamp();
    let secret = TEST_WEBHOOK_SECRET.as_bytes();
    let refused = [
        None,
        Some("garbage".to_owned()),
        Some(auth::webhook::header(b"wrong-secret", now, &body)),
        Some(auth::webhook::header(secret, now - 301, &body)),
        Some(auth::webhook::header(secret, now + 301, &body)),
        Some(format!("t={now},v1={}", auth::webhook::sign(secret, now, b"{}"))),
    ];
    for sig in refused {
        app.webhook_raw(&body, sig.as_deref())
            .await
            .assert_problem(400, "invalid_signature");
    }
    assert_eq!(
        app.order(&user, order.id).await.status,
        "pending_payment",
        "nothing changed"
    );
    // Several v1 entries: one matching is enough.
    let sig = format!(
        "t={now},v1={},v1={}",
        "ab".repeat(32),
        auth::webhook::sign(secret, now, &body)
    );
    let ok = app.webhook_raw(&body, Some(&sig)).await;
    assert_eq!(
        (ok.status, ok.body["outcome"].as_str()),
        (StatusCode::OK, Some("applied"))
    );
    // Unknown type and unknown order: 200, recorded, nothing changes.
    let unknown_type = app
        .webhook(&json!({"id": "evt_t", "type": "charge.disputed", "data": {"order_id": order.id}}))
        .await;
    assert_eq!(unknown_type.body["outcome"], "unknown_type");
    let unknown_order = app
        .webhook(&json!({"id": "evt_o", "type": "payment.succeeded", "data": {"order_id": "not-a-uuid", "amount_cents": 1, "currency": "EUR"}}))
        .await;
    assert_eq!(unknown_order.body["outcome"], "unknown_order");
    // A signed body that is not an event is a client error, not a 500.
    let junk = b"[1,2]";
    let h = auth::webhook::header(secret, now, junk);
    assert_eq!(
        app.webhook_raw(junk, Some(&h)).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // A NUL in any string of a signed event (jsonb cannot store it): 422 naming the body, and
    // nothing stored under its id.
    let nul = app
        .webhook(
            &json!({"id": "evt_nul", "type": "payment.succeeded", "data": {"order_id": order.id, "note": ["a\u{0}b"]}}),
        )
        .await;
    nul.assert_problem(422, "validation_failed");
    assert_eq!(nul.body["errors"][0]["field"], "body");
    let again = app
        .webhook(&json!({"id": "evt_nul", "type": "charge.disputed", "data": {"order_id": order.id}}))
        .await;
    assert_eq!(
        again.body["outcome"], "unknown_type",
        "the refused event left no record"
    );
}

#[tokio::test]
async fn fifty_concurrent_deliveries_apply_once() {
    let (app, admin, user) = shop().await;
    let other = app.sibling().await;
    let a = app.create_product(&admin, "A", 700, "EUR", 10).await;
    let order = app.order_now(&user, &[(a.id, 1)]).await;
    let event = payment_event("evt_dup", "payment.succeeded", &order);
    let deliveries = (0..50).map(|i| {
        let target = if i % 2 == 0 { &*app } else { &*other };
        let event = event.clone();
        async move { target.webhook(&event).await }
    });
    let results = join_all(deliveries).await;
    assert!(results.iter().all(|r| r.status == StatusCode::OK));
    assert_eq!(results.iter().filter(|r| r.body["outcome"] == "applied").count(), 1);
    // A second, distinct success event for the same order: recorded, no second transition.
    let second = app
        .webhook(&payment_event("evt_dup_2", "payment.succeeded", &order))
        .await;
    assert_eq!(second.body["outcome"], "duplicate_payment");
    // A stale failure after success never moves the order back.
    let stale = app
        .webhook(&payment_event("evt_fail_late", "payment.failed", &order))
        .await;
    assert_eq!(stale.body["outcome"], "ignored_stale");
    assert_eq!(app.order(&user, order.id).await.status, "paid");
    let events = app.order_events(&user, order.id).await;
    let kinds = types(&events);
    assert_eq!(kinds.iter().filter(|k| **k == "payment_succeeded").count(), 1);
    assert_eq!(kinds.iter().filter(|k| **k == "webhook_duplicate").count(), 49);
    assert!(kinds.contains(&"payment_duplicate") && kinds.contains(&"stale_payment_failed"));
    let jobs = app.run_jobs().await;
    let confirmations = jobs
        .iter()
        .filter(|j| matches!(j, testkit::Job::Email(e) if e.message.kind() == "order_confirmation"))
        .count();
    assert_eq!(confirmations, 1, "one e-mail");
}

#[tokio::test]
async fn mismatches_and_late_payments_are_recorded() {
    let (app, admin, user) = shop().await;
    let a = app.create_product(&admin, "A", 500, "JPY", 10).await;
    let order = app.order_now(&user, &[(a.id, 2)]).await;
    assert_eq!(order.total_cents, 1000, "JPY has no minor unit: 2 × ¥500");
    let mut wrong = payment_event("evt_m1", "payment.succeeded", &order);
    wrong["data"]["amount_cents"] = json!(999);
    assert_eq!(app.webhook(&wrong).await.body["outcome"], "mismatch");
    let mut wrong_currency = payment_event("evt_m2", "payment.succeeded", &order);
    wrong_currency["data"]["currency"] = json!("EUR");
    assert_eq!(app.webhook(&wrong_currency).await.body["outcome"], "mismatch");
    let failed = app.webhook(&payment_event("evt_f", "payment.failed", &order)).await;
    assert_eq!(failed.body["outcome"], "recorded");
    assert_eq!(app.order(&user, order.id).await.status, "pending_payment");

    // The order expires; the payment arrives late: it stays cancelled and a refund is pending.
    app.set_expires_at(order.id, Utc::now() - Duration::seconds(1)).await;
    app.order_action(&user, order.id, "cancel")
        .await
        .expect_status(StatusCode::OK);
    let late = app
        .webhook(&payment_event("evt_late", "payment.succeeded", &order))
        .await;
    assert_eq!(late.body["outcome"], "late");
    let now = app.order(&user, order.id).await;
    assert_eq!(now.status, "cancelled");
    assert_eq!(
        now.refund.unwrap(),
        testkit::shop::Refund {
            status: "pending".into(),
            amount_cents: 1000
        }
    );
    let failed_refund = app.webhook(&payment_event("evt_rf", "refund.failed", &order)).await;
    assert_eq!(failed_refund.body["outcome"], "applied");
    assert_eq!(app.order(&user, order.id).await.refund.unwrap().status, "failed");
    let stray = app.webhook(&payment_event("evt_rs", "refund.succeeded", &order)).await;
    assert_eq!(stray.body["outcome"], "no_pending_refund");
    assert_eq!(
        types(&app.order_events(&user, order.id).await),
        vec![
            "order_created",
            "payment_mismatch",
            "payment_mismatch",
            "payment_failed",
            "cancelled",
            "late_payment",
            "refund_pending",
            "refund_failed",
            "refund_unmatched",
        ]
    );
    app.assert_stock_reconciles().await;
}
