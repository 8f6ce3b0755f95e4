//! The catalogue and its stock ledger. Every change of `products.stock` goes through this module
//! and writes one `stock_movements` row with the stock it left, in the same statement.

use chrono::{DateTime, Utc};
use diesel::{
    AsChangeset, BoolExpressionMethods, ExpressionMethods, Insertable, OptionalExtension, PgTextExpressionMethods,
    QueryDsl, Queryable, QueryableByName, Selectable, SelectableHelper,
    dsl::sql,
    pg::Pg,
    sql_types::{Array, BigInt, Integer, Nullable, Text, Text as SqlText},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::{
    OrderId, ProductId, UserId,
    shop::{Currency, MovementKind, ProductListQuery, ProductSort},
};
use uuid::Uuid;

use crate::{
    DbResult,
    schema::{products, stock_movements},
};

/// The unique index on `lower(sku)`.
pub const SKU_UNIQUE: &str = "products_sku_key";
/// The CHECK that keeps stock at 0 or above.
pub const STOCK_CHECK: &str = "products_stock_check";

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = products, check_for_backend(Pg))]
pub struct ProductRow {
    pub id: ProductId,
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub price_cents: i64,
    #[diesel(deserialize_as = String)]
    pub currency: Currency,
    pub stock: i32,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = products)]
pub struct NewProduct<'a> {
    pub id: ProductId,
    pub sku: &'a str,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub price_cents: i64,
    pub currency: &'a str,
    pub stock: i32,
    pub initial_stock: i32,
}

/// A partial update. Outer `None` = unchanged; `Some(None)` = clear the description.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = products)]
pub struct ProductChanges<'a> {
    pub name: Option<&'a str>,
    pub description: Option<Option<&'a str>>,
    pub price_cents: Option<i64>,
    pub active: Option<bool>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = stock_movements, check_for_backend(Pg))]
pub struct MovementRow {
    pub seq: i64,
    pub id: Uuid,
    pub product_id: ProductId,
    pub delta: i32,
    pub stock_after: i32,
    #[diesel(deserialize_as = String)]
    pub kind: MovementKind,
    pub reason: String,
    pub order_id: Option<OrderId>,
    pub actor_id: Option<UserId>,
    pub created_at: DateTime<Utc>,
}

pub async fn insert(conn: &mut AsyncPgConnection, new: &NewProduct<'_>) -> DbResult<ProductRow> {
    Ok(diesel::insert_into(products::table)
        .values(new)
        .returning(ProductRow::as_returning())
        .get_result(conn)
        .await?)
}

/// A product, active or not.
pub async fn find(conn: &mut AsyncPgConnection, id: ProductId) -> DbResult<Option<ProductRow>> {
    Ok(products::table
        .find(id)
        .select(ProductRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

pub async fn update(
    conn: &mut AsyncPgConnection,
    id: ProductId,
    changes: &ProductChanges<'_>,
) -> DbResult<Option<ProductRow>> {
    Ok(diesel::update(products::table.find(id))
        .set(changes)
        .returning(ProductRow::as_returning())
        .get_result(conn)
        .await
        .optional()?)
}

/// Deactivates the product. Returns false when it does not exist.
pub async fn deactivate(conn: &mut AsyncPgConnection, id: ProductId) -> DbResult<bool> {
    let n = diesel::update(products::table.find(id))
        .set((products::active.eq(false), products::updated_at.eq(Utc::now())))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// One page of active products (`limit + 1` rows, for [`domain::Page::from_overfetch`]).
pub async fn list(conn: &mut AsyncPgConnection, q: &ProductListQuery) -> DbResult<Vec<ProductRow>> {
    let mut query = products::table
        .filter(products::active.eq(true))
        .select(ProductRow::as_select())
        .into_boxed::<Pg>();
    if let Some(text) = &q.q {
        let pattern = format!("%{}%", like_escape(text));
        query = query.filter(products::name.ilike(pattern));
    }
    if let Some(min) = q.min_price {
        query = query.filter(products::price_cents.ge(min));
    }
    if let Some(max) = q.max_price {
        query = query.filter(products::price_cents.le(max));
    }
    match q.in_stock {
        Some(true) => query = query.filter(products::stock.gt(0)),
        Some(false) => query = query.filter(products::stock.eq(0)),
        None => {}
    }
    if let Some(c) = q.currency {
        query = query.filter(products::currency.eq(c.as_str().to_owned()));
    }
    let lower_name = sql::<Text>("lower(products.name)");
    query = match q.sort {
        ProductSort::CreatedDesc => {
            if let Some(c) = &q.after
                && let Some(t) = c.t
            {
                query = query.filter(
                    products::created_at
                        .lt(t)
                        .or(products::created_at.eq(t).and(products::id.lt(c.id))),
                );
            }
            query.order((products::created_at.desc(), products::id.desc()))
        }
        ProductSort::Name => {
            if let Some(c) = &q.after
                && let Some(n) = &c.n
            {
                query = query.filter(
                    sql::<diesel::sql_types::Bool>("(lower(products.name), products.id) > (")
                        .bind::<Text, _>(n.clone())
                        .sql(", ")
                        .bind::<diesel::sql_types::Uuid, _>(c.id)
                        .sql(")"),
                );
            }
            query.order((lower_name.asc(), products::id.asc()))
        }
        ProductSort::PriceAsc => {
            if let Some(c) = &q.after
                && let Some(p) = c.p
            {
                query = query.filter(
                    products::price_cents
                        .gt(p)
                        .or(products::price_cents.eq(p).and(products::id.gt(c.id))),
                );
            }
            query.order((products::price_cents.asc(), products::id.asc()))
        }
        ProductSort::PriceDesc => {
            if let Some(c) = &q.after
                && let Some(p) = c.p
            {
                query = query.filter(
                    products::price_cents
                        .lt(p)
                        .or(products::price_cents.eq(p).and(products::id.lt(c.id))),
                );
            }
            query.order((products::price_cents.desc(), products::id.desc()))
        }
    };
    Ok(query.limit(q.limit.get() + 1).load(conn).await?)
}

/// `%`, `_` and `\` match themselves in a LIKE pattern.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Changes the stock by `delta` and records the movement with the stock it left (call inside a
/// transaction). `None` when the product does not exist. A change below 0 fails with
/// [`STOCK_CHECK`] and changes nothing.
pub async fn adjust_stock(
    conn: &mut AsyncPgConnection,
    id: ProductId,
    delta: i32,
    reason: &str,
    actor: UserId,
) -> DbResult<Option<ProductRow>> {
    let Some(row) = diesel::update(products::table.find(id))
        .set((
            products::stock.eq(products::stock + delta),
            products::updated_at.eq(Utc::now()),
        ))
        .returning(ProductRow::as_returning())
        .get_result(conn)
        .await
        .optional()?
    else {
        return Ok(None);
    };
    diesel::insert_into(stock_movements::table)
        .values((
            stock_movements::id.eq(Uuid::now_v7()),
            stock_movements::product_id.eq(id),
            stock_movements::delta.eq(delta),
            stock_movements::stock_after.eq(row.stock),
            stock_movements::kind.eq(MovementKind::Adjustment.as_str()),
            stock_movements::reason.eq(reason),
            stock_movements::actor_id.eq(actor),
        ))
        .execute(conn)
        .await?;
    Ok(Some(row))
}

/// The ledger of one product, newest first (`limit + 1` rows after the cursor's `seq`).
pub async fn movements(
    conn: &mut AsyncPgConnection,
    product_id: ProductId,
    before_seq: Option<i64>,
    limit: i64,
) -> DbResult<Vec<MovementRow>> {
    let mut q = stock_movements::table
        .filter(stock_movements::product_id.eq(product_id))
        .select(MovementRow::as_select())
        .order(stock_movements::seq.desc())
        .limit(limit + 1)
        .into_boxed();
    if let Some(seq) = before_seq {
        q = q.filter(stock_movements::seq.lt(seq));
    }
    Ok(q.load(conn).await?)
}

/// Products whose stock is not their initial stock plus the sum of their movements, or whose
/// newest movement does not record the current stock. Empty on a consistent database.
pub async fn unreconciled(conn: &mut AsyncPgConnection) -> DbResult<Vec<(ProductId, i64, i64)>> {
    #[derive(QueryableByName)]
    struct Bad {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: ProductId,
        #[diesel(sql_type = BigInt)]
        stock: i64,
        #[diesel(sql_type = BigInt)]
        expected: i64,
    }
    let rows: Vec<Bad> = diesel::sql_query(
        "SELECT p.id, p.stock::bigint AS stock, \
                (p.initial_stock + coalesce(sum(m.delta), 0))::bigint AS expected \
         FROM products p LEFT JOIN stock_movements m ON m.product_id = p.id \
         GROUP BY p.id \
         HAVING p.stock <> p.initial_stock + coalesce(sum(m.delta), 0) \
             OR p.stock <> coalesce((SELECT stock_after FROM stock_movements l \
                                     WHERE l.product_id = p.id ORDER BY seq DESC LIMIT 1), p.stock)",
    )
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|b| (b.id, b.stock, b.expected)).collect())
}

/// A product as locked by a checkout.
#[derive(Debug, Clone, QueryableByName)]
pub struct LockedProduct {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub id: ProductId,
    #[diesel(sql_type = Text)]
    pub sku: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = BigInt)]
    pub price_cents: i64,
    #[diesel(sql_type = Text)]
    pub currency: String,
    #[diesel(sql_type = Integer)]
    pub stock: i32,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub active: bool,
}

/// Locks the named products `FOR UPDATE` in one fixed order (by id), so two carts naming the
/// same products in any order queue behind each other instead of deadlocking.
pub async fn lock_for_checkout(conn: &mut AsyncPgConnection, ids: &[ProductId]) -> DbResult<Vec<LockedProduct>> {
    Ok(diesel::sql_query(
        "SELECT id, sku, name, price_cents, currency, stock, active FROM products \
         WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
    .load(conn)
    .await?)
}

/// The named products as a checkout prices them, without locking (the reservation locks).
pub async fn load_for_checkout(conn: &mut AsyncPgConnection, ids: &[ProductId]) -> DbResult<Vec<LockedProduct>> {
    Ok(
        diesel::sql_query(
            "SELECT id, sku, name, price_cents, currency, stock, active FROM products WHERE id = ANY($1)",
        )
        .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
        .load(conn)
        .await?,
    )
}

/// Takes `quantities[i]` of `ids[i]` off the shelf for `order_id`, with one ledger row each, in
/// one statement: the products are first locked `FOR UPDATE` in id order (so carts naming the
/// same products in any order queue instead of deadlocking), then the `stock >= q` guard makes
/// the row count decide. Returns how many products were reserved (all of them, or the caller
/// rolls back).
pub async fn reserve(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    ids: &[ProductId],
    quantities: &[i32],
    reason: &str,
    actor: UserId,
) -> DbResult<usize> {
    Ok(diesel::sql_query(
        "WITH locked AS MATERIALIZED ( \
             SELECT id FROM products WHERE id = ANY($2) ORDER BY id FOR UPDATE), \
         reserved AS ( \
             UPDATE products p SET stock = p.stock - v.q, updated_at = now() \
             FROM unnest($2::uuid[], $3::int4[]) AS v(id, q), locked l \
             WHERE p.id = v.id AND l.id = v.id AND p.stock >= v.q \
             RETURNING p.id, v.q, p.stock) \
         INSERT INTO stock_movements (id, product_id, delta, stock_after, kind, reason, order_id, actor_id) \
         SELECT gen_random_uuid(), id, -q, stock, 'order_reserved', $4, $1, $5 FROM reserved",
    )
    .bind::<diesel::sql_types::Uuid, _>(order_id)
    .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
    .bind::<Array<Integer>, _>(quantities)
    .bind::<SqlText, _>(reason)
    .bind::<diesel::sql_types::Uuid, _>(actor)
    .execute(conn)
    .await?)
}

/// Puts an order's lines back on the shelf, with one ledger row each (locks in id order first).
/// Call once per order, from the transition into `cancelled` (which happens at most once).
pub async fn release(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    reason: &str,
    actor: Option<UserId>,
) -> DbResult<usize> {
    diesel::sql_query(
        "SELECT id FROM products WHERE id IN (SELECT product_id FROM order_items WHERE order_id = $1) \
         ORDER BY id FOR UPDATE",
    )
    .bind::<diesel::sql_types::Uuid, _>(order_id)
    .execute(conn)
    .await?;
    Ok(diesel::sql_query(
        "WITH released AS ( \
             UPDATE products p SET stock = p.stock + i.quantity, updated_at = now() \
             FROM order_items i WHERE i.order_id = $1 AND p.id = i.product_id \
             RETURNING p.id, i.quantity, p.stock) \
         INSERT INTO stock_movements (id, product_id, delta, stock_after, kind, reason, order_id, actor_id) \
         SELECT gen_random_uuid(), id, quantity, stock, 'order_released', $2, $1, $3 FROM released",
    )
    .bind::<diesel::sql_types::Uuid, _>(order_id)
    .bind::<SqlText, _>(reason)
    .bind::<Nullable<diesel::sql_types::Uuid>, _>(actor)
    .execute(conn)
    .await?)
}
