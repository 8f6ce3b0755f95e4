//! Rate-limit decisions applied to requests: the request-wide budget (a middleware built with
//! the limiter and the token verifier), the per-endpoint checks handlers make, the 429 error and
//! the `RateLimit` / `RateLimit-Policy` response headers. The limiter itself (policies, Redis,
//! fallback, subjects) is [`crate::infra::ratelimit`].

use std::sync::Arc;

use actix_web::{
    FromRequest, HttpMessage, HttpRequest,
    body::{BoxBody, MessageBody},
    dev::{Payload, ServiceRequest, ServiceResponse},
    middleware::Next,
    web,
};
use auth::TokenIssuer;

use crate::{
    error::ApiError,
    http::extract::{Verified, bearer},
    infra::ratelimit::{Decision, Policy, RateLimitConfig, RateLimiter},
    state::AppState,
};

/// The most restrictive decision of a request so far, reported in its response headers.
#[derive(Debug, Clone, Copy)]
struct Reported(Decision);

/// Records a decision for the response headers (the most restrictive one of the request wins).
fn record(req: &HttpRequest, d: Decision) {
    let mut ext = req.extensions_mut();
    let keep = match ext.get::<Reported>() {
        Some(Reported(prev)) => !prev.allowed || (d.allowed && prev.remaining <= d.remaining),
        None => false,
    };
    if !keep {
        ext.insert(Reported(d));
    }
}

/// Records a decision for the response headers; a rejection becomes a 429 error.
fn enforce(req: &HttpRequest, decision: Option<Decision>) -> Result<(), ApiError> {
    let Some(d) = decision else { return Ok(()) };
    record(req, d);
    if d.allowed {
        Ok(())
    } else {
        Err(ApiError::RateLimited(d))
    }
}

/// The 429 of a refusal a use case made with its own policy (`services::Error::RateLimited`),
/// recorded for the response headers as [`enforce`] does.
fn refused(req: &HttpRequest, d: Decision) -> ApiError {
    record(req, d);
    ApiError::RateLimited(d)
}

/// Checks `policy` for `subject` and enforces the result (see [`enforce`]).
async fn limit(req: &HttpRequest, limiter: &RateLimiter, policy: Policy, subject: &str) -> Result<(), ApiError> {
    enforce(req, limiter.check(policy, subject).await)
}

/// Checks `policy` for the client's address and enforces the result.
async fn limit_ip(req: &HttpRequest, limiter: &RateLimiter, policy: Policy) -> Result<(), ApiError> {
    enforce(req, limiter.check_ip(policy, req).await)
}

/// The limiter bound to the request being handled, for the per-endpoint checks (an extractor:
/// it checks nothing by itself, so a handler charges its policies where it chooses — after the
/// body has parsed). Every decision is recorded for the response's `RateLimit` headers and a
/// refusal is the 429.
pub struct Limits {
    req: HttpRequest,
    limiter: RateLimiter,
}

impl FromRequest for Limits {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            req.app_data::<web::Data<AppState>>()
                .map(|state| Limits {
                    req: req.clone(),
                    limiter: state.limits.clone(),
                })
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no application state"))),
        )
    }
}

impl Limits {
    /// The configured policies.
    pub fn policies(&self) -> &RateLimitConfig {
        &self.limiter.config
    }

    /// Charges `policy` to the client's address.
    pub async fn per_ip(&self, policy: Policy) -> Result<(), ApiError> {
        limit_ip(&self.req, &self.limiter, policy).await
    }

    /// Charges `policy` to `subject` (an account, a token).
    pub async fn per_subject(&self, policy: Policy, subject: &str) -> Result<(), ApiError> {
        limit(&self.req, &self.limiter, policy, subject).await
    }

    /// Records a decision a use case made with its own policy; a rejection is the 429.
    pub fn enforce(&self, decision: Option<Decision>) -> Result<(), ApiError> {
        enforce(&self.req, decision)
    }

    /// The 429 of a refusal a use case made with its own policy.
    pub fn refused(&self, d: Decision) -> ApiError {
        refused(&self.req, d)
    }
}

fn exempt(path: &str) -> bool {
    path.starts_with("/health/") || path == "/metrics" || path.starts_with("/docs") || path == "/openapi.json"
}

/// The request-wide limit: every request (bar health, metrics and docs) is charged to `USER` for
/// the subject of its access token when that token verifies, and to `ANON` for its client address
/// otherwise — a header that merely says `Authorization` changes nothing. Then the `RateLimit`
/// headers of whatever policy was checked on the way. The `AuthUser` extractor charges nothing:
/// this is the per-user limit.
#[derive(Clone)]
pub struct RequestLimit(Arc<(RateLimiter, TokenIssuer)>);

impl RequestLimit {
    pub fn new(limiter: RateLimiter, tokens: TokenIssuer) -> Self {
        Self(Arc::new((limiter, tokens)))
    }

    /// The middleware (`from_fn(move |req, next| limit.clone().call(req, next))`).
    pub async fn call(
        self,
        req: ServiceRequest,
        next: Next<impl MessageBody + 'static>,
    ) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
        let (limiter, tokens) = &*self.0;
        if !exempt(req.path()) && limiter.config.enabled {
            // A signature check only (no database): cheap enough to run before anything else.
            // The claims go on to the `AuthUser` extractor, so a token is verified once.
            let claims = bearer(req.request()).and_then(|t| tokens.verify(&t).ok());
            let user = claims.as_ref().map(|c| c.sub);
            if let Some(claims) = claims {
                req.extensions_mut().insert(Verified(claims));
            }
            let decision = limiter.check_request(user, req.request()).await;
            if let Err(e) = enforce(req.request(), decision) {
                let res = actix_web::ResponseError::error_response(&e);
                return Ok(req.into_response(res));
            }
        }
        let mut res = next.call(req).await?.map_into_boxed_body();
        let reported = res.request().extensions().get::<Reported>().copied();
        if let Some(Reported(d)) = reported {
            d.write_headers(res.headers_mut());
        }
        Ok(res)
    }
}
