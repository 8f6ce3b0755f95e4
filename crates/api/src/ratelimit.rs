//! Per-endpoint rate limits shared through Redis: GCRA in one Lua script (atomic, exact across
//! any number of API instances, clocked by Redis' own `TIME` so instance clocks do not matter).
//!
//! Policies (`RATE_LIMIT_<POLICY>=<count>/<seconds>`; `RATE_LIMIT_ENABLED=false` turns all off):
//! `LOGIN` per account and per client IP (login, and wrong-password guesses through
//! `PATCH /v1/users/me`), `SIGNUP` and `FORGOT` per IP, `RESET` per IP and per token,
//! `REFRESH` per session, `USER` per user (every request whose access token verifies), `ANON` per
//! IP (every other request: no credentials, or credentials that do not verify; health, metrics and
//! docs exempt). A limit of N per P seconds admits a burst of N, then one request every P/N
//! seconds.
//!
//! "Per IP" means per client address (see [`client_ip`]) for IPv4, and per network of
//! `RATE_LIMIT_IPV6_PREFIX` bits (default /64, what one host is usually given) for IPv6.
//!
//! Responses on limited routes carry `RateLimit-Policy: "<policy>";q=<count>;w=<seconds>` and
//! `RateLimit: "<policy>";r=<remaining>;t=<seconds until full>` (IETF httpapi-ratelimit-headers,
//! structured-field form); a rejection is a 429 problem with `Retry-After`.
//!
//! Redis down: `LOGIN`, `SIGNUP`, `FORGOT` and `RESET` fall back to the same limits kept in this process
//! (per instance: conservative for a single instance, up to N× looser across N instances);
//! `REFRESH`, `USER` and `ANON` fail open. Never a 5xx.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr, SocketAddr},
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
use ipnet::{IpNet, Ipv6Net};

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
    pub reset: Policy,
    pub refresh: Policy,
    pub user: Policy,
    pub anon: Policy,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Per-IP policies count IPv6 clients by their network of this many bits.
    pub ipv6_prefix: u8,
}

impl RateLimitConfig {
    pub const DEFAULTS: [(&'static str, &'static str); 7] = [
        ("LOGIN", "10/60"),
        ("SIGNUP", "20/3600"),
        ("FORGOT", "5/3600"),
        ("RESET", "10/3600"),
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
        let ipv6_prefix = match std::env::var("RATE_LIMIT_IPV6_PREFIX") {
            Ok(raw) if !raw.trim().is_empty() => parse_ipv6_prefix(&raw)?,
            _ => Self::DEFAULT_IPV6_PREFIX,
        };
        Ok(Self {
            enabled,
            login: get("LOGIN")?,
            signup: get("SIGNUP")?,
            forgot: get("FORGOT")?,
            reset: get("RESET")?,
            refresh: get("REFRESH")?,
            user: get("USER")?,
            anon: get("ANON")?,
            trusted_proxies,
            ipv6_prefix,
        })
    }

    /// The default IPv6 prefix of per-IP keys: a /64 is one host's (or one LAN's) allocation.
    pub const DEFAULT_IPV6_PREFIX: u8 = 64;

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
            reset: p("RESET"),
            refresh: p("REFRESH"),
            user: p("USER"),
            anon: p("ANON"),
            trusted_proxies: vec![],
            ipv6_prefix: Self::DEFAULT_IPV6_PREFIX,
        }
    }
}

fn policy_name(env: &str) -> &'static str {
    match env {
        "LOGIN" => "login",
        "SIGNUP" => "signup",
        "FORGOT" => "forgot",
        "RESET" => "reset",
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

/// `RATE_LIMIT_IPV6_PREFIX`: 1 to 128 bits.
fn parse_ipv6_prefix(raw: &str) -> anyhow::Result<u8> {
    match raw.trim().trim_start_matches('/').parse::<u8>() {
        Ok(bits @ 1..=128) => Ok(bits),
        _ => bail!("RATE_LIMIT_IPV6_PREFIX must be a prefix length from 1 to 128, not {raw:?}"),
    }
}

/// One `X-Forwarded-For` entry: `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:443`. IPv4-mapped IPv6 addresses come back as IPv4. Anything else (`unknown`,
/// an obfuscated name, garbage) is `None`.
pub fn parse_forwarded_entry(raw: &str) -> Option<IpAddr> {
    let s = raw.trim();
    let ip = IpAddr::from_str(s)
        .ok()
        .or_else(|| SocketAddr::from_str(s).ok().map(|a| a.ip()))
        .or_else(|| {
            let inner = s.strip_prefix('[')?.strip_suffix(']')?;
            Ipv6Addr::from_str(inner).ok().map(IpAddr::V6)
        })?;
    Some(ip.to_canonical())
}

/// The client's address: the socket peer, unless the peer is a trusted proxy — then the entries of
/// every `X-Forwarded-For` line (`forwarded_for`, in the order received) are walked from the right
/// past trusted proxies, and the first one that is not a trusted proxy is the client. An entry
/// that cannot be parsed stops the walk at the last trusted hop: what lies left of it was written
/// by whoever the proxy could not identify. Anyone else's `X-Forwarded-For` is ignored, so it
/// cannot be used to dodge a limit; the RFC 7239 `Forwarded` header is ignored too (a proxy that
/// is trusted must append to `X-Forwarded-For`; believing a second header it may not manage would
/// let clients write their own address).
pub fn client_ip<S: AsRef<str>>(
    peer: Option<IpAddr>,
    forwarded_for: impl DoubleEndedIterator<Item = S>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut nearest_trusted = peer;
    'walk: for line in forwarded_for.rev() {
        for entry in line.as_ref().rsplit(',').filter(|e| !e.trim().is_empty()) {
            match parse_forwarded_entry(entry) {
                Some(ip) if is_trusted(&ip) => nearest_trusted = ip,
                Some(ip) => return Some(ip),
                None => break 'walk,
            }
        }
    }
    Some(nearest_trusted)
}

pub fn request_ip(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    // Every line, in order (RFC 9110 §5.3: together they are one comma-separated list). Bytes
    // that are not UTF-8 spoil only their own entry, not the line.
    let lines = req
        .headers()
        .get_all("x-forwarded-for")
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
    client_ip(req.peer_addr().map(|a| a.ip()), lines, trusted)
}

/// What per-IP policies count against: an IPv4 address itself, an IPv6 address by its network
/// of `ipv6_prefix` bits (one host usually owns a whole /64, so counting single addresses would
/// give it 2^64 budgets).
pub fn ip_subject(ip: IpAddr, ipv6_prefix: u8) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => Ipv6Net::new(v6, ipv6_prefix).map_or_else(|_| v6.to_string(), |n| n.trunc().to_string()),
    }
}

/// The per-IP subject of a request (`unknown` without a peer address).
pub fn client_subject(req: &HttpRequest, config: &RateLimitConfig) -> String {
    request_ip(req, &config.trusted_proxies)
        .map_or_else(|| "unknown".to_owned(), |ip| ip_subject(ip, config.ipv6_prefix))
}

/// The subject of a single-use token's budget: its SHA-256 (the plain token is a credential and
/// never becomes a Redis key).
pub fn token_subject(token: &str) -> String {
    use base64::Engine;
    format!(
        "token:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(auth::OpaqueToken::hash(token))
    )
}

/// The subject of an account's `LOGIN` budget (login attempts and `current_password` guesses
/// share it), from an already normalised e-mail address.
pub fn account_subject(email: &str) -> String {
    format!("account:{email}")
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
                "login" | "signup" | "forgot" | "reset" => {
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

/// Checks `policy` for the client's address (see [`client_subject`]) and enforces the result.
pub async fn limit_ip(req: &HttpRequest, policy: Policy) -> Result<(), ApiError> {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return Ok(());
    };
    let decision = state
        .limits
        .check(policy, &client_subject(req, &state.limits.config))
        .await;
    enforce(req, decision)
}

fn exempt(path: &str) -> bool {
    path.starts_with("/health/") || path == "/metrics" || path.starts_with("/docs") || path == "/openapi.json"
}

/// Middleware: every request (bar health, metrics and docs) is charged to `USER` for the subject
/// of its access token when that token verifies, and to `ANON` for its client address otherwise —
/// a header that merely says `Authorization` changes nothing. Then the `RateLimit` headers of
/// whatever policy was checked on the way.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if !exempt(req.path())
        && let Some(state) = req.app_data::<web::Data<AppState>>().cloned()
        && state.limits.config.enabled
    {
        let config = &state.limits.config;
        // A signature check only (no database): cheap enough to run before anything else.
        let verified = crate::extract::bearer(req.request()).and_then(|t| state.tokens.verify(&t).ok());
        let decision = match verified {
            Some(claims) => state.limits.check(config.user, &claims.sub.to_string()).await,
            None => {
                state
                    .limits
                    .check(config.anon, &client_subject(req.request(), config))
                    .await
            }
        };
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

    fn ip(s: &str) -> IpAddr {
        IpAddr::from_str(s).unwrap()
    }

    /// `client_ip` with the header lines given in order.
    fn client(peer: &str, lines: &[&str], trusted: &[IpNet]) -> Option<IpAddr> {
        client_ip(Some(ip(peer)), lines.iter(), trusted)
    }

    #[test]
    fn forwarded_for_is_only_believed_from_trusted_proxies() {
        let trusted = parse_proxies("10.0.0.0/8, 127.0.0.1").unwrap();
        // An untrusted peer: its header is ignored.
        assert_eq!(client("203.0.113.9", &["1.2.3.4"], &trusted), Some(ip("203.0.113.9")));
        // A trusted proxy: the right-most untrusted hop.
        assert_eq!(
            client("10.1.2.3", &["1.2.3.4, 198.51.100.7, 10.0.0.5"], &trusted),
            Some(ip("198.51.100.7"))
        );
        // Garbage in the header: the peer.
        assert_eq!(client("127.0.0.1", &["nonsense"], &trusted), Some(ip("127.0.0.1")));
        assert_eq!(client("127.0.0.1", &[], &[]), Some(ip("127.0.0.1")));
        // Only trusted hops: the left-most of them.
        assert_eq!(
            client("127.0.0.1", &["10.0.0.7, 10.0.0.8"], &trusted),
            Some(ip("10.0.0.7"))
        );
        assert!(parse_proxies("10.0.0.0/8, nope").is_err());
    }

    #[test]
    fn forwarded_for_lines_are_one_list_in_order() {
        let trusted = parse_proxies("127.0.0.1, 10.0.0.0/8").unwrap();
        // The client's own line first, the proxy's appended line second: the proxy's entry wins.
        assert_eq!(
            client("127.0.0.1", &["203.0.113.66", "198.51.100.7"], &trusted),
            Some(ip("198.51.100.7"))
        );
        // Two proxies, each adding a line; empty lines and empty entries are skipped.
        assert_eq!(
            client("127.0.0.1", &["6.6.6.6, 198.51.100.7", "", "10.0.0.5,"], &trusted),
            Some(ip("198.51.100.7"))
        );
    }

    #[test]
    fn forwarded_for_entries_may_carry_ports_and_brackets() {
        for (entry, want) in [
            ("192.0.2.1", "192.0.2.1"),
            (" 192.0.2.1:443 ", "192.0.2.1"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
            ("[::ffff:192.0.2.1]:80", "192.0.2.1"),
        ] {
            assert_eq!(parse_forwarded_entry(entry), Some(ip(want)), "{entry:?}");
        }
        for bad in [
            "",
            "unknown",
            "_hidden",
            "192.0.2.1:",
            "192.0.2.1:99999",
            "[2001:db8::1",
            "2001:db8::1]:443",
            "[192.0.2.1]",
            "host:80",
        ] {
            assert_eq!(parse_forwarded_entry(bad), None, "{bad:?}");
        }
        let trusted = parse_proxies("127.0.0.1").unwrap();
        // A port on the proxy's entry no longer hides it (and lets the spoofed one win).
        assert_eq!(
            client("127.0.0.1", &["203.0.113.66, [2001:db8::7]:51000"], &trusted),
            Some(ip("2001:db8::7"))
        );
        assert_eq!(
            client("127.0.0.1", &["203.0.113.66, 198.51.100.7:51000"], &trusted),
            Some(ip("198.51.100.7"))
        );
    }

    #[test]
    fn an_unparseable_entry_stops_the_walk() {
        let trusted = parse_proxies("127.0.0.1, 10.0.0.0/8").unwrap();
        // What lies left of an entry the proxy could not name is not believed: the last trusted
        // hop stands in for the client.
        assert_eq!(
            client("127.0.0.1", &["203.0.113.66, unknown, 10.0.0.5"], &trusted),
            Some(ip("10.0.0.5"))
        );
        assert_eq!(
            client("127.0.0.1", &["203.0.113.66, unknown"], &trusted),
            Some(ip("127.0.0.1"))
        );
    }

    #[test]
    fn peers_are_canonical() {
        // A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6 addresses.
        let trusted = parse_proxies("127.0.0.1").unwrap();
        assert_eq!(
            client("::ffff:127.0.0.1", &["198.51.100.7"], &trusted),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(client("::ffff:192.0.2.1", &[], &[]), Some(ip("192.0.2.1")));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_network() {
        assert_eq!(ip_subject(ip("192.0.2.1"), 64), "192.0.2.1");
        assert_eq!(ip_subject(ip("::ffff:192.0.2.1"), 64), "192.0.2.1");
        let a = ip_subject(ip("2001:db8:1:2::1"), 64);
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(ip_subject(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 64), a);
        assert_ne!(ip_subject(ip("2001:db8:1:3::1"), 64), a);
        // Configurable: a /56 groups what a /64 separates; /128 is one address.
        assert_eq!(
            ip_subject(ip("2001:db8:1:3::1"), 56),
            ip_subject(ip("2001:db8:1:2::1"), 56)
        );
        assert_eq!(ip_subject(ip("2001:db8::1"), 128), "2001:db8::1/128");
    }

    #[test]
    fn ipv6_prefix_parses() {
        assert_eq!(parse_ipv6_prefix("64").unwrap(), 64);
        assert_eq!(parse_ipv6_prefix(" /56 ").unwrap(), 56);
        assert_eq!(parse_ipv6_prefix("128").unwrap(), 128);
        for bad in ["0", "129", "-1", "x", ""] {
            assert!(parse_ipv6_prefix(bad).is_err(), "{bad:?}");
        }
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
