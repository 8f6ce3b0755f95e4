//! Building the jobs a use case implies. The use case stages them with
//! [`crate::services::work::Tx::enqueue`]: written to the outbox in its transaction, dispatched
//! after commit.

use chrono::Utc;
use db::outbox::Pending;
use domain::jobs::{AuditEvent, AuditEventType, AuditJob, EmailJob, EmailMessage, Job};
use serde_json::Value;
use uuid::Uuid;

use crate::services::RequestMeta;

/// What an audit event is about.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    User(Uuid),
    Session(Uuid),
    Task(Uuid),
    Product(Uuid),
    Order(Uuid),
    None,
}

impl Target {
    fn parts(self) -> (Option<String>, Option<Uuid>) {
        match self {
            Target::User(id) => (Some("user".into()), Some(id)),
            Target::Session(id) => (Some("session".into()), Some(id)),
            Target::Task(id) => (Some("task".into()), Some(id)),
            Target::Product(id) => (Some("product".into()), Some(id)),
            Target::Order(id) => (Some("order".into()), Some(id)),
            Target::None => (None, None),
        }
    }
}

pub fn audit(
    event_type: AuditEventType,
    actor: Option<Uuid>,
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
