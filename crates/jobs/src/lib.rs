//! Job queues on apalis-redis, shared by the producer (the API after commit, the worker's outbox
//! dispatcher, retries) and the consumer (the worker).
//!
//! - Queue names are explicit: `{prefix}:jobs:{queue}` (apalis would default to the Rust type path).
//! - Every task on the wire is an [`Envelope`]: the job as JSON plus our own attempt counter. The
//!   worker decodes the job itself, so a malformed payload is dead-lettered at once with a clear
//!   log line instead of failing inside apalis.
//! - A task pushed from the outbox uses the outbox row id as its task id and idempotency key, so a
//!   row pushed twice (by the API and by the dispatcher) is enqueued once. The envelope carries
//!   the row id: the handler marks the row finished (or dead) in Postgres, and until then the
//!   outbox re-pushes it after the visibility timeout — Redis may lose it, the outbox does not.
//! - [`marker`] detects a Redis that came back without its data, so every unfinished outbox row
//!   is pushed again at once instead of after the visibility timeout.
//! - Retries are ours ([`backoff`]): the handler re-pushes the job with an exponential, jittered
//!   delay and acknowledges the current task; after the queue's last attempt it aborts, and
//!   apalis-redis moves the task to `{queue}:dead`, where [`dead`] lists and re-drives it.

pub mod backoff;
pub mod dead;
pub mod maintenance;
pub mod marker;
pub mod producer;

use std::time::Duration;

use apalis_redis::Config;
use domain::jobs::Queue;
use serde::{Deserialize, Serialize};

pub use producer::Producer;

/// What travels through Redis: the job (still JSON, decoded by the handler) and the attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    /// 1 for the first run; incremented by each retry re-push.
    pub attempt: u32,
    pub job: serde_json::Value,
    /// The outbox row this job came from (none for jobs pushed directly, e.g. benchmarks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_id: Option<uuid::Uuid>,
    /// The trace context of the request that staged the job (W3C `traceparent`, `tracestate`):
    /// the handler's span continues that trace. Kept by retries; absent when traces are off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<std::collections::BTreeMap<String, String>>,
}

/// Per-queue delivery settings.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Redis key prefix shared by API and worker (`REDIS_PREFIX`).
    pub prefix: String,
    /// Worker heartbeat; a dead worker's jobs are re-delivered after `heartbeat × missed`.
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    /// A pushed outbox row not finished within this time is pushed again (`OUTBOX_VISIBILITY_TIMEOUT`).
    pub visibility: Duration,
    /// Tasks a worker takes from Redis per fetch (`WORKER_FETCH_BATCH`; apalis' own default is 10).
    pub fetch_batch: usize,
}

/// The default of [`QueueSettings::fetch_batch`].
pub const DEFAULT_FETCH_BATCH: usize = 32;

/// The bench-only queue of no-op jobs, `{prefix}:jobs:noop`: `worker bench-enqueue --noop N` fills it
/// and only a worker started with `WORKER_BENCH_NOOP=true` consumes it, acknowledging each task
/// without doing anything — what the queue itself costs per job (`just bench jobs`). It is not a
/// [`Queue`]: nothing in production pushes to it, consumes it, or lists its dead jobs.
pub const NOOP_QUEUE: &str = "noop";

/// The default visibility timeout. A Redis that comes back empty is noticed at once (see
/// [`marker`]); this bounds the loss of a Redis that kept only part of its data.
pub const DEFAULT_VISIBILITY: Duration = Duration::from_secs(60);

impl QueueSettings {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            heartbeat: Duration::from_secs(5),
            missed_heartbeats: 3,
            visibility: DEFAULT_VISIBILITY,
            fetch_batch: DEFAULT_FETCH_BATCH,
        }
    }

    pub fn queue_name(&self, queue: Queue) -> String {
        format!("{}:jobs:{}", self.prefix, queue.as_str())
    }

    pub fn config(&self, queue: Queue) -> Config {
        self.config_named(queue.as_str())
    }

    /// The apalis configuration of `{prefix}:jobs:{name}`: a [`Queue`]'s, or [`NOOP_QUEUE`]'s.
    ///
    /// Two apalis-redis defaults are off, for throughput; neither carries a delivery guarantee:
    /// - `lock_tasks`: a "lease" per task after the fetch (status `Running`, `locked_by`) whose
    ///   script runs `LREM` over the whole active list — O(queue length) per job, so a backlog
    ///   made every job slower. What protects a task is the worker's in-flight set, which the
    ///   fetch script fills atomically and which is re-queued when the worker misses its
    ///   heartbeats; the lease was only metadata (nothing here reads it).
    /// - `emit_events`: a Redis `PUBLISH` per push, lease and acknowledgement, for apalis' board
    ///   and `wait_for`; nothing subscribes.
    pub fn config_named(&self, name: &str) -> Config {
        Config::default()
            .queue(format!("{}:jobs:{name}", self.prefix))
            .batch_size(self.fetch_batch.max(1))
            .lock_tasks(false)
            .emit_events(false)
            .heartbeat_interval(self.heartbeat)
            .missed_heartbeats(self.missed_heartbeats)
            // Outbox ids are claimed for a day: a row pushed by the API and again by the
            // dispatcher is enqueued once.
            .idempotency_ttl(Some(Duration::from_secs(86_400)))
    }
}

/// A Redis connection that reconnects by itself, with a response timeout long enough that a
/// slow moment of Redis does not fail a worker (the default is 500 ms).
pub async fn connect(url: &str) -> redis::RedisResult<apalis_redis::ConnectionManager> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_connection_timeout(Some(Duration::from_secs(2)));
    redis::Client::open(url)?
        .get_connection_manager_with_config(config)
        .await
}

/// A UUID (v7 outbox id) as an apalis task id.
pub fn task_id(id: uuid::Uuid) -> apalis::prelude::TaskId {
    apalis::prelude::TaskId::from_ulid(ulid::Ulid::from(id.as_u128()))
}

/// The outbox row id behind a task id made by [`task_id`] (for `worker dead retry <id>`).
pub fn outbox_id(task_id: &str) -> Option<uuid::Uuid> {
    task_id.parse::<ulid::Ulid>().ok().map(|u| uuid::Uuid::from_u128(u.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_map_back_to_outbox_ids() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(outbox_id(&task_id(id).to_string()), Some(id));
        assert_eq!(outbox_id("not a ulid"), None);
    }

    #[test]
    fn queues_fetch_in_batches_without_leases_or_events() {
        let mut settings = QueueSettings::new("p");
        settings.fetch_batch = 48;
        for config in [settings.config(Queue::Audit), settings.config_named(NOOP_QUEUE)] {
            assert_eq!(config.batch_size, 48);
            // The lease script scans the whole active list per task; the events have no subscriber.
            assert!(!config.lock_tasks && !config.emit_events, "{config:?}");
            // Without persisted results no task would ever be acknowledged.
            assert!(config.persist_results);
        }
        assert_eq!(settings.config(Queue::Audit).active_jobs_list(), "p:jobs:audit:active");
        assert_eq!(
            settings.config_named(NOOP_QUEUE).active_jobs_list(),
            "p:jobs:noop:active"
        );
    }

    #[test]
    fn envelopes_without_an_outbox_id_still_decode() {
        let e: Envelope = serde_json::from_str(r#"{"attempt":2,"job":{}}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.outbox_id, None);
        let json = serde_json::to_string(&e).unwrap_or_else(|e| panic!("{e}"));
        assert!(!json.contains("outbox_id"), "{json}");
        assert!(!json.contains("trace"), "{json}");
    }

    #[test]
    fn the_trace_context_travels_in_the_envelope() {
        let json = r#"{"attempt":1,"job":{},"trace":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}"#;
        let e: Envelope = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        let trace = e.trace.clone().unwrap_or_default();
        assert_eq!(
            trace.get("traceparent").map(String::as_str),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        let back: Envelope = serde_json::from_str(&serde_json::to_string(&e).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, e);
    }
}
