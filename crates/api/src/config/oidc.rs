//! OpenID Connect providers, from the environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `OIDC_PROVIDERS` | – (none) | comma-separated provider names (`google,corp`): lower case, `[a-z][a-z0-9_]*` |
//! | `OIDC_<NAME>_ISSUER` | `https://accounts.google.com` for `google`, else required | the issuer; endpoints and keys come from its discovery document |
//! | `OIDC_<NAME>_CLIENT_ID`, `OIDC_<NAME>_CLIENT_SECRET` | – (required) | the client registered at the provider |
//! | `OAUTH_RETURN_URLS` | `{PUBLIC_URL}/login` | comma-separated `return_to` URLs allowed, matched exactly |
//!
//! Production requires `https://` issuers; elsewhere an `http://` issuer on a loopback address
//! (`127.0.0.1`, `[::1]`, `localhost`) is accepted too, so the whole flow runs locally.

use anyhow::{Context, bail};
use secrecy::SecretString;

/// One configured provider.
#[derive(Debug, Clone)]
pub struct OidcProvider {
    /// The configured name (`google`): the `{provider}` of the routes.
    pub name: String,
    /// Without a trailing slash, as the ID token's `iss` must read.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
}

#[derive(Debug, Clone, Default)]
pub struct OidcConfig {
    pub providers: Vec<OidcProvider>,
    /// Exact URLs `?return_to=` may name.
    pub return_urls: Vec<String>,
}

pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

impl OidcConfig {
    /// Reads the variables above through `var` (the process environment in `Config::from_env`).
    pub fn from_lookup(prod: bool, public_url: &str, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut providers = Vec::new();
        for name in list(var("OIDC_PROVIDERS")) {
            let name = name.to_ascii_lowercase();
            if !valid_name(&name) {
                bail!("OIDC_PROVIDERS: {name:?} is not a valid provider name ([a-z][a-z0-9_]*, at most 32)");
            }
            if providers.iter().any(|p: &OidcProvider| p.name == name) {
                bail!("OIDC_PROVIDERS names {name:?} twice");
            }
            let upper = name.to_ascii_uppercase();
            let key = |suffix: &str| format!("OIDC_{upper}_{suffix}");
            let issuer = match var(&key("ISSUER")) {
                Some(i) => i,
                None if name == "google" => GOOGLE_ISSUER.to_owned(),
                None => bail!("{} is required for the provider {name:?}", key("ISSUER")),
            };
            let issuer = issuer.trim().trim_end_matches('/').to_owned();
            check_issuer(prod, &issuer).with_context(|| key("ISSUER"))?;
            let client_id = var(&key("CLIENT_ID")).with_context(|| format!("{} is required", key("CLIENT_ID")))?;
            let client_secret =
                var(&key("CLIENT_SECRET")).with_context(|| format!("{} is required", key("CLIENT_SECRET")))?;
            providers.push(OidcProvider {
                name,
                issuer,
                client_id: client_id.trim().to_owned(),
                client_secret: client_secret.into(),
            });
        }
        let return_urls = match var("OAUTH_RETURN_URLS") {
            Some(raw) => list(Some(raw)),
            None => vec![format!("{public_url}/login")],
        };
        for url in &return_urls {
            if !(url.starts_with("https://") || (!prod && url.starts_with("http://"))) {
                bail!("OAUTH_RETURN_URLS: {url:?} must be an absolute https:// URL (http:// outside production)");
            }
            if url.contains('#') {
                bail!("OAUTH_RETURN_URLS: {url:?} must not have a fragment (the login code goes there)");
            }
        }
        Ok(Self { providers, return_urls })
    }

    pub fn provider(&self, name: &str) -> Option<&OidcProvider> {
        self.providers.iter().find(|p| p.name == name)
    }
}

fn list(raw: Option<String>) -> Vec<String> {
    raw.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `https://host…` always; `http://` only outside production and only on a loopback host.
pub fn check_issuer(prod: bool, issuer: &str) -> anyhow::Result<()> {
    let uri: actix_web::http::Uri = issuer.parse().context("not a URL")?;
    let host = uri.host().context("no host")?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if prod => bail!("production requires an https:// issuer, not {issuer:?}"),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => {
            bail!("an http:// issuer must be on a loopback address (127.0.0.1, [::1], localhost): {issuer:?}")
        }
        _ => bail!("the issuer must be an https:// URL: {issuer:?}"),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(prod: bool, vars: &[(&str, &str)]) -> anyhow::Result<OidcConfig> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        OidcConfig::from_lookup(prod, "https://shop.example.com", |k| map.get(k).cloned())
    }

    #[test]
    fn none_configured_by_default_and_the_login_page_is_the_return_url() {
        let c = load(true, &[]).unwrap();
        assert!(c.providers.is_empty());
        assert_eq!(c.return_urls, ["https://shop.example.com/login"]);
    }

    #[test]
    fn google_defaults_its_issuer_and_others_need_theirs() {
        let c = load(
            true,
            &[
                ("OIDC_PROVIDERS", "Google, corp"),
                ("OIDC_GOOGLE_CLIENT_ID", "gid"),
                ("OIDC_GOOGLE_CLIENT_SECRET", "gs"),
                ("OIDC_CORP_ISSUER", "https://id.corp.example/"),
                ("OIDC_CORP_CLIENT_ID", "cid"),
                ("OIDC_CORP_CLIENT_SECRET", "cs"),
            ],
        )
        .unwrap();
        assert_eq!(c.provider("google").unwrap().issuer, GOOGLE_ISSUER);
        assert_eq!(c.provider("corp").unwrap().issuer, "https://id.corp.example");
        assert!(
            load(
                true,
                &[
                    ("OIDC_PROVIDERS", "corp"),
                    ("OIDC_CORP_CLIENT_ID", "x"),
                    ("OIDC_CORP_CLIENT_SECRET", "y")
                ]
            )
            .is_err()
        );
        assert!(load(true, &[("OIDC_PROVIDERS", "google"), ("OIDC_GOOGLE_CLIENT_ID", "x")]).is_err());
        assert!(load(true, &[("OIDC_PROVIDERS", "no-dash")]).is_err());
    }

    #[test]
    fn http_issuers_only_on_loopback_outside_production() {
        assert!(check_issuer(false, "http://127.0.0.1:9000").is_ok());
        assert!(check_issuer(false, "http://localhost:9000/realm").is_ok());
        assert!(check_issuer(false, "http://[::1]:9000").is_ok());
        assert!(check_issuer(false, "http://id.example.com").is_err());
        assert!(check_issuer(true, "http://127.0.0.1:9000").is_err());
        assert!(check_issuer(true, "https://id.example.com").is_ok());
        assert!(check_issuer(true, "ftp://id.example.com").is_err());
    }
}
