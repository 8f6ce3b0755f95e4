//! The domain error: a business or input rule was broken. The API maps it to a 4xx problem.

use serde::Serialize;

/// One invalid field of an input, as reported to clients in the problem body's `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON path of the offending field (`email`, `items[0].quantity`, or a query parameter name).
    pub field: String,
    /// Human-readable reason.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The message for a single-valued (query) parameter given more than once.
pub const REPEATED: &str = "must be given at most once";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DomainError {
    /// One or more fields are invalid.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
}

impl DomainError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}
