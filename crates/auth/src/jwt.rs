//! JWT access tokens. The algorithm is pinned by the key type (HS256 for a shared secret, EdDSA
//! for a key pair); `iss`, `aud`, `exp`, `nbf` and `iat` are required and checked with no leeway
//! beyond a few seconds of clock skew, and `typ` must say "access".

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use domain::{Role, SessionId, UserId};

pub const ACCESS_TOKEN_TYPE: &str = "access";
const CLOCK_SKEW_SECS: u64 = 5;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: UserId,
    /// The session (refresh-token family) this token belongs to.
    pub sid: SessionId,
    pub role: Role,
    pub typ: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Uuid,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("invalid key: {0}")]
    Key(String),
    #[error("invalid token")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("not an access token")]
    WrongType,
}

/// Signing and verification keys with their (single, pinned) algorithm.
#[derive(Clone)]
pub struct JwtKeys {
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtKeys({:?})", self.alg)
    }
}

impl JwtKeys {
    pub fn hs256(secret: &[u8]) -> Result<Self, JwtError> {
        if secret.len() < 32 {
            return Err(JwtError::Key("JWT_SECRET must be at least 32 bytes".into()));
        }
        Ok(Self {
            alg: Algorithm::HS256,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        })
    }

    /// Ed25519 key pair in PEM (PKCS#8 private key, SPKI public key).
    pub fn eddsa(private_pem: &[u8], public_pem: &[u8]) -> Result<Self, JwtError> {
        Ok(Self {
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_pem(private_pem).map_err(|e| JwtError::Key(e.to_string()))?,
            decoding: DecodingKey::from_ed_pem(public_pem).map_err(|e| JwtError::Key(e.to_string()))?,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// Issues and verifies access tokens for one issuer/audience.
#[derive(Clone, Debug)]
pub struct TokenIssuer {
    keys: JwtKeys,
    issuer: String,
    audience: String,
    ttl_secs: i64,
    validation: Validation,
}

impl TokenIssuer {
    pub fn new(keys: JwtKeys, issuer: impl Into<String>, audience: impl Into<String>, ttl_secs: i64) -> Self {
        let issuer = issuer.into();
        let audience = audience.into();
        let mut validation = Validation::new(keys.alg);
        validation.leeway = CLOCK_SKEW_SECS;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        Self {
            keys,
            issuer,
            audience,
            ttl_secs,
            validation,
        }
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    pub fn issue(&self, user_id: UserId, session_id: SessionId, role: Role) -> Result<String, JwtError> {
        let now = Utc::now().timestamp();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id,
            sid: session_id,
            role,
            typ: ACCESS_TOKEN_TYPE.to_owned(),
            iat: now,
            nbf: now,
            exp: now + self.ttl_secs,
            jti: Uuid::now_v7(),
        };
        Ok(encode(&Header::new(self.keys.alg), &claims, &self.keys.encoding)?)
    }

    pub fn verify(&self, token: &str) -> Result<AccessClaims, JwtError> {
        let data = decode::<AccessClaims>(token, &self.keys.decoding, &self.validation)?;
        if data.claims.typ != ACCESS_TOKEN_TYPE {
            return Err(JwtError::WrongType);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(JwtKeys::hs256(SECRET).unwrap(), "iss-test", "aud-test", 900)
    }

    fn sign(claims: &serde_json::Value, alg: Algorithm, secret: &[u8]) -> String {
        encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn claims(overrides: serde_json::Value) -> serde_json::Value {
        let now = Utc::now().timestamp();
        let mut base = serde_json::json!({
            "iss": "iss-test", "aud": "aud-test", "sub": Uuid::now_v7(), "sid": Uuid::now_v7(),
            "role": "user", "typ": "access", "iat": now, "nbf": now, "exp": now + 600, "jti": Uuid::now_v7()
        });
        for (k, v) in overrides.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    #[test]
    fn round_trip() {
        let t = issuer();
        let (u, s) = (UserId::generate(), SessionId::generate());
        let c = t.verify(&t.issue(u, s, Role::Admin).unwrap()).unwrap();
        assert_eq!((c.sub, c.sid, c.role), (u, s, Role::Admin));
    }

    #[test]
    fn short_secret_is_refused() {
        assert!(JwtKeys::hs256(b"too short").is_err());
    }

    #[test]
    fn rejects_bad_claims() {
        let t = issuer();
        let now = Utc::now().timestamp();
        for (why, c) in [
            ("expired", claims(serde_json::json!({"exp": now - 60}))),
            ("not yet valid", claims(serde_json::json!({"nbf": now + 120}))),
            ("wrong iss", claims(serde_json::json!({"iss": "someone-else"}))),
            ("wrong aud", claims(serde_json::json!({"aud": "another-api"}))),
            ("wrong typ", claims(serde_json::json!({"typ": "refresh"}))),
        ] {
            assert!(t.verify(&sign(&c, Algorithm::HS256, SECRET)).is_err(), "{why} accepted");
        }
    }

    #[test]
    fn rejects_other_algorithms_and_alg_none() {
        let t = issuer();
        let c = claims(serde_json::json!({}));
        assert!(t.verify(&sign(&c, Algorithm::HS512, SECRET)).is_err());
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        assert!(t.verify(&format!("{header}.{body}.")).is_err());
        assert!(t.verify(&format!("{header}.{body}")).is_err());
    }

    #[test]
    fn rejects_tampering() {
        let t = issuer();
        let token = t.issue(UserId::generate(), SessionId::generate(), Role::User).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        payload["role"] = "admin".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap()),
            parts[2]
        );
        assert!(t.verify(&forged).is_err());
        let mut sig = parts[2].to_owned();
        sig.replace_range(0..1, if sig.starts_with('A') { "B" } else { "A" });
        assert!(t.verify(&format!("{}.{}.{sig}", parts[0], parts[1])).is_err());
        assert!(t.verify("not.a.jwt").is_err());
        assert!(t.verify("").is_err());
    }
}
