//! Parse once, at the edge: a request body becomes domain values through [`Fields`], which
//! collects every field error of the body at once, and gives every PATCH body one meaning:
//!
//! | JSON | non-nullable field ([`Fields::set`]) | nullable field ([`Fields::set_or_clear`]) |
//! |---|---|---|
//! | absent | unchanged (`None`) | unchanged (`None`) |
//! | `null` | error `must not be null` | cleared (`Some(None)`) |
//! | a value | parsed (`Some(v)`) | parsed (`Some(Some(v))`) |
//!
//! A DTO tells an absent field from an explicit `null` with [`double_option`].

use serde::{Deserialize, Deserializer};

use crate::{DomainError, FieldError};

/// `Some(None)` for an explicit `null`, `None` (with `#[serde(default)]`) when absent.
pub fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The field errors of one body, collected while its fields are parsed.
#[derive(Debug, Default)]
#[must_use = "call finish() to report the collected errors"]
pub struct Fields {
    errors: Vec<FieldError>,
}

impl Fields {
    pub fn new() -> Self {
        Self::default()
    }

    /// The value, or `None` with its field errors kept.
    pub fn check<T>(&mut self, r: Result<T, DomainError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(DomainError::Validation(e)) => {
                self.errors.extend(e);
                None
            }
        }
    }

    /// A PATCH field that can be changed but not cleared.
    pub fn set<T, U>(
        &mut self,
        field: &str,
        raw: Option<Option<T>>,
        parse: impl FnOnce(T) -> Result<U, DomainError>,
    ) -> Option<U> {
        match raw {
            None => None,
            Some(None) => {
                self.errors.push(FieldError::new(field, "must not be null"));
                None
            }
            Some(Some(v)) => self.check(parse(v)),
        }
    }

    /// A PATCH field that `null` clears.
    pub fn set_or_clear<T, U>(
        &mut self,
        raw: Option<Option<T>>,
        parse: impl FnOnce(T) -> Result<U, DomainError>,
    ) -> Option<Option<U>> {
        match raw {
            None => None,
            Some(None) => Some(None),
            Some(Some(v)) => self.check(parse(v)).map(Some),
        }
    }

    /// The errors collected so far, for a body whose required value did not parse.
    pub fn into_error(self) -> DomainError {
        DomainError::Validation(self.errors)
    }

    /// `Ok(value)` when every field parsed, otherwise every error at once.
    pub fn finish<T>(self, value: T) -> Result<T, DomainError> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(DomainError::Validation(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positive(v: i32) -> Result<i32, DomainError> {
        if v > 0 {
            Ok(v)
        } else {
            Err(DomainError::field("n", "must be positive"))
        }
    }

    #[test]
    fn set_follows_the_table() {
        let mut f = Fields::new();
        assert_eq!(f.set("n", None, positive), None);
        assert_eq!(f.set("n", Some(Some(3)), positive), Some(3));
        assert!(f.finish(()).is_ok());

        let mut f = Fields::new();
        assert_eq!(f.set("n", Some(None), positive), None);
        assert_eq!(
            f.finish(()),
            Err(DomainError::Validation(vec![FieldError::new("n", "must not be null")]))
        );
    }

    #[test]
    fn set_or_clear_follows_the_table() {
        let mut f = Fields::new();
        assert_eq!(f.set_or_clear(None, positive), None);
        assert_eq!(f.set_or_clear(Some(None), positive), Some(None));
        assert_eq!(f.set_or_clear(Some(Some(2)), positive), Some(Some(2)));
        assert!(f.finish(()).is_ok());
    }

    #[test]
    fn every_error_of_a_body_is_reported_at_once() {
        let mut f = Fields::new();
        assert_eq!(f.set("a", Some(None::<i32>), positive), None);
        assert_eq!(f.set_or_clear(Some(Some(-1)), positive), None);
        assert_eq!(f.check(positive(-2)), None);
        let Err(DomainError::Validation(errors)) = f.finish(()) else {
            panic!("expected errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| (e.field.as_str(), e.message.as_str())).collect();
        assert_eq!(
            fields,
            [
                ("a", "must not be null"),
                ("n", "must be positive"),
                ("n", "must be positive")
            ]
        );
    }
}
