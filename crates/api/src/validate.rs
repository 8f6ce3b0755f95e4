//! garde custom rules that delegate to the domain parsers, so a request DTO reports every bad
//! field at once while the rules themselves live in one place (`domain`).

use domain::{Email, Password, UserName};

fn check<T>(r: Result<T, domain::DomainError>) -> garde::Result {
    r.map(|_| ()).map_err(|domain::DomainError::Validation(errs)| {
        garde::Error::new(errs.into_iter().next().map(|e| e.message).unwrap_or_default())
    })
}

pub fn email(v: &str, _: &()) -> garde::Result {
    check(Email::parse(v))
}

pub fn password(v: &str, _: &()) -> garde::Result {
    check(Password::parse(v.to_owned(), "password"))
}

pub fn name(v: &str, _: &()) -> garde::Result {
    check(UserName::parse(v))
}

pub fn opt_name(v: &Option<String>, ctx: &()) -> garde::Result {
    v.as_deref().map_or(Ok(()), |v| name(v, ctx))
}

pub fn opt_password(v: &Option<String>, ctx: &()) -> garde::Result {
    v.as_deref().map_or(Ok(()), |v| password(v, ctx))
}
