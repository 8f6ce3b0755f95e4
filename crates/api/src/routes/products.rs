//! `/v1/products`: the public catalogue (cached) and its administration (admins).

use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use domain::{
    Cursor, Limit, ProductId, Role,
    input::{Fields, double_option},
    shop::{
        Currency, MovementKind, ProductListQuery, ProductPatch, StockAdjustment, parse_initial_stock, parse_price,
        parse_product_description, parse_product_name, parse_sku,
    },
};
use garde::Validate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    dto::Page,
    error::{ApiError, ApiResult, Problem},
    http::extract::{AdminUser, AuthUser, ClientMeta, IdPath, JsonBody, ValidJson, ValidQuery, query_pairs},
    infra::cache::{CacheStatus, ns},
    routes::cached_json,
    services::products::{self as svc, MovementCursor, NewProductInput},
    state::AppState,
};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductResponse {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    /// Minor units of `currency` (JPY has none: 500 is ¥500; EUR has two: 500 is €5.00).
    pub price_cents: i64,
    /// ISO 4217, one of `SHOP_CURRENCIES`.
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    pub stock: i32,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<db::products::ProductRow> for ProductResponse {
    fn from(p: db::products::ProductRow) -> Self {
        Self {
            id: p.id.into(),
            sku: p.sku,
            name: p.name,
            description: p.description,
            price_cents: p.price_cents,
            currency: p.currency,
            stock: p.stock,
            active: p.active,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StockMovementResponse {
    pub id: Uuid,
    pub product_id: Uuid,
    /// Positive: stock added; negative: stock taken.
    pub delta: i32,
    /// The product's stock right after this movement.
    pub stock_after: i32,
    pub kind: MovementKind,
    pub reason: String,
    /// Set for `order_reserved` and `order_released`.
    pub order_id: Option<Uuid>,
    /// The admin (adjustment), the customer (reservation, their cancel) or the admin who
    /// cancelled; `null` for the expiry sweep.
    pub actor_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

impl From<db::products::MovementRow> for StockMovementResponse {
    fn from(m: db::products::MovementRow) -> Self {
        Self {
            id: m.id,
            product_id: m.product_id.into(),
            delta: m.delta,
            stock_after: m.stock_after,
            kind: m.kind,
            reason: m.reason,
            order_id: m.order_id.map(Into::into),
            actor_id: m.actor_id.map(Into::into),
            created_at: m.created_at,
        }
    }
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    /// 1–64 of `A–Z a–z 0–9 - _ .`; unique, case-insensitively (409 `sku_taken`).
    #[garde(length(max = 64))]
    pub sku: String,
    /// 1–200 characters.
    #[garde(length(max = 1000))]
    pub name: String,
    /// Up to 5,000 characters.
    #[serde(default)]
    #[garde(length(max = 20000))]
    pub description: Option<String>,
    /// 0–1,000,000,000 minor units of `currency`.
    #[garde(skip)]
    pub price_cents: i64,
    /// One of `SHOP_CURRENCIES` (upper case).
    #[garde(length(max = 3))]
    pub currency: String,
    /// Initial stock (default 0). Not a ledger movement: the ledger starts from it.
    #[serde(default)]
    #[garde(skip)]
    pub stock: Option<i64>,
}

/// Partial update; `null` clears `description` and is refused for the other fields. Existing
/// orders keep the prices they were placed at.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProductRequest {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub price_cents: Option<Option<i64>>,
    /// `false` takes the product out of the catalogue (as DELETE does); `true` puts it back.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<bool>)]
    pub active: Option<Option<bool>>,
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockAdjustmentRequest {
    /// Non-zero; negative takes stock away (below 0 → 409 `insufficient_stock`, nothing changes).
    #[garde(skip)]
    pub delta: i64,
    /// 1–200 characters, recorded in the ledger.
    #[garde(length(max = 1000))]
    pub reason: String,
}

/// Documentation of the catalogue's parameters (parsing is `ProductListQuery::parse`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documentation of the query parameters only: parsing is in domain"
)]
pub struct ProductListParams {
    /// Case-insensitive substring of the name (1–100 characters).
    q: Option<String>,
    /// Inclusive, minor units.
    min_price: Option<i64>,
    /// Inclusive, minor units.
    max_price: Option<i64>,
    /// `true`: stock > 0 only; `false`: out of stock only.
    in_stock: Option<bool>,
    /// ISO 4217 code, upper case.
    currency: Option<String>,
    /// `-created_at` (default), `name`, `price_cents`, `-price_cents`. Ties are broken by id.
    sort: Option<String>,
    /// 1–100, default 20.
    limit: Option<i64>,
    /// Opaque cursor from `next_cursor`; only valid with the same `sort`.
    cursor: Option<String>,
}

#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MovementListQuery {
    /// 1–100, default 20.
    #[garde(range(min = 1, max = 100))]
    pub limit: Option<i64>,
    /// Opaque cursor from a previous page's `next_cursor`.
    #[garde(length(max = 512))]
    pub cursor: Option<String>,
}

/// The caller, when the request carries a bearer token (an invalid one is a 401, never a silent
/// anonymous read); `None` without one.
async fn caller(req: &HttpRequest) -> ApiResult<Option<AuthUser>> {
    if req.headers().contains_key(actix_web::http::header::AUTHORIZATION) {
        Ok(Some(AuthUser::extract(req).await?))
    } else {
        Ok(None)
    }
}

/// The catalogue: active products, filtered, sorted, cursor-paginated. Cached (`X-Cache`).
#[utoipa::path(get, path = "/v1/products", tag = "products", params(ProductListParams), responses(
    (status = 200, body = Page<ProductResponse>, headers(("X-Cache" = String, description = "`hit` or `miss`"))),
    (status = 422, body = Problem, content_type = "application/problem+json", description = "Unknown parameter, bad filter value, unknown sort, or a tampered cursor"),
))]
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let pairs = query_pairs(req.query_string())?;
    let query = ProductListQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let key = format!("list:{}", req.query_string());
    let cached = state.cache.get_or_load(ns::PRODUCTS, &key, || async {
        let page = svc::list(&state, &query).await?;
        serde_json::to_string(&Page::of(page, ProductResponse::from)).map_err(ApiError::internal)
    });
    Ok(cached_json(cached.await?))
}

/// One product with its stock. Cached for everyone; an inactive product is 404 except for admins
/// (whose reads bypass the cache).
#[utoipa::path(get, path = "/v1/products/{id}", tag = "products", params(("id" = Uuid, Path)), responses(
    (status = 200, body = ProductResponse, headers(("X-Cache" = String, description = "`hit` or `miss`"))),
    (status = 401, body = Problem, content_type = "application/problem+json", description = "An invalid bearer token was sent (the route needs none)"),
    (status = 404, body = Problem, content_type = "application/problem+json", description = "Unknown, or inactive (for non-admins)"),
))]
pub async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    IdPath(id): IdPath<ProductId>,
) -> ApiResult<HttpResponse> {
    if caller(&req).await?.is_some_and(|u| u.role() == Role::Admin) {
        let product = svc::get(&state, id, true).await?;
        return Ok(HttpResponse::Ok()
            .insert_header(("X-Cache", CacheStatus::Miss.header_value()))
            .json(ProductResponse::from(product)));
    }
    let key = format!("product:{id}");
    let cached = state.cache.get_or_load(ns::PRODUCTS, &key, || async {
        let product = svc::get(&state, id, false).await?;
        serde_json::to_string(&ProductResponse::from(product)).map_err(ApiError::internal)
    });
    Ok(cached_json(cached.await?))
}

/// Add a product (admin).
#[utoipa::path(post, path = "/v1/products", tag = "products", security(("bearer" = [])), request_body = CreateProductRequest, responses(
    (status = 201, body = ProductResponse),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json", description = "`sku_taken`"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub async fn create(
    state: web::Data<AppState>,
    AdminUser(admin): AdminUser,
    meta: ClientMeta,
    ValidJson(b): ValidJson<CreateProductRequest>,
) -> ApiResult<HttpResponse> {
    let mut f = Fields::new();
    let sku = f.check(parse_sku(&b.sku));
    let name = f.check(parse_product_name(&b.name));
    let description = b.description.as_deref().map(|d| f.check(parse_product_description(d)));
    let price_cents = f.check(parse_price(b.price_cents));
    let currency = f.check(Currency::parse_allowed(
        "currency",
        &b.currency,
        &state.config.shop.currencies,
    ));
    let stock = f.check(parse_initial_stock(b.stock.unwrap_or(0)));
    let (Some(sku), Some(name), Some(price_cents), Some(currency), Some(stock)) =
        (sku, name, price_cents, currency, stock)
    else {
        return Err(f.into_error().into());
    };
    f.finish(())?;
    let input = NewProductInput {
        sku,
        name,
        description: description.flatten(),
        price_cents,
        currency,
        stock,
    };
    let product = svc::create(&state, &admin.actor(), input, &meta).await?;
    Ok(HttpResponse::Created().json(ProductResponse::from(product)))
}

/// Change a product's name, description, price or `active` flag (admin). Visible at once in
/// every read, cached or not.
#[utoipa::path(patch, path = "/v1/products/{id}", tag = "products", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = UpdateProductRequest, responses(
    (status = 200, body = ProductResponse),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub async fn update(
    state: web::Data<AppState>,
    AdminUser(admin): AdminUser,
    meta: ClientMeta,
    IdPath(id): IdPath<ProductId>,
    JsonBody(b): JsonBody<UpdateProductRequest>,
) -> ApiResult<HttpResponse> {
    let mut f = Fields::new();
    let patch = ProductPatch {
        name: f.set("name", b.name, |n| parse_product_name(&n)),
        description: f.set_or_clear(b.description, |d| parse_product_description(&d)),
        price_cents: f.set("price_cents", b.price_cents, parse_price),
        active: f.set("active", b.active, Ok),
    };
    let patch = f.finish(patch)?;
    let product = svc::update(&state, &admin.actor(), id, patch, &meta).await?;
    Ok(HttpResponse::Ok().json(ProductResponse::from(product)))
}

/// Deactivate a product (admin): it leaves the catalogue; orders keep their lines. Idempotent.
#[utoipa::path(delete, path = "/v1/products/{id}", tag = "products", security(("bearer" = [])), params(("id" = Uuid, Path)), responses(
    (status = 204, description = "Deactivated"),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
))]
pub async fn delete(
    state: web::Data<AppState>,
    AdminUser(admin): AdminUser,
    meta: ClientMeta,
    IdPath(id): IdPath<ProductId>,
) -> ApiResult<HttpResponse> {
    svc::deactivate(&state, &admin.actor(), id, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Adjust the stock (admin): recorded in the ledger with the reason and the admin.
#[utoipa::path(post, path = "/v1/products/{id}/stock", tag = "products", security(("bearer" = [])), params(("id" = Uuid, Path)),
    request_body = StockAdjustmentRequest, responses(
    (status = 200, body = ProductResponse),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 409, body = Problem, content_type = "application/problem+json", description = "`insufficient_stock`: the stock would go below 0; nothing changed"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub async fn adjust_stock(
    state: web::Data<AppState>,
    AdminUser(admin): AdminUser,
    meta: ClientMeta,
    IdPath(id): IdPath<ProductId>,
    ValidJson(b): ValidJson<StockAdjustmentRequest>,
) -> ApiResult<HttpResponse> {
    let adjustment = StockAdjustment::parse(b.delta, &b.reason)?;
    let product = svc::adjust_stock(&state, &admin.actor(), id, adjustment, &meta).await?;
    Ok(HttpResponse::Ok().json(ProductResponse::from(product)))
}

/// The stock ledger of a product, newest first (admin).
#[utoipa::path(get, path = "/v1/products/{id}/stock-movements", tag = "products", security(("bearer" = [])),
    params(("id" = Uuid, Path), MovementListQuery), responses(
    (status = 200, body = Page<StockMovementResponse>),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub async fn movements(
    state: web::Data<AppState>,
    _admin: AdminUser,
    IdPath(id): IdPath<ProductId>,
    ValidQuery(q): ValidQuery<MovementListQuery>,
) -> ApiResult<HttpResponse> {
    let limit = Limit::parse(q.limit)?;
    let after = q.cursor.as_deref().map(Cursor::decode::<MovementCursor>).transpose()?;
    let page = svc::movements(&state, id, after, limit).await?;
    Ok(HttpResponse::Ok().json(Page::of(page, StockMovementResponse::from)))
}
