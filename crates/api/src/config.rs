//! Typed configuration, read once from the environment and passed explicitly.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DATABASE_URL` | – (required) | Postgres URL |
//! | `REDIS_URL` | `redis://127.0.0.1:6379` | Redis URL |
//! | `REDIS_PREFIX` | `app` | prefix of every Redis key this process writes |
//! | `API_ADDR` | `127.0.0.1:8080` | listen address |
//! | `API_WORKERS` | number of cores | actix worker threads |
//! | `APP_ENV` | `development` | `development`, `test` or `production` |
//! | `JWT_SECRET` | dev-only value outside production | HS256 secret, ≥ 32 bytes |
//! | `JWT_PRIVATE_KEY_FILE`, `JWT_PUBLIC_KEY_FILE` | – | Ed25519 PEM pair (EdDSA) instead of the secret |
//! | `ACCESS_TOKEN_TTL` | `15m` | access-token lifetime (`900`, `30s`, `15m`, `12h`, `30d`) |
//! | `REFRESH_TOKEN_TTL` | `30d` | session (refresh-token family) lifetime |
//! | `BCRYPT_COST` | `12` | bcrypt cost; production refuses < 12 |
//! | `PUBLIC_URL` | `http://localhost:8080` | base of links in e-mails; also the JWT issuer |
//! | `LOG_FORMAT` | `pretty` in development, else `json` | log output format |
//! | `SENTRY_DSN` | – | error reporting (panics, 5xx, `error!` events); off when unset |
//! | `SENTRY_ENVIRONMENT` / `SENTRY_RELEASE` | `APP_ENV` / crate version | tags of every reported event |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT`, other `OTEL_*` | – (traces off) | read by the OpenTelemetry SDK itself (`telemetry::OTEL_ENV`) |
//! | `DATABASE_POOL_SIZE` | `16` | Postgres pool size |
//! | `REDIS_POOL_SIZE` | `16` | Redis pool size |
//! | `CACHE_ENABLED` | `true` | cache-aside in Redis plus the near cache: admin user list and users, the catalogue, each user's task pages (see [`crate::infra::cache`]) |
//! | `CACHE_TTL` | `60s` | lifetime of every cache entry |
//! | `AUTH_CACHE_ENABLED` | `true` | per-instance cache of live sessions, exact through the users' auth epochs in Redis and the invalidation bus's leases (see [`crate::infra::session_cache`], [`crate::infra::bus`]) |
//! | `AUTH_CACHE_MAX_AGE` | `60s` | longest a cached session is trusted without asking Postgres |
//! | `RATE_LIMIT_ENABLED` | `true` | all rate limits on/off |
//! | `RATE_LIMIT_<POLICY>` | see [`RateLimitConfig::DEFAULTS`] | `<count>/<seconds>` for LOGIN, SIGNUP, FORGOT, RESET, REFRESH, USER, ANON, OAUTH |
//! | `OIDC_PROVIDERS`, `OIDC_<NAME>_ISSUER`, `OIDC_<NAME>_CLIENT_ID`, `OIDC_<NAME>_CLIENT_SECRET` | – (none) | OpenID Connect providers (see [`oidc`]) |
//! | `OAUTH_RETURN_URLS` | `{PUBLIC_URL}/login` | comma-separated exact `return_to` URLs of the OpenID login |
//! | `RATE_LIMIT_IPV6_PREFIX` | `64` | per-IP policies count an IPv6 client by its network of this many bits (1–128) |
//! | `TRUSTED_PROXIES` | – | comma-separated IPs/CIDRs whose `X-Forwarded-For` is believed |
//! | `REQUEST_TIMEOUT` | `30s` | longest a request may be handled; then 503 problem `request_timeout` (with `Retry-After`), or 408 when the handler is still waiting for the client's body |
//! | `CLIENT_REQUEST_TIMEOUT` | `10s` | time a client has to send a request head; then 408 problem (see [`crate::http::wire`]) |
//! | `CLIENT_DISCONNECT_TIMEOUT` | `2s` | time a client has to finish closing a connection |
//! | `KEEP_ALIVE` | `5s` | idle keep-alive of a connection; `off` closes after each response |
//! | `MAX_CONNECTIONS` | `25000` | concurrent connections per worker thread; further ones wait in the backlog |
//! | `CORS_ORIGINS` | – (none) | comma-separated exact origins (`https://app.example.com`) allowed cross-origin |
//! | `HSTS` | on when `PUBLIC_URL` is `https://` | send `Strict-Transport-Security` |
//! | `METRICS_ADDR` | – | serve `/metrics` on this address instead of the API port |
//!
//! Durations: `500ms`, `30s`, `15m`, `12h`, `30d` or plain seconds. Every setting struct of the
//! API lives here; the pieces that use one receive it when they are built.

use std::{
    env,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use actix_web::http::Uri;
use anyhow::{Context, bail};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};

/// The secret used when none is configured outside production. Production refuses it.
pub const DEV_JWT_SECRET: &str = "development-only-jwt-secret-do-not-use-in-production";
/// The placeholder in `.env.example`. Production refuses it too.
pub const EXAMPLE_JWT_SECRET: &str = "change-me-to-a-random-secret-of-at-least-32-bytes";
/// The audience every access token is issued for.
pub const JWT_AUDIENCE: &str = "taskshop-api";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Test,
    Production,
}

impl FromStr for AppEnv {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "development" | "dev" => Ok(Self::Development),
            "test" => Ok(Self::Test),
            "production" | "prod" => Ok(Self::Production),
            other => bail!("APP_ENV must be development, test or production, not {other:?}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub enum JwtKeySource {
    Secret(SecretString),
    Ed25519 { private_pem: PathBuf, public_pem: PathBuf },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub app_env: AppEnv,
    pub database_url: SecretString,
    pub database_pool_size: u32,
    pub redis_url: SecretString,
    pub redis_pool_size: u32,
    pub redis_prefix: String,
    /// `OUTBOX_VISIBILITY_TIMEOUT` (default 60s, as the worker's): a job the API pushed and no
    /// handler finished within this is pushed again by the worker's outbox dispatcher.
    pub outbox_visibility: Duration,
    pub api_addr: SocketAddr,
    pub api_workers: Option<usize>,
    pub jwt: JwtKeySource,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub bcrypt_cost: u32,
    pub public_url: String,
    pub log_format: LogFormat,
    pub cache_enabled: bool,
    pub cache_ttl: Duration,
    /// `AUTH_CACHE_ENABLED`, `AUTH_CACHE_MAX_AGE`.
    pub auth_cache: AuthCacheConfig,
    /// `RATE_LIMIT_*` (policies, `RATE_LIMIT_IPV6_PREFIX`) and `TRUSTED_PROXIES`.
    pub rate_limits: RateLimitConfig,
    /// Timeouts, connection limits, CORS, HSTS, metrics listener.
    pub http: HttpSettings,
    /// `SHOP_CURRENCIES`, `ORDER_PAYMENT_TIMEOUT`, `PAYMENT_WEBHOOK_SECRET`.
    pub shop: ShopConfig,
    /// `OIDC_PROVIDERS` (and each provider's variables), `OAUTH_RETURN_URLS`.
    pub oidc: oidc::OidcConfig,
    /// `SENTRY_DSN` (error reporting off without it), `SENTRY_ENVIRONMENT` (default `APP_ENV`),
    /// `SENTRY_RELEASE` (default the crate version).
    pub sentry: Option<telemetry::SentrySettings>,
}

pub mod oidc;

/// The session cache's settings (see [`crate::infra::session_cache`]).
#[derive(Debug, Clone, Copy)]
pub struct AuthCacheConfig {
    pub enabled: bool,
    /// Longest an entry is trusted: the bound of the one window the epochs leave open (a
    /// revoking instance cut off from Redis while the others are not).
    pub max_age: Duration,
}

impl Default for AuthCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_age: Duration::from_secs(60),
        }
    }
}

/// The webhook secret used when none is configured outside production (`just webhook` signs
/// with it). Production refuses it.
pub const DEV_WEBHOOK_SECRET: &str = "development-only-payment-webhook-secret";
/// The placeholder in `.env.example`. Production refuses it too.
pub const EXAMPLE_WEBHOOK_SECRET: &str = "change-me-to-the-payment-providers-signing-secret";

/// The shop's settings.
#[derive(Debug, Clone)]
pub struct ShopConfig {
    /// `SHOP_CURRENCIES` (default `EUR,USD,GBP,JPY`): the ISO 4217 codes products may be priced in.
    pub currencies: Vec<domain::shop::Currency>,
    /// `ORDER_PAYMENT_TIMEOUT` (default 15m): an order unpaid this long after creation expires.
    pub payment_timeout: Duration,
    /// `PAYMENT_WEBHOOK_SECRET`: the key of the provider's `Payment-Signature` HMAC.
    pub webhook_secret: SecretString,
}

impl ShopConfig {
    pub fn from_env(prod: bool) -> anyhow::Result<Self> {
        let currencies =
            domain::shop::Currency::parse_list(&var("SHOP_CURRENCIES").unwrap_or_else(|| "EUR,USD,GBP,JPY".into()))
                .map_err(anyhow::Error::msg)
                .context("SHOP_CURRENCIES")?;
        let payment_timeout = parse_duration(&var("ORDER_PAYMENT_TIMEOUT").unwrap_or_else(|| "15m".into()))
            .context("ORDER_PAYMENT_TIMEOUT")?;
        if payment_timeout < Duration::from_secs(1) {
            bail!("ORDER_PAYMENT_TIMEOUT must be at least 1s");
        }
        let webhook_secret = match var("PAYMENT_WEBHOOK_SECRET") {
            Some(s) if prod && (s == DEV_WEBHOOK_SECRET || s == EXAMPLE_WEBHOOK_SECRET) => {
                bail!("PAYMENT_WEBHOOK_SECRET is a development placeholder; production needs the provider's secret")
            }
            Some(s) if prod && s.len() < 16 => bail!("PAYMENT_WEBHOOK_SECRET must be at least 16 bytes in production"),
            Some(s) => s,
            None if prod => bail!("PAYMENT_WEBHOOK_SECRET is required in production"),
            None => DEV_WEBHOOK_SECRET.to_owned(),
        };
        Ok(Self {
            currencies,
            payment_timeout,
            webhook_secret: webhook_secret.into(),
        })
    }
}

/// `500ms`, `30s`, `15m`, `12h`, `30d` or plain seconds (see `domain::duration`).
pub fn parse_duration(raw: &str) -> anyhow::Result<Duration> {
    domain::duration::parse(raw).map_err(anyhow::Error::msg)
}

fn var(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parsed<T: FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e| anyhow::anyhow!("{name}={v:?} is invalid: {e}")),
    }
}

impl Config {
    /// Loads from the process environment (after `.env`, if present, in development).
    pub fn from_env() -> anyhow::Result<Self> {
        let app_env: AppEnv = parsed("APP_ENV", AppEnv::Development)?;
        let prod = app_env == AppEnv::Production;

        let database_url = var("DATABASE_URL").context("DATABASE_URL is not set")?;
        let redis_url = var("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into());

        let jwt = match (
            var("JWT_PRIVATE_KEY_FILE"),
            var("JWT_PUBLIC_KEY_FILE"),
            var("JWT_SECRET"),
        ) {
            (Some(private_pem), Some(public_pem), _) => JwtKeySource::Ed25519 {
                private_pem: private_pem.into(),
                public_pem: public_pem.into(),
            },
            (Some(_), None, _) | (None, Some(_), _) => {
                bail!("set both JWT_PRIVATE_KEY_FILE and JWT_PUBLIC_KEY_FILE, or neither")
            }
            (None, None, Some(secret)) => {
                if secret.len() < 32 {
                    bail!("JWT_SECRET must be at least 32 bytes");
                }
                if prod && (secret == DEV_JWT_SECRET || secret == EXAMPLE_JWT_SECRET) {
                    bail!("JWT_SECRET is a development placeholder; production needs a real random secret");
                }
                JwtKeySource::Secret(secret.into())
            }
            (None, None, None) if prod => {
                bail!("JWT_SECRET (or a JWT key pair) is required in production")
            }
            (None, None, None) => JwtKeySource::Secret(DEV_JWT_SECRET.into()),
        };

        let bcrypt_cost: u32 = parsed("BCRYPT_COST", 12)?;
        if !(4..=31).contains(&bcrypt_cost) {
            bail!("BCRYPT_COST must be between 4 and 31");
        }
        if prod && bcrypt_cost < 12 {
            bail!("BCRYPT_COST must be at least 12 in production");
        }

        let access_token_ttl =
            parse_duration(&var("ACCESS_TOKEN_TTL").unwrap_or_else(|| "15m".into())).context("ACCESS_TOKEN_TTL")?;
        let refresh_token_ttl =
            parse_duration(&var("REFRESH_TOKEN_TTL").unwrap_or_else(|| "30d".into())).context("REFRESH_TOKEN_TTL")?;
        if refresh_token_ttl <= access_token_ttl {
            bail!("REFRESH_TOKEN_TTL must be longer than ACCESS_TOKEN_TTL");
        }

        let log_format = match var("LOG_FORMAT").as_deref() {
            Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => bail!("LOG_FORMAT must be json or pretty, not {other:?}"),
            None if app_env == AppEnv::Development => LogFormat::Pretty,
            None => LogFormat::Json,
        };

        let public_url = var("PUBLIC_URL").unwrap_or_else(|| "http://localhost:8080".into());
        let public_url = public_url.trim_end_matches('/').to_owned();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            bail!("PUBLIC_URL must start with http:// or https://");
        }
        let oidc = oidc::OidcConfig::from_lookup(prod, &public_url, var)?;

        Ok(Self {
            app_env,
            database_url: database_url.into(),
            database_pool_size: parsed("DATABASE_POOL_SIZE", 16)?,
            redis_url: redis_url.into(),
            redis_pool_size: parsed("REDIS_POOL_SIZE", 16)?,
            redis_prefix: var("REDIS_PREFIX").unwrap_or_else(|| "app".into()),
            outbox_visibility: parse_duration(&var("OUTBOX_VISIBILITY_TIMEOUT").unwrap_or_else(|| "60s".into()))
                .context("OUTBOX_VISIBILITY_TIMEOUT")?,
            api_addr: parsed("API_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            api_workers: var("API_WORKERS")
                .map(|v| v.parse())
                .transpose()
                .context("API_WORKERS")?,
            jwt,
            access_token_ttl,
            refresh_token_ttl,
            bcrypt_cost,
            // Before `public_url` moves: it decides the HSTS default.
            http: HttpSettings::from_env(&public_url)?,
            public_url,
            log_format,
            cache_enabled: parsed("CACHE_ENABLED", true)?,
            cache_ttl: parse_duration(&var("CACHE_TTL").unwrap_or_else(|| "60s".into())).context("CACHE_TTL")?,
            auth_cache: AuthCacheConfig {
                enabled: parsed("AUTH_CACHE_ENABLED", true)?,
                max_age: parse_duration(&var("AUTH_CACHE_MAX_AGE").unwrap_or_else(|| "60s".into()))
                    .context("AUTH_CACHE_MAX_AGE")?,
            },
            rate_limits: RateLimitConfig::from_env()?,
            shop: ShopConfig::from_env(prod)?,
            oidc,
            sentry: var("SENTRY_DSN").map(|dsn| telemetry::SentrySettings {
                dsn,
                environment: var("SENTRY_ENVIRONMENT")
                    .or_else(|| var("APP_ENV"))
                    .unwrap_or_else(|| "development".into()),
                release: var("SENTRY_RELEASE").unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
            }),
        })
    }

    pub fn jwt_keys(&self) -> anyhow::Result<auth::JwtKeys> {
        match &self.jwt {
            JwtKeySource::Secret(s) => Ok(auth::JwtKeys::hs256(s.expose_secret().as_bytes())?),
            JwtKeySource::Ed25519 {
                private_pem,
                public_pem,
            } => {
                let private = std::fs::read(private_pem)
                    .with_context(|| format!("reading JWT_PRIVATE_KEY_FILE {}", private_pem.display()))?;
                let public = std::fs::read(public_pem)
                    .with_context(|| format!("reading JWT_PUBLIC_KEY_FILE {}", public_pem.display()))?;
                Ok(auth::JwtKeys::eddsa(&private, &public)?)
            }
        }
    }
}

// ---- Rate limits (used by `infra::ratelimit`) ----

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
    /// `RATE_LIMIT_OAUTH`: OpenID Connect authorize and callback requests, per IP.
    pub oauth: Policy,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Per-IP policies count IPv6 clients by their network of this many bits.
    pub ipv6_prefix: u8,
}

impl RateLimitConfig {
    pub const DEFAULTS: [(&'static str, &'static str); 8] = [
        ("LOGIN", "10/60"),
        ("SIGNUP", "20/3600"),
        ("FORGOT", "5/3600"),
        ("RESET", "10/3600"),
        ("REFRESH", "30/60"),
        ("USER", "1200/60"),
        ("ANON", "300/60"),
        ("OAUTH", "30/60"),
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
            oauth: get("OAUTH")?,
            trusted_proxies,
            ipv6_prefix,
        })
    }

    /// Every policy (the `policy` labels of `rate_limit_rejections_total`).
    pub fn policies(&self) -> [Policy; 8] {
        [
            self.login,
            self.signup,
            self.forgot,
            self.reset,
            self.refresh,
            self.user,
            self.anon,
            self.oauth,
        ]
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
            oauth: p("OAUTH"),
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
        "OAUTH" => "oauth",
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

// ---- HTTP server and middleware (used by `http::hardening`, `http::wire`, `startup`) ----

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
    /// `SHUTDOWN_DELAY`: after SIGTERM, `/health/ready` answers 503 at once while the listener
    /// keeps serving this long (load balancers and Kubernetes endpoints stop routing), then the
    /// server stops accepting and finishes in-flight requests. `0s`/`off`: stop at once.
    pub shutdown_delay: Duration,
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
            shutdown_delay: Duration::from_secs(5),
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
        let shutdown_delay = match var("SHUTDOWN_DELAY").as_deref().map(str::trim) {
            None => d.shutdown_delay,
            Some("off" | "0" | "0s" | "0ms") => Duration::ZERO,
            Some(v) => parse_duration(v).context("SHUTDOWN_DELAY")?,
        };
        Ok(Self {
            request_timeout: duration("REQUEST_TIMEOUT", d.request_timeout)?,
            client_request_timeout: duration("CLIENT_REQUEST_TIMEOUT", d.client_request_timeout)?,
            client_disconnect_timeout: duration("CLIENT_DISCONNECT_TIMEOUT", d.client_disconnect_timeout)?,
            keep_alive,
            max_connections,
            cors_origins,
            hsts,
            metrics_addr,
            shutdown_delay,
        })
    }
}

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

/// What the connection guard ([`crate::http::wire::Guarded`]) needs to know, shared by every
/// connection (derived from [`HttpSettings`]).
#[derive(Debug, Clone, Copy)]
pub struct WireSettings {
    /// `CLIENT_REQUEST_TIMEOUT`: how long a client has to send a request head.
    pub head_timeout: Duration,
    /// Send `Strict-Transport-Security` (as every other response does).
    pub hsts: bool,
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
    fn app_env_parse() {
        assert_eq!("production".parse::<AppEnv>().unwrap(), AppEnv::Production);
        assert!("staging".parse::<AppEnv>().is_err());
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
    fn ipv6_prefix_parses() {
        assert_eq!(parse_ipv6_prefix("64").unwrap(), 64);
        assert_eq!(parse_ipv6_prefix(" /56 ").unwrap(), 56);
        assert_eq!(parse_ipv6_prefix("128").unwrap(), 128);
        for bad in ["0", "129", "-1", "x", ""] {
            assert!(parse_ipv6_prefix(bad).is_err(), "{bad:?}");
        }
    }

    /// Every policy is named after its environment name in lower case.
    #[test]
    fn policies_are_named_after_their_variables() {
        let c = RateLimitConfig::disabled();
        let mut used: Vec<&str> = c.policies().iter().map(|p| p.name).collect();
        let mut registered: Vec<String> = RateLimitConfig::DEFAULTS
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        used.sort_unstable();
        registered.sort_unstable();
        assert_eq!(used, registered);
    }
}
