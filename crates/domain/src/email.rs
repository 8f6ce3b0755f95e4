//! E-mail addresses. Stored and compared in lower case, so `Alice@Example.com` and
//! `alice@example.com` are the same account.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// A normalised (trimmed, lower-cased) e-mail address that our mailer can deliver.
///
/// The rules are those of an address an SMTP server without SMTPUTF8 accepts, and that lettre
/// (the mailer) parses — both are checked, so an account can never have an address whose mail
/// would be dead-lettered:
/// - ASCII only (a non-ASCII local part needs SMTPUTF8; an international domain is accepted in its
///   `xn--` form), and no invisible or control character (so no header injection, and no
///   look-alike address that differs by a zero-width character);
/// - a dot-atom local part of 1–64 bytes: RFC 5322 `atext` (letters, digits,
///   `` !#$%&'*+/=?^_`{|}~- ``) in dot-separated runs — no leading, trailing or consecutive dot,
///   no quoted string, no comment, no space;
/// - a host name of 1–253 bytes: at least two dot-separated labels of 1–63 letters, digits and
///   hyphens, none starting or ending with a hyphen, a top-level label that is not all digits, and
///   no trailing dot — so no IP literal (`[192.0.2.1]`) and no bare IP address;
/// - at most 254 bytes overall.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

/// RFC 5322 `atext`.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&b)
}

fn valid_local(local: &str) -> bool {
    (1..=64).contains(&local.len())
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(is_atext))
}

fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    (1..=253).contains(&domain.len())
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && labels
            .last()
            .is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()))
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let invalid = |why: &str| DomainError::field("email", why);
        let s = raw.trim();
        if s.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if s.chars().any(crate::text::is_invisible) {
            return Err(invalid("must not contain control or invisible characters"));
        }
        if !s.is_ascii() {
            return Err(invalid(
                "must contain only ASCII characters (write an international domain in its xn-- form)",
            ));
        }
        let s = s.to_ascii_lowercase();
        if s.len() > 254 {
            return Err(invalid("must be at most 254 bytes"));
        }
        if s.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(invalid("must not contain spaces"));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(invalid("must contain '@'"));
        };
        if !valid_local(local) {
            return Err(invalid(
                "has an invalid part before '@' (letters, digits and !#$%&'*+/=?^_`{|}~- in dot-separated runs)",
            ));
        }
        if !valid_domain(domain) {
            return Err(invalid("has an invalid domain (a host name such as example.com)"));
        }
        // Our rules are meant to be stricter than the mailer's; this keeps them so if either changes.
        if s.parse::<lettre::Address>().is_err() {
            return Err(invalid("is not a valid e-mail address"));
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

    /// What the probe found: addresses the mailer refuses (or that need SMTPUTF8) or that differ
    /// from another by an invisible character.
    #[test]
    fn rejects_what_the_mailer_refuses() {
        for bad in [
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a@example.com.",
            "a@example..com",
            "a(comment)@example.com",
            "(comment)a@example.com",
            "a@example.com(comment)",
            "\"quoted\"@example.com",
            "\"a b\"@example.com",
            "a@[192.0.2.1]",
            "a@[IPv6:2001:db8::1]",
            "a@192.0.2.1",
            "a@localhost",
            "a@-example.com",
            "a@example-.com",
            "a@exa_mple.com",
            "a\u{200B}@example.com",
            "\u{FEFF}a@example.com",
            "a@exam\u{200D}ple.com",
            "a\u{202E}moc.elpmaxe@x.com",
            "a\u{00AD}b@example.com",
            "jos\u{E9}@example.com",
            "a@b\u{FC}cher.de",
            "\u{430}dmin@example.com",
            "a\tb@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn accepts_ordinary_and_unusual_but_deliverable_addresses() {
        for good in [
            "ada@example.com",
            "ada.lovelace+tasks@mail.example.co.uk",
            "o'brien@example.ie",
            "a_b-c@sub-domain.example.org",
            "x@xn--bcher-kva.de",
            "1234@example.com",
            "a!#$%&*/=?^`{|}~@example.com",
        ] {
            let e = Email::parse(good).unwrap_or_else(|err| panic!("{good:?}: {err:?}"));
            assert!(
                e.as_str().parse::<lettre::Address>().is_ok(),
                "{good:?} parses for the mailer"
            );
        }
        assert_eq!(
            Email::parse("\u{3000} Ada@Example.COM\n").unwrap().as_str(),
            "ada@example.com"
        );
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
