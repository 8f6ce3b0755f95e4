//! OpenID Connect providers at run time: each provider's discovery document and JWKS (fetched
//! lazily, cached for [`CACHE_TTL`]), the authorization URL (code + PKCE S256 + nonce), the code
//! exchange (`oauth2`'s client, keeping `id_token` through [`IdTokenFields`]) and the ID token's
//! verification with `jsonwebtoken`:
//!
//! - the signature against the JWKS key named by the token's `kid`; the algorithm is the key's
//!   (its `alg`, or RS256 for an RSA key without one), and the token's header must agree;
//! - `iss` = the configured issuer, `aud` contains the client id (and `azp` is the client id when
//!   present or when there are several audiences), `exp` and `iat` with [`LEEWAY_SECS`], `nonce`;
//! - an unknown `kid` refetches the JWKS once (key rotation), at most once per
//!   [`JWKS_REFETCH_COOLDOWN`] per provider, so a flood of forged tokens cannot hammer the provider.
//!
//! Failures are [`OidcError`]s: the provider unreachable (or answering garbage) is `Unavailable`
//! (503), a refused code `InvalidCode`, a token that does not verify `InvalidIdToken`.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, Jwk, KeyAlgorithm},
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet, ExtraTokenFields,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, StandardRevocableToken,
    StandardTokenResponse, TokenUrl,
    basic::{BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType},
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::config::oidc::{OidcConfig, OidcProvider};

/// How long a discovery document and a JWKS are kept.
pub const CACHE_TTL: Duration = Duration::from_secs(3600);
/// The least time between two JWKS refetches caused by an unknown `kid`.
pub const JWKS_REFETCH_COOLDOWN: Duration = Duration::from_secs(60);
/// Clock skew allowed on `exp` and `iat`.
pub const LEEWAY_SECS: u64 = 30;
/// Every call to a provider gives up after this.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error("token exchange failed: {0}")]
    InvalidCode(String),
    #[error("invalid ID token: {0}")]
    InvalidIdToken(String),
}

/// The token response's extra fields: the ID token `BasicClient` would drop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenFields {
    pub id_token: Option<String>,
}

impl ExtraTokenFields for IdTokenFields {}

type TokenResponse = StandardTokenResponse<IdTokenFields, BasicTokenType>;
type OidcClient = oauth2::Client<
    BasicErrorResponse,
    TokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// The fields of the discovery document this client uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
}

/// The claims of a verified ID token.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    #[serde(default)]
    pub email: Option<String>,
    /// Some providers send `"true"`.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub email_verified: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    aud: Audience,
    iat: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Audience {
    Many(Vec<String>),
    /// One audience (`jsonwebtoken` has checked it is the client id).
    One(serde::de::IgnoredAny),
}

fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Text(String),
    }
    Ok(match Option::<B>::deserialize(d)? {
        Some(B::Bool(b)) => b,
        Some(B::Text(s)) => s == "true",
        None => false,
    })
}

/// What the authorize step sends the browser to, and what it must keep server-side.
#[derive(Debug)]
pub struct AuthorizeRequest {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

struct Cached<T> {
    value: Arc<T>,
    at: Instant,
}

#[derive(Default)]
struct Keys {
    keys: Option<Cached<Vec<Jwk>>>,
    last_refetch: Option<Instant>,
}

/// One provider: its configuration and caches.
pub struct Provider {
    pub config: OidcProvider,
    discovery: Mutex<Option<Cached<Discovery>>>,
    keys: Mutex<Keys>,
}

/// Every configured provider, and the HTTP client they share (no redirects, short timeouts).
#[derive(Clone)]
pub struct Providers {
    by_name: Arc<HashMap<String, Arc<Provider>>>,
    http: reqwest::Client,
}

impl Providers {
    pub fn new(config: &OidcConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(HTTP_TIMEOUT)
            .build()?;
        let by_name = config
            .providers
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    Arc::new(Provider {
                        config: p.clone(),
                        discovery: Mutex::new(None),
                        keys: Mutex::new(Keys::default()),
                    }),
                )
            })
            .collect();
        Ok(Self {
            by_name: Arc::new(by_name),
            http,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.by_name.get(name)
    }

    /// Fetches every provider's discovery document (production start-up refuses to run on one it
    /// cannot fetch or parse).
    pub async fn preload(&self) -> anyhow::Result<()> {
        for p in self.by_name.values() {
            self.discovery(p)
                .await
                .map_err(|e| anyhow::anyhow!("OIDC provider {:?} ({}): {e}", p.config.name, p.config.issuer))?;
        }
        Ok(())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let res = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| OidcError::Unavailable(format!("GET {url}: {e}")))?;
        if !res.status().is_success() {
            return Err(OidcError::Unavailable(format!("GET {url}: {}", res.status())));
        }
        res.json()
            .await
            .map_err(|e| OidcError::Unavailable(format!("GET {url}: unreadable JSON: {e}")))
    }

    /// The provider's discovery document (cached).
    pub async fn discovery(&self, p: &Provider) -> Result<Arc<Discovery>, OidcError> {
        let mut cached = p.discovery.lock().await;
        if let Some(c) = cached.as_ref()
            && c.at.elapsed() < CACHE_TTL
        {
            return Ok(c.value.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", p.config.issuer);
        let doc: Discovery = self.get_json(&url).await?;
        if doc.issuer.trim_end_matches('/') != p.config.issuer {
            return Err(OidcError::Unavailable(format!(
                "the discovery document names the issuer {:?}, not the configured one",
                doc.issuer
            )));
        }
        for endpoint in [&doc.authorization_endpoint, &doc.token_endpoint, &doc.jwks_uri] {
            crate::config::oidc::check_issuer(false, endpoint)
                .map_err(|e| OidcError::Unavailable(format!("discovery endpoint {endpoint:?}: {e}")))?;
        }
        let value = Arc::new(doc);
        *cached = Some(Cached {
            value: value.clone(),
            at: Instant::now(),
        });
        Ok(value)
    }

    fn client(&self, p: &Provider, doc: &Discovery, redirect_uri: &str) -> Result<OidcClient, OidcError> {
        let bad = |e: oauth2::url::ParseError| OidcError::Unavailable(format!("bad endpoint URL: {e}"));
        Ok(oauth2::Client::new(ClientId::new(p.config.client_id.clone()))
            .set_client_secret(ClientSecret::new(p.config.client_secret.expose_secret().to_owned()))
            .set_auth_uri(AuthUrl::new(doc.authorization_endpoint.clone()).map_err(bad)?)
            .set_token_uri(TokenUrl::new(doc.token_endpoint.clone()).map_err(bad)?)
            .set_redirect_uri(RedirectUrl::new(redirect_uri.to_owned()).map_err(bad)?))
    }

    /// The authorization URL with a fresh state, nonce and PKCE pair.
    pub async fn authorize(&self, p: &Provider, redirect_uri: &str) -> Result<AuthorizeRequest, OidcError> {
        let doc = self.discovery(p).await?;
        let client = self.client(p, &doc, redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = CsrfToken::new_random().secret().clone();
        let (url, state) = client
            .authorize_url(CsrfToken::new_random)
            .add_scope(Scope::new("openid".into()))
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .add_extra_param("nonce", nonce.clone())
            .set_pkce_challenge(challenge)
            .url();
        Ok(AuthorizeRequest {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce,
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges the code (client secret + PKCE verifier) and verifies the ID token it returns.
    pub async fn exchange(
        &self,
        p: &Provider,
        redirect_uri: &str,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<IdClaims, OidcError> {
        let doc = self.discovery(p).await?;
        let client = self.client(p, &doc, redirect_uri)?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => OidcError::InvalidCode(r.error().to_string()),
                RequestTokenError::Request(e) => OidcError::Unavailable(format!("token endpoint: {e}")),
                RequestTokenError::Parse(e, _) => OidcError::InvalidCode(format!("unreadable token response: {e}")),
                RequestTokenError::Other(e) => OidcError::InvalidCode(e),
            })?;
        let id_token = response
            .extra_fields()
            .id_token
            .as_deref()
            .ok_or_else(|| OidcError::InvalidCode("the token response has no id_token".into()))?;
        self.verify(p, &doc, id_token, nonce).await
    }

    /// The JWK named `kid`: from the cache, else from a refetch (rate-limited).
    async fn key(&self, p: &Provider, doc: &Discovery, kid: &str) -> Result<Jwk, OidcError> {
        let mut keys = p.keys.lock().await;
        let fresh = keys
            .keys
            .as_ref()
            .filter(|c| c.at.elapsed() < CACHE_TTL)
            .map(|c| c.value.clone());
        if let Some(set) = &fresh
            && let Some(k) = find(set, kid)
        {
            return Ok(k);
        }
        if fresh.is_some() {
            // A cached set without this kid: rotation, or a forged token. One refetch per cooldown.
            if keys.last_refetch.is_some_and(|t| t.elapsed() < JWKS_REFETCH_COOLDOWN) {
                return Err(OidcError::InvalidIdToken(format!("unknown key id {kid:?}")));
            }
            keys.last_refetch = Some(Instant::now());
        }
        let raw: serde_json::Value = self.get_json(&doc.jwks_uri).await?;
        // Keys this library cannot read (another kty, `use: enc`) are skipped, not fatal.
        let set: Vec<Jwk> = raw["keys"]
            .as_array()
            .map(|ks| {
                ks.iter()
                    .filter(|k| k.get("use").and_then(|u| u.as_str()).is_none_or(|u| u == "sig"))
                    .filter_map(|k| serde_json::from_value(k.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        let set = Arc::new(set);
        keys.keys = Some(Cached {
            value: set.clone(),
            at: Instant::now(),
        });
        find(&set, kid).ok_or_else(|| OidcError::InvalidIdToken(format!("unknown key id {kid:?}")))
    }

    async fn verify(&self, p: &Provider, doc: &Discovery, token: &str, nonce: &str) -> Result<IdClaims, OidcError> {
        let bad = |what: &str| OidcError::InvalidIdToken(what.to_owned());
        let header = jsonwebtoken::decode_header(token).map_err(|e| bad(&format!("header: {e}")))?;
        let kid = header.kid.as_deref().ok_or_else(|| bad("no kid"))?;
        let jwk = self.key(p, doc, kid).await?;
        let alg = algorithm_of(&jwk).ok_or_else(|| bad("the key has no usable algorithm"))?;
        if header.alg != alg {
            return Err(bad("the token's alg is not its key's"));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| bad(&format!("key: {e}")))?;
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY_SECS;
        // The discovery document's spelling (it equals the configured issuer up to a trailing
        // slash, which some providers, e.g. Auth0, put in `iss` too).
        v.set_issuer(&[&doc.issuer]);
        v.set_audience(&[&p.config.client_id]);
        v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<IdClaims>(token, &key, &v)
            .map_err(|e| bad(&format!("{e}")))?
            .claims;
        let now = chrono::Utc::now().timestamp();
        if claims.iat > now + LEEWAY_SECS as i64 {
            return Err(bad("issued in the future"));
        }
        let several = matches!(&claims.aud, Audience::Many(a) if a.len() > 1);
        match &claims.azp {
            Some(azp) if azp != &p.config.client_id => return Err(bad("azp is another client")),
            None if several => return Err(bad("several audiences and no azp")),
            _ => {}
        }
        if claims.nonce.as_deref() != Some(nonce) {
            return Err(bad("nonce mismatch"));
        }
        Ok(claims)
    }
}

fn find(set: &[Jwk], kid: &str) -> Option<Jwk> {
    set.iter().find(|k| k.common.key_id.as_deref() == Some(kid)).cloned()
}

/// The algorithm a key is for: its `alg` when it names one, else the one its type allows.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    if let Some(alg) = jwk.common.key_algorithm {
        return match alg {
            KeyAlgorithm::RS256 => Some(Algorithm::RS256),
            KeyAlgorithm::RS384 => Some(Algorithm::RS384),
            KeyAlgorithm::RS512 => Some(Algorithm::RS512),
            KeyAlgorithm::PS256 => Some(Algorithm::PS256),
            KeyAlgorithm::ES256 => Some(Algorithm::ES256),
            KeyAlgorithm::ES384 => Some(Algorithm::ES384),
            KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
            // Never a shared-secret (HS*) algorithm: a JWKS publishes public keys.
            _ => None,
        };
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(_) => Some(Algorithm::ES256),
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        _ => None,
    }
}
