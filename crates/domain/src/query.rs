//! Raw query pairs → parameters, with the rules every list shares: a parameter named in `multi`
//! may be repeated (`status=a&status=b`) and comma-separated (`status=a,b`); every other one takes
//! one value, and repeating it is one error (never "the last one wins"); an unknown name is an
//! error naming it. Each list's parser walks [`Params::pairs`] and pushes its own errors.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{DomainError, FieldError, Limit, error::REPEATED};

pub struct Params<'a> {
    pairs: Vec<(&'a str, &'a str)>,
    pub errors: Vec<FieldError>,
}

impl<'a> Params<'a> {
    /// Splits off repeated single-valued parameters (reported once each).
    pub fn new(pairs: impl IntoIterator<Item = (&'a str, &'a str)>, multi: &[&str]) -> Self {
        let mut seen: Vec<&str> = Vec::new();
        let mut errors: Vec<FieldError> = Vec::new();
        let mut kept = Vec::new();
        for (key, value) in pairs {
            if !multi.contains(&key) {
                if seen.contains(&key) {
                    if !errors.iter().any(|e| e.field == key && e.message == REPEATED) {
                        errors.push(FieldError::new(key, REPEATED));
                    }
                    continue;
                }
                seen.push(key);
            }
            kept.push((key, value));
        }
        Self { pairs: kept, errors }
    }

    pub fn pairs(&self) -> Vec<(&'a str, &'a str)> {
        self.pairs.clone()
    }

    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    pub fn unknown(&mut self, field: &str) {
        self.error(field, "is not a known parameter");
    }

    pub fn uuid(&mut self, field: &str, raw: &str) -> Option<Uuid> {
        Uuid::try_parse(raw)
            .map_err(|_| self.error(field, "must be a UUID"))
            .ok()
    }

    pub fn bool(&mut self, field: &str, raw: &str) -> Option<bool> {
        match raw {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.error(field, "must be true or false");
                None
            }
        }
    }

    pub fn int(&mut self, field: &str, raw: &str, min: i64, max: i64) -> Option<i64> {
        match raw.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(field, format!("must be an integer between {min} and {max}"));
                None
            }
        }
    }

    pub fn time(&mut self, field: &str, raw: &str) -> Option<DateTime<Utc>> {
        match DateTime::parse_from_rfc3339(raw).map(|t| t.with_timezone(&Utc)) {
            Ok(t) if crate::time::check(field, t).is_err() => {
                self.error(field, "must be between the years 1 and 9999");
                None
            }
            Ok(t) => Some(t),
            Err(_) => {
                self.error(field, "must be an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z");
                None
            }
        }
    }

    /// A comma-separated list of values, each parsed by `parse`.
    pub fn many<T>(
        &mut self,
        field: &str,
        raw: &str,
        allowed: &str,
        parse: impl Fn(&str) -> Option<T>,
        out: &mut Vec<T>,
    ) {
        for part in raw.split(',') {
            match parse(part.trim()) {
                Some(v) => out.push(v),
                None => self.error(field, format!("{part:?} is not one of {allowed}")),
            }
        }
    }

    /// `limit` (1–100, default 20).
    pub fn limit(&mut self, raw: Option<i64>) -> Limit {
        match Limit::parse(raw) {
            Ok(l) => l,
            Err(DomainError::Validation(e)) => {
                self.errors.extend(e);
                Limit::default()
            }
        }
    }

    pub fn finish(self) -> Result<(), DomainError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(DomainError::Validation(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_one_error_and_multi_is_kept() {
        let p = Params::new([("a", "1"), ("a", "2"), ("a", "3"), ("s", "x"), ("s", "y")], &["s"]);
        assert_eq!(p.pairs(), vec![("a", "1"), ("s", "x"), ("s", "y")]);
        assert_eq!(p.errors, vec![FieldError::new("a", REPEATED)]);
    }

    #[test]
    fn values() {
        let mut p = Params::new([], &[]);
        assert_eq!(p.int("n", "5", 0, 9), Some(5));
        assert_eq!(p.int("n", "10", 0, 9), None);
        assert_eq!(p.bool("b", "yes"), None);
        assert!(p.time("t", "2026-01-01T00:00:00Z").is_some());
        assert_eq!(p.uuid("u", "nope"), None);
        assert_eq!(p.errors.len(), 3);
        assert!(p.finish().is_err());
    }
}
