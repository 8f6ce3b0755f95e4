//! After-commit dispatch of outbox jobs. A use case commits its change together with its outbox
//! rows, then calls [`Dispatcher::after_commit`]: a background task pushes the jobs to Redis and
//! marks the rows pushed, so the request never waits on Redis. A pushed row is not done: it stays
//! in the outbox until the worker's handler finishes it, and the worker's outbox dispatcher pushes
//! it again if that has not happened within the visibility timeout (Redis may have lost it). If
//! Redis is down (or this process dies first), the rows stay unpushed and the dispatcher pushes
//! them about 2 s after commit.

use std::sync::Arc;

use db::{PgPool, outbox::Pending};
use jobs::Producer;
use tracing::Instrument as _;

#[derive(Clone)]
pub struct Dispatcher {
    producer: Arc<Producer>,
    db: PgPool,
}

impl Dispatcher {
    pub fn new(producer: Arc<Producer>, db: PgPool) -> Self {
        Self { producer, db }
    }

    pub fn after_commit(&self, pending: Vec<Pending>) {
        if pending.is_empty() {
            return;
        }
        let this = self.clone();
        let span = tracing::info_span!("outbox push", otel.kind = "producer", jobs = pending.len());
        tokio::spawn(async move { this.dispatch(pending).await }.instrument(span));
    }

    /// Pushes the jobs in order and marks the pushed ones. Stops at the first failure: the rest
    /// stay due for the worker's dispatcher.
    pub async fn dispatch(&self, pending: Vec<Pending>) {
        let mut pushed = Vec::with_capacity(pending.len());
        for p in &pending {
            match self.producer.push_outbox(p.id, 0, &p.job, p.trace.clone()).await {
                Ok(()) => {
                    pushed.push(p.id);
                    crate::metrics::job_enqueued(p.job.queue().as_str());
                }
                Err(e) => {
                    tracing::warn!(error = %e, outbox.id = %p.id, "push failed; the outbox dispatcher will retry");
                    break;
                }
            }
        }
        if pushed.is_empty() {
            return;
        }
        let marked = match self.db.get().await {
            Ok(mut conn) => db::outbox::mark_pushed(&mut conn, &pushed, self.producer.settings().visibility)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = marked {
            // Harmless: the dispatcher re-pushes the row and the queue's idempotency key drops it.
            tracing::warn!(error = %e, "could not mark outbox rows pushed");
        }
    }
}
