//! E-mail addresses. Stored and compared in lower case, so `Alice@Example.com` and
//! `alice@example.com` are the same account.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// A syntactically plausible, normalised (trimmed, lower-cased) e-mail address.
///
/// The rules are deliberately conservative: one `@`, a non-empty local part of at most 64 bytes,
/// a domain with a dot and no empty labels, at most 254 bytes overall, and no whitespace or control
/// characters (so the address can never inject a header into an e-mail).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let invalid = |why: &str| DomainError::field("email", why);
        let s = raw.trim().to_lowercase();
        if s.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if s.len() > 254 {
            return Err(invalid("must be at most 254 bytes"));
        }
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"' | '\\'))
        {
            return Err(invalid("contains characters that are not allowed"));
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err(invalid("must contain '@'"));
        };
        if local.is_empty() || local.len() > 64 || domain.contains('@') {
            return Err(invalid("is not a valid e-mail address"));
        }
        if !domain.contains('.')
            || domain
                .split('.')
                .any(|label| label.is_empty() || label.starts_with('-') || label.ends_with('-'))
        {
            return Err(invalid("has an invalid domain"));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A form safe to log: the first character of the local part and the domain.
    pub fn redacted(&self) -> String {
        match self.0.split_once('@') {
            Some((local, domain)) => format!("{}***@{domain}", local.chars().next().unwrap_or('*')),
            None => "***".to_owned(),
        }
    }
}

impl TryFrom<String> for Email {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_whitespace() {
        let e = Email::parse("  Alice.Smith@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "alice.smith@example.com");
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@b..com",
            "a@-b.com",
            "x@y.com\r\nBcc: evil@z.com",
            "a<b>@c.com",
            "a,b@c.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn rejects_overlong_parts() {
        let local = "a".repeat(65);
        assert!(Email::parse(&format!("{local}@example.com")).is_err());
        let domain = format!("{}.com", "d".repeat(250));
        assert!(Email::parse(&format!("a@{domain}")).is_err());
    }

    #[test]
    fn redacts_for_logs() {
        assert_eq!(Email::parse("bob@example.com").unwrap().redacted(), "b***@example.com");
        assert!(!format!("{:?}", Email::parse("bob@example.com").unwrap()).contains("bob"));
    }
}
