//! The payment provider's events (the route has verified the signature on the raw body).
//!
//! Each event is stored once by its id (a concurrent delivery of the same id waits on the first
//! one's insert, then finds it and does nothing), and its business effect is guarded again by the
//! order's row lock and the transition's `WHERE status = …`: 50 deliveries of one event, or two
//! distinct events for one payment, give one transition and one e-mail. Every event that names a
//! known order lands on its timeline, applied or not; nothing is dropped silently, and no event
//! answers a 5xx for a business reason (the provider would retry it forever).

use db::orders::{self, NewEvent, OrderRow, TransitionFields};
use domain::{
    OrderId,
    jobs::{AuditEventType as Ev, EmailMessage},
    orders::{Action, EventActor, OrderStatus, PaymentEventType, RefundStatus, event, transition},
};
use serde_json::{Value, json};

use crate::{
    services::{
        RequestMeta, Result,
        jobs::{Target, audit, email},
        work::{self, Tx},
    },
    state::AppState,
};

/// A signed event, parsed just enough to act on it.
#[derive(Debug, Clone)]
pub struct PaymentEvent {
    pub id: String,
    pub type_: String,
    pub order_id: Option<OrderId>,
    pub amount_cents: Option<i64>,
    pub currency: Option<String>,
    /// The whole body, stored with the event.
    pub payload: Value,
}

/// What an event did (stored on `webhook_events.outcome`, logged, and returned to the provider).
pub type Outcome = &'static str;

pub async fn handle(state: &AppState, ev: PaymentEvent, meta: &RequestMeta) -> Result<Outcome> {
    let outcome = work::transaction(state, async |tx| {
        if !orders::store_webhook_event(tx.conn(), &ev.id, &ev.type_, ev.order_id, &ev.payload).await? {
            // Seen before: nothing changes; the order's timeline notes the redelivery.
            if let Some(order_id) = orders::webhook_event_order(tx.conn(), &ev.id).await?
                && orders::find(tx.conn(), order_id, None).await?.is_some()
            {
                note(tx, order_id, event::WEBHOOK_DUPLICATE, &ev, json!({})).await?;
            }
            return Ok("duplicate");
        }
        let outcome = apply(tx, &ev, meta).await?;
        orders::set_webhook_outcome(tx.conn(), &ev.id, outcome).await?;
        Ok(outcome)
    })
    .await?;
    tracing::info!(event.id = %ev.id, event.type = %ev.type_, outcome, "payment event");
    Ok(outcome)
}

async fn note(tx: &mut Tx, order_id: OrderId, type_: &str, ev: &PaymentEvent, extra: Value) -> Result<()> {
    let mut detail = json!({
        "event_id": ev.id,
        "event_type": ev.type_,
        "amount_cents": ev.amount_cents,
        "currency": ev.currency,
    });
    if let (Value::Object(d), Value::Object(x)) = (&mut detail, extra) {
        d.extend(x);
    }
    orders::add_event(
        tx.conn(),
        &NewEvent {
            order_id,
            type_,
            from: None,
            to: None,
            actor: EventActor::PaymentProvider,
            detail,
        },
    )
    .await?;
    Ok(())
}

async fn apply(tx: &mut Tx, ev: &PaymentEvent, meta: &RequestMeta) -> Result<Outcome> {
    let Some(kind) = PaymentEventType::parse(&ev.type_) else {
        return Ok("unknown_type");
    };
    let Some(order_id) = ev.order_id else {
        return Ok("unknown_order");
    };
    // The row lock orders this event against a cancel, the expiry sweep (which skips locked
    // orders) and other events for the same order.
    let Some(order) = orders::lock(tx.conn(), order_id).await? else {
        return Ok("unknown_order");
    };
    match kind {
        PaymentEventType::PaymentSucceeded => payment_succeeded(tx, ev, order, meta).await,
        PaymentEventType::PaymentFailed => {
            let (type_, outcome) = match order.status {
                OrderStatus::PendingPayment => (event::PAYMENT_FAILED, "recorded"),
                OrderStatus::Cancelled => (event::PAYMENT_FAILED, "ignored_cancelled"),
                // Never moves a paid order back.
                _ => (event::STALE_PAYMENT_FAILED, "ignored_stale"),
            };
            note(tx, order.id, type_, ev, json!({ "status": order.status })).await?;
            Ok(outcome)
        }
        PaymentEventType::RefundSucceeded | PaymentEventType::RefundFailed => {
            let status = if kind == PaymentEventType::RefundSucceeded {
                RefundStatus::Succeeded
            } else {
                RefundStatus::Failed
            };
            match orders::settle_refund(tx.conn(), order.id, status, &ev.id).await? {
                Some(refund) => {
                    let type_ = if status == RefundStatus::Succeeded {
                        event::REFUND_SUCCEEDED
                    } else {
                        event::REFUND_FAILED
                    };
                    note(tx, order.id, type_, ev, json!({ "refund_id": refund.id })).await?;
                    tx.enqueue(audit(
                        Ev::RefundSettled,
                        None,
                        Target::Order(order.id),
                        meta,
                        json!({ "refund_id": refund.id, "status": status, "event_id": ev.id }),
                    ));
                    Ok("applied")
                }
                None => {
                    note(tx, order.id, event::REFUND_UNMATCHED, ev, json!({})).await?;
                    Ok("no_pending_refund")
                }
            }
        }
    }
}

async fn payment_succeeded(tx: &mut Tx, ev: &PaymentEvent, order: OrderRow, meta: &RequestMeta) -> Result<Outcome> {
    let amount = ev.amount_cents.unwrap_or(-1);
    let currency = ev.currency.clone().unwrap_or_default();
    let matches = amount == order.total_cents && currency == order.currency.as_str();
    match order.status {
        OrderStatus::PendingPayment if matches => {
            let effects = transition(order.status, Action::Pay).map_err(anyhow::Error::from)?;
            let Some(paid) = orders::transition(
                tx.conn(),
                order.id,
                None,
                order.status,
                effects.to,
                &TransitionFields::default(),
            )
            .await?
            else {
                // Unreachable under the row lock; recorded rather than lost if it ever happens.
                note(
                    tx,
                    order.id,
                    event::PAYMENT_DUPLICATE,
                    ev,
                    json!({ "reason": "lost the race" }),
                )
                .await?;
                return Ok("not_applied");
            };
            orders::insert_payment(tx.conn(), order.id, &ev.id, amount, &currency, false).await?;
            orders::add_event(
                tx.conn(),
                &NewEvent {
                    order_id: order.id,
                    type_: event::PAID,
                    from: Some(order.status),
                    to: Some(paid.status),
                    actor: EventActor::PaymentProvider,
                    detail: json!({ "event_id": ev.id, "amount_cents": amount, "currency": currency }),
                },
            )
            .await?;
            tx.enqueue(email(EmailMessage::OrderConfirmation {
                user_id: order.user_id,
                order_id: order.id,
            }));
            tx.enqueue(audit(
                Ev::OrderPaid,
                None,
                Target::Order(order.id),
                meta,
                json!({ "number": order.number.to_string(), "event_id": ev.id, "amount_cents": amount }),
            ));
            Ok("applied")
        }
        OrderStatus::PendingPayment => {
            note(
                tx,
                order.id,
                event::PAYMENT_MISMATCH,
                ev,
                json!({ "expected_amount_cents": order.total_cents, "expected_currency": order.currency }),
            )
            .await?;
            Ok("mismatch")
        }
        OrderStatus::Cancelled => {
            // Money arrived for an order that no longer wants it: it must go back.
            let payment = orders::insert_payment(tx.conn(), order.id, &ev.id, amount.max(0), &currency, true).await?;
            note(tx, order.id, event::LATE_PAYMENT, ev, json!({ "payment_id": payment })).await?;
            if let Some(refund) = orders::open_refund(tx.conn(), order.id, payment, amount.max(0), &currency).await? {
                note(
                    tx,
                    order.id,
                    event::REFUND_PENDING,
                    ev,
                    json!({ "refund_id": refund.id, "reason": "late_payment" }),
                )
                .await?;
                tx.enqueue(audit(
                    Ev::RefundPending,
                    None,
                    Target::Order(order.id),
                    meta,
                    json!({ "number": order.number.to_string(), "refund_id": refund.id, "reason": "late_payment" }),
                ));
            }
            Ok("late")
        }
        // Already paid (a second, distinct payment event): recorded for an operator to review.
        _ => {
            note(
                tx,
                order.id,
                event::PAYMENT_DUPLICATE,
                ev,
                json!({ "status": order.status, "needs_review": true }),
            )
            .await?;
            Ok("duplicate_payment")
        }
    }
}
