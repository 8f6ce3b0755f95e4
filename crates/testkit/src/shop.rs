//! The shop as tests see it: its bodies (test-side structs, like [`crate::model`]) and typed
//! helpers — products, checkout with an Idempotency-Key, signed payment events — plus the stock
//! reconciliation every stock test ends with.

use chrono::{DateTime, Utc};
use domain::{OrderId, ProductId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{Http, Res, StatusCode, TEST_WEBHOOK_SECRET, TestApp};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Product {
    pub id: ProductId,
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub price_cents: i64,
    pub currency: String,
    pub stock: i64,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OrderItem {
    pub product_id: ProductId,
    pub sku: String,
    pub name: String,
    pub unit_price_cents: i64,
    pub quantity: i64,
    pub line_total_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Refund {
    pub status: String,
    pub amount_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub number: String,
    pub user_id: UserId,
    pub status: String,
    pub currency: String,
    pub total_cents: i64,
    pub items: Vec<OrderItem>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<String>,
    pub tracking_number: Option<String>,
    pub refund: Option<Refund>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OrderEvent {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub from_status: Option<String>,
    pub to_status: Option<String>,
    pub actor: String,
    pub detail: Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StockMovement {
    pub id: Uuid,
    pub product_id: ProductId,
    pub delta: i64,
    pub stock_after: i64,
    pub kind: String,
    pub reason: String,
    pub order_id: Option<OrderId>,
    pub actor_id: Option<UserId>,
}

/// A checkout's raw answer, bytes included (replays are compared byte for byte).
#[derive(Debug)]
pub struct Placed {
    pub status: StatusCode,
    pub replayed: bool,
    pub body: Vec<u8>,
    pub json: Value,
    pub retry_after: Option<String>,
}

impl Placed {
    #[track_caller]
    pub fn order(&self) -> Order {
        assert_eq!(self.status, StatusCode::CREATED, "body: {}", self.json);
        serde_json::from_value(self.json.clone()).unwrap()
    }
}

impl Http {
    /// Creates a product (admin) and returns it.
    pub async fn create_product(
        &self,
        admin: &str,
        sku: &str,
        price_cents: i64,
        currency: &str,
        stock: i64,
    ) -> Product {
        self.post(
            "/v1/products",
            Some(admin),
            json!({"sku": sku, "name": format!("Product {sku}"), "price_cents": price_cents, "currency": currency, "stock": stock}),
        )
        .await
        .expect(StatusCode::CREATED)
    }

    pub async fn product(&self, id: domain::ProductId) -> Product {
        self.get(&format!("/v1/products/{id}"), None)
            .await
            .expect(StatusCode::OK)
    }

    /// `POST /v1/orders` with this key and these (product, quantity) lines.
    pub async fn place_order(&self, token: &str, key: &str, lines: &[(domain::ProductId, i64)]) -> Placed {
        let items: Vec<Value> = lines
            .iter()
            .map(|(id, q)| json!({"product_id": id, "quantity": q}))
            .collect();
        self.place_order_body(token, Some(key), &json!({ "items": items }))
            .await
    }

    pub async fn place_order_body(&self, token: &str, key: Option<&str>, body: &Value) -> Placed {
        let mut req = self.client.post(self.url("/v1/orders")).bearer_auth(token).json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let res = req.send().await.expect("request failed");
        let status = res.status();
        let replayed = res.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = res.bytes().await.unwrap().to_vec();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Placed {
            status,
            replayed,
            body,
            json,
            retry_after,
        }
    }

    /// Places an order with a fresh key and returns it (asserting 201).
    pub async fn order_now(&self, token: &str, lines: &[(domain::ProductId, i64)]) -> Order {
        self.place_order(token, &Uuid::new_v4().to_string(), lines)
            .await
            .order()
    }

    pub async fn order(&self, token: &str, id: OrderId) -> Order {
        self.get(&format!("/v1/orders/{id}"), Some(token))
            .await
            .expect(StatusCode::OK)
    }

    pub async fn order_events(&self, token: &str, id: OrderId) -> Vec<OrderEvent> {
        self.get(&format!("/v1/orders/{id}/events"), Some(token))
            .await
            .expect(StatusCode::OK)
    }

    pub async fn order_action(&self, token: &str, id: OrderId, action: &str) -> Res {
        let body = if action == "ship" { json!({}) } else { Value::Null };
        if body.is_null() {
            self.send(
                self.client
                    .post(self.url(&format!("/v1/orders/{id}/{action}")))
                    .bearer_auth(token),
            )
            .await
        } else {
            self.post(&format!("/v1/orders/{id}/{action}"), Some(token), body).await
        }
    }

    /// Sends a payment event signed with the test secret at the current time.
    pub async fn webhook(&self, event: &Value) -> Res {
        let body = serde_json::to_vec(event).unwrap();
        let header = auth::webhook::header(TEST_WEBHOOK_SECRET.as_bytes(), Utc::now().timestamp(), &body);
        self.webhook_raw(&body, Some(&header)).await
    }

    /// Sends `body` with this `Payment-Signature` header (or none).
    pub async fn webhook_raw(&self, body: &[u8], signature: Option<&str>) -> Res {
        let mut req = self
            .client
            .post(self.url("/v1/webhooks/payments"))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(s) = signature {
            req = req.header("Payment-Signature", s);
        }
        self.send(req).await
    }
}

/// A payment provider event.
pub fn payment_event(id: &str, kind: &str, order: &Order) -> Value {
    json!({"id": id, "type": kind, "data": {"order_id": order.id, "amount_cents": order.total_cents, "currency": order.currency}})
}

impl TestApp {
    /// Asserts the ledger reconciles: for every product, stock = initial + Σ movements, and the
    /// newest movement's `stock_after` is the stock.
    pub async fn assert_stock_reconciles(&self) {
        let mut conn = self.state.db.get().await.unwrap();
        let bad = db::products::unreconciled(&mut conn).await.unwrap();
        assert!(bad.is_empty(), "unreconciled products (id, stock, expected): {bad:?}");
    }

    /// Sets an order's deadline (to make it expire now, or never).
    pub async fn set_expires_at(&self, order: OrderId, at: DateTime<Utc>) {
        use diesel_async::RunQueryDsl;
        let mut conn = self.state.db.get().await.unwrap();
        let n = diesel::sql_query("UPDATE orders SET expires_at = $2 WHERE id = $1")
            .bind::<diesel::sql_types::Uuid, _>(order)
            .bind::<diesel::sql_types::Timestamptz, _>(at)
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
}
