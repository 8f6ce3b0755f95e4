//! Sentry's transport over reqwest 0.12's blocking client: the workspace's one HTTP stack and
//! its TLS (rustls on ring, the system's trust store). sentry's own ureq transport would bring
//! ureq and webpki-roots (a CDLA data licence `deny.toml` does not admit), its reqwest one
//! reqwest 0.13 and aws-lc.
//!
//! Envelopes go through a bounded queue to one plain OS thread (the blocking client must not be
//! built or dropped inside tokio) that posts each to `/api/{project}/envelope/`. A full queue
//! drops the envelope rather than block the caller; a 429 pauses sending for its `Retry-After`.

use std::{
    sync::{
        Arc, Mutex,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::{Duration, Instant},
};

use sentry::{Envelope, Transport, TransportFactory, TransportOptions};

#[derive(Debug, Clone, Copy)]
pub struct ReqwestFactory;

impl TransportFactory for ReqwestFactory {
    fn create_transport_with_options(&self, options: TransportOptions) -> Arc<dyn Transport> {
        Arc::new(ReqwestTransport::start(&options))
    }
}

enum Msg {
    Send(Box<Envelope>),
    Flush(SyncSender<()>),
}

struct ReqwestTransport {
    queue: Mutex<Option<SyncSender<Msg>>>,
}

impl ReqwestTransport {
    fn start(options: &TransportOptions) -> Self {
        let url = options.dsn.envelope_api_url().to_string();
        let auth = options.dsn.to_auth(Some(&options.user_agent)).to_string();
        let (tx, rx) = sync_channel(64);
        let spawned = std::thread::Builder::new()
            .name("sentry-transport".into())
            .spawn(move || run(&url, &auth, &rx));
        Self {
            queue: Mutex::new(spawned.is_ok().then_some(tx)),
        }
    }

    fn sender(&self) -> Option<SyncSender<Msg>> {
        self.queue.lock().ok().and_then(|q| q.clone())
    }
}

fn run(url: &str, auth: &str, rx: &Receiver<Msg>) {
    let Ok(client) = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    else {
        return;
    };
    let mut paused_until: Option<Instant> = None;
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Flush(done) => {
                let _ = done.send(());
            }
            Msg::Send(envelope) => {
                if paused_until.is_some_and(|t| Instant::now() < t) {
                    continue;
                }
                let mut body = Vec::new();
                if envelope.to_writer(&mut body).is_err() {
                    continue;
                }
                let sent = client
                    .post(url)
                    .header("X-Sentry-Auth", auth)
                    .header("Content-Type", "application/x-sentry-envelope")
                    .body(body)
                    .send();
                if let Ok(res) = sent
                    && res.status() == reqwest::StatusCode::TOO_MANY_REQUESTS
                {
                    let secs = res
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(60);
                    paused_until = Some(Instant::now() + Duration::from_secs(secs));
                }
            }
        }
    }
    // The client is dropped here, on this plain thread.
}

impl Transport for ReqwestTransport {
    fn send_envelope(&self, envelope: Envelope) {
        if let Some(tx) = self.sender() {
            match tx.try_send(Msg::Send(Box::new(envelope))) {
                Ok(()) | Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
            }
        }
    }

    fn flush(&self, timeout: Duration) -> bool {
        let Some(tx) = self.sender() else { return true };
        let (done_tx, done_rx) = sync_channel(1);
        if tx.send_timeout_compat(Msg::Flush(done_tx), timeout).is_err() {
            return false;
        }
        done_rx.recv_timeout(timeout).is_ok()
    }

    fn shutdown(&self, timeout: Duration) -> bool {
        let flushed = self.flush(timeout);
        if let Ok(mut q) = self.queue.lock() {
            // The thread ends once its queue is closed and drained.
            q.take();
        }
        flushed
    }
}

/// `SyncSender::send` blocks while the queue is full; give up after `timeout`.
trait SendTimeout {
    fn send_timeout_compat(&self, msg: Msg, timeout: Duration) -> Result<(), ()>;
}

impl SendTimeout for SyncSender<Msg> {
    fn send_timeout_compat(&self, mut msg: Msg, timeout: Duration) -> Result<(), ()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(()),
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return Err(());
                    }
                    msg = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}
