//! The order expiry sweep in the real `worker` process: unpaid orders past their own deadline
//! are cancelled (`expired`) within 10 s of it and never before, their stock goes back, the ledger
//! reconciles, the cancellation mail arrives over SMTP and the audit event is written; with two
//! workers sweeping at once every order is cancelled exactly once.
//!
//! Orders are made directly in the database (`db::orders::insert` + `db::products::reserve`, as
//! a checkout does), so their `expires_at` can lie in the past.

use std::time::Duration;

use chrono::{DateTime, Utc};
use db::{
    AsyncPgConnection,
    orders::{NewOrder, OrderItemRow, OrderRow},
    products::{NewProduct, ProductRow},
};
use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::{AsyncConnection, RunQueryDsl};
use domain::{
    OrderId, ProductId, UserId,
    orders::{CancelReason, OrderStatus, event},
};
use testkit::TestApp;

use crate::support::{Smtp, Worker, count_audit, eventually};

const WAIT: Duration = Duration::from_secs(30);

async fn product(conn: &mut AsyncPgConnection, sku: &str, price_cents: i64, currency: &str, stock: i32) -> ProductRow {
    db::products::insert(
        conn,
        &NewProduct {
            id: ProductId::generate(),
            sku,
            name: &format!("Product {sku}"),
            description: None,
            price_cents,
            currency,
            stock,
            initial_stock: stock,
        },
    )
    .await
    .unwrap()
}

/// An unpaid order of `lines` (distinct products of one currency) with this deadline, its stock
/// reserved in the same transaction.
async fn order(
    conn: &mut AsyncPgConnection,
    user: UserId,
    lines: &[(&ProductRow, i32)],
    expires_at: DateTime<Utc>,
) -> OrderRow {
    let id = OrderId::generate();
    let items: Vec<OrderItemRow> = lines
        .iter()
        .enumerate()
        .map(|(n, (p, q))| OrderItemRow {
            order_id: id,
            line: i32::try_from(n).unwrap(),
            product_id: p.id,
            sku: p.sku.clone(),
            name: p.name.clone(),
            unit_price_cents: p.price_cents,
            quantity: *q,
            line_total_cents: p.price_cents * i64::from(*q),
        })
        .collect();
    let new = NewOrder {
        id,
        user_id: user,
        currency: lines[0].0.currency,
        total_cents: items.iter().map(|i| i.line_total_cents).sum(),
        expires_at,
    };
    let ids: Vec<ProductId> = lines.iter().map(|(p, _)| p.id).collect();
    let quantities: Vec<i32> = lines.iter().map(|(_, q)| *q).collect();
    conn.transaction::<_, db::DbError, _>(async |conn| {
        let row = db::orders::insert(conn, &new).await?;
        let reserved = db::products::reserve(conn, id, &ids, &quantities, "test order", user).await?;
        assert_eq!(reserved, ids.len(), "every line reserved");
        db::orders::insert_items(conn, &items).await?;
        Ok(row)
    })
    .await
    .unwrap()
}

async fn reload(app: &TestApp, id: OrderId) -> OrderRow {
    let mut conn = app.state.db.get().await.unwrap();
    db::orders::find(&mut conn, id, None).await.unwrap().unwrap()
}

async fn stock(app: &TestApp, id: ProductId) -> i32 {
    let mut conn = app.state.db.get().await.unwrap();
    db::products::find(&mut conn, id).await.unwrap().unwrap().stock
}

async fn unreconciled(app: &TestApp) -> Vec<(ProductId, i64, i64)> {
    let mut conn = app.state.db.get().await.unwrap();
    db::products::unreconciled(&mut conn).await.unwrap()
}

/// Waits until every order of `ids` is cancelled; returns them.
async fn all_cancelled(app: &TestApp, ids: &[OrderId], timeout: Duration) -> Vec<OrderRow> {
    eventually(timeout, "the expired orders cancelled", || async {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let o = reload(app, *id).await;
            if o.status != OrderStatus::Cancelled {
                return None;
            }
            out.push(o);
        }
        Some(out)
    })
    .await
}

/// `expired` timeline entries per order.
async fn expired_events(app: &TestApp, order: OrderId) -> usize {
    let mut conn = app.state.db.get().await.unwrap();
    db::orders::events(&mut conn, order)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.type_ == event::EXPIRED)
        .count()
}

/// `order_released` ledger rows as (order, product) pairs.
async fn releases(app: &TestApp) -> Vec<(OrderId, ProductId)> {
    use db::schema::stock_movements::dsl as m;
    let mut conn = app.state.db.get().await.unwrap();
    let rows: Vec<(Option<OrderId>, ProductId)> = m::stock_movements
        .filter(m::kind.eq("order_released"))
        .select((m::order_id, m::product_id))
        .load(&mut conn)
        .await
        .unwrap();
    rows.into_iter().map(|(o, p)| (o.unwrap(), p)).collect()
}

async fn mails_logged(app: &TestApp, kind: &str) -> i64 {
    use db::schema::email_log::dsl as l;
    let mut conn = app.state.db.get().await.unwrap();
    l::email_log
        .filter(l::kind.eq(kind))
        .count()
        .get_result(&mut conn)
        .await
        .unwrap()
}

/// Cancelled as expired, not before its deadline, and within 10 s of the later of its deadline
/// and the moment a worker started (an order overdue before any worker ran is cancelled at once).
fn assert_expired_on_time(o: &OrderRow, started: DateTime<Utc>) {
    assert_eq!(o.cancel_reason.0, Some(CancelReason::Expired), "{o:?}");
    let cancelled = o.cancelled_at.expect("cancelled_at set");
    assert!(cancelled >= o.expires_at, "cancelled before its deadline: {o:?}");
    assert!(
        cancelled - o.expires_at.max(started) < chrono::Duration::seconds(10),
        "cancelled more than 10 s late: {o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_orders_are_cancelled_their_stock_released_and_the_owner_told() {
    let app = TestApp::spawn().await;
    let smtp = Smtp::start(0.0);
    let user = app.signup("expiry@example.com").await;
    let now = Utc::now();
    let (a, b, c, past, overdue, soon, future) = {
        let mut conn = app.state.db.get().await.unwrap();
        let a = product(&mut conn, "EXP-A", 1250, "EUR", 10).await;
        let b = product(&mut conn, "EXP-B", 499, "EUR", 5).await;
        let c = product(&mut conn, "EXP-C", 1500, "JPY", 7).await;
        // Long overdue (the worker was down), just overdue, due in 2 s, and due in an hour.
        let past = order(
            &mut conn,
            user.user_id,
            &[(&a, 2), (&b, 1)],
            now - chrono::Duration::hours(1),
        )
        .await;
        let overdue = order(&mut conn, user.user_id, &[(&c, 3)], now - chrono::Duration::seconds(1)).await;
        let soon = order(&mut conn, user.user_id, &[(&b, 2)], now + chrono::Duration::seconds(2)).await;
        let future = order(&mut conn, user.user_id, &[(&a, 1)], now + chrono::Duration::hours(1)).await;
        // Idempotency-Key records: one past its 24 h, one still kept.
        for (key, expires) in [
            ("old", now - chrono::Duration::minutes(1)),
            ("live", now + chrono::Duration::hours(1)),
        ] {
            diesel::sql_query(
                "INSERT INTO idempotency_keys (user_id, key, request_hash, created_at, expires_at) \
                 VALUES ($1, $2, '\\x00', now(), $3)",
            )
            .bind::<diesel::sql_types::Uuid, _>(user.user_id)
            .bind::<diesel::sql_types::Text, _>(key)
            .bind::<diesel::sql_types::Timestamptz, _>(expires)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        (a, b, c, past, overdue, soon, future)
    };
    assert_eq!(stock(&app, a.id).await, 7);
    assert_eq!(stock(&app, b.id).await, 2);
    assert_eq!(stock(&app, c.id).await, 4);

    let started = Utc::now();
    let worker = Worker::spawn_with_metrics(&app, Some(&smtp), &[]);
    let ids = [past.id, overdue.id, soon.id];
    let cancelled = all_cancelled(&app, &ids, Duration::from_secs(20)).await;
    for o in &cancelled {
        assert_expired_on_time(o, started);
    }
    // The one due in 2 s went by its own deadline: not before it, within 10 s of it.
    let soon_done = &cancelled[2];
    assert!(soon_done.cancelled_at.unwrap() >= soon.expires_at);
    assert!(soon_done.cancelled_at.unwrap() - soon.expires_at < chrono::Duration::seconds(10));

    // The future order is untouched and keeps its stock.
    let untouched = reload(&app, future.id).await;
    assert_eq!(untouched.status, OrderStatus::PendingPayment, "{untouched:?}");
    assert!(untouched.cancelled_at.is_none() && untouched.cancel_reason.0.is_none());
    assert_eq!(stock(&app, a.id).await, 9, "the future order's unit stays reserved");
    assert_eq!(stock(&app, b.id).await, 5);
    assert_eq!(stock(&app, c.id).await, 7);
    assert_eq!(unreconciled(&app).await, vec![]);
    for id in ids {
        assert_eq!(expired_events(&app, id).await, 1, "one expired event for {id}");
    }
    assert_eq!(expired_events(&app, future.id).await, 0);
    let mut released = releases(&app).await;
    released.sort_unstable();
    let mut expected = vec![(past.id, a.id), (past.id, b.id), (overdue.id, c.id), (soon.id, b.id)];
    expected.sort_unstable();
    assert_eq!(released, expected, "one release per line of each expired order");

    // The cancellation mail, over SMTP, for each.
    for o in [&past, &overdue, &soon] {
        let mail = smtp
            .wait_for("expiry@example.com", &format!("Order {} cancelled", o.number), WAIT)
            .await;
        assert!(mail.contains("did not arrive in time"), "{mail}");
    }
    eventually(WAIT, "three order_cancelled mails logged", || async {
        (mails_logged(&app, "order_cancelled").await == 3).then_some(())
    })
    .await;
    eventually(WAIT, "three order_cancelled audit events", || async {
        (count_audit(&app, "order_cancelled").await == 3).then_some(())
    })
    .await;
    // The purge ran at start: the expired key is gone, the live one kept.
    let keys: Vec<String> = {
        use db::schema::idempotency_keys::dsl as k;
        let mut conn = app.state.db.get().await.unwrap();
        k::idempotency_keys.select(k::key).load(&mut conn).await.unwrap()
    };
    assert_eq!(keys, ["live"]);
    let m = worker.metrics().await;
    assert_eq!(m.value("orders_expired_total", &[]), 3.0, "{}", m.text);
    assert_eq!(m.value("idempotency_keys_purged_total", &[]), 1.0, "{}", m.text);
    assert_eq!(m.value("sweep_failures_total", &[("sweep", "order_expiry")]), 0.0);
    assert!(worker.log().contains("unpaid order expired"), "{}", worker.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_cancel_each_expired_order_exactly_once() {
    let app = TestApp::spawn().await;
    let smtp = Smtp::start(0.0);
    let user = app.signup("race@example.com").await;
    let now = Utc::now();
    let (products, orders) = {
        let mut conn = app.state.db.get().await.unwrap();
        let mut products = Vec::new();
        for n in 0..5 {
            products.push(product(&mut conn, &format!("RACE-{n}"), 100, "EUR", 1000).await);
        }
        // 30 orders of two lines each, over shared products: 10 already overdue, 20 falling due
        // over the next 3 s while both workers sweep.
        let mut orders = Vec::new();
        for n in 0..30usize {
            let expires_at = if n < 10 {
                now - chrono::Duration::seconds(5)
            } else {
                now + chrono::Duration::milliseconds(150 * i64::try_from(n - 10).unwrap())
            };
            let lines = [
                (&products[n % 5], 1 + i32::try_from(n % 3).unwrap()),
                (&products[(n + 1) % 5], 1),
            ];
            orders.push(order(&mut conn, user.user_id, &lines, expires_at).await);
        }
        (products, orders)
    };
    let started = Utc::now();
    let one = Worker::spawn(&app, Some(&smtp), &[]);
    let two = Worker::spawn(&app, Some(&smtp), &[]);
    let ids: Vec<OrderId> = orders.iter().map(|o| o.id).collect();
    let cancelled = all_cancelled(&app, &ids, Duration::from_secs(25)).await;
    for o in &cancelled {
        assert_expired_on_time(o, started);
    }
    for id in &ids {
        assert_eq!(expired_events(&app, *id).await, 1, "one expired event for {id}");
    }
    let released = releases(&app).await;
    assert_eq!(released.len(), 60, "one release per order line");
    let mut distinct = released.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 60, "no line released twice");
    for p in &products {
        assert_eq!(stock(&app, p.id).await, 1000, "{}", p.sku);
    }
    assert_eq!(unreconciled(&app).await, vec![]);
    eventually(WAIT, "one order_cancelled mail per order", || async {
        (mails_logged(&app, "order_cancelled").await == 30).then_some(())
    })
    .await;
    eventually(WAIT, "one order_cancelled audit event per order", || async {
        (count_audit(&app, "order_cancelled").await == 30).then_some(())
    })
    .await;
    // Nothing more arrives later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mails_logged(&app, "order_cancelled").await, 30);
    assert_eq!(smtp.find("race@example.com", "Order ").len(), 30);
    for log in [one.log(), two.log()] {
        assert!(!log.contains("deadlock"), "{log}");
    }
}

/// Postgres unreachable from the worker: the sweep fails, is counted and retried every tick, the
/// worker keeps running, and the order is cancelled once Postgres is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_delays_the_sweep_but_never_stops_it() {
    let app = TestApp::spawn().await;
    let proxy = crate::support::PgProxy::start().await;
    let user = app.signup("outage-expiry@example.com").await;
    let mut worker = Worker::spawn_with_metrics(&app, None, &[("DATABASE_URL", proxy.url(&app.db.url))]);
    // Cut only once the worker is up (it refuses to start without a database).
    eventually(WAIT, "the worker started", || async {
        worker.log().contains("worker started").then_some(())
    })
    .await;
    proxy.cut();
    let overdue = {
        let mut conn = app.state.db.get().await.unwrap();
        let p = product(&mut conn, "OUT-1", 100, "EUR", 3).await;
        order(
            &mut conn,
            user.user_id,
            &[(&p, 2)],
            Utc::now() - chrono::Duration::seconds(1),
        )
        .await
    };
    eventually(WAIT, "failed sweeps counted", || async {
        let m = worker.metrics().await;
        (m.value("sweep_failures_total", &[("sweep", "order_expiry")]) >= 1.0).then_some(())
    })
    .await;
    assert_eq!(reload(&app, overdue.id).await.status, OrderStatus::PendingPayment);
    assert!(worker.log().contains("order expiry sweep failed"), "{}", worker.log());
    proxy.resume().await;
    let cancelled = all_cancelled(&app, &[overdue.id], WAIT).await;
    assert_eq!(cancelled[0].cancel_reason.0, Some(CancelReason::Expired));
    assert_eq!(expired_events(&app, overdue.id).await, 1);
    assert_eq!(unreconciled(&app).await, vec![]);
    assert_eq!(worker.metrics().await.value("orders_expired_total", &[]), 1.0);
    assert!(worker.terminate(Duration::from_secs(20)).success(), "{}", worker.log());
}
