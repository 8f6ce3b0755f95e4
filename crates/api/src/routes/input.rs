//! Small helpers the route modules share to turn request DTOs into domain values: collect every
//! field error at once, and tell an explicit JSON `null` from an absent field.

use domain::{DomainError, FieldError};
use serde::{Deserialize, Deserializer};

/// `Some(None)` for an explicit `null`, `None` (with `#[serde(default)]`) when absent.
pub fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The value, or `None` with its field errors added to `errors`.
pub fn collect<T>(errors: &mut Vec<FieldError>, r: Result<T, DomainError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(DomainError::Validation(e)) => {
            errors.extend(e);
            None
        }
    }
}

/// An explicit `null` for a field that cannot be cleared.
pub fn not_null(errors: &mut Vec<FieldError>, field: &str) {
    errors.push(FieldError::new(field, "must not be null"));
}
