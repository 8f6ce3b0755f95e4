//! Cursor pagination primitives: a bounded page size and an opaque cursor.
//!
//! A cursor is the base64url (no padding) encoding of a small JSON document holding the sort key
//! of the last row of the previous page. Clients must treat it as opaque; anything that does not
//! decode to the expected shape is rejected as a validation error (422), never a 500.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Serialize, de::DeserializeOwned};

use crate::DomainError;

/// Page size, 1..=100, default 20.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(u16);

impl Limit {
    pub const DEFAULT: u16 = 20;
    pub const MAX: u16 = 100;

    pub fn parse(raw: Option<i64>) -> Result<Self, DomainError> {
        match raw {
            None => Ok(Self(Self::DEFAULT)),
            Some(n) if (1..=i64::from(Self::MAX)).contains(&n) => Ok(Self(n as u16)),
            Some(_) => Err(DomainError::field(
                "limit",
                format!("must be between 1 and {}", Self::MAX),
            )),
        }
    }

    pub fn get(self) -> i64 {
        i64::from(self.0)
    }
}

impl Default for Limit {
    fn default() -> Self {
        Self(Self::DEFAULT)
    }
}

/// Encoding and decoding of opaque cursors over any serde key type.
pub struct Cursor;

impl Cursor {
    pub fn encode<K: Serialize>(key: &K) -> String {
        // Serialising plain structs of strings, numbers and UUIDs cannot fail.
        let json = serde_json::to_vec(key).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode<K: DeserializeOwned>(raw: &str) -> Result<K, DomainError> {
        let invalid = || DomainError::field("cursor", "is not a valid cursor");
        if raw.len() > 512 {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        serde_json::from_slice(&bytes).map_err(|_| invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Key {
        id: uuid::Uuid,
    }

    #[test]
    fn limit_bounds() {
        assert_eq!(Limit::parse(None).unwrap().get(), 20);
        assert_eq!(Limit::parse(Some(1)).unwrap().get(), 1);
        assert_eq!(Limit::parse(Some(100)).unwrap().get(), 100);
        assert!(Limit::parse(Some(0)).is_err());
        assert!(Limit::parse(Some(101)).is_err());
        assert!(Limit::parse(Some(-5)).is_err());
    }

    #[test]
    fn cursor_round_trip_and_tamper() {
        let k = Key {
            id: uuid::Uuid::now_v7(),
        };
        let c = Cursor::encode(&k);
        assert_eq!(Cursor::decode::<Key>(&c).unwrap(), k);
        assert!(Cursor::decode::<Key>("not base64 !!").is_err());
        assert!(Cursor::decode::<Key>(&URL_SAFE_NO_PAD.encode(b"{\"id\":\"nope\"}")).is_err());
        assert!(Cursor::decode::<Key>(&"A".repeat(600)).is_err());
        let mut tampered = c.clone();
        tampered.insert(3, '!');
        assert!(Cursor::decode::<Key>(&tampered).is_err());
    }
}
