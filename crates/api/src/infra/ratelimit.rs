//! Per-endpoint rate limits shared through Redis: GCRA in one Lua script (atomic, exact across
//! any number of API instances, clocked by Redis' own `TIME` so instance clocks do not matter).
//! This module is the limiter ([`RateLimiter`]: checks, counts, the in-process fallback, the
//! `rate_limit_rejections_total` counter) and the subjects it counts against; the policies'
//! settings are [`crate::config::RateLimitConfig`], and [`crate::http::ratelimit`] applies the
//! decisions to requests (the request-wide middleware, 429s, the `RateLimit` headers).
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
    HttpRequest,
    http::header::{HeaderMap, HeaderName, HeaderValue},
};
use ipnet::{IpNet, Ipv6Net};

pub use crate::config::{Policy, RateLimitConfig};
use crate::infra::redis_pool::RedisPool;

impl Policy {
    fn emission_ms(&self) -> u64 {
        (self.period.as_millis() as u64 / u64::from(self.count)).max(1)
    }

    fn tolerance_ms(&self) -> u64 {
        self.emission_ms() * u64::from(self.count - 1)
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
        let decision = match self.remote(policy, &key).await {
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
        };
        if let Some(d) = &decision
            && !d.allowed
        {
            crate::metrics::rate_limited(d.policy.name);
        }
        decision
    }

    /// Checks `policy` for the client's address (see [`client_subject`]).
    pub async fn check_ip(&self, policy: Policy, req: &HttpRequest) -> Option<Decision> {
        self.check(policy, &client_subject(req, &self.config)).await
    }

    /// The request-wide budget: `USER` for the subject of a verified access token (`user`), `ANON`
    /// for the client's address otherwise.
    pub async fn check_request(&self, user: Option<domain::UserId>, req: &HttpRequest) -> Option<Decision> {
        match user {
            Some(id) => self.check(self.config.user, &id.to_string()).await,
            None => self.check_ip(self.config.anon, req).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_proxies;

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

    #[tokio::test]
    async fn local_fallback_admits_exactly_the_burst() {
        let pool = bb8::Pool::builder()
            .build_unchecked(crate::infra::redis_pool::RedisManager::new("redis://127.0.0.1:1").unwrap());
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
