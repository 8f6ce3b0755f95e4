//! The metrics middleware: `http_requests_total`, `http_request_duration_seconds`,
//! `http_requests_in_flight` (see [`crate::metrics`] for the families).

use std::time::Instant;

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::Method,
    middleware::Next,
};
use metrics::{counter, gauge, histogram};

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// One request being measured. Recorded once: with the response's status, or on drop — 500 if a
/// panic unwinds through it, 499 if the request future was dropped (client gone).
struct Tracked {
    method: &'static str,
    route: String,
    started: Instant,
    done: bool,
}

impl Tracked {
    fn start(req: &ServiceRequest) -> Self {
        gauge!("http_requests_in_flight").increment(1.0);
        Self {
            method: method_label(req.method()),
            // Matched against the route table here, before routing, so a panic or an error
            // travelling as `Err` is still labelled by its route.
            route: req.match_pattern().unwrap_or_else(|| "<unmatched>".to_owned()),
            started: Instant::now(),
            done: false,
        }
    }

    fn record(&mut self, status: u16) {
        self.done = true;
        gauge!("http_requests_in_flight").decrement(1.0);
        let route = std::mem::take(&mut self.route);
        histogram!("http_request_duration_seconds", "method" => self.method, "route" => route.clone())
            .record(self.started.elapsed().as_secs_f64());
        counter!("http_requests_total", "method" => self.method, "route" => route, "status" => status.to_string())
            .increment(1);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.done {
            self.record(if std::thread::panicking() { 500 } else { 499 });
        }
    }
}

/// Middleware: `http_requests_total`, `http_request_duration_seconds`, `http_requests_in_flight`.
pub async fn track<B: MessageBody + 'static>(req: ServiceRequest, next: Next<B>) -> Result<ServiceResponse<B>, Error> {
    let mut tracked = Tracked::start(&req);
    let res = next.call(req).await;
    let status = match &res {
        Ok(res) => res.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    tracked.record(status.as_u16());
    res
}
