//! Plain-text passwords on their way to the hasher. bcrypt only reads the first 72 bytes, so a
//! longer password is rejected rather than silently truncated.

use std::fmt;

use crate::DomainError;

pub const MIN_BYTES: usize = 8;
pub const MAX_BYTES: usize = 72;

/// A password that satisfies the length policy. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Validates a new password (`field` names the input for the error message).
    pub fn parse(raw: String, field: &str) -> Result<Self, DomainError> {
        let len = raw.len();
        if len < MIN_BYTES {
            return Err(DomainError::field(field, format!("must be at least {MIN_BYTES} bytes")));
        }
        if len > MAX_BYTES {
            return Err(DomainError::field(field, format!("must be at most {MAX_BYTES} bytes")));
        }
        if raw.chars().any(|c| c == '\0') {
            return Err(DomainError::field(field, "must not contain NUL characters"));
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforces_byte_length_bounds() {
        assert!(Password::parse("short".into(), "password").is_err());
        assert!(Password::parse("a".repeat(8), "password").is_ok());
        assert!(Password::parse("a".repeat(72), "password").is_ok());
        assert!(Password::parse("a".repeat(73), "password").is_err());
        // 25 three-byte characters = 75 bytes: too long even though it is 25 characters.
        assert!(Password::parse("€".repeat(25), "password").is_err());
    }

    #[test]
    fn debug_hides_the_value() {
        let p = Password::parse("correct horse".into(), "password").unwrap();
        assert!(!format!("{p:?}").contains("horse"));
    }
}
