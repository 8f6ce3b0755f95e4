//! User-related value types.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::DomainError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            _ => Err(DomainError::field("role", "must be \"user\" or \"admin\"")),
        }
    }
}

/// A stored role (the database's CHECK admits only these): decoding fails loudly on anything else.
impl TryFrom<String> for Role {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A display name: 1 to 100 characters, with no control character (it ends up in e-mail headers,
/// so CR/LF must never get through) and no invisible one ([`crate::text::is_invisible`]: zero-width
/// characters, U+FEFF, bidi overrides…), so two names that look the same are the same. Any run of
/// white space (no-break, ideographic, line separators…) becomes one ASCII space, and the ends are
/// trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let raw = raw.trim();
        if raw.chars().any(char::is_control) {
            return Err(DomainError::field("name", "must not contain control characters"));
        }
        if raw.chars().any(crate::text::is_invisible) {
            return Err(DomainError::field(
                "name",
                "must not contain invisible characters (zero-width, bidi or other format characters)",
            ));
        }
        let s = crate::text::collapse_whitespace(raw);
        if s.is_empty() {
            return Err(DomainError::field("name", "must not be empty"));
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(DomainError::field(
                "name",
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_round_trips() {
        for r in [Role::User, Role::Admin] {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn name_rules() {
        assert_eq!(UserName::parse("  Ada ").unwrap().as_str(), "Ada");
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse("Eve\r\nBcc: x@y.z").is_err());
        assert!(UserName::parse(&"n".repeat(101)).is_err());
        assert!(UserName::parse(&"é".repeat(100)).is_ok());
    }

    #[test]
    fn names_cannot_hide_characters() {
        for hidden in [
            "Ada\u{200B}",
            "\u{FEFF}Ada",
            "A\u{200D}da",
            "Ada\u{202E}ecalevoL",
            "Ada\u{2066}x\u{2069}",
            "\u{3164}",
            "Ada\u{00AD}",
            "Ada\u{FE0F}",
            "Ada\u{E0041}",
        ] {
            assert!(UserName::parse(hidden).is_err(), "{hidden:?} should be rejected");
        }
        // Look-alike spacing is normalised rather than refused.
        for spaced in [
            "Ada\u{00A0}Lovelace",
            "Ada  Lovelace",
            " Ada\u{3000}Lovelace\u{2003}",
            "Ada\u{2028}Lovelace",
        ] {
            assert_eq!(UserName::parse(spaced).unwrap().as_str(), "Ada Lovelace", "{spaced:?}");
        }
        assert!(UserName::parse("\u{00A0}\u{2003}").is_err(), "blank after normalising");
        assert!(UserName::parse("Zoë 李 😀").is_ok());
    }
}
