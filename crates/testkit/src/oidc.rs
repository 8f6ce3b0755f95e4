//! A small OpenID Connect provider for tests: its own HTTP server (actix-web, port 0) with
//! discovery, JWKS, an authorize endpoint that answers at once (302 back with a code, or with
//! `error=access_denied`), and a token endpoint that checks the client secret (HTTP Basic), the
//! code (single use), the `redirect_uri` and the PKCE verifier (S256), and returns an RS256-signed
//! ID token. Knobs ([`OidcProvider::next_login`], [`OidcProvider::tamper`],
//! [`OidcProvider::rotate_key`]) set what the next login asserts and how its token is wrong;
//! [`OidcProvider::jwks_fetches`] counts key fetches.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::Digest as _;

pub const CLIENT_ID: &str = "taskshop-test-client";
pub const CLIENT_SECRET: &str = "taskshop-test-client-secret";

const KEY_A: &str = include_str!("oidc_keys/a.pem");
const KEY_B: &str = include_str!("oidc_keys/b.pem");
const N_A: &str = include_str!("oidc_keys/a.n");
const N_B: &str = include_str!("oidc_keys/b.n");

/// Who the next login is.
#[derive(Debug, Clone)]
pub struct Login {
    pub sub: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    /// Answer `error=access_denied` instead of a code.
    pub deny: bool,
}

impl Login {
    pub fn new(sub: &str, email: &str) -> Self {
        Self {
            sub: sub.into(),
            email: Some(email.into()),
            email_verified: true,
            name: Some("Oidc User".into()),
            deny: false,
        }
    }

    pub fn unverified(mut self) -> Self {
        self.email_verified = false;
        self
    }
}

/// How the next ID token is wrong (all `None`: a good token).
#[derive(Debug, Clone, Default)]
pub struct Tamper {
    pub iss: Option<String>,
    pub aud: Option<Value>,
    pub azp: Option<String>,
    pub nonce: Option<String>,
    /// Seconds added to `exp` (negative: already expired).
    pub exp_offset: Option<i64>,
    /// Sign with the other key while naming the current `kid` (a bad signature).
    pub wrong_key: bool,
    /// Name this `kid` in the header (and sign with the current key).
    pub kid: Option<String>,
    /// Algorithm confusion: HS256 with the current public key's modulus as the HMAC secret.
    pub hs256: bool,
}

struct Code {
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    login: Login,
    used: bool,
}

struct Inner {
    issuer: String,
    next: Login,
    tamper: Tamper,
    /// 0 = key A, 1 = key B.
    active: usize,
    codes: HashMap<String, Code>,
    jwks_fetches: usize,
    token_calls: usize,
}

/// A running provider; stops when dropped.
pub struct OidcProvider {
    pub issuer: String,
    inner: Arc<Mutex<Inner>>,
    server: actix_web::dev::ServerHandle,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        drop(self.server.stop(false));
    }
}

fn kid(i: usize) -> &'static str {
    if i == 0 { "key-a" } else { "key-b" }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl OidcProvider {
    pub async fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let issuer = format!("http://127.0.0.1:{port}");
        let inner = Arc::new(Mutex::new(Inner {
            issuer: issuer.clone(),
            next: Login::new("subject-1", "oidc.user@example.com"),
            tamper: Tamper::default(),
            active: 0,
            codes: HashMap::new(),
            jwks_fetches: 0,
            token_calls: 0,
        }));
        let data = web::Data::new(inner.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/.well-known/openid-configuration", web::get().to(discovery))
                .route("/jwks", web::get().to(jwks))
                .route("/authorize", web::get().to(authorize))
                .route("/token", web::post().to(token))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            issuer,
            inner,
            server: handle,
        }
    }

    /// Who the following logins are (until set again).
    pub fn next_login(&self, login: Login) {
        self.inner.lock().unwrap().next = login;
    }

    /// How the following ID tokens are wrong (until set again; `Tamper::default()` repairs).
    pub fn tamper(&self, tamper: Tamper) {
        self.inner.lock().unwrap().tamper = tamper;
    }

    /// Publishes the other key only and signs with it from now on.
    pub fn rotate_key(&self) {
        let mut i = self.inner.lock().unwrap();
        i.active = 1 - i.active;
    }

    pub fn jwks_fetches(&self) -> usize {
        self.inner.lock().unwrap().jwks_fetches
    }

    pub fn token_calls(&self) -> usize {
        self.inner.lock().unwrap().token_calls
    }

    /// Signs an ID token with the current key, with these claims as they are.
    pub fn sign(&self, claims: &Value) -> String {
        let i = self.inner.lock().unwrap();
        sign(i.active, kid(i.active), claims)
    }
}

fn sign(key: usize, kid: &str, claims: &Value) -> String {
    let pem = if key == 0 { KEY_A } else { KEY_B };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()).unwrap()
}

async fn discovery(state: web::Data<Arc<Mutex<Inner>>>) -> HttpResponse {
    let issuer = state.lock().unwrap().issuer.clone();
    HttpResponse::Ok().json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

async fn jwks(state: web::Data<Arc<Mutex<Inner>>>) -> HttpResponse {
    let mut i = state.lock().unwrap();
    i.jwks_fetches += 1;
    let n = if i.active == 0 { N_A } else { N_B };
    HttpResponse::Ok().json(json!({ "keys": [
        { "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid(i.active), "n": n.trim(), "e": "AQAB" },
        // A key type the client cannot use is skipped, not fatal.
        { "kty": "oct", "use": "enc", "kid": "ignored", "k": "c2VjcmV0" },
    ]}))
}

async fn authorize(state: web::Data<Arc<Mutex<Inner>>>, req: HttpRequest) -> HttpResponse {
    let q: HashMap<String, String> = form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let ok = get("response_type") == "code"
        && get("client_id") == CLIENT_ID
        && get("code_challenge_method") == "S256"
        && !get("code_challenge").is_empty()
        && get("scope").split(' ').any(|s| s == "openid");
    if !ok {
        return HttpResponse::BadRequest().body(format!("bad authorize request: {q:?}"));
    }
    let redirect_uri = get("redirect_uri");
    let mut i = state.lock().unwrap();
    let login = i.next.clone();
    let mut location = url_with(&redirect_uri, &[("state", &get("state"))]);
    if login.deny {
        location = url_with(&location, &[("error", "access_denied")]);
    } else {
        let code = b64(&rand_bytes());
        i.codes.insert(
            code.clone(),
            Code {
                redirect_uri,
                challenge: get("code_challenge"),
                nonce: q.get("nonce").cloned(),
                login,
                used: false,
            },
        );
        location = url_with(&location, &[("code", &code), ("iss", &i.issuer)]);
    }
    HttpResponse::Found().insert_header(("Location", location)).finish()
}

fn url_with(base: &str, params: &[(&str, &str)]) -> String {
    let mut s = base.to_owned();
    for (k, v) in params {
        s.push(if s.contains('?') { '&' } else { '?' });
        s.push_str(
            &form_urlencoded::Serializer::new(String::new())
                .append_pair(k, v)
                .finish(),
        );
    }
    s
}

fn rand_bytes() -> [u8; 24] {
    let mut b = [0u8; 24];
    let u = uuid::Uuid::new_v4();
    let v = uuid::Uuid::new_v4();
    b[..16].copy_from_slice(u.as_bytes());
    b[16..].copy_from_slice(&v.as_bytes()[..8]);
    b
}

fn grant_error(code: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": code }))
}

async fn token(state: web::Data<Arc<Mutex<Inner>>>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let mut i = state.lock().unwrap();
    i.token_calls += 1;
    if req.headers().get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return HttpResponse::Unauthorized().json(json!({ "error": "invalid_client" }));
    }
    if get("grant_type") != "authorization_code" {
        return grant_error("unsupported_grant_type");
    }
    let Some(code) = i.codes.get_mut(&get("code")) else {
        return grant_error("invalid_grant");
    };
    if code.used {
        return grant_error("invalid_grant");
    }
    code.used = true;
    if code.redirect_uri != get("redirect_uri") {
        return grant_error("invalid_grant");
    }
    let challenge = b64(&sha2::Sha256::digest(get("code_verifier").as_bytes()));
    if challenge != code.challenge {
        return grant_error("invalid_grant");
    }
    let login = code.login.clone();
    let nonce = code.nonce.clone();
    let t = i.tamper.clone();
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "iss": t.iss.clone().unwrap_or_else(|| i.issuer.clone()),
        "sub": login.sub,
        "aud": t.aud.clone().unwrap_or_else(|| json!(CLIENT_ID)),
        "iat": now,
        "exp": now + t.exp_offset.unwrap_or(300),
        "nonce": t.nonce.clone().or(nonce),
        "email_verified": login.email_verified,
    });
    if let Some(e) = login.email {
        claims["email"] = json!(e);
    }
    if let Some(n) = login.name {
        claims["name"] = json!(n);
    }
    if let Some(azp) = t.azp {
        claims["azp"] = json!(azp);
    }
    let active = i.active;
    let key = if t.wrong_key { 1 - active } else { active };
    let header_kid = t.kid.clone().unwrap_or_else(|| kid(active).to_owned());
    let id_token = if t.hs256 {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(header_kid);
        let public = if active == 0 { N_A } else { N_B };
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(public.trim().as_bytes())).unwrap()
    } else {
        sign(key, &header_kid, &claims)
    };
    HttpResponse::Ok().json(json!({
        "access_token": "provider-access-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    }))
}
