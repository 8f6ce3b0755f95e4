//! Hardening at the HTTP edge: security headers, CORS from an allow-list, a bound on each
//! request's handling time. Their settings ([`crate::config::HttpSettings`], with the server's
//! connection limits) are handed over when the middleware is built, never looked up per request.
//!
//! Middleware order (outermost first): [`crate::http::edge`] → [`crate::http::metrics::track`] → [`security_headers`]
//! → [`cors_rejection`] → [`cors`] → [`timeout`] → [`crate::http::ratelimit::RequestLimit`] → routes. So the timeout's 503, the
//! rate limiter's 429 and every error carry the CORS and security headers, and metrics see the
//! final status.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::Poll,
    time::Duration,
};

use crate::{
    config::HttpSettings,
    error::{PROBLEM_JSON, Problem},
    http::request_id,
};
use actix_cors::Cors;
use actix_web::{
    Error, HttpMessage, HttpResponse, ResponseError,
    body::MessageBody,
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::{
        Method, StatusCode,
        header::{self, HeaderMap, HeaderName, HeaderValue},
    },
    middleware::Next,
    web,
};

/// The policy of every API response: nothing may be loaded, framed or embedded.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";
/// The Swagger UI under `/docs/`: its own scripts and styles (it sets inline `style` attributes),
/// `data:` images from its stylesheet, and fetches to this origin (the spec, "try it out").
/// Its `index.html` has no inline script, so scripts stay `'self'` only.
pub const DOCS_CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                            script-src 'self'; frame-ancestors 'none'";
pub const HSTS_VALUE: &str = "max-age=31536000; includeSubDomains";

/// The CORS layer (actix-cors). Allowed: exactly the configured origins (an empty list allows
/// none). Credentials are not enabled (tokens travel in `Authorization`, never in cookies), so the
/// allowed origin is echoed, never `*`. A simple request from another origin, or with
/// `Origin: null`, is served without any `Access-Control-Allow-*` header (the browser then hides
/// the response); same-origin requests (the Swagger UI's "try it out") work unchanged. A
/// preflight that fails is answered 400 by actix-cors, turned into a problem by
/// [`cors_rejection`].
pub fn cors(settings: &HttpSettings) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            request_id::HEADER,
        ])
        .expose_headers([
            request_id::HEADER,
            HeaderName::from_static("x-cache"),
            HeaderName::from_static("ratelimit"),
            HeaderName::from_static("ratelimit-policy"),
            header::RETRY_AFTER,
        ])
        .max_age(600)
        .block_on_origin_mismatch(false);
    for origin in &settings.cors_origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// Turns actix-cors' plain-text 400 for a refused preflight into a problem with a precise code
/// (`cors_rejected`), keeping its `Vary`. Sits right outside [`cors`].
pub async fn cors_rejection<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<B>>, Error> {
    let preflight = req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let res = next.call(req).await?;
    let status = res.status();
    if !(preflight && status.is_client_error()) || is_problem(res.headers()) {
        return Ok(res.map_into_left_body());
    }
    let (req, res) = res.into_parts();
    let mut problem = Problem::new(
        status,
        "cors_rejected",
        "This cross-origin request is not allowed (origin, method or headers).",
    )
    .into_response();
    if let Some(v) = res.headers().get(header::VARY) {
        problem.headers_mut().insert(header::VARY, v.clone());
    }
    Ok(ServiceResponse::new(req, problem).map_into_right_body())
}

fn is_problem(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON))
}

fn is_docs(path: &str) -> bool {
    path == "/docs" || path.starts_with("/docs/")
}

/// Sets the security headers on every response, including errors that travel as `Err` (timeouts,
/// CORS): `X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy`, a `Content-Security-Policy`
/// ([`DOCS_CSP`] under `/docs`, else [`API_CSP`]), `Strict-Transport-Security` when enabled, and
/// `Cache-Control: no-store` unless the response has its own (or is a `/docs` asset). A header a
/// handler already set is kept. `hsts` is `HttpSettings::hsts`, given when the middleware is built:
/// `from_fn(move |req, next| security_headers(hsts, req, next))`.
pub async fn security_headers<B: MessageBody + 'static>(
    hsts: bool,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, Error> {
    let docs = is_docs(req.path());
    match next.call(req).await {
        Ok(mut res) => {
            apply(res.headers_mut(), docs, hsts);
            Ok(res)
        }
        Err(mut err) => {
            err.add_response_mapper(move |mut res| {
                apply(res.headers_mut(), docs, hsts);
                res
            });
            Err(err)
        }
    }
}

fn set_default(headers: &mut HeaderMap, name: HeaderName, value: &'static str) {
    if !headers.contains_key(&name) {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

fn apply(headers: &mut HeaderMap, docs: bool, hsts: bool) {
    set_default(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set_default(headers, header::X_FRAME_OPTIONS, "DENY");
    set_default(headers, header::REFERRER_POLICY, "no-referrer");
    set_default(
        headers,
        header::CONTENT_SECURITY_POLICY,
        if docs { DOCS_CSP } else { API_CSP },
    );
    if hsts {
        set_default(headers, header::STRICT_TRANSPORT_SECURITY, HSTS_VALUE);
    }
    if !docs {
        set_default(headers, header::CACHE_CONTROL, "no-store");
    }
}

/// The headers of an API error response, for the one path that bypasses [`security_headers`]: a
/// panic caught by the edge (HSTS is left out there: it needs the configuration, and browsers
/// have it from every other response).
pub fn error_headers(headers: &mut HeaderMap) {
    apply(headers, false, false);
}

/// The headers of every API (non-docs) response, for responses written below the app
/// ([`crate::http::wire`]).
pub fn api_headers(headers: &mut HeaderMap, hsts: bool) {
    apply(headers, false, hsts);
}

/// Bounds the handling of each request by `REQUEST_TIMEOUT`. When it is exceeded the handler's
/// future is dropped (it stops at its next `.await`; a transaction in flight is rolled back with
/// its connection, committed work stays) and the client gets
/// - 408 `request_timeout` if the handler was at that moment waiting for more of the request body
///   (the client stalled mid-body: its fault, not ours); the connection is closed, since the rest
///   of the body may still arrive;
/// - otherwise 503 `request_timeout` with `Retry-After`.
///
/// 503 rather than 504: this server is the origin, not a gateway waiting on an upstream; 503 says
/// "temporarily unable to handle this, retry", which is what clients and proxies should do.
///
/// `limit` is `HttpSettings::request_timeout`, given when the middleware is built.
pub async fn timeout<B: MessageBody + 'static>(
    limit: Duration,
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, Error> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let waiting_for_body = Arc::new(AtomicBool::new(false));
    match req.take_payload() {
        Payload::None => {}
        payload => req.set_payload(Payload::Stream {
            payload: Box::pin(WatchedBody {
                inner: payload,
                waiting: waiting_for_body.clone(),
            }),
        }),
    }
    match tokio::time::timeout(limit, next.call(req)).await {
        Ok(res) => res,
        Err(_elapsed) if waiting_for_body.load(Ordering::Relaxed) => {
            tracing::warn!(http.method = %method, http.path = %uri.path(), timeout_ms = limit.as_millis() as u64, "client stalled sending the request body");
            Err(BodyTimeout(limit).into())
        }
        Err(_elapsed) => {
            tracing::warn!(http.method = %method, http.path = %uri.path(), timeout_ms = limit.as_millis() as u64, "request timed out");
            Err(RequestTimeout(limit).into())
        }
    }
}

/// The request body, noting whether its reader is waiting for the client (its last poll was
/// `Pending`) or not (it got data, the end, or has not asked yet).
struct WatchedBody {
    inner: Payload,
    waiting: Arc<AtomicBool>,
}

impl futures_util::Stream for WatchedBody {
    type Item = Result<web::Bytes, actix_web::error::PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        self.waiting.store(polled.is_pending(), Ordering::Relaxed);
        polled
    }
}

/// The error of [`timeout`] when the handler was not waiting for the client: a 503 problem
/// (with `Retry-After`), rendered by the edge with the request id.
#[derive(Debug)]
pub struct RequestTimeout(pub Duration);

impl std::fmt::Display for RequestTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request not handled within {} ms", self.0.as_millis())
    }
}

impl ResponseError for RequestTimeout {
    fn status_code(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }

    fn error_response(&self) -> HttpResponse {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!(
                "The request was not handled within {} ms and was abandoned; retry later.",
                self.0.as_millis()
            ),
        )
        .into_response()
    }
}

/// The error of [`timeout`] when the client stalled mid-body: 408, and the connection closes.
#[derive(Debug)]
pub struct BodyTimeout(pub Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request body not received within {} ms", self.0.as_millis())
    }
}

impl ResponseError for BodyTimeout {
    fn status_code(&self) -> StatusCode {
        StatusCode::REQUEST_TIMEOUT
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "The request body did not arrive within {} ms; send it again, without pausing.",
                self.0.as_millis()
            ),
        )
        .into_response();
        res.head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let mut h = HeaderMap::new();
        apply(&mut h, false, true);
        assert_eq!(h.get(header::CONTENT_SECURITY_POLICY).unwrap(), API_CSP);
        assert_eq!(h.get(header::CACHE_CONTROL).unwrap(), "no-store");
        assert_eq!(h.get(header::STRICT_TRANSPORT_SECURITY).unwrap(), HSTS_VALUE);
        let mut h = HeaderMap::new();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=60"));
        apply(&mut h, false, false);
        assert_eq!(h.get(header::CACHE_CONTROL).unwrap(), "private, max-age=60");
        assert!(h.get(header::STRICT_TRANSPORT_SECURITY).is_none());
        let mut h = HeaderMap::new();
        apply(&mut h, true, false);
        assert_eq!(h.get(header::CONTENT_SECURITY_POLICY).unwrap(), DOCS_CSP);
        assert!(h.get(header::CACHE_CONTROL).is_none());
    }
}
