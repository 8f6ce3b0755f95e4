//! Pushing jobs. The connection is made lazily and kept (redis' `ConnectionManager` reconnects by
//! itself), so a process that starts while Redis is down works once Redis is back.

use std::{collections::BTreeMap, time::Duration};

use apalis::prelude::{TaskBuilder, TaskSink};
use apalis_redis::{ConnectionManager, RedisStorage};
use domain::jobs::{Job, Queue};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::{Envelope, QueueSettings, task_id};

/// How long a push may take before we give up (the outbox keeps the job).
const PUSH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error("push timed out")]
    Timeout,
    #[error("cannot encode the job: {0}")]
    Encode(#[from] serde_json::Error),
}

pub struct Producer {
    url: String,
    settings: QueueSettings,
    conn: Mutex<Option<ConnectionManager>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Producer {
    pub fn new(url: impl Into<String>, settings: QueueSettings) -> Self {
        Self {
            url: url.into(),
            settings,
            conn: Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// The shared connection, connecting on first use.
    pub async fn connection(&self) -> Result<ConnectionManager, PushError> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref() {
            return Ok(conn.clone());
        }
        let conn = tokio::time::timeout(PUSH_TIMEOUT, crate::connect(&self.url))
            .await
            .map_err(|_| PushError::Timeout)?
            .map_err(|e| PushError::Unavailable(e.to_string()))?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Pushes an outbox job, first attempt. The idempotency key is the outbox id (plus the
    /// re-drive epoch once a dead row was re-driven), so a row pushed twice — by the API and by
    /// the dispatcher, or again after the visibility timeout — is enqueued once while Redis
    /// remembers it, and again when Redis lost it.
    /// `trace` is the context of the request that wrote the row, carried in the envelope.
    pub async fn push_outbox(
        &self,
        id: Uuid,
        epoch: i32,
        job: &Job,
        trace: Option<BTreeMap<String, String>>,
    ) -> Result<(), PushError> {
        let (queue, payload) = match job {
            Job::Email(j) => (Queue::Email, serde_json::to_value(j)?),
            Job::Audit(j) => (Queue::Audit, serde_json::to_value(j)?),
        };
        let builder = TaskBuilder::new(Envelope {
            attempt: 1,
            job: payload,
            outbox_id: Some(id),
            trace,
        });
        let builder = if epoch == 0 {
            builder.task_id(task_id(id)).idempotency_key(id.to_string())
        } else {
            // A new task id: the dead task of the earlier epoch may still hold the old one.
            builder.idempotency_key(format!("{id}:{epoch}"))
        };
        self.push(queue, builder).await
    }

    /// Pushes a retry of a job after `delay` (a new task; the failed one is acknowledged).
    pub async fn push_retry(&self, queue: Queue, envelope: Envelope, delay: Duration) -> Result<(), PushError> {
        self.push(queue, TaskBuilder::new(envelope).run_after(delay)).await
    }

    /// Pushes many first-attempt jobs of one queue in one round trip (benchmarks, bulk re-drives).
    pub async fn push_many(&self, queue: Queue, jobs: Vec<serde_json::Value>) -> Result<(), PushError> {
        self.push_many_to(queue.as_str(), jobs).await
    }

    /// [`Producer::push_many`] onto `{prefix}:jobs:{name}` (`worker bench-enqueue --noop`: [`crate::NOOP_QUEUE`]).
    pub async fn push_many_to(&self, name: &str, jobs: Vec<serde_json::Value>) -> Result<(), PushError> {
        let conn = self.connection().await?;
        let mut storage = RedisStorage::<Envelope>::new(conn).with_config(self.settings.config_named(name));
        let envelopes = jobs
            .into_iter()
            .map(|job| Envelope {
                attempt: 1,
                job,
                outbox_id: None,
                trace: None,
            })
            .collect();
        storage
            .push_bulk(envelopes)
            .await
            .map_err(|e| PushError::Unavailable(e.to_string()))
    }

    async fn push(&self, queue: Queue, builder: TaskBuilder<Envelope>) -> Result<(), PushError> {
        let conn = self.connection().await?;
        let mut storage = RedisStorage::<Envelope>::new(conn).with_config(self.settings.config(queue));
        tokio::time::timeout(PUSH_TIMEOUT, storage.push_task(builder.build()))
            .await
            .map_err(|_| PushError::Timeout)?
            .map_err(|e| PushError::Unavailable(e.to_string()))?;
        Ok(())
    }
}
