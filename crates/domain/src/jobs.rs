//! Background job payloads, shared by the API (producer, through the outbox) and the worker.
//!
//! Jobs carry IDs, never secrets or copies of mutable state: the worker reloads what it needs.
//! Every job has an idempotency key (the outbox row id), and every handler is idempotent.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{OrderId, UserId};

/// The queues, with their fixed names (the Redis namespace is `{REDIS_PREFIX}:jobs:{name}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Queue {
    Email,
    Audit,
}

impl Queue {
    pub const ALL: [Queue; 2] = [Queue::Email, Queue::Audit];

    pub fn as_str(self) -> &'static str {
        match self {
            Queue::Email => "email",
            Queue::Audit => "audit",
        }
    }
}

impl fmt::Display for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Queue {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "email" => Ok(Queue::Email),
            "audit" => Ok(Queue::Audit),
            other => Err(format!("unknown queue {other:?} (expected email or audit)")),
        }
    }
}

/// A job as stored in the outbox and pushed to a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "queue", content = "job", rename_all = "snake_case")]
pub enum Job {
    Email(EmailJob),
    Audit(AuditJob),
}

impl Job {
    pub fn queue(&self) -> Queue {
        match self {
            Job::Email(_) => Queue::Email,
            Job::Audit(_) => Queue::Audit,
        }
    }
}

/// Send one e-mail. `key` makes it idempotent: one message per key, ever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailJob {
    pub key: Uuid,
    pub message: EmailMessage,
}

impl EmailJob {
    /// The `email_log.message_key` of this job.
    pub fn message_key(&self) -> String {
        format!("{}:{}", self.message.kind(), self.key)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EmailMessage {
    /// Sent at sign-up: a link with a fresh single-use token (24 h).
    VerifyEmail { user_id: UserId },
    /// Sent once the address is verified.
    Welcome { user_id: UserId },
    /// A link with a fresh single-use token (1 h).
    PasswordReset { user_id: UserId },
    /// After refresh-token re-use was detected and a session revoked.
    SessionsRevoked { user_id: UserId },
    /// The order was paid (its lines and total).
    OrderConfirmation { user_id: UserId, order_id: OrderId },
    /// The order was shipped (with the tracking number, if any).
    OrderShipped { user_id: UserId, order_id: OrderId },
    /// The order was cancelled (by the owner, an admin or expiry; with the refund, if any).
    OrderCancelled { user_id: UserId, order_id: OrderId },
}

impl EmailMessage {
    pub fn kind(self) -> &'static str {
        match self {
            Self::VerifyEmail { .. } => "verify_email",
            Self::Welcome { .. } => "welcome",
            Self::PasswordReset { .. } => "password_reset",
            Self::SessionsRevoked { .. } => "sessions_revoked",
            Self::OrderConfirmation { .. } => "order_confirmation",
            Self::OrderShipped { .. } => "order_shipped",
            Self::OrderCancelled { .. } => "order_cancelled",
        }
    }

    pub fn user_id(self) -> UserId {
        match self {
            Self::VerifyEmail { user_id }
            | Self::Welcome { user_id }
            | Self::PasswordReset { user_id }
            | Self::SessionsRevoked { user_id }
            | Self::OrderConfirmation { user_id, .. }
            | Self::OrderShipped { user_id, .. }
            | Self::OrderCancelled { user_id, .. } => user_id,
        }
    }

    /// The order an order e-mail is about.
    pub fn order_id(self) -> Option<OrderId> {
        match self {
            Self::OrderConfirmation { order_id, .. }
            | Self::OrderShipped { order_id, .. }
            | Self::OrderCancelled { order_id, .. } => Some(order_id),
            _ => None,
        }
    }
}

/// Append one event to the audit log. `event.event_id` makes it idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditJob {
    pub event: AuditEvent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    pub event_id: Uuid,
    pub event_type: AuditEventType,
    pub actor_id: Option<UserId>,
    pub target_type: Option<String>,
    pub target_id: Option<Uuid>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

/// Every event type the audit log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditEventType {
    Signup,
    LoginSucceeded,
    LoginFailed,
    RefreshReuseDetected,
    SessionRevoked,
    Logout,
    EmailVerified,
    PasswordChanged,
    PasswordResetRequested,
    PasswordResetCompleted,
    AdminUserCreated,
    AdminUserUpdated,
    AdminUserDeleted,
    TaskDeleted,
    TaskRestored,
    ProductCreated,
    ProductUpdated,
    ProductDeactivated,
    StockAdjusted,
    OrderCreated,
    OrderPaid,
    OrderCancelled,
    OrderShipped,
    OrderDelivered,
    RefundPending,
    RefundSettled,
    OauthLogin,
    IdentityLinked,
    IdentityUnlinked,
}

impl AuditEventType {
    pub const ALL: [AuditEventType; 29] = [
        Self::Signup,
        Self::LoginSucceeded,
        Self::LoginFailed,
        Self::RefreshReuseDetected,
        Self::SessionRevoked,
        Self::Logout,
        Self::EmailVerified,
        Self::PasswordChanged,
        Self::PasswordResetRequested,
        Self::PasswordResetCompleted,
        Self::AdminUserCreated,
        Self::AdminUserUpdated,
        Self::AdminUserDeleted,
        Self::TaskDeleted,
        Self::TaskRestored,
        Self::ProductCreated,
        Self::ProductUpdated,
        Self::ProductDeactivated,
        Self::StockAdjusted,
        Self::OrderCreated,
        Self::OrderPaid,
        Self::OrderCancelled,
        Self::OrderShipped,
        Self::OrderDelivered,
        Self::RefundPending,
        Self::RefundSettled,
        Self::OauthLogin,
        Self::IdentityLinked,
        Self::IdentityUnlinked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signup => "signup",
            Self::LoginSucceeded => "login_succeeded",
            Self::LoginFailed => "login_failed",
            Self::RefreshReuseDetected => "refresh_reuse_detected",
            Self::SessionRevoked => "session_revoked",
            Self::Logout => "logout",
            Self::EmailVerified => "email_verified",
            Self::PasswordChanged => "password_changed",
            Self::PasswordResetRequested => "password_reset_requested",
            Self::PasswordResetCompleted => "password_reset_completed",
            Self::AdminUserCreated => "admin_user_created",
            Self::AdminUserUpdated => "admin_user_updated",
            Self::AdminUserDeleted => "admin_user_deleted",
            Self::TaskDeleted => "task_deleted",
            Self::TaskRestored => "task_restored",
            Self::ProductCreated => "product_created",
            Self::ProductUpdated => "product_updated",
            Self::ProductDeactivated => "product_deactivated",
            Self::StockAdjusted => "stock_adjusted",
            Self::OrderCreated => "order_created",
            Self::OrderPaid => "order_paid",
            Self::OrderCancelled => "order_cancelled",
            Self::OrderShipped => "order_shipped",
            Self::OrderDelivered => "order_delivered",
            Self::RefundPending => "refund_pending",
            Self::RefundSettled => "refund_settled",
            Self::OauthLogin => "oauth_login",
            Self::IdentityLinked => "identity_linked",
            Self::IdentityUnlinked => "identity_unlinked",
        }
    }
}

impl FromStr for AuditEventType {
    type Err = crate::DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| crate::DomainError::field("type", "is not a known audit event type"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_json_shape_is_stable() {
        let key = Uuid::nil();
        let job = Job::Email(EmailJob {
            key,
            message: EmailMessage::VerifyEmail { user_id: key.into() },
        });
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"queue": "email", "job": {"key": key, "message": {"kind": "verify_email", "user_id": key}}})
        );
        assert_eq!(serde_json::from_value::<Job>(json).unwrap(), job);
    }

    #[test]
    fn malformed_payloads_are_rejected() {
        for bad in [
            serde_json::json!({"key": "x", "message": {"kind": "verify_email", "user_id": Uuid::nil()}}),
            serde_json::json!({"key": Uuid::nil(), "message": {"kind": "nope"}}),
            serde_json::json!({"key": Uuid::nil(), "message": {"kind": "welcome", "user_id": Uuid::nil(), "x": 1}}),
        ] {
            assert!(serde_json::from_value::<EmailJob>(bad).is_err());
        }
    }

    #[test]
    fn event_types_round_trip() {
        for t in AuditEventType::ALL {
            assert_eq!(t.as_str().parse::<AuditEventType>().unwrap(), t);
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert!("drop_table".parse::<AuditEventType>().is_err());
    }

    #[test]
    fn message_keys_are_per_kind_and_key() {
        let k = Uuid::now_v7();
        let a = EmailJob {
            key: k,
            message: EmailMessage::Welcome { user_id: k.into() },
        };
        assert_eq!(a.message_key(), format!("welcome:{k}"));
        assert_eq!("email".parse::<Queue>().unwrap(), Queue::Email);
        assert!("other".parse::<Queue>().is_err());
    }
}
