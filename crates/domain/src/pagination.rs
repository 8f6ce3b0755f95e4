//! Cursor pagination primitives: a bounded page size and an opaque cursor.
//!
//! A cursor is the base64url (no padding) encoding of a small JSON document holding the sort key
//! of the last row of the previous page. Clients must treat it as opaque; anything that is not
//! exactly what [`Cursor::encode`] could have produced is rejected at decode time as a validation
//! error (422 naming `cursor`), never a 500: no unknown or missing field, no other spelling of a
//! value, and no timestamp outside the years 1–9999 (a key the database cannot compare with).

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

/// One keyset page, whatever the list: the items and, when more follow, the opaque cursor of
/// the last one. Every list fetches `limit + 1` rows and hands them to [`Page::from_overfetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// `rows` were fetched with `LIMIT limit + 1`: keep `limit` of them and, if one more came
    /// back, encode the last kept row's key (`key`) as the next cursor.
    pub fn from_overfetch<K: Serialize>(mut rows: Vec<T>, limit: Limit, key: impl Fn(&T) -> K) -> Self {
        let limit = usize::from(limit.0);
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| Cursor::encode(&key(last)))
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
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

    pub fn decode<K: Serialize + DeserializeOwned>(raw: &str) -> Result<K, DomainError> {
        let invalid = || DomainError::field("cursor", "is not a valid cursor");
        if raw.len() > 512 {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if !timestamps_in_range(&value) {
            return Err(invalid());
        }
        let key: K = serde_json::from_value(value.clone()).map_err(|_| invalid())?;
        // Canonical form only: what `encode` writes for this key, and nothing else.
        if serde_json::to_value(&key).ok().as_ref() != Some(&value) {
            return Err(invalid());
        }
        Ok(key)
    }
}

/// Every string in the cursor that reads as a date-time (the way chrono's serde reads one) lies
/// in the years the API itself ever writes ([`crate::time::check`]).
fn timestamps_in_range(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s
            .parse::<chrono::DateTime<chrono::FixedOffset>>()
            .map_or(true, |t| crate::time::check("cursor", t.to_utc()).is_ok()),
        Value::Array(items) => items.iter().all(timestamps_in_range),
        Value::Object(fields) => fields.values().all(timestamps_in_range),
        Value::Null | Value::Bool(_) | Value::Number(_) => true,
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

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct TimeKey {
        t: chrono::DateTime<chrono::Utc>,
        id: uuid::Uuid,
    }

    fn raw(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    /// A crafted cursor whose timestamp the database cannot hold (or that the API never writes)
    /// is refused when decoded, whatever key type it is decoded into.
    #[test]
    fn cursor_timestamps_outside_years_1_to_9999_are_rejected() {
        let id = uuid::Uuid::nil();
        let ok = TimeKey {
            t: "2026-05-01T10:00:00.123456Z".parse().unwrap(),
            id,
        };
        assert_eq!(Cursor::decode::<TimeKey>(&Cursor::encode(&ok)).unwrap(), ok);
        for t in [
            "-5000-01-01T00:00:00Z",
            "-0001-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "+10000-01-01T00:00:00Z",
            "+200000-01-01T00:00:00Z",
        ] {
            let crafted = raw(&format!(r#"{{"t":"{t}","id":"{id}"}}"#));
            assert_eq!(
                Cursor::decode::<TimeKey>(&crafted),
                Err(DomainError::field("cursor", "is not a valid cursor")),
                "{t}"
            );
            // Also when the key type has no timestamp at all: an extra field is tampering.
            assert!(Cursor::decode::<Key>(&crafted).is_err(), "{t}");
        }
    }

    #[test]
    fn only_the_canonical_encoding_is_accepted() {
        let id: uuid::Uuid = "0190a5f2-7c3e-7abc-8def-0123456789ab".parse().unwrap();
        for crafted in [
            format!(r#"{{"id":"{id}","extra":1}}"#),
            format!(r#"{{"id":"{}"}}"#, id.simple()),
            format!(r#"{{"id":"{}"}}"#, id.to_string().to_uppercase()),
        ] {
            assert!(Cursor::decode::<Key>(&raw(&crafted)).is_err(), "{crafted}");
        }
        let offset = raw(&format!(r#"{{"t":"2026-05-01T12:00:00+02:00","id":"{id}"}}"#));
        assert!(
            Cursor::decode::<TimeKey>(&offset).is_err(),
            "another spelling of a time"
        );
        assert!(Cursor::decode::<Key>(&raw(&format!(r#"{{"id":"{id}"}}"#))).is_ok());
    }

    #[test]
    fn a_page_keeps_limit_rows_and_points_past_the_last() {
        let limit = Limit::parse(Some(2)).unwrap_or_else(|e| panic!("{e:?}"));
        let full = Page::from_overfetch(vec![1, 2, 3], limit, |n| *n);
        assert_eq!(full.items, vec![1, 2]);
        assert_eq!(full.next_cursor.as_deref().map(Cursor::decode::<i32>), Some(Ok(2)));
        let last = Page::from_overfetch(vec![1, 2], limit, |n| *n);
        assert_eq!((last.items, last.next_cursor), (vec![1, 2], None));
    }
}
