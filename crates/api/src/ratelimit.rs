//! Per-endpoint rate limits shared through Redis: GCRA in one Lua script (atomic, exact across
//! any number of API instances, clocked by Redis' own `TIME` so instance clocks do not matter).
//!
//! Policies (`RATE_LIMIT_<POLICY>=<count>/<seconds>`; `RATE_LIMIT_ENABLED=false` turns all off):
//! `LOGIN` per account and per client IP, `SIGNUP` and `FORGOT` per IP, `REFRESH` per session,
//! `USER` per authenticated user (every authenticated request), `ANON` per IP (every request
//! without credentials, except health, metrics and docs). A limit of N per P seconds admits a
//! burst of N, then one request every P/N seconds.
//!
//! Responses on limited routes carry `RateLimit-Policy: "<policy>";q=<count>;w=<seconds>` and
//! `RateLimit: "<policy>";r=<remaining>;t=<seconds until full>` (IETF httpapi-ratelimit-headers,
//! structured-field form); a rejection is a 429 problem with `Retry-After`.
//!
//! Redis down: `LOGIN`, `SIGNUP` and `FORGOT` fall back to the same limits kept in this process
//! (per instance: conservative for a single instance, up to N× looser across N instances);
//! `REFRESH`, `USER` and `ANON` fail open. Never a 5xx.

use std::{
    collections::HashMap,
    net::IpAddr,
    str::FromStr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{
    HttpMessage, HttpRequest,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderMap, HeaderName, HeaderValue},
    middleware::Next,
    web,
};
use anyhow::bail;
use ipnet::IpNet;

use crate::{
    error::ApiError,
    state::{AppState, RedisPool},
};

/// One policy: `count` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub name: &'static str,
    pub count: u32,
    pub period: Duration,
}

impl Policy {
    /// Parses `<count>/<seconds>`, e.g. `5/60`.
    pub fn parse(name: &'static str, raw: &str) -> anyhow::Result<Self> {
        let Some((c, s)) = raw.trim().split_once('/') else {
            bail!("rate limit {raw:?} must look like 5/60")
        };
        let count: u32 = c
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("rate limit count {c:?} is not a number"))?;
        let secs: u64 = s
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("rate limit window {s:?} is not a number"))?;
        if count == 0 || secs == 0 {
            bail!("rate limit {raw:?}: count and seconds must be positive");
        }
        Ok(Self {
            name,
            count,
            period: Duration::from_secs(secs),
        })
    }

    fn emission_ms(&self) -> u64 {
        (self.period.as_millis() as u64 / u64::from(self.count)).max(1)
    }

    fn tolerance_ms(&self) -> u64 {
        self.emission_ms() * u64::from(self.count - 1)
    }
}

/// Every policy, configurable from the environment.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub login: Policy,
    pub signup: Policy,
    pub forgot: Policy,
    pub refresh: Policy,
    pub user: Policy,
    pub anon: Policy,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl RateLimitConfig {
    pub const DEFAULTS: [(&'static str, &'static str); 6] = [
        ("LOGIN", "10/60"),
        ("SIGNUP", "20/3600"),
        ("FORGOT", "5/3600"),
        ("REFRESH", "30/60"),
        ("USER", "1200/60"),
        ("ANON", "300/60"),
    ];

    pub fn from_env() -> anyhow::Result<Self> {
        let get = |name: &'static str| -> anyhow::Result<Policy> {
            let default = Self::DEFAULTS
                .iter()
                .find(|(n, _)| *n == name)
                .map_or("60/60", |(_, d)| d);
            let raw = std::env::var(format!("RATE_LIMIT_{name}")).unwrap_or_else(|_| default.to_owned());
            Policy::parse(policy_name(name), &raw).map_err(|e| anyhow::anyhow!("RATE_LIMIT_{name}: {e}"))
        };
        let enabled = match std::env::var("RATE_LIMIT_ENABLED").as_deref() {
            Err(_) | Ok("" | "true" | "1") => true,
            Ok("false" | "0") => false,
            Ok(other) => bail!("RATE_LIMIT_ENABLED must be true or false, not {other:?}"),
        };
        let trusted_proxies = match std::env::var("TRUSTED_PROXIES") {
            Ok(list) => parse_proxies(&list)?,
            Err(_) => vec![],
        };
        Ok(Self {
            enabled,
            login: get("LOGIN")?,
            signup: get("SIGNUP")?,
            forgot: get("FORGOT")?,
            refresh: get("REFRESH")?,
            user: get("USER")?,
            anon: get("ANON")?,
            trusted_proxies,
        })
    }

    /// Defaults, all off (tests enable what they exercise).
    pub fn disabled() -> Self {
        let p = |n: &'static str| {
            let raw = Self::DEFAULTS.iter().find(|(d, _)| *d == n).map_or("60/60", |(_, r)| r);
            Policy::parse(policy_name(n), raw).unwrap_or(Policy {
                name: "default",
                count: 60,
                period: Duration::from_secs(60),
            })
        };
        Self {
            enabled: false,
            login: p("LOGIN"),
            signup: p("SIGNUP"),
            forgot: p("FORGOT"),
            refresh: p("REFRESH"),
            user: p("USER"),
            anon: p("ANON"),
            trusted_proxies: vec![],
        }
    }
}

fn policy_name(env: &str) -> &'static str {
    match env {
        "LOGIN" => "login",
        "SIGNUP" => "signup",
        "FORGOT" => "forgot",
        "REFRESH" => "refresh",
        "USER" => "user",
        _ => "anon",
    }
}

/// `10.0.0.1, 10.1.0.0/16, ::1` → networks (single addresses become /32 or /128).
pub fn parse_proxies(list: &str) -> anyhow::Result<Vec<IpNet>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            IpNet::from_str(s)
                .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
                .map_err(|_| anyhow::anyhow!("TRUSTED_PROXIES: {s:?} is not an IP address or CIDR"))
        })
        .collect()
}

/// The client's address: the socket peer, unless the peer is a trusted proxy — then the
/// right-most address of `X-Forwarded-For` that is not itself a trusted proxy. Anyone else's
/// `X-Forwarded-For` is ignored, so it cannot be used to dodge a limit.
pub fn client_ip(peer: Option<IpAddr>, forwarded_for: Option<&str>, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops: Vec<IpAddr> = forwarded_for
        .unwrap_or_default()
        .split(',')
        .filter_map(|h| IpAddr::from_str(h.trim()).ok())
        .collect();
    Some(
        hops.iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .or(hops.first())
            .copied()
            .unwrap_or(peer),
    )
}

pub fn request_ip(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let xff = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
    client_ip(req.peer_addr().map(|a| a.ip()), xff, trusted)
}

/// The outcome of one check, also what the response headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub policy: Policy,
    pub allowed: bool,
    pub remaining: u64,
    /// Seconds until the quota is full again.
    pub reset_secs: u64,
    /// Seconds to wait before retrying (0 when allowed).
    pub retry_after_secs: u64,
}

impl Decision {
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let p = &self.policy;
        if let Ok(v) = HeaderValue::from_str(&format!("\"{}\";q={};w={}", p.name, p.count, p.period.as_secs())) {
            headers.insert(HeaderName::from_static("ratelimit-policy"), v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("\"{}\";r={};t={}", p.name, self.remaining, self.reset_secs)) {
            headers.insert(HeaderName::from_static("ratelimit"), v);
        }
        if !self.allowed
            && let Ok(v) = HeaderValue::from_str(&self.retry_after_secs.max(1).to_string())
        {
            headers.insert(actix_web::http::header::RETRY_AFTER, v);
        }
    }
}

const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, 0, tat - now - tolerance, tat - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, math.floor((now + tolerance - new_tat) / interval) + 1, 0, new_tat - now}
";

fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// The limiter: Redis first, an in-process fallback for the policies that must not fail open.
#[derive(Clone)]
pub struct RateLimiter {
    redis: RedisPool,
    prefix: String,
    pub config: Arc<RateLimitConfig>,
    script: Arc<redis::Script>,
    local: Arc<Mutex<HashMap<String, u64>>>,
    started: Instant,
}

impl RateLimiter {
    pub fn new(redis: RedisPool, prefix: &str, config: RateLimitConfig) -> Self {
        Self {
            redis,
            prefix: format!("{prefix}:rl"),
            config: Arc::new(config),
            script: Arc::new(redis::Script::new(GCRA)),
            local: Arc::new(Mutex::new(HashMap::new())),
            started: Instant::now(),
        }
    }

    /// Checks (and counts) one request against `policy` for `subject` (an IP, a user id…).
    /// `None` when rate limiting is disabled.
    pub async fn check(&self, policy: Policy, subject: &str) -> Option<Decision> {
        if !self.config.enabled {
            return None;
        }
        let key = format!("{}:{}:{subject}", self.prefix, policy.name);
        match self.remote(policy, &key).await {
            Ok(d) => Some(d),
            Err(e) => match policy.name {
                "login" | "signup" | "forgot" => {
                    tracing::warn!(error = %e, policy = policy.name, "rate limiter: Redis unavailable, using the local fallback");
                    Some(self.local(policy, &key))
                }
                _ => {
                    tracing::debug!(error = %e, policy = policy.name, "rate limiter: Redis unavailable, failing open");
                    None
                }
            },
        }
    }

    async fn remote(&self, policy: Policy, key: &str) -> anyhow::Result<Decision> {
        let budget = Duration::from_millis(250);
        let mut conn = tokio::time::timeout(budget, self.redis.get()).await??;
        let mut invocation = self.script.key(key);
        invocation.arg(policy.emission_ms()).arg(policy.tolerance_ms());
        let result = tokio::time::timeout(budget, invocation.invoke_async(&mut **conn)).await;
        if !matches!(result, Ok(Ok(_))) {
            conn.mark_broken();
        }
        let (allowed, remaining, retry_ms, reset_ms): (i64, i64, i64, i64) = result??;
        Ok(Decision {
            policy,
            allowed: allowed == 1,
            remaining: remaining.max(0) as u64,
            reset_secs: ceil_secs(reset_ms.max(0) as u64),
            retry_after_secs: ceil_secs(retry_ms.max(0) as u64),
        })
    }

    /// The same GCRA in process memory.
    fn local(&self, policy: Policy, key: &str) -> Decision {
        let now = self.started.elapsed().as_millis() as u64;
        let (interval, tolerance) = (policy.emission_ms(), policy.tolerance_ms());
        let mut map = self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > 100_000 {
            map.retain(|_, tat| *tat > now);
        }
        let tat = map.get(key).copied().unwrap_or(now).max(now);
        if tat - now > tolerance {
            return Decision {
                policy,
                allowed: false,
                remaining: 0,
                reset_secs: ceil_secs(tat - now),
                retry_after_secs: ceil_secs(tat - now - tolerance),
            };
        }
        let new_tat = tat + interval;
        map.insert(key.to_owned(), new_tat);
        Decision {
            policy,
            allowed: true,
            remaining: (now + tolerance + interval).saturating_sub(new_tat) / interval,
            reset_secs: ceil_secs(new_tat - now),
            retry_after_secs: 0,
        }
    }
}

/// The most restrictive decision of a request so far, reported in its response headers.
#[derive(Debug, Clone, Copy)]
struct Reported(Decision);

/// Records a decision for the response headers; a rejection becomes a 429 error.
pub fn enforce(req: &HttpRequest, decision: Option<Decision>) -> Result<(), ApiError> {
    let Some(d) = decision else { return Ok(()) };
    let mut ext = req.extensions_mut();
    let keep = match ext.get::<Reported>() {
        Some(Reported(prev)) => !prev.allowed || (d.allowed && prev.remaining <= d.remaining),
        None => false,
    };
    if !keep {
        ext.insert(Reported(d));
    }
    drop(ext);
    if d.allowed {
        Ok(())
    } else {
        crate::metrics::rate_limited(d.policy.name);
        Err(ApiError::RateLimited(d))
    }
}

/// Checks `policy` for `subject` and enforces the result (see [`enforce`]).
pub async fn limit(req: &HttpRequest, policy: Policy, subject: &str) -> Result<(), ApiError> {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return Ok(());
    };
    let decision = state.limits.check(policy, subject).await;
    enforce(req, decision)
}

fn exempt(path: &str) -> bool {
    path.starts_with("/health/") || path == "/metrics" || path.starts_with("/docs") || path == "/openapi.json"
}

/// Middleware: the `ANON` limit for requests without credentials, and the `RateLimit` headers of
/// whatever policy a handler or extractor checked.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let anonymous = !req.headers().contains_key(actix_web::http::header::AUTHORIZATION);
    if anonymous
        && !exempt(req.path())
        && let Some(state) = req.app_data::<web::Data<AppState>>().cloned()
        && state.limits.config.enabled
    {
        let ip = request_ip(req.request(), &state.limits.config.trusted_proxies)
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let decision = state.limits.check(state.limits.config.anon, &ip).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse() {
        let p = Policy::parse("login", "5/60").unwrap();
        assert_eq!((p.count, p.period), (5, Duration::from_secs(60)));
        assert_eq!(p.emission_ms(), 12_000);
        assert_eq!(p.tolerance_ms(), 48_000);
        for bad in ["", "5", "0/60", "5/0", "x/60", "5/y", "-1/60"] {
            assert!(Policy::parse("login", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn forwarded_for_is_only_believed_from_trusted_proxies() {
        let trusted = parse_proxies("10.0.0.0/8, 127.0.0.1").unwrap();
        let ip = |s: &str| IpAddr::from_str(s).unwrap();
        // An untrusted peer: its header is ignored.
        assert_eq!(
            client_ip(Some(ip("203.0.113.9")), Some("1.2.3.4"), &trusted),
            Some(ip("203.0.113.9"))
        );
        // A trusted proxy: the right-most untrusted hop.
        assert_eq!(
            client_ip(Some(ip("10.1.2.3")), Some("1.2.3.4, 198.51.100.7, 10.0.0.5"), &trusted),
            Some(ip("198.51.100.7"))
        );
        // Garbage in the header: the peer.
        assert_eq!(
            client_ip(Some(ip("127.0.0.1")), Some("nonsense"), &trusted),
            Some(ip("127.0.0.1"))
        );
        assert_eq!(client_ip(Some(ip("127.0.0.1")), None, &[]), Some(ip("127.0.0.1")));
        assert!(parse_proxies("10.0.0.0/8, nope").is_err());
    }

    #[tokio::test]
    async fn local_fallback_admits_exactly_the_burst() {
        let pool =
            bb8::Pool::builder().build_unchecked(crate::redis_pool::RedisManager::new("redis://127.0.0.1:1").unwrap());
        let mut config = RateLimitConfig::disabled();
        config.enabled = true;
        let limiter = RateLimiter::new(pool, "t", config);
        let p = Policy::parse("login", "3/60").unwrap();
        let results: Vec<bool> = (0..5).map(|_| limiter.local(p, "k").allowed).collect();
        assert_eq!(results, [true, true, true, false, false]);
        let denied = limiter.local(p, "k");
        assert!(denied.retry_after_secs > 0 && denied.retry_after_secs <= 20);
        assert!(limiter.local(p, "other").allowed, "keys are independent");
    }
}
