//! The catalogue (public reads) and its administration (admins): products, stock adjustments and
//! the stock ledger. Every admin write bumps the `products` cache namespace after commit, so the
//! change is visible at once in every cached read; stock moved by orders is not invalidated (it
//! would empty the cache on every checkout) and shows within the namespace's 1 s TTL.

use db::products::{self, MovementRow, NewProduct, ProductChanges, ProductRow};
use domain::{
    Limit, Page, ProductId,
    jobs::AuditEventType as Ev,
    shop::{Currency, ProductCursor, ProductListQuery, ProductPatch, ProductSort, StockAdjustment},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    infra::cache::ns,
    services::{
        Actor, Error, RequestMeta, Result,
        jobs::{Target, audit},
        on_constraint,
        work::{self, conn},
    },
    state::AppState,
};

/// A parsed new product.
pub struct NewProductInput {
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub price_cents: i64,
    pub currency: Currency,
    pub stock: i32,
}

fn sku_taken() -> Error {
    Error::Conflict {
        code: "sku_taken",
        detail: "A product with this SKU already exists.".into(),
    }
}

fn insufficient_stock() -> Error {
    Error::Conflict {
        code: "insufficient_stock",
        detail: "The adjustment would take the stock below 0; nothing changed.".into(),
    }
}

pub async fn create(state: &AppState, admin: &Actor, input: NewProductInput, meta: &RequestMeta) -> Result<ProductRow> {
    let new = NewProduct {
        id: ProductId::generate(),
        sku: &input.sku,
        name: &input.name,
        description: input.description.as_deref(),
        price_cents: input.price_cents,
        currency: input.currency.as_str(),
        stock: input.stock,
        initial_stock: input.stock,
    };
    work::transaction(state, async |tx| {
        let row = products::insert(tx.conn(), &new)
            .await
            .map_err(on_constraint(products::SKU_UNIQUE, sku_taken))?;
        tx.enqueue(audit(
            Ev::ProductCreated,
            Some(admin.user_id),
            Target::Product(row.id),
            meta,
            json!({ "sku": row.sku, "price_cents": row.price_cents, "currency": row.currency, "stock": row.stock }),
        ));
        tx.invalidate(ns::PRODUCTS);
        Ok(row)
    })
    .await
}

/// A product: active ones for everyone, inactive ones only for admins.
pub async fn get(state: &AppState, id: ProductId, include_inactive: bool) -> Result<ProductRow> {
    products::find(&mut *conn(state).await?, id)
        .await?
        .filter(|p| p.active || include_inactive)
        .ok_or(Error::NotFound)
}

pub async fn update(
    state: &AppState,
    admin: &Actor,
    id: ProductId,
    patch: ProductPatch,
    meta: &RequestMeta,
) -> Result<ProductRow> {
    let changes = ProductChanges {
        name: patch.name.as_deref(),
        description: patch.description.as_ref().map(|d| d.as_deref()),
        price_cents: patch.price_cents,
        active: patch.active,
        updated_at: Some(chrono::Utc::now()),
    };
    work::transaction(state, async |tx| {
        let row = products::update(tx.conn(), id, &changes)
            .await?
            .ok_or(Error::NotFound)?;
        tx.enqueue(audit(
            Ev::ProductUpdated,
            Some(admin.user_id),
            Target::Product(id),
            meta,
            json!({
                "name_changed": changes.name.is_some(),
                "description_changed": changes.description.is_some(),
                "price_cents": changes.price_cents,
                "active": changes.active,
            }),
        ));
        tx.invalidate(ns::PRODUCTS);
        Ok(row)
    })
    .await
}

/// Deactivates (the product leaves the catalogue; orders keep their lines). Idempotent.
pub async fn deactivate(state: &AppState, admin: &Actor, id: ProductId, meta: &RequestMeta) -> Result<()> {
    work::transaction(state, async |tx| {
        if !products::deactivate(tx.conn(), id).await? {
            return Err(Error::NotFound);
        }
        tx.enqueue(audit(
            Ev::ProductDeactivated,
            Some(admin.user_id),
            Target::Product(id),
            meta,
            json!({}),
        ));
        tx.invalidate(ns::PRODUCTS);
        Ok(())
    })
    .await
}

/// Adds `delta` (may be negative) with a reason; below 0 is a 409 and nothing changes.
pub async fn adjust_stock(
    state: &AppState,
    admin: &Actor,
    id: ProductId,
    adjustment: StockAdjustment,
    meta: &RequestMeta,
) -> Result<ProductRow> {
    work::transaction(state, async |tx| {
        let row = products::adjust_stock(tx.conn(), id, adjustment.delta, &adjustment.reason, admin.user_id)
            .await
            .map_err(on_constraint(products::STOCK_CHECK, insufficient_stock))?
            .ok_or(Error::NotFound)?;
        tx.enqueue(audit(
            Ev::StockAdjusted,
            Some(admin.user_id),
            Target::Product(id),
            meta,
            json!({ "delta": adjustment.delta, "stock_after": row.stock, "reason": adjustment.reason }),
        ));
        tx.invalidate(ns::PRODUCTS);
        Ok(row)
    })
    .await
}

fn cursor_of(sort: ProductSort, p: &ProductRow) -> ProductCursor {
    let mut c = ProductCursor {
        s: sort,
        t: None,
        n: None,
        p: None,
        id: p.id,
    };
    match sort {
        ProductSort::CreatedDesc => c.t = Some(p.created_at),
        ProductSort::Name => c.n = Some(p.name.to_lowercase()),
        ProductSort::PriceAsc | ProductSort::PriceDesc => c.p = Some(p.price_cents),
    }
    c
}

pub async fn list(state: &AppState, q: &ProductListQuery) -> Result<Page<ProductRow>> {
    let rows = products::list(&mut *conn(state).await?, q).await?;
    Ok(Page::from_overfetch(rows, q.limit, |p| cursor_of(q.sort, p)))
}

/// The ledger's cursor: the `seq` of the last movement shown.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovementCursor {
    pub seq: i64,
}

/// The stock ledger of a product (active or not), newest first.
pub async fn movements(
    state: &AppState,
    product_id: ProductId,
    after: Option<MovementCursor>,
    limit: Limit,
) -> Result<Page<MovementRow>> {
    let mut conn = conn(state).await?;
    if products::find(&mut conn, product_id).await?.is_none() {
        return Err(Error::NotFound);
    }
    let rows = products::movements(&mut conn, product_id, after.map(|c| c.seq), limit.get()).await?;
    Ok(Page::from_overfetch(rows, limit, |m| MovementCursor { seq: m.seq }))
}
