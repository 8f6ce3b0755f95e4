//! Orders: checkout (reservation + Idempotency-Key in one transaction), reads scoped to the
//! owner (admins see all), and the state transitions cancel / ship / deliver.
//!
//! **Checkout** prices and checks the lines without locks, writes the order, its lines and its
//! first timeline event, then reserves every line in one statement: the products are locked
//! `FOR UPDATE` in id order (two carts naming the same products in any order queue, never
//! deadlock) and one guarded `UPDATE … WHERE stock >= q` takes the stock, whose row count must
//! equal the number of lines; one ledger row per product is written in the same statement. A
//! shortfall rolls the order back to a savepoint (the key stays, with the stored 409). The locks
//! are held only for the reservation, the stored response and the commit. Nothing outside
//! Postgres is called inside the transaction.
//!
//! **Idempotency.** The key row is inserted first, in the same transaction: a concurrent duplicate
//! blocks on it (up to [`KEY_WAIT`], then 409 `idempotency_key_in_use`), then reads the committed
//! response and replays it byte for byte; a crashed or rejected request rolls the key back with
//! everything else, so no key is ever stuck. Responses the client could not have caused
//! differently (201, 409 `insufficient_stock`) are stored; validation failures are not.
//!
//! **Transitions** are [`domain::orders::transition`]'s, applied with one guarded update per
//! source state ([`db::orders::transition`]): racing writers end in exactly one of them.

use std::{collections::HashMap, time::Duration};

use chrono::Utc;
use db::orders::{self, NewEvent, NewOrder, OrderEventRow, OrderItemRow, OrderRow, RefundRow, TransitionFields};
use domain::{
    FieldError, OrderId, Page, ProductId, Role, UserId,
    jobs::{AuditEventType as Ev, EmailMessage},
    orders::{Action, CancelReason, CartLine, EventActor, OrderCursor, OrderListQuery, OrderStatus, event, transition},
    shop::Currency,
};
use serde_json::json;

use crate::services::{
    Actor, Error, RequestMeta, Result,
    jobs::{Target, audit, email},
    work::{self, Tx, conn},
};
use crate::state::AppState;

/// How long a duplicate request waits for the first one holding its key.
pub const KEY_WAIT: Duration = Duration::from_secs(5);
/// How long a key (and its response) is kept.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// An order with its lines and its latest refund, as the API shows it.
#[derive(Debug, Clone)]
pub struct OrderView {
    pub order: OrderRow,
    pub items: Vec<OrderItemRow>,
    pub refund: Option<RefundRow>,
}

/// A response as stored for an Idempotency-Key and replayed byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// The request's key and the fingerprint of its body.
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: Vec<u8>,
}

/// What a checkout answered: a fresh response, or the first one's, replayed.
pub struct Checkout {
    pub response: StoredResponse,
    pub replayed: bool,
}

async fn views(conn: &mut db::AsyncPgConnection, rows: Vec<OrderRow>) -> Result<Vec<OrderView>> {
    let ids: Vec<OrderId> = rows.iter().map(|o| o.id).collect();
    let mut items: HashMap<OrderId, Vec<OrderItemRow>> = HashMap::new();
    for item in orders::items(conn, &ids).await? {
        items.entry(item.order_id).or_default().push(item);
    }
    let mut refunds: HashMap<OrderId, RefundRow> = orders::refunds(conn, &ids)
        .await?
        .into_iter()
        .map(|r| (r.order_id, r))
        .collect();
    Ok(rows
        .into_iter()
        .map(|order| OrderView {
            items: items.remove(&order.id).unwrap_or_default(),
            refund: refunds.remove(&order.id),
            order,
        })
        .collect())
}

async fn view(conn: &mut db::AsyncPgConnection, row: OrderRow) -> Result<OrderView> {
    Ok(views(conn, vec![row]).await?.remove(0))
}

fn key_in_use() -> Error {
    Error::KeyInUse
}

/// Places an order for `actor` (see the module docs). `render` turns the outcome (the new order,
/// or the 409 of a short line) into the response that is stored with the key and returned.
pub async fn checkout(
    state: &AppState,
    actor: &Actor,
    cart: Vec<CartLine>,
    key: IdempotencyKey,
    meta: &RequestMeta,
    render: impl Fn(std::result::Result<&OrderView, &Error>) -> StoredResponse,
) -> Result<Checkout> {
    let timeout = state.config.shop.payment_timeout;
    work::transaction(state, async |tx| {
        orders::set_lock_timeout(tx.conn(), KEY_WAIT.as_millis() as u32).await?;
        let claimed = orders::claim_idempotency_key(tx.conn(), actor.user_id, &key.key, &key.request_hash, KEY_TTL)
            .await
            .map_err(|e| match e {
                db::DbError::LockTimeout => key_in_use(),
                e => e.into(),
            })?;
        if !claimed {
            return replay(tx, actor.user_id, &key).await;
        }
        let response = match reserve(tx, actor, &cart, timeout, meta).await {
            Ok(view) => render(Ok(&view)),
            Err(e @ Error::InsufficientStock(_)) => render(Err(&e)),
            // Validation failures and faults store nothing: the transaction rolls back.
            Err(e) => return Err(e),
        };
        orders::store_idempotent_response(
            tx.conn(),
            actor.user_id,
            &key.key,
            response.status,
            &response.content_type,
            &response.body,
        )
        .await?;
        Ok(Checkout {
            response,
            replayed: false,
        })
    })
    .await
}

/// The key belongs to a committed request: the same body replays its response, another is 422.
async fn replay(tx: &mut Tx, user_id: UserId, key: &IdempotencyKey) -> Result<Checkout> {
    let record = orders::idempotency_record(tx.conn(), user_id, &key.key)
        .await?
        .ok_or(Error::KeyInUse)?;
    if record.request_hash != key.request_hash {
        return Err(Error::KeyReused);
    }
    match (record.status, record.content_type, record.body) {
        (Some(status), Some(content_type), Some(body)) => Ok(Checkout {
            response: StoredResponse {
                status: u16::try_from(status).map_err(anyhow::Error::from)?,
                content_type,
                body,
            },
            replayed: true,
        }),
        // A committed key always has its response (both are written in one transaction).
        _ => Err(Error::Internal(anyhow::anyhow!(
            "idempotency key without a stored response"
        ))),
    }
}

async fn reserve(
    tx: &mut Tx,
    actor: &Actor,
    cart: &[CartLine],
    timeout: Duration,
    meta: &RequestMeta,
) -> Result<OrderView> {
    let mut ids: Vec<ProductId> = cart.iter().map(|l| l.product_id).collect();
    ids.sort_unstable();
    // Priced and checked without locks: the reservation below locks, and its `stock >= q`
    // decides. Everything that does not need the locks happens first, so they are held only
    // for the reservation, the stored response and the commit.
    let products: HashMap<ProductId, db::products::LockedProduct> = db::products::load_for_checkout(tx.conn(), &ids)
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    let mut invalid = Vec::new();
    let mut currency: Option<Currency> = None;
    for line in cart {
        let field = format!("items[{}].product_id", line.first_index);
        let Some(p) = products.get(&line.product_id).filter(|p| p.active) else {
            invalid.push(FieldError::new(field, "is not an active product"));
            continue;
        };
        let c = Currency::parse(&p.currency).ok_or_else(|| anyhow::anyhow!("stored currency {:?}", p.currency))?;
        match currency {
            None => currency = Some(c),
            Some(first) if first != c => invalid.push(FieldError::new(
                field,
                format!("is priced in {c}, the order in {first} (one currency per order)"),
            )),
            Some(_) => {}
        }
    }
    if !invalid.is_empty() {
        return Err(Error::Invalid(invalid));
    }
    let short_lines = |stock: &HashMap<ProductId, i32>| -> Vec<FieldError> {
        cart.iter()
            .filter_map(|l| {
                let have = stock.get(&l.product_id).copied().unwrap_or(0);
                (have < l.quantity).then(|| {
                    FieldError::new(
                        format!("items[{}].quantity", l.first_index),
                        format!("only {have} in stock"),
                    )
                })
            })
            .collect()
    };
    // Obviously short already: answer without taking a lock (the check is repeated under them).
    let seen: HashMap<ProductId, i32> = products.values().map(|p| (p.id, p.stock)).collect();
    let short = short_lines(&seen);
    if !short.is_empty() {
        return Err(Error::InsufficientStock(short));
    }
    let currency = currency.ok_or_else(|| Error::field("items", "must not be empty"))?;
    let order_id = OrderId::generate();
    let items: Vec<OrderItemRow> = cart
        .iter()
        .enumerate()
        .map(|(line, l)| {
            let p = &products[&l.product_id];
            OrderItemRow {
                order_id,
                line: line as i32,
                product_id: p.id,
                sku: p.sku.clone(),
                name: p.name.clone(),
                unit_price_cents: p.price_cents,
                quantity: l.quantity,
                line_total_cents: p.price_cents * i64::from(l.quantity),
            }
        })
        .collect();
    let total_cents = items.iter().map(|i| i.line_total_cents).sum();
    let new = NewOrder {
        id: order_id,
        user_id: actor.user_id,
        currency,
        total_cents,
        expires_at: Utc::now() + timeout,
    };
    // A shortfall found under the locks undoes the order (not the key) back to here.
    orders::savepoint(tx.conn(), "checkout").await?;
    let order = orders::insert(tx.conn(), &new).await?;
    let quantities: Vec<i32> = ids
        .iter()
        .map(|id| cart.iter().find(|l| l.product_id == *id).map_or(0, |l| l.quantity))
        .collect();
    let reserved = db::products::reserve(
        tx.conn(),
        order_id,
        &ids,
        &quantities,
        &format!("order {}", order.number),
        actor.user_id,
    )
    .await?;
    if reserved != ids.len() {
        // Someone took the stock since it was read: nothing of this order stays.
        orders::rollback_to_savepoint(tx.conn(), "checkout").await?;
        let now: HashMap<ProductId, i32> = db::products::load_for_checkout(tx.conn(), &ids)
            .await?
            .into_iter()
            .map(|p| (p.id, p.stock))
            .collect();
        let mut short = short_lines(&now);
        if short.is_empty() {
            // Stock came back meanwhile; still, this attempt reserved nothing.
            short = vec![FieldError::new("items", "stock changed during the checkout; retry")];
        }
        return Err(Error::InsufficientStock(short));
    }
    // The lines' foreign key share-locks the products: only now that this transaction holds them.
    orders::insert_items(tx.conn(), &items).await?;
    orders::add_event(
        tx.conn(),
        &NewEvent {
            order_id,
            type_: event::CREATED,
            from: None,
            to: Some(OrderStatus::PendingPayment),
            actor: EventActor::User,
            detail: json!({ "total_cents": total_cents, "currency": currency, "lines": items.len() }),
        },
    )
    .await?;
    tx.enqueue(audit(
        Ev::OrderCreated,
        Some(actor.user_id),
        Target::Order(order_id),
        meta,
        json!({ "number": order.number.to_string(), "total_cents": total_cents, "currency": currency }),
    ));
    Ok(OrderView {
        order,
        items,
        refund: None,
    })
}

/// Whose orders the actor may see: admins all (`None`), users their own.
fn scope(actor: &Actor) -> Option<UserId> {
    (actor.role != Role::Admin).then_some(actor.user_id)
}

pub async fn get(state: &AppState, actor: &Actor, id: OrderId) -> Result<OrderView> {
    let mut conn = conn(state).await?;
    let row = orders::find(&mut conn, id, scope(actor))
        .await?
        .ok_or(Error::NotFound)?;
    view(&mut conn, row).await
}

pub async fn events(state: &AppState, actor: &Actor, id: OrderId) -> Result<Vec<OrderEventRow>> {
    let mut conn = conn(state).await?;
    orders::find(&mut conn, id, scope(actor))
        .await?
        .ok_or(Error::NotFound)?;
    Ok(orders::events(&mut conn, id).await?)
}

/// Newest first. A user's list is always their own; `user_id` and `number` are admin filters
/// (a user naming them gets a 422, not a silently different list).
pub async fn list(state: &AppState, actor: &Actor, q: &OrderListQuery) -> Result<Page<OrderView>> {
    if actor.role != Role::Admin {
        let mut errors = Vec::new();
        if q.user_id.is_some() {
            errors.push(FieldError::new("user_id", "is an admin filter"));
        }
        if q.number.is_some() {
            errors.push(FieldError::new("number", "is an admin filter"));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
    }
    let mut conn = conn(state).await?;
    let rows = orders::list(&mut conn, q, scope(actor)).await?;
    let page = Page::from_overfetch(rows, q.limit, |o| OrderCursor {
        t: o.created_at,
        id: o.id,
    });
    let items = views(&mut conn, page.items).await?;
    Ok(Page {
        items,
        next_cursor: page.next_cursor,
    })
}

/// Cancels the order (owner or admin): from `pending_payment` (stock released) or `paid` (stock
/// released, refund pending).
pub async fn cancel(state: &AppState, actor: &Actor, id: OrderId, meta: &RequestMeta) -> Result<OrderView> {
    let reason = if actor.role == Role::Admin {
        CancelReason::Admin
    } else {
        CancelReason::User
    };
    let fields = TransitionFields {
        cancel_reason: Some(reason),
        ..TransitionFields::default()
    };
    apply(state, actor, id, Action::Cancel, &fields, meta).await
}

pub async fn ship(
    state: &AppState,
    admin: &Actor,
    id: OrderId,
    tracking_number: Option<&str>,
    meta: &RequestMeta,
) -> Result<OrderView> {
    let fields = TransitionFields {
        tracking_number,
        ..TransitionFields::default()
    };
    apply(state, admin, id, Action::Ship, &fields, meta).await
}

pub async fn deliver(state: &AppState, admin: &Actor, id: OrderId, meta: &RequestMeta) -> Result<OrderView> {
    apply(state, admin, id, Action::Deliver, &TransitionFields::default(), meta).await
}

/// One transition, tried from each state the action leaves from; the guarded update decides.
async fn apply(
    state: &AppState,
    actor: &Actor,
    id: OrderId,
    action: Action,
    fields: &TransitionFields<'_>,
    meta: &RequestMeta,
) -> Result<OrderView> {
    let owner = scope(actor);
    let who = if actor.role == Role::Admin {
        EventActor::Admin
    } else {
        EventActor::User
    };
    work::transaction(state, async |tx| {
        for from in action.sources() {
            let effects = transition(from, action).map_err(anyhow::Error::from)?;
            let Some(order) = orders::transition(tx.conn(), id, owner, from, effects.to, fields).await? else {
                continue;
            };
            let (ev, mail, type_) = match action {
                Action::Cancel | Action::Expire => {
                    let done = orders::after_cancel(tx.conn(), &order, from, effects, who, Some(actor.user_id)).await?;
                    if done.refund.is_some() {
                        tx.enqueue(audit(
                            Ev::RefundPending,
                            Some(actor.user_id),
                            Target::Order(id),
                            meta,
                            json!({ "number": order.number.to_string() }),
                        ));
                    }
                    let mail = EmailMessage::OrderCancelled {
                        user_id: order.user_id,
                        order_id: id,
                    };
                    (Ev::OrderCancelled, Some(mail), None)
                }
                Action::Ship => {
                    let mail = EmailMessage::OrderShipped {
                        user_id: order.user_id,
                        order_id: id,
                    };
                    (Ev::OrderShipped, Some(mail), Some(event::SHIPPED))
                }
                Action::Deliver => (Ev::OrderDelivered, None, Some(event::DELIVERED)),
                Action::Pay => (Ev::OrderPaid, None, Some(event::PAID)),
            };
            if let Some(type_) = type_ {
                orders::add_event(
                    tx.conn(),
                    &NewEvent {
                        order_id: id,
                        type_,
                        from: Some(from),
                        to: Some(effects.to),
                        actor: who,
                        detail: json!({ "tracking_number": order.tracking_number }),
                    },
                )
                .await?;
            }
            if let Some(mail) = mail {
                tx.enqueue(email(mail));
            }
            tx.enqueue(audit(
                ev,
                Some(actor.user_id),
                Target::Order(id),
                meta,
                json!({ "number": order.number.to_string(), "from": from, "to": effects.to }),
            ));
            return view(tx.conn(), order).await;
        }
        // No guarded update matched: the order is not there (for this caller), or in a state the
        // action does not leave from.
        match orders::find(tx.conn(), id, owner).await? {
            None => Err(Error::NotFound),
            Some(order) => Err(Error::InvalidTransition {
                from: order.status,
                action,
            }),
        }
    })
    .await
}
