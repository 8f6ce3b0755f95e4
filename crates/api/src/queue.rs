//! After-commit dispatch of outbox jobs. A use case commits its change together with its outbox
//! rows, then calls [`Dispatcher::after_commit`]: a background task pushes the jobs to Redis and
//! marks the rows dispatched, so the request never waits on Redis. If Redis is down (or this
//! process dies first), the rows stay pending and the worker's outbox dispatcher pushes them later.

use std::sync::Arc;

use db::{PgPool, outbox::Pending};
use jobs::Producer;

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
        tokio::spawn(async move { this.dispatch(pending).await });
    }

    /// Pushes the jobs in order and marks the pushed ones dispatched. Stops at the first failure:
    /// the rest stay pending for the worker's dispatcher.
    pub async fn dispatch(&self, pending: Vec<Pending>) {
        let mut pushed = Vec::with_capacity(pending.len());
        for p in &pending {
            match self.producer.push_outbox(p.id, &p.job).await {
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
            Ok(mut conn) => db::outbox::mark_dispatched(&mut conn, &pushed)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = marked {
            // Harmless: the dispatcher re-pushes the row and the queue's idempotency key drops it.
            tracing::warn!(error = %e, "could not mark outbox rows dispatched");
        }
    }
}
