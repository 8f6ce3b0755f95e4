//! `GET /v1/audit-events` (admins): the audit log, newest first.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use db::audit::AuditFilter;
use domain::{Cursor, Limit, UserId, jobs::AuditEventType};
use garde::Validate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    dto::Page,
    error::{ApiError, ApiResult, Problem},
    http::extract::{AdminUser, ValidQuery},
    services::{self, audit::AuditCursor},
    state::AppState,
};

#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only events by this actor.
    #[garde(skip)]
    pub actor_id: Option<Uuid>,
    /// Only events of this type (e.g. `login_failed`).
    #[garde(skip)]
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<AuditEventType>,
    /// Events at or after this time (RFC 3339).
    #[garde(skip)]
    pub from: Option<DateTime<Utc>>,
    /// Events before this time (RFC 3339).
    #[garde(skip)]
    pub to: Option<DateTime<Utc>>,
    #[garde(range(min = 1, max = 100))]
    pub limit: Option<i64>,
    #[garde(length(max = 512))]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEventResponse {
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub actor_id: Option<Uuid>,
    pub target_type: Option<String>,
    pub target_id: Option<Uuid>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub data: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

/// The audit log, newest first, with filters and cursor pagination (admin).
#[utoipa::path(get, path = "/v1/audit-events", tag = "audit", security(("bearer" = [])), params(AuditQuery), responses(
    (status = 200, body = Page<AuditEventResponse>),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json", description = "Bad filter, limit or cursor"),
))]
pub async fn list(
    state: web::Data<AppState>,
    _admin: AdminUser,
    ValidQuery(q): ValidQuery<AuditQuery>,
) -> ApiResult<HttpResponse> {
    let limit = Limit::parse(q.limit)?;
    let from = q.from.map(|t| domain::time::check("from", t)).transpose()?;
    let to = q.to.map(|t| domain::time::check("to", t)).transpose()?;
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Err(ApiError::field("to", "must be after `from`"));
    }
    let before = q.cursor.as_deref().map(Cursor::decode::<AuditCursor>).transpose()?;
    let filter = AuditFilter {
        actor_id: q.actor_id.map(UserId::from),
        event_type: q.event_type.map(|t| t.as_str().to_owned()),
        from,
        to,
    };
    let page = services::audit::list(&state, &filter, before, limit).await?;
    Ok(HttpResponse::Ok().json(Page::of(page, |r| AuditEventResponse {
        event_id: r.event_id,
        event_type: r.event_type,
        actor_id: r.actor_id.map(Into::into),
        target_type: r.target_type,
        target_id: r.target_id,
        request_id: r.request_id,
        ip: r.ip,
        user_agent: r.user_agent,
        data: r.data,
        occurred_at: r.occurred_at,
    })))
}
