//! Timestamps accepted from clients. Postgres `timestamptz` spans 4713 BC to 294276 AD and chrono
//! a different range; we accept years 1 to 9999 (what RFC 3339 can write) so no value a client
//! sends can fail in the database.

use chrono::{DateTime, Datelike, Utc};

use crate::DomainError;

pub fn check(field: &str, t: DateTime<Utc>) -> Result<DateTime<Utc>, DomainError> {
    if (1..=9999).contains(&t.year()) {
        Ok(t)
    } else {
        Err(DomainError::field(field, "must be between the years 1 and 9999"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range() {
        let ok: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        assert!(check("due_at", ok).is_ok());
        let ancient: DateTime<Utc> = "-5000-01-01T00:00:00Z".parse().unwrap();
        let far: DateTime<Utc> = "+200000-01-01T00:00:00Z".parse().unwrap();
        assert!(check("due_at", ancient).is_err() && check("due_at", far).is_err());
    }
}
