//! Reading the audit log (admins).

use chrono::{DateTime, Utc};
use db::audit::{AuditFilter, AuditRow};
use domain::{Limit, Page};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    services::{Result, work::conn},
    state::AppState,
};

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
) -> Result<Page<AuditRow>> {
    let rows = db::audit::list(
        &mut *conn(state).await?,
        filter,
        before.map(|c| (c.t, c.id)),
        limit.get() + 1,
    )
    .await?;
    Ok(Page::from_overfetch(rows, limit, |r| AuditCursor {
        t: r.occurred_at,
        id: r.event_id,
    }))
}
