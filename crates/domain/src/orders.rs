//! Orders: the state machine (pure; every transition the database makes is one of
//! [`transition`]'s), the creation rules for lines, the Idempotency-Key format, the order list
//! query and the payment provider's event types.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Cursor, DomainError, FieldError, Limit, query::Params, tasks::UnknownStored};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [
        Self::PendingPayment,
        Self::Paid,
        Self::Shipped,
        Self::Delivered,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }
}

impl FromStr for OrderStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or(())
    }
}

impl TryFrom<String> for OrderStatus {
    type Error = UnknownStored;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse().map_err(|()| UnknownStored {
            kind: "order status",
            value: s,
        })
    }
}

/// What can happen to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A matching `payment.succeeded`.
    Pay,
    /// By the owner or an admin.
    Cancel,
    /// By the worker, once `expires_at` has passed.
    Expire,
    Ship,
    Deliver,
}

impl Action {
    pub const ALL: [Action; 5] = [Self::Pay, Self::Cancel, Self::Expire, Self::Ship, Self::Deliver];

    /// "cancelled", "shipped"… (for messages).
    pub fn past_participle(self) -> &'static str {
        match self {
            Self::Pay => "paid",
            Self::Cancel => "cancelled",
            Self::Expire => "expired",
            Self::Ship => "shipped",
            Self::Deliver => "delivered",
        }
    }

    /// The states this action leaves from, in the order a guarded update should try them.
    pub fn sources(self) -> Vec<OrderStatus> {
        OrderStatus::ALL
            .into_iter()
            .filter(|s| transition(*s, self).is_ok())
            .collect()
    }
}

/// The transition is not allowed from the order's state (→ 409 `invalid_transition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action:?} an order that is {from:?}")]
pub struct InvalidTransition {
    pub from: OrderStatus,
    pub action: Action,
}

/// What a transition implies besides the new state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    pub to: OrderStatus,
    /// The order's reserved stock goes back to the shelf (exactly once: only a transition into
    /// `cancelled` releases, and there is one per order).
    pub releases_stock: bool,
    /// The paid amount must go back: a refund becomes pending.
    pub refund_due: bool,
}

/// The state machine. `pending_payment → paid → shipped → delivered`; `pending_payment →
/// cancelled` (cancel or expiry); `paid → cancelled` (cancel, with a refund). Nothing else.
pub fn transition(from: OrderStatus, action: Action) -> Result<Effects, InvalidTransition> {
    use Action as A;
    use OrderStatus as S;
    let effects = |to, releases_stock, refund_due| Effects {
        to,
        releases_stock,
        refund_due,
    };
    match (from, action) {
        (S::PendingPayment, A::Pay) => Ok(effects(S::Paid, false, false)),
        (S::PendingPayment, A::Cancel | A::Expire) => Ok(effects(S::Cancelled, true, false)),
        (S::Paid, A::Cancel) => Ok(effects(S::Cancelled, true, true)),
        (S::Paid, A::Ship) => Ok(effects(S::Shipped, false, false)),
        (S::Shipped, A::Deliver) => Ok(effects(S::Delivered, false, false)),
        (from, action) => Err(InvalidTransition { from, action }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    User,
    Admin,
    Expired,
}

impl CancelReason {
    pub const ALL: [CancelReason; 3] = [Self::User, Self::Admin, Self::Expired];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
            Self::Expired => "expired",
        }
    }
}

impl TryFrom<String> for CancelReason {
    type Error = UnknownStored;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or(UnknownStored {
            kind: "cancel reason",
            value: s,
        })
    }
}

/// Who caused an order event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventActor {
    User,
    Admin,
    System,
    PaymentProvider,
}

impl EventActor {
    pub const ALL: [EventActor; 4] = [Self::User, Self::Admin, Self::System, Self::PaymentProvider];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
            Self::System => "system",
            Self::PaymentProvider => "payment_provider",
        }
    }
}

impl TryFrom<String> for EventActor {
    type Error = UnknownStored;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or(UnknownStored {
            kind: "order event actor",
            value: s,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

impl RefundStatus {
    pub const ALL: [RefundStatus; 3] = [Self::Pending, Self::Succeeded, Self::Failed];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

impl TryFrom<String> for RefundStatus {
    type Error = UnknownStored;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or(UnknownStored {
            kind: "refund status",
            value: s,
        })
    }
}

/// The timeline's event types (`order_events.type`).
pub mod event {
    pub const CREATED: &str = "order_created";
    pub const PAID: &str = "payment_succeeded";
    pub const PAYMENT_FAILED: &str = "payment_failed";
    pub const PAYMENT_MISMATCH: &str = "payment_mismatch";
    pub const PAYMENT_DUPLICATE: &str = "payment_duplicate";
    pub const STALE_PAYMENT_FAILED: &str = "stale_payment_failed";
    pub const LATE_PAYMENT: &str = "late_payment";
    pub const WEBHOOK_DUPLICATE: &str = "webhook_duplicate";
    pub const CANCELLED: &str = "cancelled";
    pub const EXPIRED: &str = "expired";
    pub const SHIPPED: &str = "shipped";
    pub const DELIVERED: &str = "delivered";
    pub const REFUND_PENDING: &str = "refund_pending";
    pub const REFUND_SUCCEEDED: &str = "refund_succeeded";
    pub const REFUND_FAILED: &str = "refund_failed";
    pub const REFUND_UNMATCHED: &str = "refund_unmatched";
}

pub const MAX_LINES: usize = 50;
pub const MAX_QUANTITY: i64 = 1000;

/// One line of a cart after summing: a product and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CartLine {
    pub product_id: crate::ProductId,
    pub quantity: i32,
    /// Index of the first request line naming this product (for errors: `items[i].…`).
    pub first_index: usize,
}

/// The request's lines: 1–50, quantity 1–1000 each; lines naming one product are summed (the
/// sum may exceed 1000: each line obeys the rule). Order of first appearance is kept.
pub fn parse_cart(items: &[(Uuid, i64)]) -> Result<Vec<CartLine>, DomainError> {
    if items.is_empty() || items.len() > MAX_LINES {
        return Err(DomainError::field("items", format!("must have 1 to {MAX_LINES} lines")));
    }
    let mut errors = Vec::new();
    let mut lines: Vec<CartLine> = Vec::new();
    for (i, &(product_id, quantity)) in items.iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(&quantity) {
            errors.push(FieldError::new(
                format!("items[{i}].quantity"),
                format!("must be between 1 and {MAX_QUANTITY}"),
            ));
            continue;
        }
        let product_id = crate::ProductId::from(product_id);
        match lines.iter_mut().find(|l| l.product_id == product_id) {
            Some(line) => line.quantity += quantity as i32,
            None => lines.push(CartLine {
                product_id,
                quantity: quantity as i32,
                first_index: i,
            }),
        }
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(DomainError::Validation(errors))
    }
}

/// An `Idempotency-Key`: 1–255 visible ASCII characters.
pub fn parse_idempotency_key(raw: &[u8]) -> Option<String> {
    let ok = (1..=255).contains(&raw.len()) && raw.iter().all(|b| (0x21..=0x7e).contains(b));
    ok.then(|| String::from_utf8_lossy(raw).into_owned())
}

/// The key of the last order of a page (newest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderCursor {
    pub t: DateTime<Utc>,
    pub id: crate::OrderId,
}

/// A parsed `GET /v1/orders` query. `user_id` and `number` are for admins (the service refuses
/// them, or scopes to the caller, for users).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderListQuery {
    pub statuses: Vec<OrderStatus>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub user_id: Option<crate::UserId>,
    pub number: Option<i64>,
    pub limit: Limit,
    pub after: Option<OrderCursor>,
}

impl OrderListQuery {
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, DomainError> {
        let mut p = Params::new(pairs, &["status"]);
        let mut out = Self {
            statuses: Vec::new(),
            from: None,
            to: None,
            user_id: None,
            number: None,
            limit: Limit::default(),
            after: None,
        };
        let mut limit = None;
        for (key, value) in p.pairs() {
            match key {
                "status" => {
                    let mut statuses: Vec<OrderStatus> = Vec::new();
                    p.many(
                        "status",
                        value,
                        "pending_payment, paid, shipped, delivered, cancelled",
                        |s| s.parse().ok(),
                        &mut statuses,
                    );
                    out.statuses.extend(statuses);
                }
                "from" => out.from = p.time("from", value),
                "to" => out.to = p.time("to", value),
                "user_id" => out.user_id = p.uuid("user_id", value).map(crate::UserId::from),
                "number" => out.number = p.int("number", value, 1, i64::MAX),
                "limit" => limit = p.int("limit", value, 1, i64::from(Limit::MAX)),
                "cursor" => match Cursor::decode::<OrderCursor>(value) {
                    Ok(c) => out.after = Some(c),
                    Err(_) => p.error("cursor", "is not a valid cursor"),
                },
                other => p.unknown(other),
            }
        }
        out.limit = p.limit(limit);
        if let (Some(from), Some(to)) = (out.from, out.to)
            && from > to
        {
            p.error("from", "must not be after to");
        }
        out.statuses.sort_by_key(|s| *s as u8);
        out.statuses.dedup();
        p.finish().map(|()| out)
    }
}

/// The payment provider's event types; anything else is recorded and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentEventType {
    PaymentSucceeded,
    PaymentFailed,
    RefundSucceeded,
    RefundFailed,
}

impl PaymentEventType {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "payment.succeeded" => Some(Self::PaymentSucceeded),
            "payment.failed" => Some(Self::PaymentFailed),
            "refund.succeeded" => Some(Self::RefundSucceeded),
            "refund.failed" => Some(Self::RefundFailed),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (state, action) pair: the whole table, written out.
    #[test]
    fn the_transition_table_is_exhaustive() {
        use Action as A;
        use OrderStatus as S;
        /// (to, releases_stock, refund_due) of an allowed transition.
        type Allowed = Option<(S, bool, bool)>;
        let expected: &[(S, A, Allowed)] = &[
            (S::PendingPayment, A::Pay, Some((S::Paid, false, false))),
            (S::PendingPayment, A::Cancel, Some((S::Cancelled, true, false))),
            (S::PendingPayment, A::Expire, Some((S::Cancelled, true, false))),
            (S::PendingPayment, A::Ship, None),
            (S::PendingPayment, A::Deliver, None),
            (S::Paid, A::Pay, None),
            (S::Paid, A::Cancel, Some((S::Cancelled, true, true))),
            (S::Paid, A::Expire, None),
            (S::Paid, A::Ship, Some((S::Shipped, false, false))),
            (S::Paid, A::Deliver, None),
            (S::Shipped, A::Pay, None),
            (S::Shipped, A::Cancel, None),
            (S::Shipped, A::Expire, None),
            (S::Shipped, A::Ship, None),
            (S::Shipped, A::Deliver, Some((S::Delivered, false, false))),
            (S::Delivered, A::Pay, None),
            (S::Delivered, A::Cancel, None),
            (S::Delivered, A::Expire, None),
            (S::Delivered, A::Ship, None),
            (S::Delivered, A::Deliver, None),
            (S::Cancelled, A::Pay, None),
            (S::Cancelled, A::Cancel, None),
            (S::Cancelled, A::Expire, None),
            (S::Cancelled, A::Ship, None),
            (S::Cancelled, A::Deliver, None),
        ];
        assert_eq!(expected.len(), OrderStatus::ALL.len() * Action::ALL.len());
        for from in OrderStatus::ALL {
            for action in Action::ALL {
                let row = expected
                    .iter()
                    .find(|(f, a, _)| *f == from && *a == action)
                    .unwrap_or_else(|| panic!("({from:?}, {action:?}) is missing from the table"));
                let got = transition(from, action).map(|e| (e.to, e.releases_stock, e.refund_due));
                match row.2 {
                    Some(want) => assert_eq!(got, Ok(want), "({from:?}, {action:?})"),
                    None => assert_eq!(got, Err(InvalidTransition { from, action }), "({from:?}, {action:?})"),
                }
            }
        }
    }

    #[test]
    fn sources_follow_the_table() {
        assert_eq!(Action::Pay.sources(), vec![OrderStatus::PendingPayment]);
        assert_eq!(
            Action::Cancel.sources(),
            vec![OrderStatus::PendingPayment, OrderStatus::Paid]
        );
        assert_eq!(Action::Expire.sources(), vec![OrderStatus::PendingPayment]);
        assert_eq!(Action::Ship.sources(), vec![OrderStatus::Paid]);
        assert_eq!(Action::Deliver.sources(), vec![OrderStatus::Shipped]);
    }

    #[test]
    fn stored_values_round_trip_or_fail_loudly() {
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::try_from(s.as_str().to_owned()), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!(OrderStatus::try_from("refunded".to_owned()).is_err());
        for a in EventActor::ALL {
            assert_eq!(EventActor::try_from(a.as_str().to_owned()), Ok(a));
        }
        for r in RefundStatus::ALL {
            assert_eq!(RefundStatus::try_from(r.as_str().to_owned()), Ok(r));
        }
        for c in CancelReason::ALL {
            assert_eq!(CancelReason::try_from(c.as_str().to_owned()), Ok(c));
        }
        assert!(CancelReason::try_from("bored".to_owned()).is_err());
    }

    #[test]
    fn carts_sum_lines_of_one_product() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let lines = parse_cart(&[(a, 2), (b, 1), (a, 3)]).unwrap();
        assert_eq!(
            lines,
            vec![
                CartLine {
                    product_id: a.into(),
                    quantity: 5,
                    first_index: 0
                },
                CartLine {
                    product_id: b.into(),
                    quantity: 1,
                    first_index: 1
                }
            ]
        );
        assert!(parse_cart(&[]).is_err());
        assert!(parse_cart(&vec![(a, 1); 51]).is_err());
        let e = parse_cart(&[(a, 1), (b, 0), (a, 1001)]).unwrap_err();
        assert_eq!(
            e,
            DomainError::Validation(vec![
                FieldError::new("items[1].quantity", "must be between 1 and 1000"),
                FieldError::new("items[2].quantity", "must be between 1 and 1000"),
            ])
        );
    }

    #[test]
    fn idempotency_keys() {
        assert_eq!(parse_idempotency_key(b"abc-123").as_deref(), Some("abc-123"));
        assert!(parse_idempotency_key(b"").is_none());
        assert!(parse_idempotency_key(b"a b").is_none());
        assert!(parse_idempotency_key("é".as_bytes()).is_none());
        assert!(parse_idempotency_key(&[b'a'; 256]).is_none());
        assert!(parse_idempotency_key(&[b'a'; 255]).is_some());
    }

    #[test]
    fn order_list_query() {
        let q =
            OrderListQuery::parse([("status", "paid,pending_payment"), ("status", "paid"), ("limit", "3")]).unwrap();
        assert_eq!(q.statuses, vec![OrderStatus::PendingPayment, OrderStatus::Paid]);
        assert_eq!(q.limit.get(), 3);
        assert!(OrderListQuery::parse([("status", "lost")]).is_err());
        assert!(OrderListQuery::parse([("from", "2026-02-01T00:00:00Z"), ("to", "2026-01-01T00:00:00Z")]).is_err());
        assert!(OrderListQuery::parse([("number", "x")]).is_err());
        assert!(OrderListQuery::parse([("cursor", "e30")]).is_err());
        assert!(OrderListQuery::parse([("limit", "1"), ("limit", "2")]).is_err());
        assert!(PaymentEventType::parse("payment.succeeded").is_some() && PaymentEventType::parse("charge").is_none());
    }
}
