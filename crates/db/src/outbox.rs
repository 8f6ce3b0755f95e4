//! The transactional outbox: jobs written in the same transaction as the business change they
//! belong to, pushed to the queue after commit, and marked dispatched.

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, QueryDsl, Queryable, Selectable, SelectableHelper};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use domain::jobs::Job;
use uuid::Uuid;

use crate::{DbError, DbResult, schema::outbox};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox, check_for_backend(diesel::pg::Pg))]
pub struct OutboxRow {
    pub id: Uuid,
    pub queue: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub attempts: i32,
}

impl OutboxRow {
    pub fn job(&self) -> Result<Job, serde_json::Error> {
        serde_json::from_value(self.payload.clone())
    }
}

/// A job written to the outbox: its id and the job itself, ready to push after commit.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: Uuid,
    pub job: Job,
}

/// Writes jobs into the outbox (inside the caller's transaction).
pub async fn insert(conn: &mut AsyncPgConnection, jobs: &[Pending]) -> DbResult<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let rows = jobs
        .iter()
        .map(|p| {
            let payload = serde_json::to_value(&p.job).map_err(|e| DbError::Other(e.to_string()))?;
            Ok((
                outbox::id.eq(p.id),
                outbox::queue.eq(p.job.queue().as_str()),
                outbox::payload.eq(payload),
            ))
        })
        .collect::<DbResult<Vec<_>>>()?;
    diesel::insert_into(outbox::table).values(rows).execute(conn).await?;
    Ok(())
}

pub async fn mark_dispatched(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> DbResult<usize> {
    Ok(diesel::update(
        outbox::table
            .filter(outbox::id.eq_any(ids))
            .filter(outbox::dispatched_at.is_null()),
    )
    .set(outbox::dispatched_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?)
}

/// Locks up to `limit` pending rows older than `older_than` (so rows the API is about to push
/// itself are left alone), skipping rows another dispatcher holds. Call inside a transaction.
pub async fn lock_pending(
    conn: &mut AsyncPgConnection,
    older_than: DateTime<Utc>,
    limit: i64,
) -> DbResult<Vec<OutboxRow>> {
    Ok(outbox::table
        .filter(outbox::dispatched_at.is_null())
        .filter(outbox::created_at.lt(older_than))
        .order(outbox::created_at.asc())
        .limit(limit)
        .select(OutboxRow::as_select())
        .for_update()
        .skip_locked()
        .load(conn)
        .await?)
}

pub async fn record_failure(conn: &mut AsyncPgConnection, ids: &[Uuid], error: &str) -> DbResult<()> {
    let error: String = error.chars().take(1000).collect();
    diesel::update(outbox::table.filter(outbox::id.eq_any(ids)))
        .set((outbox::attempts.eq(outbox::attempts + 1), outbox::last_error.eq(error)))
        .execute(conn)
        .await?;
    Ok(())
}

/// Rows not yet dispatched (the backlog metric).
pub async fn pending_count(conn: &mut AsyncPgConnection) -> DbResult<i64> {
    Ok(outbox::table
        .filter(outbox::dispatched_at.is_null())
        .count()
        .get_result(conn)
        .await?)
}

/// Deletes up to `limit` rows dispatched before `before`. Returns how many.
pub async fn prune(conn: &mut AsyncPgConnection, before: DateTime<Utc>, limit: i64) -> DbResult<usize> {
    use diesel::sql_types::{BigInt, Timestamptz};
    Ok(diesel::sql_query(
        "DELETE FROM outbox WHERE id IN \
         (SELECT id FROM outbox WHERE dispatched_at < $1 ORDER BY dispatched_at LIMIT $2)",
    )
    .bind::<Timestamptz, _>(before)
    .bind::<BigInt, _>(limit)
    .execute(conn)
    .await?)
}
