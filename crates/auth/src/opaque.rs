//! Opaque tokens — refresh tokens, and the single-use e-mail tokens (verification, reset) —:
//! 256 random bits, base64url, stored only as their SHA-256.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A freshly generated opaque token (the plain value goes to the client exactly once).
pub struct OpaqueToken {
    plain: String,
    hash: [u8; 32],
}

impl OpaqueToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let plain = URL_SAFE_NO_PAD.encode(bytes);
        let hash = Self::hash(&plain);
        Self { plain, hash }
    }

    /// SHA-256 of a presented token. A fast hash is right here: the token has 256 bits of entropy,
    /// so there is nothing to brute-force, and lookups must be cheap.
    pub fn hash(plain: &str) -> [u8; 32] {
        Sha256::digest(plain.as_bytes()).into()
    }

    pub fn plain(&self) -> &str {
        &self.plain
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.hash
    }

    pub fn into_plain(self) -> String {
        self.plain
    }
}

impl std::fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpaqueToken(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_unique_and_hashed() {
        let a = OpaqueToken::generate();
        let b = OpaqueToken::generate();
        assert_ne!(a.plain(), b.plain());
        assert_eq!(URL_SAFE_NO_PAD.decode(a.plain()).unwrap().len(), 32);
        assert_eq!(OpaqueToken::hash(a.plain()), *a.digest());
        assert_ne!(a.digest(), b.digest());
    }
}
