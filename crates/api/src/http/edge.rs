//! The outermost middleware: request ids, panic containment and problem+json for every error.
//!
//! - Every response carries `X-Request-Id` (chosen by [`request_id::choose`]); the whole handler
//!   runs in [`request_id::scope`], so error bodies carry it too, and it is recorded on the
//!   request's log span.
//! - A panic in a handler becomes a 500 problem body instead of a dropped connection.
//! - Any 4xx/5xx that is not already `application/problem+json` (actix's own 404/405/413…) is
//!   replaced by the generic problem for its status, so clients see one error format.
//! - `HEAD` is served by every `GET` route (RFC 9110 §9.3.2): the request is routed and handled as
//!   a `GET`, and actix-http's encoder sends the head of that response (same status, headers and
//!   `Content-Length`) without its body. A 405 whose `Allow` lists `GET` lists `HEAD` too.
//!
//! Malformed HTTP that never reaches the app (actix-http's own 400/408/431) is answered by
//! [`crate::http::wire`].

use std::{panic::AssertUnwindSafe, time::Instant};

use actix_web::{
    Error, HttpResponse, ResponseError,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        Method, StatusCode,
        header::{self, HeaderName, HeaderValue},
    },
    middleware::Next,
};
use futures_util::FutureExt;
use tracing::Instrument;

use crate::{
    error::{PROBLEM_JSON, Problem},
    http::request_id::{self, RequestId},
};

pub async fn edge(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let method = req.method().clone();
    if method == Method::HEAD {
        // Routed as GET; the codec still knows it answers a HEAD and leaves the body out.
        req.head_mut().method = Method::GET;
    }
    let id = request_id::choose(req.headers().get(&request_id::HEADER).and_then(|v| v.to_str().ok()));
    RequestId::insert(&req, id.clone());
    let span = tracing::info_span!(
        "request",
        request.id = %id,
        http.method = %method,
        otel.name = %format_args!("{method}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    // An incoming W3C `traceparent` makes this request part of the caller's trace (before the
    // span is first entered; without traces configured this does nothing).
    telemetry::set_parent_from(&span, &Headers(req.headers()));
    let started = Instant::now();

    let outcome = request_id::scope(
        id.clone(),
        AssertUnwindSafe(next.call(req)).catch_unwind().instrument(span.clone()),
    )
    .await;

    let res = match outcome {
        Ok(Ok(res)) => res.map_into_boxed_body(),
        // The request was consumed by the inner service, so these two cases cannot build a
        // `ServiceResponse`; they return an error that renders the same problem body and header.
        Ok(Err(err)) => {
            let status = err.as_response_error().status_code();
            span.record("http.response.status_code", status.as_u16());
            if status.is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
            return Err(EdgeError {
                inner: Some(err),
                request_id: id,
            }
            .into());
        }
        Err(_panic) => {
            span.record("http.response.status_code", 500);
            span.record("otel.status_code", "ERROR");
            tracing::error!(parent: &span, "handler panicked");
            return Err(EdgeError {
                inner: None,
                request_id: id,
            }
            .into());
        }
    };

    let status = res.status();
    let route = res.request().match_pattern().unwrap_or_else(|| "<unmatched>".into());
    telemetry::set_span_name(&span, || format!("{method} {route}"));
    span.record("http.route", route.as_str());
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    tracing::debug!(
        parent: &span,
        http.route = %route,
        http.status = status.as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request finished"
    );
    let (req, res) = res.into_parts();
    Ok(ServiceResponse::new(req, finish(res, &id)))
}

/// Tags the request's Sentry scope (the hub the Sentry middleware made for this request, see
/// `startup.rs`) with the request id and route, so a 5xx, panic or `error!` event names them.
pub async fn sentry_tags(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, Error> {
    let id = actix_web::HttpMessage::extensions(&req)
        .get::<RequestId>()
        .map(|r| r.0.clone());
    let route = req.match_pattern().unwrap_or_else(|| "<unmatched>".into());
    sentry::configure_scope(|scope| {
        if let Some(id) = id {
            scope.set_tag("request_id", id);
        }
        scope.set_tag("route", route);
    });
    next.call(req).await
}

/// The request's headers as an OpenTelemetry propagation carrier (`traceparent`, `tracestate`).
struct Headers<'a>(&'a header::HeaderMap);

impl telemetry::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Replaces a non-problem error body with the generic problem for its status, and sets the
/// `X-Request-Id` header.
fn finish(res: HttpResponse<BoxBody>, id: &str) -> HttpResponse<BoxBody> {
    let status = res.status();
    let mut res = if (status.is_client_error() || status.is_server_error()) && !is_problem(res.headers()) {
        let mut replacement = request_id::sync_scope(id.to_owned(), || Problem::for_status(status)).into_response();
        // Keep the original's headers (Allow on 405, Retry-After, WWW-Authenticate, and what
        // inner middleware added: CORS, security headers, rate-limit headers), except those that
        // describe the replaced body or that the problem sets itself.
        let own: Vec<HeaderName> = replacement.headers().keys().cloned().collect();
        for (name, value) in res.headers() {
            let body_header = matches!(
                *name,
                header::CONTENT_TYPE | header::CONTENT_LENGTH | header::CONTENT_ENCODING | header::TRANSFER_ENCODING
            );
            if !body_header && !own.contains(name) {
                replacement.headers_mut().append(name.clone(), value.clone());
            }
        }
        replacement
    } else {
        res
    };
    if let Ok(v) = HeaderValue::from_str(id) {
        res.headers_mut().insert(request_id::HEADER, v);
    }
    if res.status() == StatusCode::METHOD_NOT_ALLOWED {
        allow_head_with_get(res.headers_mut());
    }
    res
}

/// `Allow: GET, POST` → `Allow: GET, HEAD, POST`: every GET route serves HEAD.
fn allow_head_with_get(headers: &mut header::HeaderMap) {
    let Some(allow) = headers.get(header::ALLOW).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let methods: Vec<&str> = allow.split(',').map(str::trim).filter(|m| !m.is_empty()).collect();
    if !methods.contains(&"GET") || methods.contains(&"HEAD") {
        return;
    }
    let mut with_head = Vec::with_capacity(methods.len() + 1);
    for m in methods {
        with_head.push(m);
        if m == "GET" {
            with_head.push("HEAD");
        }
    }
    if let Ok(v) = HeaderValue::from_str(&with_head.join(", ")) {
        headers.insert(header::ALLOW, v);
    }
}

/// An error escaping the inner service, or a panic (`inner: None`), rendered as problem+json.
#[derive(Debug)]
struct EdgeError {
    inner: Option<Error>,
    request_id: String,
}

impl std::fmt::Display for EdgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Some(e) => write!(f, "{e}"),
            None => f.write_str("handler panicked"),
        }
    }
}

impl ResponseError for EdgeError {
    fn error_response(&self) -> HttpResponse<BoxBody> {
        let res = match &self.inner {
            Some(e) => request_id::sync_scope(self.request_id.clone(), || e.error_response()),
            None => HttpResponse::InternalServerError().finish(),
        };
        let mut res = finish(res, &self.request_id);
        if self.inner.is_none() {
            // A panic unwound through the security-headers middleware: set them here.
            crate::http::hardening::error_headers(res.headers_mut());
        }
        res
    }
}

fn is_problem(headers: &actix_web::http::header::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON))
}

#[cfg(test)]
mod tests {
    use actix_web::{App, HttpResponse, middleware::from_fn, test as atest, web};

    use super::edge;

    #[tokio::test]
    async fn a_panicking_handler_is_a_500_problem_not_a_dropped_connection() {
        let app = atest::init_service(
            App::new()
                .route("/boom", web::get().to(|| async { panic!("bug") as HttpResponse }))
                .route("/fine", web::get().to(|| async { HttpResponse::Ok().finish() }))
                .wrap(from_fn(edge)),
        )
        .await;
        // The middleware hands actix an error that renders itself; the server answers with it.
        let err = atest::try_call_service(&app, atest::TestRequest::get().uri("/boom").to_request())
            .await
            .expect_err("the panic surfaces as an error response");
        let res = err.error_response();
        assert_eq!(res.status(), 500);
        let id = res.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
        assert_eq!(res.headers().get("content-type").unwrap(), "application/problem+json");
        let bytes = actix_web::body::to_bytes(res.into_body()).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["code"], "internal_error");
        assert_eq!(body["request_id"], id.as_str());
        assert!(!body.to_string().contains("bug"), "no panic message leaks");
        // The worker thread survives: the next request is served.
        let ok = atest::call_service(&app, atest::TestRequest::get().uri("/fine").to_request()).await;
        assert_eq!(ok.status(), 200);
    }

    #[test]
    fn allow_lists_head_with_get() {
        use actix_web::http::header::{ALLOW, HeaderMap, HeaderValue};
        let allow = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(ALLOW, HeaderValue::from_static(v));
            super::allow_head_with_get(&mut h);
            h.get(ALLOW).unwrap().to_str().unwrap().to_owned()
        };
        assert_eq!(allow("GET, POST"), "GET, HEAD, POST");
        assert_eq!(allow("PATCH, GET"), "PATCH, GET, HEAD");
        assert_eq!(allow("POST"), "POST");
        assert_eq!(allow("GET, HEAD"), "GET, HEAD");
    }
}
