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
//! | `DATABASE_POOL_SIZE` | `16` | Postgres pool size |
//! | `REDIS_POOL_SIZE` | `16` | Redis pool size |
//! | `CACHE_ENABLED` | `true` | cache-aside for shared reads (admin user list, users) |
//! | `CACHE_TTL` | `60s` | lifetime of every cache entry |
//! | `RATE_LIMIT_ENABLED` | `true` | all rate limits on/off |
//! | `RATE_LIMIT_<POLICY>` | see `ratelimit.rs` | `<count>/<seconds>` for LOGIN, SIGNUP, FORGOT, RESET, REFRESH, USER, ANON |
//! | `RATE_LIMIT_IPV6_PREFIX` | `64` | per-IP policies count an IPv6 client by its network of this many bits (1–128) |
//! | `TRUSTED_PROXIES` | – | comma-separated IPs/CIDRs whose `X-Forwarded-For` is believed |

use std::{env, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use anyhow::{Context, bail};
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
    /// `RATE_LIMIT_*` (policies, `RATE_LIMIT_IPV6_PREFIX`) and `TRUSTED_PROXIES`: see `ratelimit.rs`.
    pub rate_limits: crate::ratelimit::RateLimitConfig,
    /// Timeouts, connection limits, CORS, HSTS, metrics listener: see `hardening.rs`.
    pub http: crate::hardening::HttpSettings,
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
            http: crate::hardening::HttpSettings::from_env(&public_url)?,
            public_url,
            log_format,
            cache_enabled: parsed("CACHE_ENABLED", true)?,
            cache_ttl: parse_duration(&var("CACHE_TTL").unwrap_or_else(|| "60s".into())).context("CACHE_TTL")?,
            rate_limits: crate::ratelimit::RateLimitConfig::from_env()?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_env_parse() {
        assert_eq!("production".parse::<AppEnv>().unwrap(), AppEnv::Production);
        assert!("staging".parse::<AppEnv>().is_err());
    }
}
