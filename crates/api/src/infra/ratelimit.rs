//! Per-endpoint rate limits shared through Redis: GCRA in one Lua script (atomic, exact across
//! any number of API instances, clocked by Redis' own `TIME` so instance clocks do not matter).
//! The two budgets every request spends (`USER`, `ANON`) are taken in batches that an instance
//! spends from memory ([`Reservations`]: never more admitted than the policy, one round trip per
//! batch instead of per request). This module is the limiter ([`RateLimiter`]: checks, counts,
//! reservations, the in-process fallback, the `rate_limit_rejections_total` counter) and the
//! subjects it counts against; the policies' settings are [`crate::config::RateLimitConfig`], and [`crate::http::ratelimit`] applies the
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
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
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
    fn allowed(policy: Policy, remaining: u64, reset_ms: u64) -> Self {
        Self {
            policy,
            allowed: true,
            remaining,
            reset_secs: ceil_secs(reset_ms),
            retry_after_secs: 0,
        }
    }

    fn refused(policy: Policy, reset_ms: u64, retry_ms: u64) -> Self {
        Self {
            policy,
            allowed: false,
            remaining: 0,
            reset_secs: ceil_secs(reset_ms),
            retry_after_secs: ceil_secs(retry_ms),
        }
    }

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

/// GCRA, taking up to `ARGV[3]` tokens at once after giving back `ARGV[4]` unused ones (a
/// reservation that expired: as if those requests had never been made). Returns the tokens
/// granted (0 = refused), the tokens left after them, the milliseconds until the next one and
/// until the budget is full again. With 1 and 0 it is the plain one-request check.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local unused = tonumber(ARGV[4])
local stored = redis.call('GET', KEYS[1])
local tat = tonumber(stored or now) - unused * interval
if tat < now then tat = now end
if tat - now > tolerance then
  if unused > 0 then redis.call('SET', KEYS[1], tat, 'PX', tat - now) end
  return {0, 0, tat - now - tolerance, tat - now}
end
local available = math.floor((now + tolerance - tat) / interval) + 1
local granted = math.min(want, available)
local new_tat = tat + granted * interval
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {granted, available - granted, 0, new_tat - now}
";

/// What one run of [`GCRA`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Taken {
    granted: u32,
    /// Tokens the budget has left after the grant.
    left: u64,
    retry_ms: u64,
    reset_ms: u64,
}

impl Taken {
    /// The decision for the request that made the take, `remaining` what the budget has left
    /// plus what this instance holds of it.
    fn decision(self, policy: Policy, held: u32) -> Decision {
        if self.granted > 0 {
            Decision::allowed(policy, self.left + u64::from(held), self.reset_ms)
        } else {
            Decision::refused(policy, self.reset_ms, self.retry_ms)
        }
    }
}

fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// How long an instance may spend tokens it reserved; whatever is left then goes back to the
/// shared budget with the subject's next take.
const RESERVE_FOR: Duration = Duration::from_secs(1);
/// The most tokens one take reserves (and never more than a sixteenth of the policy's burst).
const RESERVE_MAX: u32 = 64;
/// Subjects held at once; past it the idle ones are dropped, their unused tokens with them.
const RESERVE_SUBJECTS: usize = 50_000;

/// The request-wide budgets (`USER`, `ANON`) are charged on every request, so checking them one
/// Redis round trip at a time would cost every request a round trip. Instead an instance
/// *reserves* tokens of a subject's shared budget in one take and spends them from memory: the
/// first take of a subject is one token (a client that makes one request costs exactly what it
/// did), a batch spent before its second is up doubles the next one (up to [`RESERVE_MAX`], and a
/// sixteenth of the burst), a batch that expires sets the next to what was used of it, and unused
/// tokens go back to Redis with the next take (the script counts them as never spent). A refusal
/// stands locally until Redis said the next token comes.
///
/// So no subject is ever admitted more than its policy allows across all instances (every
/// admitted request spent a token taken from the one budget in Redis); what the batching can do
/// is refuse early, while another instance holds tokens it has not spent — at most one batch per
/// instance, for at most [`RESERVE_FOR`]. The `RateLimit` header's remaining count is the budget
/// as of this instance's last take plus what it still holds.
#[derive(Default)]
struct Reservations {
    held: HashMap<String, Held>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    /// Reserved and not spent yet.
    tokens: u32,
    /// How many the last take asked for.
    batch: u32,
    /// Until when `tokens` may be spent.
    until: Instant,
    /// What the budget had left after the last take.
    left: u64,
    /// When the budget is full again, as of the last take.
    full_at: Instant,
    /// A refusal that stands until then.
    refused_until: Option<Instant>,
}

#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// Decided from this instance's reservation.
    Here(Decision),
    /// Ask Redis for `want` tokens, giving back `unused` ones.
    Take { want: u32, unused: u32 },
}

fn ms_until(later: Instant, now: Instant) -> u64 {
    later.saturating_duration_since(now).as_millis() as u64
}

impl Reservations {
    fn max_batch(policy: Policy) -> u32 {
        (policy.count / 16).clamp(1, RESERVE_MAX)
    }

    fn admit(&mut self, key: &str, policy: Policy, now: Instant) -> Admit {
        let Some(h) = self.held.get_mut(key) else {
            return Admit::Take { want: 1, unused: 0 };
        };
        if h.until > now && h.tokens > 0 {
            h.tokens -= 1;
            let remaining = h.left + u64::from(h.tokens);
            return Admit::Here(Decision::allowed(policy, remaining, ms_until(h.full_at, now)));
        }
        if let Some(until) = h.refused_until.filter(|&u| u > now) {
            let (reset_ms, retry_ms) = (ms_until(h.full_at, now), ms_until(until, now));
            return Admit::Here(Decision::refused(policy, reset_ms, retry_ms));
        }
        let want = if h.until > now {
            h.batch.saturating_mul(2) // spent in time: demand outruns the batch
        } else {
            h.batch - h.tokens.min(h.batch) // expired: what was used of it
        };
        let unused = std::mem::take(&mut h.tokens);
        Admit::Take {
            want: want.clamp(1, Self::max_batch(policy)),
            unused,
        }
    }

    /// Keeps what a take granted beyond the one token the request spends, and answers for it.
    fn record(&mut self, key: &str, policy: Policy, taken: Taken, now: Instant) -> Decision {
        if self.held.len() >= RESERVE_SUBJECTS && !self.held.contains_key(key) {
            self.held
                .retain(|_, h| h.until > now || h.refused_until.is_some_and(|u| u > now));
            if self.held.len() >= RESERVE_SUBJECTS {
                self.held.clear();
            }
        }
        let h = self.held.entry(key.to_owned()).or_insert(Held {
            tokens: 0,
            batch: 1,
            until: now,
            left: 0,
            full_at: now,
            refused_until: None,
        });
        h.left = taken.left;
        h.full_at = now + Duration::from_millis(taken.reset_ms);
        if taken.granted > 0 {
            h.tokens += taken.granted - 1;
            h.batch = taken.granted;
            h.until = now + RESERVE_FOR;
            h.refused_until = None;
        } else {
            h.batch = 1;
            h.refused_until = Some(now + Duration::from_millis(taken.retry_ms));
        }
        taken.decision(policy, h.tokens)
    }
}

/// The limiter: Redis first, an in-process fallback for the policies that must not fail open.
#[derive(Clone)]
pub struct RateLimiter {
    redis: RedisPool,
    prefix: String,
    pub config: Arc<RateLimitConfig>,
    script: Arc<redis::Script>,
    local: Arc<Mutex<HashMap<String, u64>>>,
    reserved: Arc<Mutex<Reservations>>,
    round_trips: Arc<AtomicU64>,
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
            reserved: Arc::default(),
            round_trips: Arc::default(),
            started: Instant::now(),
        }
    }

    /// How many times this limiter has called on Redis to run its script, answered or not (for
    /// tests and diagnostics).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    fn key(&self, policy: Policy, subject: impl std::fmt::Display) -> String {
        format!("{}:{}:{subject}", self.prefix, policy.name)
    }

    /// Checks (and counts) one request against `policy` for `subject` (an IP, a user id…), in
    /// Redis. `None` when rate limiting is disabled.
    pub async fn check(&self, policy: Policy, subject: &str) -> Option<Decision> {
        if !self.config.enabled {
            return None;
        }
        let key = self.key(policy, subject);
        let decision = match self.remote(policy, &key, 1, 0).await {
            Ok(taken) => Some(taken.decision(policy, 0)),
            Err(e) => self.unavailable(policy, &key, &e),
        };
        counted(decision)
    }

    /// Checks `policy` for the client's address (see [`client_subject`]).
    pub async fn check_ip(&self, policy: Policy, req: &HttpRequest) -> Option<Decision> {
        self.check(policy, &client_subject(req, &self.config)).await
    }

    /// The request-wide budget: `USER` for the subject of a verified access token (`user`), `ANON`
    /// for the client's address otherwise — spent from this instance's reservation of it (see
    /// [`Reservations`]).
    pub async fn check_request(&self, user: Option<domain::UserId>, req: &HttpRequest) -> Option<Decision> {
        if !self.config.enabled {
            return None;
        }
        let (policy, key) = match user {
            Some(id) => (self.config.user, self.key(self.config.user, id)),
            None => (
                self.config.anon,
                self.key(self.config.anon, client_subject(req, &self.config)),
            ),
        };
        let admit = self.reservations().admit(&key, policy, Instant::now());
        let decision = match admit {
            Admit::Here(d) => Some(d),
            Admit::Take { want, unused } => match self.remote(policy, &key, want, unused).await {
                Ok(taken) => Some(self.reservations().record(&key, policy, taken, Instant::now())),
                Err(e) => self.unavailable(policy, &key, &e),
            },
        };
        counted(decision)
    }

    fn reservations(&self) -> std::sync::MutexGuard<'_, Reservations> {
        self.reserved.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Redis could not answer: the local fallback for the policies that guard credentials and
    /// mail, nothing (fail open) for the others.
    fn unavailable(&self, policy: Policy, key: &str, e: &anyhow::Error) -> Option<Decision> {
        match policy.name {
            "login" | "signup" | "forgot" | "reset" => {
                tracing::warn!(error = %e, policy = policy.name, "rate limiter: Redis unavailable, using the local fallback");
                Some(self.local(policy, key))
            }
            _ => {
                tracing::debug!(error = %e, policy = policy.name, "rate limiter: Redis unavailable, failing open");
                None
            }
        }
    }

    async fn remote(&self, policy: Policy, key: &str, want: u32, unused: u32) -> anyhow::Result<Taken> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let budget = Duration::from_millis(250);
        let mut conn = tokio::time::timeout(budget, self.redis.get()).await??;
        let mut invocation = self.script.key(key);
        invocation
            .arg(policy.emission_ms())
            .arg(policy.tolerance_ms())
            .arg(want)
            .arg(unused);
        let result = tokio::time::timeout(budget, invocation.invoke_async(&mut **conn)).await;
        if !matches!(result, Ok(Ok(_))) {
            conn.mark_broken();
        }
        let (granted, left, retry_ms, reset_ms): (i64, i64, i64, i64) = result??;
        let non_negative = |v: i64| v.max(0) as u64;
        Ok(Taken {
            granted: u32::try_from(granted.max(0)).unwrap_or(u32::MAX),
            left: non_negative(left),
            retry_ms: non_negative(retry_ms),
            reset_ms: non_negative(reset_ms),
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
            return Decision::refused(policy, tat - now, tat - now - tolerance);
        }
        let new_tat = tat + interval;
        map.insert(key.to_owned(), new_tat);
        let remaining = (now + tolerance + interval).saturating_sub(new_tat) / interval;
        Decision::allowed(policy, remaining, new_tat - now)
    }
}

/// Counts a refusal in `rate_limit_rejections_total`.
fn counted(decision: Option<Decision>) -> Option<Decision> {
    if let Some(d) = &decision
        && !d.allowed
    {
        crate::metrics::rate_limited(d.policy.name);
    }
    decision
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

    fn granted(granted: u32, left: u64) -> Taken {
        Taken {
            granted,
            left,
            retry_ms: 0,
            reset_ms: 5_000,
        }
    }

    #[test]
    fn reservations_double_while_spent_in_time_up_to_a_sixteenth_of_the_burst() {
        let user = Policy::parse("user", "1200/60").unwrap();
        assert_eq!(Reservations::max_batch(user), RESERVE_MAX);
        assert_eq!(Reservations::max_batch(Policy::parse("anon", "300/60").unwrap()), 18);
        assert_eq!(Reservations::max_batch(Policy::parse("user", "3/60").unwrap()), 1);

        let (mut r, t0) = (Reservations::default(), Instant::now());
        let mut left = 1200;
        let mut wants = vec![];
        let mut here = 0;
        for _ in 0..400 {
            match r.admit("u", user, t0) {
                Admit::Take { want, unused } => {
                    assert_eq!(unused, 0);
                    wants.push(want);
                    left -= u64::from(want);
                    let d = r.record("u", user, granted(want, left), t0);
                    assert!(d.allowed);
                    assert_eq!(d.remaining, left + u64::from(want - 1));
                }
                Admit::Here(d) => {
                    assert!(d.allowed);
                    here += 1;
                }
            }
        }
        // One request, then 2, 4, … tokens per take, never more than the cap.
        assert_eq!(&wants[..7], &[1, 2, 4, 8, 16, 32, 64]);
        assert!(wants[7..].iter().all(|&w| w == RESERVE_MAX), "{wants:?}");
        assert_eq!(wants.iter().sum::<u32>(), 400 + r.held["u"].tokens);
        assert_eq!(here + wants.len(), 400);
    }

    #[test]
    fn an_expired_reservation_gives_back_what_it_did_not_spend() {
        let user = Policy::parse("user", "1200/60").unwrap();
        let (mut r, t0) = (Reservations::default(), Instant::now());
        r.admit("u", user, t0);
        r.record("u", user, granted(1, 1199), t0);
        assert_eq!(r.admit("u", user, t0), Admit::Take { want: 2, unused: 0 });
        r.record("u", user, granted(2, 1197), t0);
        assert!(matches!(r.admit("u", user, t0), Admit::Here(d) if d.allowed && d.remaining == 1197));
        assert_eq!(r.admit("u", user, t0), Admit::Take { want: 4, unused: 0 });
        r.record("u", user, granted(4, 1193), t0);
        assert!(matches!(r.admit("u", user, t0), Admit::Here(d) if d.allowed && d.remaining == 1195));
        // Two of the four spent, two held when the reservation runs out: they go back, and the
        // next take asks for what was used.
        let later = t0 + RESERVE_FOR;
        assert_eq!(r.admit("u", user, later), Admit::Take { want: 2, unused: 2 });
        assert_eq!(r.held["u"].tokens, 0, "given back, not spent twice");
        // A subject of its own is not touched.
        assert_eq!(r.admit("v", user, later), Admit::Take { want: 1, unused: 0 });
    }

    #[test]
    fn a_refusal_stands_until_the_next_token() {
        let anon = Policy::parse("anon", "300/60").unwrap();
        let (mut r, t0) = (Reservations::default(), Instant::now());
        let refused = Taken {
            granted: 0,
            left: 0,
            retry_ms: 1_500,
            reset_ms: 60_000,
        };
        let d = r.record("ip", anon, refused, t0);
        assert!(!d.allowed);
        assert_eq!((d.retry_after_secs, d.reset_secs), (2, 60));
        let soon = r.admit("ip", anon, t0 + Duration::from_millis(1_000));
        assert!(
            matches!(soon, Admit::Here(d) if !d.allowed && d.retry_after_secs == 1 && d.remaining == 0),
            "{soon:?}"
        );
        assert_eq!(
            r.admit("ip", anon, t0 + Duration::from_millis(1_500)),
            Admit::Take { want: 1, unused: 0 }
        );
    }

    #[test]
    fn reservations_are_bounded() {
        let user = Policy::parse("user", "1200/60").unwrap();
        let (mut r, t0) = (Reservations::default(), Instant::now());
        for i in 0..RESERVE_SUBJECTS {
            r.record(&i.to_string(), user, granted(1, 10), t0);
        }
        // All still within their second: the table is full, so a newcomer clears it.
        r.record("new", user, granted(1, 10), t0);
        assert_eq!(r.held.len(), 1);
        for i in 1..RESERVE_SUBJECTS {
            r.record(&i.to_string(), user, granted(1, 10), t0);
        }
        // A second later they are idle: only they are dropped.
        let later = t0 + RESERVE_FOR;
        r.record("newer", user, granted(1, 10), later);
        assert_eq!(r.held.len(), 1);
        assert!(r.held.contains_key("newer"));
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
