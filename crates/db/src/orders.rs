//! Orders, their lines and timeline, payments, refunds, received webhook events and
//! Idempotency-Key records. Every state change is [`transition`]: one `UPDATE … WHERE id = $1 AND
//! status = <expected>` whose row count decides, so racing writers (a cancel, the expiry, a
//! payment) end in exactly one of them.

use chrono::{DateTime, Utc};
use diesel::{
    ExpressionMethods, Insertable, OptionalExtension, QueryDsl, Queryable, Selectable, SelectableHelper, pg::Pg,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::{
    OrderId, ProductId, UserId,
    orders::{CancelReason, EventActor, OrderListQuery, OrderStatus, RefundStatus},
    shop::Currency,
};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    DbError, DbResult,
    schema::{idempotency_keys, order_events, order_items, orders, payments, refunds, webhook_events},
};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = orders, check_for_backend(Pg))]
pub struct OrderRow {
    pub id: OrderId,
    pub number: i64,
    pub user_id: UserId,
    #[diesel(deserialize_as = String)]
    pub status: OrderStatus,
    #[diesel(deserialize_as = String)]
    pub currency: Currency,
    pub total_cents: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    #[diesel(deserialize_as = Option<String>)]
    pub cancel_reason: Opt<CancelReason>,
    pub tracking_number: Option<String>,
}

/// A nullable stored enum, decoded strictly (NULL is `None`; an unknown value is an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opt<T>(pub Option<T>);

impl<T: TryFrom<String>> TryFrom<Option<String>> for Opt<T> {
    type Error = T::Error;
    fn try_from(s: Option<String>) -> Result<Self, Self::Error> {
        s.map(T::try_from).transpose().map(Self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = order_items, check_for_backend(Pg))]
pub struct OrderItemRow {
    pub order_id: OrderId,
    pub line: i32,
    pub product_id: ProductId,
    pub sku: String,
    pub name: String,
    pub unit_price_cents: i64,
    pub quantity: i32,
    pub line_total_cents: i64,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = order_events, check_for_backend(Pg))]
pub struct OrderEventRow {
    pub seq: i64,
    pub id: Uuid,
    pub order_id: OrderId,
    pub type_: String,
    #[diesel(deserialize_as = Option<String>)]
    pub from_status: Opt<OrderStatus>,
    #[diesel(deserialize_as = Option<String>)]
    pub to_status: Opt<OrderStatus>,
    #[diesel(deserialize_as = String)]
    pub actor: EventActor,
    pub detail: Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = refunds, check_for_backend(Pg))]
pub struct RefundRow {
    pub id: Uuid,
    pub order_id: OrderId,
    pub payment_id: Uuid,
    pub amount_cents: i64,
    #[diesel(deserialize_as = String)]
    pub currency: Currency,
    #[diesel(deserialize_as = String)]
    pub status: RefundStatus,
    pub provider_event_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A new order (its number comes from the sequence).
pub struct NewOrder {
    pub id: OrderId,
    pub user_id: UserId,
    pub currency: Currency,
    pub total_cents: i64,
    pub expires_at: DateTime<Utc>,
}

/// Inserts the order row (without its lines: see [`insert_items`]).
pub async fn insert(conn: &mut AsyncPgConnection, new: &NewOrder) -> DbResult<OrderRow> {
    Ok(diesel::insert_into(orders::table)
        .values((
            orders::id.eq(new.id),
            orders::user_id.eq(new.user_id),
            orders::status.eq(OrderStatus::PendingPayment.as_str()),
            orders::currency.eq(new.currency.as_str()),
            orders::total_cents.eq(new.total_cents),
            orders::expires_at.eq(new.expires_at),
        ))
        .returning(OrderRow::as_returning())
        .get_result(conn)
        .await?)
}

/// Inserts an order's lines. Their foreign key to `products` takes a `FOR KEY SHARE` lock on
/// each product: a checkout inserts them only after its reservation holds the products `FOR
/// UPDATE`, or two checkouts of one product would each hold the share lock the other's update
/// waits for (a deadlock).
pub async fn insert_items(conn: &mut AsyncPgConnection, items: &[OrderItemRow]) -> DbResult<()> {
    diesel::insert_into(order_items::table)
        .values(items)
        .execute(conn)
        .await?;
    Ok(())
}

/// The order; with `owner`, only if it is that user's (another user's is simply not found).
pub async fn find(conn: &mut AsyncPgConnection, id: OrderId, owner: Option<UserId>) -> DbResult<Option<OrderRow>> {
    let mut q = orders::table.find(id).select(OrderRow::as_select()).into_boxed();
    if let Some(user) = owner {
        q = q.filter(orders::user_id.eq(user));
    }
    Ok(q.first(conn).await.optional()?)
}

/// The order locked `FOR UPDATE` (inside a transaction).
pub async fn lock(conn: &mut AsyncPgConnection, id: OrderId) -> DbResult<Option<OrderRow>> {
    Ok(orders::table
        .find(id)
        .select(OrderRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?)
}

pub async fn items(conn: &mut AsyncPgConnection, order_ids: &[OrderId]) -> DbResult<Vec<OrderItemRow>> {
    Ok(order_items::table
        .filter(order_items::order_id.eq_any(order_ids))
        .order((order_items::order_id, order_items::line))
        .select(OrderItemRow::as_select())
        .load(conn)
        .await?)
}

/// The latest refund of each order.
pub async fn refunds(conn: &mut AsyncPgConnection, order_ids: &[OrderId]) -> DbResult<Vec<RefundRow>> {
    Ok(refunds::table
        .filter(refunds::order_id.eq_any(order_ids))
        .order((refunds::order_id, refunds::created_at.desc()))
        .distinct_on(refunds::order_id)
        .select(RefundRow::as_select())
        .load(conn)
        .await?)
}

/// One page (`limit + 1` rows), newest first; `owner` scopes to one user.
pub async fn list(conn: &mut AsyncPgConnection, q: &OrderListQuery, owner: Option<UserId>) -> DbResult<Vec<OrderRow>> {
    use diesel::BoolExpressionMethods;
    let mut query = orders::table.select(OrderRow::as_select()).into_boxed::<Pg>();
    if let Some(user) = owner.or(q.user_id) {
        query = query.filter(orders::user_id.eq(user));
    }
    if !q.statuses.is_empty() {
        let statuses: Vec<&str> = q.statuses.iter().map(|s| s.as_str()).collect();
        query = query.filter(orders::status.eq_any(statuses));
    }
    if let Some(from) = q.from {
        query = query.filter(orders::created_at.ge(from));
    }
    if let Some(to) = q.to {
        query = query.filter(orders::created_at.le(to));
    }
    if let Some(n) = q.number {
        query = query.filter(orders::number.eq(n));
    }
    if let Some(c) = &q.after {
        query = query.filter(
            orders::created_at
                .lt(c.t)
                .or(orders::created_at.eq(c.t).and(orders::id.lt(c.id))),
        );
    }
    Ok(query
        .order((orders::created_at.desc(), orders::id.desc()))
        .limit(q.limit.get() + 1)
        .load(conn)
        .await?)
}

/// What a transition writes besides the status.
#[derive(Debug, Default)]
pub struct TransitionFields<'a> {
    pub cancel_reason: Option<CancelReason>,
    pub tracking_number: Option<&'a str>,
    /// Only for the expiry: the order's own deadline must have passed (checked in the same
    /// statement, so an order is never expired before its `expires_at`).
    pub only_if_expired: bool,
}

/// Moves the order from `from` to `to` if — and only if — it is still in `from` (and belongs to
/// `owner`, when given). `None` when another writer got there first (or the order is not found).
pub async fn transition(
    conn: &mut AsyncPgConnection,
    id: OrderId,
    owner: Option<UserId>,
    from: OrderStatus,
    to: OrderStatus,
    fields: &TransitionFields<'_>,
) -> DbResult<Option<OrderRow>> {
    use diesel::{BoolExpressionMethods, BoxableExpression, sql_types::Bool};
    type Cond = Box<dyn BoxableExpression<orders::table, Pg, SqlType = Bool>>;
    let now = Utc::now();
    let mut cond: Cond = Box::new(orders::id.eq(id).and(orders::status.eq(from.as_str())));
    if let Some(user) = owner {
        cond = Box::new(cond.and(orders::user_id.eq(user)));
    }
    if fields.only_if_expired {
        cond = Box::new(cond.and(orders::expires_at.le(diesel::dsl::now)));
    }
    let stamp = |s: OrderStatus| (s == to).then_some(now);
    Ok(diesel::update(orders::table)
        .filter(cond)
        .set((
            orders::status.eq(to.as_str()),
            orders::updated_at.eq(now),
            stamp(OrderStatus::Paid).map(|t| orders::paid_at.eq(t)),
            stamp(OrderStatus::Shipped).map(|t| orders::shipped_at.eq(t)),
            stamp(OrderStatus::Delivered).map(|t| orders::delivered_at.eq(t)),
            stamp(OrderStatus::Cancelled).map(|t| orders::cancelled_at.eq(t)),
            fields.cancel_reason.map(|r| orders::cancel_reason.eq(r.as_str())),
            fields.tracking_number.map(|t| orders::tracking_number.eq(t)),
        ))
        .returning(OrderRow::as_returning())
        .get_result(conn)
        .await
        .optional()?)
}

/// One entry of an order's timeline.
pub struct NewEvent<'a> {
    pub order_id: OrderId,
    pub type_: &'a str,
    pub from: Option<OrderStatus>,
    pub to: Option<OrderStatus>,
    pub actor: EventActor,
    pub detail: Value,
}

pub async fn add_event(conn: &mut AsyncPgConnection, e: &NewEvent<'_>) -> DbResult<()> {
    diesel::insert_into(order_events::table)
        .values((
            order_events::id.eq(Uuid::now_v7()),
            order_events::order_id.eq(e.order_id),
            order_events::type_.eq(e.type_),
            order_events::from_status.eq(e.from.map(OrderStatus::as_str)),
            order_events::to_status.eq(e.to.map(OrderStatus::as_str)),
            order_events::actor.eq(e.actor.as_str()),
            order_events::detail.eq(&e.detail),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// The whole timeline, oldest first.
pub async fn events(conn: &mut AsyncPgConnection, order_id: OrderId) -> DbResult<Vec<OrderEventRow>> {
    Ok(order_events::table
        .filter(order_events::order_id.eq(order_id))
        .order(order_events::seq.asc())
        .select(OrderEventRow::as_select())
        .load(conn)
        .await?)
}

/// Records received money: `succeeded` (applied to the order) or `late` (to be refunded).
pub async fn insert_payment(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    event_id: &str,
    amount_cents: i64,
    currency: &str,
    late: bool,
) -> DbResult<Uuid> {
    let id = Uuid::now_v7();
    diesel::insert_into(payments::table)
        .values((
            payments::id.eq(id),
            payments::order_id.eq(order_id),
            payments::provider_event_id.eq(event_id),
            payments::amount_cents.eq(amount_cents),
            payments::currency.eq(currency),
            payments::status.eq(if late { "late" } else { "succeeded" }),
        ))
        .execute(conn)
        .await?;
    Ok(id)
}

/// The applied payment of an order, if any: (id, amount, currency).
pub async fn applied_payment(conn: &mut AsyncPgConnection, order_id: OrderId) -> DbResult<Option<(Uuid, i64, String)>> {
    Ok(payments::table
        .filter(payments::order_id.eq(order_id))
        .filter(payments::status.eq("succeeded"))
        .select((payments::id, payments::amount_cents, payments::currency))
        .first(conn)
        .await
        .optional()?)
}

/// A refund of `payment_id` becomes pending (once per payment: a second call returns `None`).
pub async fn open_refund(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    payment_id: Uuid,
    amount_cents: i64,
    currency: &str,
) -> DbResult<Option<RefundRow>> {
    Ok(diesel::insert_into(refunds::table)
        .values((
            refunds::id.eq(Uuid::now_v7()),
            refunds::order_id.eq(order_id),
            refunds::payment_id.eq(payment_id),
            refunds::amount_cents.eq(amount_cents),
            refunds::currency.eq(currency),
            refunds::status.eq(RefundStatus::Pending.as_str()),
        ))
        .on_conflict(refunds::payment_id)
        .do_nothing()
        .returning(RefundRow::as_returning())
        .get_result(conn)
        .await
        .optional()?)
}

/// Settles the order's oldest pending refund (guarded: only a pending one moves).
pub async fn settle_refund(
    conn: &mut AsyncPgConnection,
    order_id: OrderId,
    status: RefundStatus,
    event_id: &str,
) -> DbResult<Option<RefundRow>> {
    let pending = refunds::table
        .filter(refunds::order_id.eq(order_id))
        .filter(refunds::status.eq(RefundStatus::Pending.as_str()))
        .order(refunds::created_at.asc())
        .select(refunds::id)
        .limit(1)
        .for_update()
        .first::<Uuid>(conn)
        .await
        .optional()?;
    let Some(id) = pending else { return Ok(None) };
    Ok(diesel::update(refunds::table.find(id))
        .filter(refunds::status.eq(RefundStatus::Pending.as_str()))
        .set((
            refunds::status.eq(status.as_str()),
            refunds::provider_event_id.eq(event_id),
            refunds::updated_at.eq(Utc::now()),
        ))
        .returning(RefundRow::as_returning())
        .get_result(conn)
        .await
        .optional()?)
}

/// Stores a received webhook event by its id. `false` when that id was already stored (a
/// concurrent delivery of the same id waits here for the first one's transaction).
pub async fn store_webhook_event(
    conn: &mut AsyncPgConnection,
    id: &str,
    type_: &str,
    order_id: Option<OrderId>,
    payload: &Value,
) -> DbResult<bool> {
    let n = diesel::insert_into(webhook_events::table)
        .values((
            webhook_events::id.eq(id),
            webhook_events::type_.eq(type_),
            webhook_events::order_id.eq(order_id),
            webhook_events::payload.eq(payload),
            webhook_events::outcome.eq("received"),
        ))
        .on_conflict(webhook_events::id)
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// What the event did (`applied`, `duplicate`, `mismatch`, `late`, `unknown_order`, …).
pub async fn set_webhook_outcome(conn: &mut AsyncPgConnection, id: &str, outcome: &str) -> DbResult<()> {
    diesel::update(webhook_events::table.find(id))
        .set(webhook_events::outcome.eq(outcome))
        .execute(conn)
        .await?;
    Ok(())
}

/// The order a stored webhook event named, if any.
pub async fn webhook_event_order(conn: &mut AsyncPgConnection, id: &str) -> DbResult<Option<OrderId>> {
    Ok(webhook_events::table
        .find(id)
        .select(webhook_events::order_id)
        .first::<Option<OrderId>>(conn)
        .await
        .optional()?
        .flatten())
}

/// Up to `limit` unpaid orders past their own deadline, locked, skipping those another worker
/// (or a racing payment or cancel) holds. Call inside a transaction.
pub async fn lock_expired(conn: &mut AsyncPgConnection, limit: i64) -> DbResult<Vec<OrderId>> {
    Ok(orders::table
        .filter(orders::status.eq(OrderStatus::PendingPayment.as_str()))
        .filter(orders::expires_at.le(diesel::dsl::now))
        .order(orders::expires_at.asc())
        .limit(limit)
        .select(orders::id)
        .for_update()
        .skip_locked()
        .load(conn)
        .await?)
}

/// The earliest deadline of an unpaid order, for the sweep to sleep until.
pub async fn next_expiry(conn: &mut AsyncPgConnection) -> DbResult<Option<DateTime<Utc>>> {
    Ok(orders::table
        .filter(orders::status.eq(OrderStatus::PendingPayment.as_str()))
        .select(diesel::dsl::min(orders::expires_at))
        .first::<Option<DateTime<Utc>>>(conn)
        .await?)
}

/// A stored first response of an Idempotency-Key.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct StoredResponse {
    pub request_hash: Vec<u8>,
    pub status: Option<i16>,
    pub content_type: Option<String>,
    pub body: Option<Vec<u8>>,
}

/// Claims `(user, key)` for this transaction: inserts the key row (or takes over an expired
/// one). Returns `true` when this transaction owns the key. When another transaction holds an
/// uncommitted claim, this waits for it (bounded by the transaction's `lock_timeout`; then
/// [`DbError::LockTimeout`]).
pub async fn claim_idempotency_key(
    conn: &mut AsyncPgConnection,
    user_id: UserId,
    key: &str,
    request_hash: &[u8],
    keep_for: std::time::Duration,
) -> DbResult<bool> {
    use diesel::sql_types::{Bytea, Double, Text};
    let n = diesel::sql_query(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, now(), now() + $4 * interval '1 second') \
         ON CONFLICT (user_id, key) DO UPDATE SET request_hash = excluded.request_hash, \
             response_status = NULL, response_type = NULL, response_body = NULL, \
             created_at = excluded.created_at, expires_at = excluded.expires_at \
         WHERE idempotency_keys.expires_at <= now()",
    )
    .bind::<diesel::sql_types::Uuid, _>(user_id)
    .bind::<Text, _>(key)
    .bind::<Bytea, _>(request_hash)
    .bind::<Double, _>(keep_for.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(n == 1)
}

/// The committed record of `(user, key)`, unexpired.
pub async fn idempotency_record(
    conn: &mut AsyncPgConnection,
    user_id: UserId,
    key: &str,
) -> DbResult<Option<StoredResponse>> {
    Ok(idempotency_keys::table
        .find((user_id, key))
        .filter(idempotency_keys::expires_at.gt(Utc::now()))
        .select((
            idempotency_keys::request_hash,
            idempotency_keys::response_status,
            idempotency_keys::response_type,
            idempotency_keys::response_body,
        ))
        .first(conn)
        .await
        .optional()?)
}

/// Stores the response of the request that owns the key (before its transaction commits).
pub async fn store_idempotent_response(
    conn: &mut AsyncPgConnection,
    user_id: UserId,
    key: &str,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> DbResult<()> {
    let status = i16::try_from(status).map_err(DbError::other)?;
    diesel::update(idempotency_keys::table.find((user_id, key)))
        .set((
            idempotency_keys::response_status.eq(status),
            idempotency_keys::response_type.eq(content_type),
            idempotency_keys::response_body.eq(body),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes expired keys. Returns how many.
pub async fn purge_idempotency_keys(conn: &mut AsyncPgConnection) -> DbResult<usize> {
    Ok(
        diesel::delete(idempotency_keys::table.filter(idempotency_keys::expires_at.le(Utc::now())))
            .execute(conn)
            .await?,
    )
}

/// `SAVEPOINT name` inside the current transaction.
pub async fn savepoint(conn: &mut AsyncPgConnection, name: &str) -> DbResult<()> {
    diesel::sql_query(format!("SAVEPOINT {name}")).execute(conn).await?;
    Ok(())
}

/// `ROLLBACK TO SAVEPOINT name`: undoes what followed it (and releases its row locks).
pub async fn rollback_to_savepoint(conn: &mut AsyncPgConnection, name: &str) -> DbResult<()> {
    diesel::sql_query(format!("ROLLBACK TO SAVEPOINT {name}"))
        .execute(conn)
        .await?;
    Ok(())
}

/// Bounds how long statements of the current transaction wait for a row lock.
pub async fn set_lock_timeout(conn: &mut AsyncPgConnection, millis: u32) -> DbResult<()> {
    diesel::sql_query(format!("SET LOCAL lock_timeout = {millis}"))
        .execute(conn)
        .await?;
    Ok(())
}

/// What a cancel did besides the status change.
#[derive(Debug, Clone, Default)]
pub struct CancelEffects {
    /// Stock rows put back (one per product of the order).
    pub released: usize,
    /// The refund that became pending (a paid order was cancelled).
    pub refund: Option<RefundRow>,
}

/// Everything a transition into `cancelled` implies, in the caller's transaction, right after
/// [`transition`] returned the order (so it runs once per order, whoever won the race): the
/// stock goes back (one ledger row per product), a paid order's payment gets a pending refund,
/// and the timeline records the cancel (and the refund).
pub async fn after_cancel(
    conn: &mut AsyncPgConnection,
    order: &OrderRow,
    from: OrderStatus,
    effects: domain::orders::Effects,
    actor: EventActor,
    actor_id: Option<UserId>,
) -> DbResult<CancelEffects> {
    use domain::orders::event;
    let reason = order.cancel_reason.0.map_or("cancelled", CancelReason::as_str);
    let mut out = CancelEffects::default();
    if effects.releases_stock {
        out.released = crate::products::release(
            conn,
            order.id,
            &format!("order {} cancelled ({reason})", order.number),
            actor_id,
        )
        .await?;
    }
    let type_ = if order.cancel_reason.0 == Some(CancelReason::Expired) {
        event::EXPIRED
    } else {
        event::CANCELLED
    };
    add_event(
        conn,
        &NewEvent {
            order_id: order.id,
            type_,
            from: Some(from),
            to: Some(order.status),
            actor,
            detail: serde_json::json!({ "reason": reason, "stock_released": out.released }),
        },
    )
    .await?;
    if effects.refund_due
        && let Some((payment_id, amount, currency)) = applied_payment(conn, order.id).await?
    {
        out.refund = open_refund(conn, order.id, payment_id, amount, &currency).await?;
        if let Some(refund) = &out.refund {
            add_event(
                conn,
                &NewEvent {
                    order_id: order.id,
                    type_: event::REFUND_PENDING,
                    from: None,
                    to: None,
                    actor,
                    detail: serde_json::json!({ "refund_id": refund.id, "amount_cents": refund.amount_cents, "currency": refund.currency }),
                },
            )
            .await?;
        }
    }
    Ok(out)
}
