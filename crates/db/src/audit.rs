//! The append-only audit log. Only the worker inserts; nothing updates or deletes (a trigger
//! enforces it).

use chrono::{DateTime, Utc};
use diesel::{BoolExpressionMethods, ExpressionMethods, Insertable, QueryDsl, Queryable, Selectable, SelectableHelper};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::UserId;
use domain::jobs::AuditEvent;
use uuid::Uuid;

use crate::{DbResult, schema::audit_log};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_log, check_for_backend(diesel::pg::Pg))]
pub struct AuditRow {
    pub event_id: Uuid,
    pub event_type: String,
    pub actor_id: Option<UserId>,
    pub target_type: Option<String>,
    pub target_id: Option<Uuid>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub data: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = audit_log)]
struct NewAuditRow<'a> {
    event_id: Uuid,
    event_type: &'a str,
    actor_id: Option<UserId>,
    target_type: Option<&'a str>,
    target_id: Option<Uuid>,
    request_id: Option<&'a str>,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    data: &'a serde_json::Value,
    occurred_at: DateTime<Utc>,
}

/// Inserts the event unless its id is already there. Returns whether a row was written.
pub async fn append(conn: &mut AsyncPgConnection, e: &AuditEvent) -> DbResult<bool> {
    let data = if e.data.is_null() {
        serde_json::json!({})
    } else {
        e.data.clone()
    };
    let n = diesel::insert_into(audit_log::table)
        .values(NewAuditRow {
            event_id: e.event_id,
            event_type: e.event_type.as_str(),
            actor_id: e.actor_id,
            target_type: e.target_type.as_deref(),
            target_id: e.target_id,
            request_id: e.request_id.as_deref(),
            ip: e.ip.as_deref(),
            user_agent: e.user_agent.as_deref(),
            data: &data,
            occurred_at: e.occurred_at,
        })
        .on_conflict(audit_log::event_id)
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// Filters of the admin listing.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub actor_id: Option<UserId>,
    pub event_type: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Newest first, keyset-paginated on (occurred_at, event_id).
pub async fn list(
    conn: &mut AsyncPgConnection,
    filter: &AuditFilter,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> DbResult<Vec<AuditRow>> {
    let mut q = audit_log::table
        .select(AuditRow::as_select())
        .order((audit_log::occurred_at.desc(), audit_log::event_id.desc()))
        .limit(limit)
        .into_boxed();
    if let Some(actor) = filter.actor_id {
        q = q.filter(audit_log::actor_id.eq(actor));
    }
    if let Some(t) = &filter.event_type {
        q = q.filter(audit_log::event_type.eq(t.clone()));
    }
    if let Some(from) = filter.from {
        q = q.filter(audit_log::occurred_at.ge(from));
    }
    if let Some(to) = filter.to {
        q = q.filter(audit_log::occurred_at.lt(to));
    }
    if let Some((t, id)) = before {
        q = q.filter(
            audit_log::occurred_at
                .lt(t)
                .or(audit_log::occurred_at.eq(t).and(audit_log::event_id.lt(id))),
        );
    }
    Ok(q.load(conn).await?)
}

pub async fn count_for_event(conn: &mut AsyncPgConnection, event_id: Uuid) -> DbResult<i64> {
    Ok(audit_log::table
        .filter(audit_log::event_id.eq(event_id))
        .count()
        .get_result(conn)
        .await?)
}
