//! Reading the audit log (admins).

use chrono::{DateTime, Utc};
use db::audit::{AuditFilter, AuditRow};
use domain::Limit;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{error::ApiResult, services::auth::conn, state::AppState};

/// Keyset position: the last row's (occurred_at, event_id).
#[derive(Debug, Serialize, Deserialize)]
pub struct AuditCursor {
    pub t: DateTime<Utc>,
    pub id: Uuid,
}

pub async fn list(
    state: &AppState,
    filter: &AuditFilter,
    before: Option<AuditCursor>,
    limit: Limit,
) -> ApiResult<(Vec<AuditRow>, Option<AuditCursor>)> {
    let mut rows = db::audit::list(
        &mut *conn(state).await?,
        filter,
        before.map(|c| (c.t, c.id)),
        limit.get() + 1,
    )
    .await?;
    let next = if rows.len() as i64 > limit.get() {
        rows.truncate(limit.get() as usize);
        rows.last().map(|r| AuditCursor {
            t: r.occurred_at,
            id: r.event_id,
        })
    } else {
        None
    };
    Ok((rows, next))
}
