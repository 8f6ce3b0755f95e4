//! `/v1/orders`: checkout (with `Idempotency-Key`), the caller's orders (admins: everyone's),
//! the timeline, and the transitions cancel / ship / deliver; `/v1/webhooks/payments`: the
//! payment provider's signed events.

use actix_web::{
    HttpRequest, HttpResponse,
    http::header::{self, HeaderValue},
    web,
};
use chrono::{DateTime, Utc};
use domain::{
    FieldError, OrderId,
    orders::{CancelReason, EventActor, OrderListQuery, OrderStatus, RefundStatus, parse_cart, parse_idempotency_key},
    shop::Currency,
};
use garde::Validate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    dto::Page,
    error::{ApiError, ApiResult, PROBLEM_JSON, Problem},
    http::extract::{AdminUser, AuthUser, ClientMeta, IdPath, ValidJson, query_pairs},
    services::{
        orders::{self as svc, IdempotencyKey, OrderView, StoredResponse},
        payments::{self, PaymentEvent},
    },
    state::AppState,
};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderItemResponse {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    /// The product's price when the order was placed.
    pub unit_price_cents: i64,
    pub quantity: i32,
    pub line_total_cents: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RefundResponse {
    pub status: RefundStatus,
    pub amount_cents: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderResponse {
    pub id: Uuid,
    /// Unique, increasing, human-friendly (`"10042"`).
    pub number: String,
    pub user_id: Uuid,
    pub status: OrderStatus,
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    /// Σ `line_total_cents`, minor units of `currency`.
    pub total_cents: i64,
    pub items: Vec<OrderItemResponse>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// While `pending_payment`: the order is cancelled (`expired`) if unpaid by then.
    pub expires_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<CancelReason>,
    pub tracking_number: Option<String>,
    /// The latest refund (a cancelled paid order, or a payment that arrived after cancellation).
    pub refund: Option<RefundResponse>,
}

impl From<OrderView> for OrderResponse {
    fn from(v: OrderView) -> Self {
        let o = v.order;
        Self {
            id: o.id.into(),
            number: o.number.to_string(),
            user_id: o.user_id.into(),
            status: o.status,
            currency: o.currency,
            total_cents: o.total_cents,
            items: v
                .items
                .into_iter()
                .map(|i| OrderItemResponse {
                    product_id: i.product_id.into(),
                    sku: i.sku,
                    name: i.name,
                    unit_price_cents: i.unit_price_cents,
                    quantity: i.quantity,
                    line_total_cents: i.line_total_cents,
                })
                .collect(),
            created_at: o.created_at,
            updated_at: o.updated_at,
            expires_at: (o.status == OrderStatus::PendingPayment).then_some(o.expires_at),
            paid_at: o.paid_at,
            shipped_at: o.shipped_at,
            delivered_at: o.delivered_at,
            cancelled_at: o.cancelled_at,
            cancel_reason: o.cancel_reason.0,
            tracking_number: o.tracking_number,
            refund: v.refund.map(|r| RefundResponse {
                status: r.status,
                amount_cents: r.amount_cents,
            }),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderEventResponse {
    pub id: Uuid,
    /// `order_created`, `payment_succeeded`, `payment_failed`, `payment_mismatch`, `late_payment`,
    /// `payment_duplicate`, `stale_payment_failed`, `webhook_duplicate`, `cancelled`, `expired`,
    /// `shipped`, `delivered`, `refund_pending`, `refund_succeeded`, `refund_failed`,
    /// `refund_unmatched`.
    #[serde(rename = "type")]
    pub type_: String,
    pub from_status: Option<OrderStatus>,
    pub to_status: Option<OrderStatus>,
    pub actor: EventActor,
    /// Event-specific facts (the provider's event id and amount, a cancel's reason, …).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLineRequest {
    pub product_id: Uuid,
    /// 1–1000 (lines naming one product are summed).
    pub quantity: i64,
}

#[derive(Debug, Serialize, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderRequest {
    /// 1–50 lines.
    #[garde(length(max = 1000))]
    pub items: Vec<OrderLineRequest>,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipRequest {
    /// 1–100 characters; shown to the customer in the shipping e-mail.
    #[serde(default)]
    #[garde(inner(length(min = 1, max = 100)))]
    pub tracking_number: Option<String>,
}

/// Documentation of the list parameters (parsing is `OrderListQuery::parse`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documentation of the query parameters only: parsing is in domain"
)]
pub struct OrderListParams {
    /// One or several statuses (repeat the parameter or separate by commas).
    status: Option<Vec<OrderStatus>>,
    /// Created at or after (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Created at or before (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// Admins only: one customer's orders.
    user_id: Option<Uuid>,
    /// Admins only: the order with this number.
    number: Option<i64>,
    /// 1–100, default 20.
    limit: Option<i64>,
    /// Opaque cursor from `next_cursor`.
    cursor: Option<String>,
}

const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// The response of a checkout as stored with its key: the same bytes for the first answer and
/// every replay.
fn render(outcome: Result<&OrderView, &crate::services::Error>) -> StoredResponse {
    match outcome {
        Ok(view) => StoredResponse {
            status: 201,
            content_type: "application/json".into(),
            body: serde_json::to_vec(&OrderResponse::from(view.clone())).unwrap_or_default(),
        },
        Err(e) => {
            let api = match e {
                crate::services::Error::InsufficientStock(errors) => ApiError::insufficient_stock(errors.clone()),
                other => ApiError::internal(anyhow::anyhow!("not a stored outcome: {other}")),
            };
            let problem = api.to_problem();
            StoredResponse {
                status: problem.status,
                content_type: PROBLEM_JSON.into(),
                body: serde_json::to_vec(&problem).unwrap_or_default(),
            }
        }
    }
}

/// Place an order: every line's stock is reserved in one transaction (or none is). Requires
/// `Idempotency-Key`: the same key and body within 24 h returns the first response (201 or 409
/// `insufficient_stock`) byte for byte, with `Idempotent-Replayed: true`.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", security(("bearer" = [])), request_body = CreateOrderRequest,
    params(("Idempotency-Key" = String, Header, description = "1–255 visible ASCII characters, unique per checkout attempt; kept 24 h per user")),
    responses(
    (status = 201, body = OrderResponse, headers(("Idempotent-Replayed" = String, description = "`true` on a replay"))),
    (status = 400, body = Problem, content_type = "application/problem+json", description = "`idempotency_key_required` (missing or malformed key), or a malformed body"),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json", description = "`insufficient_stock` (with `errors` naming each short line; replayed like a 201), or `idempotency_key_in_use` (the first request with this key is still running; `Retry-After`)"),
    (status = 422, body = Problem, content_type = "application/problem+json", description = "Invalid lines (`items[i].product_id`: unknown, inactive or another currency; `items[i].quantity`), or `idempotency_key_reused` (the key was used with another body)"),
))]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    me: AuthUser,
    meta: ClientMeta,
    ValidJson(b): ValidJson<CreateOrderRequest>,
) -> ApiResult<HttpResponse> {
    let key = req
        .headers()
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| parse_idempotency_key(v.as_bytes()))
        .ok_or(ApiError::BadRequest {
            code: "idempotency_key_required",
            detail: "Send an Idempotency-Key header (1-255 visible ASCII characters) with every order.".into(),
        })?;
    let lines: Vec<(Uuid, i64)> = b.items.iter().map(|l| (l.product_id, l.quantity)).collect();
    let cart = parse_cart(&lines)?;
    // The fingerprint of the request: its canonical JSON (so whitespace and key order of the
    // client's encoding do not matter; the lines and their order do).
    let request_hash = Sha256::digest(serde_json::to_vec(&b).map_err(ApiError::internal)?).to_vec();
    let key = IdempotencyKey { key, request_hash };
    let checkout = svc::checkout(&state, &me.actor(), cart, key, &meta, render).await?;
    let status = actix_web::http::StatusCode::from_u16(checkout.response.status)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("stored status: {e}")))?;
    let mut res = HttpResponse::build(status);
    res.insert_header((header::CONTENT_TYPE, checkout.response.content_type.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if checkout.replayed {
        res.insert_header(("Idempotent-Replayed", HeaderValue::from_static("true")));
    }
    Ok(res.body(checkout.response.body))
}

/// Your orders (admins: everyone's), newest first.
#[utoipa::path(get, path = "/v1/orders", tag = "orders", security(("bearer" = [])), params(OrderListParams), responses(
    (status = 200, body = Page<OrderResponse>),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json", description = "Bad filter, a tampered cursor, or `user_id`/`number` from a non-admin"),
))]
pub async fn list(state: web::Data<AppState>, me: AuthUser, req: HttpRequest) -> ApiResult<HttpResponse> {
    let pairs = query_pairs(req.query_string())?;
    let query = OrderListQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let page = svc::list(&state, &me.actor(), &query).await?;
    Ok(HttpResponse::Ok().json(Page::of(page, OrderResponse::from)))
}

/// One order (yours; admins: any).
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", security(("bearer" = [])), params(("id" = Uuid, Path)), responses(
    (status = 200, body = OrderResponse),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json", description = "Unknown, or another user's"),
))]
pub async fn get(state: web::Data<AppState>, me: AuthUser, IdPath(id): IdPath<OrderId>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(OrderResponse::from(svc::get(&state, &me.actor(), id).await?)))
}

/// The order's timeline, oldest first: every transition, every payment event that touched it
/// (applied or not), every refund change.
#[utoipa::path(get, path = "/v1/orders/{id}/events", tag = "orders", security(("bearer" = [])), params(("id" = Uuid, Path)), responses(
    (status = 200, body = Vec<OrderEventResponse>),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
))]
pub async fn events(state: web::Data<AppState>, me: AuthUser, IdPath(id): IdPath<OrderId>) -> ApiResult<HttpResponse> {
    let events = svc::events(&state, &me.actor(), id).await?;
    let body: Vec<OrderEventResponse> = events
        .into_iter()
        .map(|e| OrderEventResponse {
            id: e.id,
            type_: e.type_,
            from_status: e.from_status.0,
            to_status: e.to_status.0,
            actor: e.actor,
            detail: e.detail,
            created_at: e.created_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(body))
}

/// Cancel (the owner or an admin): from `pending_payment` (stock released) or `paid` (stock
/// released, a refund of the paid amount pending).
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders", security(("bearer" = [])), params(("id" = Uuid, Path)), responses(
    (status = 200, body = OrderResponse),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json", description = "`invalid_transition`"),
))]
pub async fn cancel(
    state: web::Data<AppState>,
    me: AuthUser,
    meta: ClientMeta,
    IdPath(id): IdPath<OrderId>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(OrderResponse::from(svc::cancel(&state, &me.actor(), id, &meta).await?)))
}

/// Mark shipped (admin): `paid → shipped`, with the shipping e-mail.
#[utoipa::path(post, path = "/v1/orders/{id}/ship", tag = "orders", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = ShipRequest, responses(
    (status = 200, body = OrderResponse),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json", description = "`invalid_transition`"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub async fn ship(
    state: web::Data<AppState>,
    AdminUser(admin): AdminUser,
    meta: ClientMeta,
    IdPath(id): IdPath<OrderId>,
    ValidJson(b): ValidJson<ShipRequest>,
) -> ApiResult<HttpResponse> {
    let tracking = match b.tracking_number.as_deref().map(str::trim) {
        Some(t) if t.is_empty() || t.chars().any(domain::text::is_invisible) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "tracking_number",
                "must be 1 to 100 visible characters",
            )]));
        }
        other => other,
    };
    let order = svc::ship(&state, &admin.actor(), id, tracking, &meta).await?;
    Ok(HttpResponse::Ok().json(OrderResponse::from(order)))
}

/// Mark delivered (admin): `shipped → delivered`.
#[utoipa::path(post, path = "/v1/orders/{id}/deliver", tag = "orders", security(("bearer" = [])), params(("id" = Uuid, Path)), responses(
    (status = 200, body = OrderResponse),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json", description = "`invalid_transition`"),
))]
pub async fn deliver(
    state: web::Data<AppState>,
    AdminUser(admin): AdminUser,
    meta: ClientMeta,
    IdPath(id): IdPath<OrderId>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(OrderResponse::from(
        svc::deliver(&state, &admin.actor(), id, &meta).await?,
    )))
}

/// The payment provider's event envelope.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PaymentEventRequest {
    /// The provider's event id: an id seen before is answered 200 and changes nothing.
    pub id: String,
    /// `payment.succeeded`, `payment.failed`, `refund.succeeded`, `refund.failed` (others are
    /// recorded and ignored).
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub data: Option<PaymentEventData>,
}

/// Read leniently: a value of the wrong shape is "unknown" (the event is recorded, 200), not a
/// rejection the provider would retry.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PaymentEventData {
    #[serde(default)]
    #[schema(value_type = Option<Uuid>)]
    pub order_id: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub amount_cents: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub currency: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookResponse {
    /// `applied`, `duplicate`, `mismatch`, `late`, `recorded`, `ignored_stale`,
    /// `unknown_order`, `unknown_type`, …
    pub outcome: String,
}

fn invalid_signature() -> ApiError {
    ApiError::BadRequest {
        code: "invalid_signature",
        detail: "The Payment-Signature header is missing, malformed, outside the 300 s window, or does not match."
            .into(),
    }
}

/// Payment provider events, signed: `Payment-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
/// "<t>.<raw body>">` (several `v1` allowed). Every signed event is answered 200 (with what it
/// did), so the provider never retries a business outcome forever.
#[utoipa::path(post, path = "/v1/webhooks/payments", tag = "orders", request_body = PaymentEventRequest,
    params(("Payment-Signature" = String, Header, description = "`t=<unix seconds>,v1=<hex>`")),
    responses(
    (status = 200, body = WebhookResponse),
    (status = 400, body = Problem, content_type = "application/problem+json", description = "`invalid_signature` (nothing stored), or a signed body that is not an event"),
))]
pub async fn payment_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    meta: ClientMeta,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let signature = req
        .headers()
        .get("Payment-Signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(invalid_signature)?;
    let secret = secrecy::ExposeSecret::expose_secret(&state.config.shop.webhook_secret).as_bytes();
    auth::webhook::verify(secret, signature, &body, Utc::now().timestamp(), 300).map_err(|e| {
        tracing::warn!(reason = %e, "payment webhook refused");
        invalid_signature()
    })?;
    let payload: serde_json::Value = serde_json::from_slice(&body).map_err(|_| ApiError::BadRequest {
        code: "malformed_json",
        detail: "The event body is not JSON.".into(),
    })?;
    if domain::text::json_contains_nul(&payload) {
        return Err(ApiError::field("body", "must not contain NUL characters"));
    }
    let event = PaymentEventRequest::deserialize(&payload)
        .map_err(|e| ApiError::Validation(vec![FieldError::new("body", format!("is not a payment event: {e}"))]))?;
    if event.id.is_empty() || event.id.len() > 255 {
        return Err(ApiError::field("id", "must be 1 to 255 characters"));
    }
    let data = event.data.unwrap_or(PaymentEventData {
        order_id: None,
        amount_cents: None,
        currency: None,
    });
    let outcome = payments::handle(
        &state,
        PaymentEvent {
            id: event.id,
            type_: event.type_.chars().take(100).collect(),
            order_id: data
                .order_id
                .and_then(|v| v.as_str().and_then(|s| Uuid::try_parse(s).ok()).map(OrderId::from)),
            amount_cents: data.amount_cents.and_then(|v| v.as_i64()),
            currency: data
                .currency
                .and_then(|v| v.as_str().map(|c| c.chars().take(8).collect())),
            payload,
        },
        &meta,
    )
    .await?;
    Ok(HttpResponse::Ok().json(WebhookResponse {
        outcome: outcome.into(),
    }))
}
