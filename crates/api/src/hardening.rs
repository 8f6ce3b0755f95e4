//! Hardening at the HTTP edge: security headers, CORS from an allow-list, a bound on each
//! request's handling time, and the server's connection limits. Settings come from the
//! environment ([`HttpSettings::from_env`]) and live in `Config::http`.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `REQUEST_TIMEOUT` | `30s` | longest a request may be handled; then 503 problem `request_timeout` (with `Retry-After`), or 408 when the handler is still waiting for the client's body |
//! | `CLIENT_REQUEST_TIMEOUT` | `10s` | time a client has to send a request head; then 408 problem (see [`crate::wire`]) |
//! | `CLIENT_DISCONNECT_TIMEOUT` | `2s` | time a client has to finish closing a connection |
//! | `KEEP_ALIVE` | `5s` | idle keep-alive of a connection; `off` closes after each response |
//! | `MAX_CONNECTIONS` | `25000` | concurrent connections per worker thread; further ones wait in the backlog |
//! | `CORS_ORIGINS` | – (none) | comma-separated exact origins (`https://app.example.com`) allowed cross-origin |
//! | `HSTS` | on when `PUBLIC_URL` is `https://` | send `Strict-Transport-Security` |
//! | `METRICS_ADDR` | – | serve `/metrics` on this address instead of the API port |
//!
//! Durations: `500ms`, `30s`, `15m`, `12h`, `30d` or plain seconds.
//!
//! Middleware order (outermost first): `edge` → [`crate::metrics::track`] → [`security_headers`]
//! → [`cors_rejection`] → [`cors`] → [`timeout`] → rate limit → routes. So the timeout's 503, the
//! rate limiter's 429 and every error carry the CORS and security headers, and metrics see the
//! final status.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::Poll,
    time::Duration,
};

use actix_cors::Cors;
use actix_web::{
    Error, HttpMessage, HttpResponse, ResponseError,
    body::MessageBody,
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::{
        Method, StatusCode, Uri,
        header::{self, HeaderMap, HeaderName, HeaderValue},
    },
    middleware::Next,
    web,
};
use anyhow::{Context, bail};

use crate::{
    error::{PROBLEM_JSON, Problem},
    state::AppState,
};

/// The policy of every API response: nothing may be loaded, framed or embedded.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";
/// The Swagger UI under `/docs/`: its own scripts and styles (it sets inline `style` attributes),
/// `data:` images from its stylesheet, and fetches to this origin (the spec, "try it out").
/// Its `index.html` has no inline script, so scripts stay `'self'` only.
pub const DOCS_CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                            script-src 'self'; frame-ancestors 'none'";
pub const HSTS_VALUE: &str = "max-age=31536000; includeSubDomains";

/// HTTP server settings: timeouts, connection limits, CORS, HSTS and the metrics listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    pub request_timeout: Duration,
    pub client_request_timeout: Duration,
    pub client_disconnect_timeout: Duration,
    /// `None`: keep-alive off.
    pub keep_alive: Option<Duration>,
    /// Per worker thread.
    pub max_connections: usize,
    /// Normalised origins (`scheme://host[:port]`, lower case, default port dropped).
    pub cors_origins: Vec<String>,
    pub hsts: bool,
    /// `Some`: `/metrics` is served there, and not on the API port.
    pub metrics_addr: Option<SocketAddr>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            client_request_timeout: Duration::from_secs(10),
            client_disconnect_timeout: Duration::from_secs(2),
            keep_alive: Some(Duration::from_secs(5)),
            max_connections: 25_000,
            cors_origins: Vec::new(),
            hsts: false,
            metrics_addr: None,
        }
    }
}

impl HttpSettings {
    /// Reads the variables in the module docs. `public_url` decides the HSTS default.
    pub fn from_env(public_url: &str) -> anyhow::Result<Self> {
        Self::from_lookup(public_url, |name| {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty())
        })
    }

    /// [`Self::from_env`] over any variable source (tests pass a map).
    pub fn from_lookup(public_url: &str, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let d = Self::default();
        let duration = |name: &str, default: Duration| -> anyhow::Result<Duration> {
            var(name).map_or(Ok(default), |v| parse_duration(&v).with_context(|| name.to_owned()))
        };
        let keep_alive = match var("KEEP_ALIVE").as_deref().map(str::trim) {
            None => d.keep_alive,
            Some("off" | "0") => None,
            Some(v) => Some(parse_duration(v).context("KEEP_ALIVE")?),
        };
        let max_connections = match var("MAX_CONNECTIONS") {
            None => d.max_connections,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => bail!("MAX_CONNECTIONS={v:?} must be a positive number"),
            },
        };
        let cors_origins = var("CORS_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|o| normalize_origin(o).with_context(|| format!("CORS_ORIGINS entry {o:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let hsts = match var("HSTS").as_deref().map(str::trim) {
            None => public_url.starts_with("https://"),
            Some("true" | "1" | "on") => true,
            Some("false" | "0" | "off") => false,
            Some(other) => bail!("HSTS must be true or false, not {other:?}"),
        };
        let metrics_addr = var("METRICS_ADDR")
            .map(|v| v.trim().parse::<SocketAddr>())
            .transpose()
            .context("METRICS_ADDR must be host:port, e.g. 127.0.0.1:9100")?;
        Ok(Self {
            request_timeout: duration("REQUEST_TIMEOUT", d.request_timeout)?,
            client_request_timeout: duration("CLIENT_REQUEST_TIMEOUT", d.client_request_timeout)?,
            client_disconnect_timeout: duration("CLIENT_DISCONNECT_TIMEOUT", d.client_disconnect_timeout)?,
            keep_alive,
            max_connections,
            cors_origins,
            hsts,
            metrics_addr,
        })
    }
}

pub use crate::config::parse_duration;

/// An origin as browsers send it: `scheme://host[:port]`, lower case, no default port, no path.
/// `*` and `null` are refused: the allow-list names real origins only.
pub fn normalize_origin(raw: &str) -> anyhow::Result<String> {
    let raw = raw.trim().trim_end_matches('/');
    let uri: Uri = raw.parse().context("not a URL")?;
    let scheme = uri.scheme_str().map(str::to_ascii_lowercase);
    let default_port = match scheme.as_deref() {
        Some("https") => 443,
        Some("http") => 80,
        _ => bail!("an origin starts with http:// or https://"),
    };
    let Some(authority) = uri.authority() else {
        bail!("an origin names a host")
    };
    if authority.as_str().contains('@') || !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        bail!("an origin is scheme://host[:port] only (no user, path or query)");
    }
    let host = authority.host().to_ascii_lowercase();
    let scheme = scheme.unwrap_or_default();
    Ok(match authority.port_u16() {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

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
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
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

fn hsts_enabled(req: &ServiceRequest) -> bool {
    req.app_data::<web::Data<AppState>>()
        .is_some_and(|s| s.config.http.hsts)
}

/// Sets the security headers on every response, including errors that travel as `Err` (timeouts,
/// CORS): `X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy`, a `Content-Security-Policy`
/// ([`DOCS_CSP`] under `/docs`, else [`API_CSP`]), `Strict-Transport-Security` when enabled, and
/// `Cache-Control: no-store` unless the response has its own (or is a `/docs` asset). A header a
/// handler already set is kept.
pub async fn security_headers<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, Error> {
    let docs = is_docs(req.path());
    let hsts = hsts_enabled(&req);
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
/// ([`crate::wire`]).
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
pub async fn timeout<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, Error> {
    let limit = req
        .app_data::<web::Data<AppState>>()
        .map_or(Duration::from_secs(30), |s| s.config.http.request_timeout);
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
    use std::collections::HashMap;

    use super::*;

    fn load(vars: &[(&str, &str)], public_url: &str) -> anyhow::Result<HttpSettings> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        HttpSettings::from_lookup(public_url, |n| map.get(n).cloned())
    }

    #[test]
    fn defaults_and_hsts() {
        let s = load(&[], "http://localhost:8080").unwrap();
        assert_eq!(s, HttpSettings::default());
        assert!(load(&[], "https://api.example.com").unwrap().hsts);
        assert!(!load(&[("HSTS", "false")], "https://api.example.com").unwrap().hsts);
        assert!(load(&[("HSTS", "true")], "http://localhost").unwrap().hsts);
        assert!(load(&[("HSTS", "maybe")], "http://localhost").is_err());
    }

    #[test]
    fn durations_and_limits() {
        let s = load(
            &[
                ("REQUEST_TIMEOUT", "250ms"),
                ("CLIENT_REQUEST_TIMEOUT", "5s"),
                ("KEEP_ALIVE", "off"),
                ("MAX_CONNECTIONS", "100"),
                ("METRICS_ADDR", "127.0.0.1:9100"),
            ],
            "http://x",
        )
        .unwrap();
        assert_eq!(s.request_timeout, Duration::from_millis(250));
        assert_eq!(s.client_request_timeout, Duration::from_secs(5));
        assert_eq!(s.keep_alive, None);
        assert_eq!(s.max_connections, 100);
        assert_eq!(s.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
        for (k, v) in [
            ("REQUEST_TIMEOUT", "0ms"),
            ("REQUEST_TIMEOUT", "fast"),
            ("MAX_CONNECTIONS", "0"),
            ("METRICS_ADDR", "localhost"),
        ] {
            assert!(load(&[(k, v)], "http://x").is_err(), "{k}={v}");
        }
    }

    #[test]
    fn origins() {
        assert_eq!(
            normalize_origin("https://App.Example.com/").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            normalize_origin("https://app.example.com:443").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            normalize_origin("http://localhost:3000").unwrap(),
            "http://localhost:3000"
        );
        for bad in [
            "*",
            "null",
            "app.example.com",
            "https://a.com/path",
            "ftp://a.com",
            "https://u@a.com",
        ] {
            assert!(normalize_origin(bad).is_err(), "{bad}");
        }
        let s = load(
            &[("CORS_ORIGINS", " https://a.example.com , http://localhost:3000,")],
            "http://x",
        )
        .unwrap();
        assert_eq!(s.cors_origins, ["https://a.example.com", "http://localhost:3000"]);
        assert!(load(&[("CORS_ORIGINS", "*")], "http://x").is_err());
    }

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
