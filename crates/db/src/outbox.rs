//! The transactional outbox: jobs written in the same transaction as the business change they
//! belong to, pushed to the queue after commit, and kept until the job's effect is done.
//!
//! A row's life: inserted (due for the dispatcher 2 s later, so the API's own after-commit push
//! usually comes first) → pushed (`dispatched_at`; due again after the visibility timeout) →
//! finished by the worker's handler (`finished_at`), or dead-lettered (`finished_at` and
//! `dead_at`). A row that is pushed but not finished when it falls due again is pushed again: the
//! queue may have lost it (Redis restarted without its data). The queue drops a second push of a
//! job it still holds (the idempotency key is the row id and its epoch), and the handlers are
//! idempotent, so a re-push is harmless either way. A handler that schedules a retry pushes the
//! row's due time past the backoff, so a job waiting for its retry is not re-pushed early.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use diesel::{
    ExpressionMethods, QueryDsl, Queryable, Selectable, SelectableHelper,
    sql_types::{Array, BigInt, Double, Text, Timestamptz},
};
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
    pub last_error: Option<String>,
    pub next_push_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub dead_at: Option<DateTime<Utc>>,
    pub epoch: i32,
    /// The writer's trace context (`traceparent`, `tracestate`), when traces were on.
    pub trace: Option<serde_json::Value>,
}

impl OutboxRow {
    pub fn job(&self) -> Result<Job, serde_json::Error> {
        serde_json::from_value(self.payload.clone())
    }

    /// The trace context to continue, if the row has a well-formed one.
    pub fn trace_context(&self) -> Option<TraceContext> {
        self.trace.clone().and_then(|v| serde_json::from_value(v).ok())
    }
}

/// A W3C trace context as text-map entries (`traceparent`, `tracestate`).
pub type TraceContext = BTreeMap<String, String>;

/// A job written to the outbox: its id and the job itself, ready to push after commit.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: Uuid,
    pub job: Job,
    /// The trace context of the span that staged the job (none when traces are off).
    pub trace: Option<TraceContext>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Writes jobs into the outbox (inside the caller's transaction).
pub async fn insert(conn: &mut AsyncPgConnection, jobs: &[Pending]) -> DbResult<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let rows = jobs
        .iter()
        .map(|p| {
            let payload = serde_json::to_value(&p.job).map_err(DbError::other)?;
            let trace = p
                .trace
                .as_ref()
                .map(serde_json::to_value)
                .transpose()
                .map_err(DbError::other)?;
            Ok((
                outbox::id.eq(p.id),
                outbox::queue.eq(p.job.queue().as_str()),
                outbox::payload.eq(payload),
                outbox::trace.eq(trace),
            ))
        })
        .collect::<DbResult<Vec<_>>>()?;
    diesel::insert_into(outbox::table).values(rows).execute(conn).await?;
    Ok(())
}

/// Records that rows were pushed to the queue: they fall due again after `visibility` unless a
/// handler finishes them first. Returns how many unfinished rows were marked.
pub async fn mark_pushed(conn: &mut AsyncPgConnection, ids: &[Uuid], visibility: Duration) -> DbResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(diesel::sql_query(
        "UPDATE outbox SET dispatched_at = coalesce(dispatched_at, now()), \
         next_push_at = now() + $2 * interval '1 second' \
         WHERE id = ANY($1) AND finished_at IS NULL",
    )
    .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
    .bind::<Double, _>(secs(visibility))
    .execute(conn)
    .await?)
}

/// Locks up to `limit` unfinished rows that are due (never pushed and past their grace period,
/// or pushed and not finished within the visibility timeout), skipping rows another dispatcher
/// holds. Call inside a transaction.
pub async fn lock_due(conn: &mut AsyncPgConnection, limit: i64) -> DbResult<Vec<OutboxRow>> {
    Ok(outbox::table
        .filter(outbox::finished_at.is_null())
        .filter(outbox::next_push_at.le(diesel::dsl::now))
        .order(outbox::next_push_at.asc())
        .limit(limit)
        .select(OutboxRow::as_select())
        .for_update()
        .skip_locked()
        .load(conn)
        .await?)
}

/// A push failed: count it, keep the error, and try again after `retry_in`.
pub async fn record_failure(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
    error: &str,
    retry_in: Duration,
) -> DbResult<()> {
    let error: String = error.chars().take(1000).collect();
    diesel::sql_query(
        "UPDATE outbox SET attempts = attempts + 1, last_error = $2, \
         next_push_at = now() + $3 * interval '1 second' WHERE id = ANY($1)",
    )
    .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
    .bind::<Text, _>(error)
    .bind::<Double, _>(secs(retry_in))
    .execute(conn)
    .await?;
    Ok(())
}

/// The job's effect is done. Returns false when the row was already finished (or is unknown).
pub async fn finish(conn: &mut AsyncPgConnection, id: Uuid) -> DbResult<bool> {
    let n = diesel::update(outbox::table.find(id).filter(outbox::finished_at.is_null()))
        .set(outbox::finished_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// [`finish`] for many rows at once (one statement). Returns how many were not finished yet.
pub async fn finish_many(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> DbResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(diesel::update(
        outbox::table
            .filter(outbox::id.eq_any(ids))
            .filter(outbox::finished_at.is_null()),
    )
    .set(outbox::finished_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?)
}

/// The job was dead-lettered: finished, marked dead with its last error, kept for a re-drive.
pub async fn mark_dead(conn: &mut AsyncPgConnection, id: Uuid, error: &str) -> DbResult<bool> {
    let error: String = error.chars().take(1000).collect();
    let n = diesel::sql_query(
        "UPDATE outbox SET finished_at = now(), dead_at = now(), last_error = $2 \
         WHERE id = $1 AND finished_at IS NULL",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<Text, _>(error)
    .execute(conn)
    .await?;
    Ok(n == 1)
}

/// A retry of the job is scheduled `after` from now: the row must not fall due before it.
pub async fn postpone(conn: &mut AsyncPgConnection, id: Uuid, after: Duration) -> DbResult<()> {
    diesel::sql_query(
        "UPDATE outbox SET next_push_at = greatest(next_push_at, now() + $2 * interval '1 second') \
         WHERE id = $1 AND finished_at IS NULL",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<Double, _>(secs(after))
    .execute(conn)
    .await?;
    Ok(())
}

/// The queue lost its data: every unfinished row is due now. Returns how many.
pub async fn redeliver_all(conn: &mut AsyncPgConnection) -> DbResult<usize> {
    Ok(
        diesel::sql_query("UPDATE outbox SET next_push_at = now() WHERE finished_at IS NULL AND next_push_at > now()")
            .execute(conn)
            .await?,
    )
}

/// Rows whose effect is not done yet (the backlog metric).
pub async fn pending_count(conn: &mut AsyncPgConnection) -> DbResult<i64> {
    Ok(outbox::table
        .filter(outbox::finished_at.is_null())
        .count()
        .get_result(conn)
        .await?)
}

/// Dead rows of one queue (or all), oldest death first.
pub async fn list_dead(conn: &mut AsyncPgConnection, queue: Option<&str>, limit: i64) -> DbResult<Vec<OutboxRow>> {
    let mut query = outbox::table
        .filter(outbox::dead_at.is_not_null())
        .order((outbox::dead_at.asc(), outbox::id.asc()))
        .limit(limit)
        .select(OutboxRow::as_select())
        .into_boxed();
    if let Some(q) = queue {
        query = query.filter(outbox::queue.eq(q.to_owned()));
    }
    Ok(query.load(conn).await?)
}

/// Puts a dead row back: unfinished, due now, attempts reset, under a new epoch (so the queue
/// takes it again even while it remembers the first delivery). Returns false when the row is not
/// dead.
pub async fn redrive(conn: &mut AsyncPgConnection, id: Uuid) -> DbResult<bool> {
    let n = diesel::sql_query(
        "UPDATE outbox SET finished_at = NULL, dead_at = NULL, epoch = epoch + 1, attempts = 0, \
         next_push_at = now() WHERE id = $1 AND dead_at IS NOT NULL",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .execute(conn)
    .await?;
    Ok(n == 1)
}

/// Deletes up to `limit` rows finished (not dead) before `before`. Returns how many.
pub async fn prune(conn: &mut AsyncPgConnection, before: DateTime<Utc>, limit: i64) -> DbResult<usize> {
    Ok(diesel::sql_query(
        "DELETE FROM outbox WHERE id IN \
         (SELECT id FROM outbox WHERE finished_at < $1 AND dead_at IS NULL ORDER BY finished_at LIMIT $2)",
    )
    .bind::<Timestamptz, _>(before)
    .bind::<BigInt, _>(limit)
    .execute(conn)
    .await?)
}

/// Which of `ids` have an outbox row (in any state).
pub async fn existing(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> DbResult<Vec<Uuid>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(outbox::table
        .filter(outbox::id.eq_any(ids))
        .select(outbox::id)
        .load(conn)
        .await?)
}
