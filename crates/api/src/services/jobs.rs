//! Building the jobs a use case implies. The use case stages them with
//! [`crate::services::work::Tx::enqueue`]: written to the outbox in its transaction, dispatched
//! after commit.

use chrono::Utc;
use db::outbox::Pending;
use domain::{
    OrderId, ProductId, SessionId, TaskId, UserId,
    jobs::{AuditEvent, AuditEventType, AuditJob, EmailJob, EmailMessage, Job},
};
use serde_json::Value;
use uuid::Uuid;

use crate::services::RequestMeta;

/// What an audit event is about.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    User(UserId),
    Session(SessionId),
    Task(TaskId),
    Product(ProductId),
    Order(OrderId),
    None,
}

impl Target {
    fn parts(self) -> (Option<String>, Option<Uuid>) {
        match self {
            Target::User(id) => (Some("user".into()), Some(id.into())),
            Target::Session(id) => (Some("session".into()), Some(id.into())),
            Target::Task(id) => (Some("task".into()), Some(id.into())),
            Target::Product(id) => (Some("product".into()), Some(id.into())),
            Target::Order(id) => (Some("order".into()), Some(id.into())),
            Target::None => (None, None),
        }
    }
}

pub fn audit(
    event_type: AuditEventType,
    actor: Option<UserId>,
    target: Target,
    meta: &RequestMeta,
    data: Value,
) -> Pending {
    let id = Uuid::now_v7();
    let (target_type, target_id) = target.parts();
    Pending {
        id,
        trace: None,
        job: Job::Audit(AuditJob {
            event: AuditEvent {
                event_id: id,
                event_type,
                actor_id: actor,
                target_type,
                target_id,
                request_id: Some(meta.request_id.clone()).filter(|r| !r.is_empty()),
                ip: meta.ip.clone(),
                user_agent: meta.user_agent.clone(),
                data,
                occurred_at: Utc::now(),
            },
        }),
    }
}

pub fn email(message: EmailMessage) -> Pending {
    let id = Uuid::now_v7();
    Pending {
        id,
        trace: None,
        job: Job::Email(EmailJob { key: id, message }),
    }
}
