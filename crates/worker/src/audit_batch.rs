//! Batched audit inserts. Every audit job hands its event to one [`AuditBatcher`] per process
//! and waits for the answer; the batcher writes whatever events are waiting (up to
//! `AUDIT_BATCH_MAX`, after waiting at most `AUDIT_BATCH_WAIT` for more) with one multi-row
//! `INSERT … ON CONFLICT (event_id) DO NOTHING`, in the same transaction as the `finished_at` of
//! their outbox rows, and answers each job.
//!
//! The delivery guarantees are the unbatched ones:
//! - a job is acknowledged (its handler returns) only after the transaction holding its row has
//!   committed; until then it sits in the worker's in-flight set in Redis, so a crash loses
//!   nothing: the jobs of a batch that was never committed are re-delivered;
//! - a re-delivery (or the same event twice in one batch) adds nothing: `ON CONFLICT (event_id)`;
//! - a failed batch fails each of its jobs with the batch's error, classified as before
//!   (Postgres unreachable → transient). A batch that fails for another reason is written again
//!   one event at a time, so one event Postgres rejects fails only its own job, not its
//!   neighbours' (which would otherwise use up their attempts on someone else's error).
//!
//! Up to [`PARALLEL_BATCHES`] batches are written at once; while they are, new events queue up
//! and form the next batch, so under load batches grow by themselves and at low load an event
//! waits at most `AUDIT_BATCH_WAIT`.

use std::{collections::HashSet, sync::Arc, time::Duration};

use db::{DbError, PgPool};
use diesel_async::AsyncConnection;
use domain::jobs::AuditEvent;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use crate::handlers::JobError;

/// Batches written at the same time (each holds one pooled connection while it runs).
pub const PARALLEL_BATCHES: usize = 4;

/// The largest batch allowed: 10 bind parameters per row, Postgres takes at most 65,535.
pub const MAX_BATCH: usize = 5000;
const _: () = assert!(MAX_BATCH <= db::audit::APPEND_MANY_MAX);

struct Request {
    event: AuditEvent,
    outbox_id: Option<Uuid>,
    reply: oneshot::Sender<Result<(), JobError>>,
}

/// The handle the audit handler uses; clones share one batching task.
#[derive(Clone)]
pub struct AuditBatcher {
    tx: mpsc::Sender<Request>,
}

impl AuditBatcher {
    /// Starts the batching task on the current runtime. It ends once every handle is dropped and
    /// the batches in flight are written.
    pub fn spawn(db: PgPool, max: usize, wait: Duration) -> Self {
        let max = max.clamp(1, MAX_BATCH);
        let (tx, rx) = mpsc::channel(max * PARALLEL_BATCHES);
        tokio::spawn(run(db, rx, max, wait));
        Self { tx }
    }

    /// Records the event (and finishes its outbox row) in the next batch; returns once that batch
    /// has committed, or with the error that failed it.
    pub async fn append(&self, event: AuditEvent, outbox_id: Option<Uuid>) -> Result<(), JobError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request {
                event,
                outbox_id,
                reply,
            })
            .await
            .map_err(|_| JobError::Transient("the audit batcher has stopped".into()))?;
        // A batch task that died (panicked) drops the sender: retried like an outage, since the
        // event's row may or may not have been committed (a retry inserts nothing twice).
        answer
            .await
            .map_err(|_| JobError::Transient("the audit batch was abandoned".into()))?
    }
}

async fn run(db: PgPool, mut rx: mpsc::Receiver<Request>, max: usize, wait: Duration) {
    let slots = Arc::new(Semaphore::new(PARALLEL_BATCHES));
    loop {
        // A free slot first: while every slot is busy, events wait in the channel and make the
        // next batch bigger.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(batch) = collect(&mut rx, max, wait).await else {
            break;
        };
        let db = db.clone();
        tokio::spawn(async move {
            write_and_answer(&db, batch).await;
            drop(slot);
        });
    }
    // Every handle is gone: let the batches in flight finish (their jobs await the answers).
    let _ = slots.acquire_many(PARALLEL_BATCHES as u32).await;
}

/// Waits for one event, takes every event already waiting, then waits up to `wait` for more,
/// until `max`. `None` once every handle is dropped and nothing is left.
async fn collect(rx: &mut mpsc::Receiver<Request>, max: usize, wait: Duration) -> Option<Vec<Request>> {
    let mut batch = Vec::with_capacity(max);
    if rx.recv_many(&mut batch, max).await == 0 {
        return None;
    }
    if batch.len() < max && !wait.is_zero() {
        let deadline = tokio::time::Instant::now() + wait;
        while batch.len() < max {
            let room = max - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
    Some(batch)
}

async fn write_and_answer(db: &PgPool, batch: Vec<Request>) {
    let result = write(db, &batch).await;
    match result {
        Err(JobError::Failed(e)) if batch.len() > 1 => {
            // Perhaps one event Postgres rejects: find it by writing them one by one.
            tracing::warn!(events = batch.len(), error = %e, "audit batch failed; writing its events one at a time");
            for request in batch {
                let result = write(db, std::slice::from_ref(&request)).await.map(|_| ());
                let _ = request.reply.send(result);
            }
        }
        result => {
            let result = result.map(|_| ());
            for request in batch {
                // A job whose handler has gone (timed out) is re-delivered and finds its row.
                let _ = request.reply.send(result.clone());
            }
        }
    }
}

/// One transaction: the batch's events (each event id once) and its outbox rows. Returns how many
/// rows were new.
async fn write(db: &PgPool, batch: &[Request]) -> Result<usize, JobError> {
    let mut seen = HashSet::with_capacity(batch.len());
    let events: Vec<&AuditEvent> = batch
        .iter()
        .map(|r| &r.event)
        .filter(|e| seen.insert(e.event_id))
        .collect();
    let outbox_ids: Vec<Uuid> = batch.iter().filter_map(|r| r.outbox_id).collect();
    let mut conn = db.get().await.map_err(|e| JobError::Transient(e.to_string()))?;
    let inserted = if outbox_ids.is_empty() {
        db::audit::append_many(&mut conn, &events).await?
    } else {
        conn.transaction::<_, DbError, _>(async |conn| {
            let inserted = db::audit::append_many(conn, &events).await?;
            db::outbox::finish_many(conn, &outbox_ids).await?;
            Ok(inserted)
        })
        .await?
    };
    if inserted.len() < events.len() {
        let new: HashSet<Uuid> = inserted.iter().copied().collect();
        for e in events.iter().filter(|e| !new.contains(&e.event_id)) {
            tracing::info!(event.id = %e.event_id, "audit event already recorded (duplicate delivery)");
        }
    }
    Ok(inserted.len())
}
