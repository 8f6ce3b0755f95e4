//! The HTTP layer around the routes: middleware (outermost first: [`edge`] → [`metrics`] →
//! [`hardening`] (security headers, CORS, timeout) → [`ratelimit`]), the connection guard below
//! actix-http ([`wire`]), the request id ([`request_id`]) and the extractors ([`extract`]). Each
//! middleware gets its settings when `startup` builds it.

pub mod edge;
pub mod extract;
pub mod hardening;
pub mod metrics;
pub mod ratelimit;
pub mod request_id;
pub mod wire;
