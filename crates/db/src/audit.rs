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

/// The stored `data` of an event: `{}` for none.
fn data_of(e: &AuditEvent) -> serde_json::Value {
    if e.data.is_null() {
        serde_json::json!({})
    } else {
        e.data.clone()
    }
}

fn new_row<'a>(e: &'a AuditEvent, data: &'a serde_json::Value) -> NewAuditRow<'a> {
    NewAuditRow {
        event_id: e.event_id,
        event_type: e.event_type.as_str(),
        actor_id: e.actor_id,
        target_type: e.target_type.as_deref(),
        target_id: e.target_id,
        request_id: e.request_id.as_deref(),
        ip: e.ip.as_deref(),
        user_agent: e.user_agent.as_deref(),
        data,
        occurred_at: e.occurred_at,
    }
}

/// Inserts the event unless its id is already there. Returns whether a row was written.
pub async fn append(conn: &mut AsyncPgConnection, e: &AuditEvent) -> DbResult<bool> {
    let data = data_of(e);
    let n = diesel::insert_into(audit_log::table)
        .values(new_row(e, &data))
        .on_conflict(audit_log::event_id)
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// The most events [`append_many`] takes: 10 bind parameters per row, Postgres allows 65,535.
pub const APPEND_MANY_MAX: usize = 6_000;

/// Inserts many events with one multi-row `INSERT … ON CONFLICT (event_id) DO NOTHING` (the
/// worker's batched audit writes; all or nothing, like any statement). Returns the ids of the rows
/// written: an id already there is skipped, so a re-delivered event adds nothing. At most
/// [`APPEND_MANY_MAX`] events.
pub async fn append_many(conn: &mut AsyncPgConnection, events: &[&AuditEvent]) -> DbResult<Vec<Uuid>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let data: Vec<serde_json::Value> = events.iter().map(|e| data_of(e)).collect();
    let rows: Vec<NewAuditRow<'_>> = events.iter().zip(&data).map(|(e, data)| new_row(e, data)).collect();
    Ok(diesel::insert_into(audit_log::table)
        .values(&rows)
        .on_conflict(audit_log::event_id)
        .do_nothing()
        .returning(audit_log::event_id)
        .get_results(conn)
        .await?)
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
