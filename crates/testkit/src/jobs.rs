//! Running a test's jobs in-process: [`crate::TestApp::run_jobs`] takes every unfinished outbox
//! row of the test's database and runs it through the worker's own handler code
//! (`worker::handlers::Ctx::run`, which also finishes the row) with an in-memory mailer, so a test
//! asserts "the verification mail was sent, here is its link" with no worker process, no SMTP
//! server and no waiting. What only a real process shows (SIGKILL, SIGTERM, Redis or Postgres
//! cut off) is tested in the worker's own suite.

use std::{sync::Arc, time::Duration};

use api::state::AppState;
use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::RunQueryDsl;
use domain::jobs::Job;
use jobs::{Envelope, Producer, QueueSettings, backoff::Backoff};
use secrecy::ExposeSecret;
use uuid::Uuid;
use worker::{
    handlers::{Ctx, Lenient},
    mailer::{Inbox, Mailer},
};

/// The sender of every test message.
pub const MAIL_FROM: &str = "Task Shop <noreply@example.com>";

/// A message the in-process worker sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The whole RFC 5322 message, as SMTP would have carried it.
    pub raw: String,
}

impl Mail {
    /// The token of the link to `path` (`/verify-email`, `/reset-password`) in the text part;
    /// panics when there is none.
    #[track_caller]
    pub fn link_token(&self, path: &str) -> String {
        let marker = format!("{path}?token=");
        let start = self
            .text
            .find(&marker)
            .unwrap_or_else(|| panic!("no {marker} in:\n{}", self.text))
            + marker.len();
        self.text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    }
}

/// The worker's handler context for one test app: its database pool, its Redis prefix (a retry
/// is re-pushed there, where no worker takes it), a memory mailer.
pub(crate) struct JobRunner {
    ctx: Arc<Ctx>,
    inbox: Inbox,
}

impl JobRunner {
    pub(crate) fn new(state: &AppState) -> Self {
        let config = &state.config;
        let mut settings = QueueSettings::new(config.redis_prefix.clone());
        settings.visibility = config.outbox_visibility;
        let mailer = Mailer::memory();
        let inbox = mailer.inbox().cloned().unwrap();
        let ctx = Ctx {
            db: state.db.clone(),
            producer: Arc::new(Producer::new(config.redis_url.expose_secret(), settings)),
            mailer,
            from: MAIL_FROM.parse().unwrap(),
            public_url: config.public_url.clone(),
            email_max_attempts: 8,
            audit_max_attempts: 12,
            backoff: Backoff {
                base: Duration::from_secs(2),
                cap: Duration::from_secs(600),
            },
            // One INSERT per job, in the caller's order; the worker's suite tests the batches.
            audit_batch: None,
        };
        Self {
            ctx: Arc::new(ctx),
            inbox,
        }
    }

    /// Runs every unfinished outbox row once, oldest first, and returns the jobs. Panics when one
    /// does not finish (dead-lettered, or failed and left for a retry): a test that needs a
    /// failing job says so with the worker's suite.
    pub(crate) async fn run_pending(&self) -> Vec<Job> {
        use db::schema::outbox::dsl as o;
        let rows: Vec<(Uuid, serde_json::Value)> = {
            let mut conn = self.ctx.db.get().await.unwrap();
            o::outbox
                .filter(o::finished_at.is_null())
                .order((o::created_at.asc(), o::id.asc()))
                .select((o::id, o::payload))
                .load(&mut conn)
                .await
                .unwrap()
        };
        let mut ran = Vec::with_capacity(rows.len());
        for (id, payload) in rows {
            let job: Job = serde_json::from_value(payload).expect("outbox payloads decode as jobs");
            // What the producer puts on the wire: the queue's own job, not the tagged `Job`.
            let inner = match &job {
                Job::Email(j) => serde_json::to_value(j),
                Job::Audit(j) => serde_json::to_value(j),
            }
            .unwrap();
            let envelope = Envelope {
                attempt: 1,
                job: inner,
                outbox_id: Some(id),
                trace: None,
            };
            let result = self
                .ctx
                .run(job.queue(), Lenient(Ok(envelope)), &jobs::task_id(id))
                .await;
            let (finished, dead, error): (
                Option<chrono::DateTime<chrono::Utc>>,
                Option<chrono::DateTime<chrono::Utc>>,
                Option<String>,
            ) = {
                let mut conn = self.ctx.db.get().await.unwrap();
                o::outbox
                    .find(id)
                    .select((o::finished_at, o::dead_at, o::last_error))
                    .first(&mut conn)
                    .await
                    .unwrap()
            };
            assert!(
                result.is_ok() && finished.is_some() && dead.is_none(),
                "outbox job {id} did not finish: {job:?}\nresult {result:?}, dead at {dead:?}, last error {error:?} \
                 (a retry's reason is in the log)"
            );
            ran.push(job);
        }
        ran
    }

    pub(crate) fn mail(&self) -> Vec<Mail> {
        self.inbox
            .messages()
            .into_iter()
            .map(|m| Mail {
                to: m.to,
                subject: m.subject,
                text: m.text,
                html: m.html,
                raw: m.raw,
            })
            .collect()
    }
}
