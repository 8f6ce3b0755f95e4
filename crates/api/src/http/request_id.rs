//! The request id, in one place: its header, how it is chosen, where it is kept and how code
//! reads it.
//!
//! - Every response carries `X-Request-Id` ([`HEADER`]): the client's value when it is a sane
//!   token (1–128 chars of `[A-Za-z0-9._-]`), otherwise a fresh UUIDv7 ([`choose`]).
//! - The edge middleware ([`crate::http::edge`]) stores it in the request's extensions (the
//!   [`RequestId`] extractor reads it there) and runs the whole handler future inside
//!   [`scope`], so error bodies built anywhere below read it with [`current`] without the request
//!   being threaded through every error.

use std::future::Future;

use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, http::header::HeaderName};

/// `X-Request-Id`.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT: String;
}

/// The current request's id (empty outside a request).
pub fn current() -> String {
    CURRENT.try_with(Clone::clone).unwrap_or_default()
}

/// Runs `fut` as the request `id`: [`current`] answers `id` inside it.
pub async fn scope<F: Future>(id: String, fut: F) -> F::Output {
    CURRENT.scope(id, fut).await
}

/// Runs `f` as the request `id` (for code that builds a response outside the request's future).
pub fn sync_scope<R>(id: String, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(id, f)
}

/// A fresh request id (UUIDv7).
pub fn fresh() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The client's `X-Request-Id` when it is valid, else a fresh one.
pub fn choose(client: Option<&str>) -> String {
    client.filter(|v| valid(v)).map_or_else(fresh, str::to_owned)
}

fn valid(v: &str) -> bool {
    (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The request id, stored in request extensions by the edge; as an extractor, the current
/// request's id (empty if the edge did not run).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    /// Records `id` as the request's id.
    pub fn insert(req: &impl HttpMessage, id: String) {
        req.extensions_mut().insert(RequestId(id));
    }

    /// The request's id, as the edge recorded it (empty if it did not run).
    pub fn of(req: &HttpRequest) -> String {
        req.extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default()
    }
}

impl FromRequest for RequestId {
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ok(RequestId(Self::of(req))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_validation() {
        assert!(valid("abc-123_x.y"));
        assert!(!valid(""));
        assert!(!valid("has space"));
        assert!(!valid("new\nline"));
        assert!(!valid(&"a".repeat(129)));
        assert_eq!(choose(Some("abc")), "abc");
        assert_eq!(choose(Some("has space")).len(), 36);
        assert_eq!(choose(None).len(), 36);
    }
}
