//! The OTLP exporter's HTTP client: reqwest 0.12's blocking client, the workspace's one HTTP
//! stack (opentelemetry-otlp's own reqwest features pull reqwest 0.13 and aws-lc).
//!
//! The batch processor exports from its own OS thread, so a blocking client fits. A blocking
//! client owns a small runtime of its own, which must not be created or dropped inside tokio:
//! both happen on a plain thread.

use std::time::Duration;

use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

pub struct BlockingReqwest {
    client: Option<reqwest::blocking::Client>,
}

impl std::fmt::Debug for BlockingReqwest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlockingReqwest")
    }
}

impl BlockingReqwest {
    pub fn new() -> Result<Self, HttpError> {
        let timeout = Duration::from_secs(10);
        let client = std::thread::spawn(move || reqwest::blocking::Client::builder().timeout(timeout).build())
            .join()
            .map_err(|_| "the thread building the OTLP HTTP client panicked")??;
        Ok(Self { client: Some(client) })
    }
}

#[async_trait::async_trait]
impl HttpClient for BlockingReqwest {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.as_ref().ok_or("the OTLP HTTP client is gone")?;
        let (parts, body) = request.into_parts();
        let res = client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body.to_vec())
            .send()?;
        let mut out = Response::builder().status(res.status());
        if let Some(headers) = out.headers_mut() {
            headers.extend(res.headers().iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Ok(out.body(res.bytes()?)?)
    }
}

impl Drop for BlockingReqwest {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = std::thread::spawn(move || drop(client)).join();
        }
    }
}
