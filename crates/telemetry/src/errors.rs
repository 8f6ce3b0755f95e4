//! Error reporting to a Sentry-compatible service (`SENTRY_DSN`): panics, `error!` events and
//! (in the API) 5xx responses, tagged with service, release and environment. Nothing personal
//! leaves the process: no request bodies, no cookies, no headers but a few harmless ones, no
//! query strings; [`scrub`] runs on every event before it is sent and masks secrets by key
//! (password, token, authorization, …) and e-mail addresses, bearer tokens and JWTs anywhere in
//! its text.

use std::borrow::Cow;

use sentry::protocol::Event;
use serde_json::Value;

/// Where and as what to report.
#[derive(Clone)]
pub struct SentrySettings {
    pub dsn: String,
    pub environment: String,
    pub release: String,
}

impl std::fmt::Debug for SentrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The DSN holds the project key: not for logs.
        f.debug_struct("SentrySettings")
            .field("dsn", &"[redacted]")
            .field("environment", &self.environment)
            .field("release", &self.release)
            .finish()
    }
}

pub(crate) fn init(settings: &SentrySettings, service: &'static str) -> Result<sentry::ClientInitGuard, String> {
    let dsn = settings
        .dsn
        .parse()
        .map_err(|e| format!("SENTRY_DSN is invalid: {e}"))?;
    let mut opts = sentry::ClientOptions::default();
    opts.dsn = Some(dsn);
    opts.release = Some(Cow::Owned(settings.release.clone()));
    opts.environment = Some(Cow::Owned(settings.environment.clone()));
    opts.server_name = None;
    opts.send_default_pii = false;
    opts.max_request_body_size = sentry::MaxRequestBodySize::None;
    opts.attach_stacktrace = true;
    opts.before_send = Some(std::sync::Arc::new(scrub_event));
    opts.transport = Some(std::sync::Arc::new(crate::sentry_transport::ReqwestFactory));
    opts.before_breadcrumb = Some(std::sync::Arc::new(|mut crumb: sentry::Breadcrumb| {
        crumb.message = crumb.message.map(|m| scrub_text(&m));
        Some(crumb)
    }));
    let guard = sentry::init(opts);
    sentry::configure_scope(|scope| scope.set_tag("service", service));
    Ok(guard)
}

/// Request headers an event may keep; every other header is dropped.
const KEPT_HEADERS: &[&str] = &["content-type", "accept", "user-agent", "x-request-id", "content-length"];

fn scrub_event(mut event: Event<'static>) -> Option<Event<'static>> {
    if let Some(req) = event.request.as_mut() {
        req.data = None;
        req.cookies = None;
        req.query_string = None;
        req.env.clear();
        req.headers
            .retain(|k, _| KEPT_HEADERS.contains(&k.to_ascii_lowercase().as_str()));
        if let Some(url) = req.url.as_mut() {
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
    }
    event.user = None;
    event.server_name = None;
    let json = serde_json::to_value(&event).ok()?;
    let scrubbed = scrub(json);
    // An event that no longer decodes is dropped rather than sent unscrubbed.
    serde_json::from_value(scrubbed).ok()
}

/// Masks secrets in a JSON tree: values under a secret-sounding key, and e-mail addresses,
/// bearer tokens and JWTs in any string.
pub fn scrub(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = if secret_key(&k) && !v.is_null() {
                        Value::String("[Filtered]".into())
                    } else {
                        scrub(v)
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(scrub).collect()),
        Value::String(s) => Value::String(scrub_text(&s)),
        other => other,
    }
}

fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "authorization",
        "cookie",
        "api_key",
        "apikey",
        "jwt",
        "credential",
        "private_key",
        "dsn",
        "smtp_url",
        "database_url",
        "redis_url",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// Masks e-mail addresses (`[email]`), `Bearer …` values, JWT-shaped words and `token=…` /
/// `password=…` query values in free text.
pub fn scrub_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut redact_next = false;
    for word in split_keep(text) {
        if word.chars().all(char::is_whitespace) {
            out.push_str(word);
            continue;
        }
        if redact_next {
            out.push_str("[Filtered]");
            redact_next = false;
            continue;
        }
        if word.eq_ignore_ascii_case("bearer") || word.eq_ignore_ascii_case("basic") {
            out.push_str(word);
            redact_next = true;
            continue;
        }
        out.push_str(&scrub_word(word));
    }
    out
}

/// Splits into runs of whitespace and runs of non-whitespace, keeping both.
fn split_keep(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_space = None;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if in_space.is_some_and(|s| s != space) {
            parts.push(&text[start..i]);
            start = i;
        }
        in_space = Some(space);
    }
    if start < text.len() {
        parts.push(&text[start..]);
    }
    parts
}

fn scrub_word(word: &str) -> String {
    // `key=value` pairs (query strings, form-like log text): mask the value of a secret key.
    if let Some((k, _)) = word.split_once('=')
        && secret_key(k.trim_start_matches(['?', '&', '"', '\'', '(']))
    {
        return format!("{k}=[Filtered]");
    }
    if word.contains('@') {
        return mask_emails(word);
    }
    let core = word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_' && c != '.');
    if core.len() > 20 && core.starts_with("eyJ") && core.matches('.').count() == 2 {
        return word.replace(core, "[Filtered]");
    }
    word.to_owned()
}

/// `alice@example.com` → `[email]`, inside any surrounding punctuation.
fn mask_emails(word: &str) -> String {
    let local_char = |c: char| c.is_ascii_alphanumeric() || "._%+-".contains(c);
    let domain_char = |c: char| c.is_ascii_alphanumeric() || ".-".contains(c);
    let bytes: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == '@' {
            let mut start = out.len();
            while start > 0 {
                let c = out[..start].chars().next_back().unwrap_or(' ');
                if !local_char(c) {
                    break;
                }
                start -= c.len_utf8();
            }
            let mut end = i + 1;
            while end < bytes.len() && domain_char(bytes[end]) {
                end += 1;
            }
            let domain: String = bytes[i + 1..end].iter().collect();
            let domain = domain.trim_end_matches('.');
            let tld = domain.rsplit('.').next().unwrap_or("");
            let end = i + 1 + domain.chars().count();
            if start < out.len()
                && domain.contains('.')
                && tld.len() >= 2
                && tld.chars().all(|c| c.is_ascii_alphabetic())
            {
                out.truncate(start);
                out.push_str("[email]");
                i = end;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_loses_addresses_tokens_and_secret_values() {
        assert_eq!(
            scrub_text("user alice.b+x@example.com signed up"),
            "user [email] signed up"
        );
        assert_eq!(scrub_text("<bob@mail.example.org>,"), "<[email]>,");
        assert_eq!(
            scrub_text("Authorization: Bearer abc.def"),
            "Authorization: Bearer [Filtered]"
        );
        assert_eq!(
            scrub_text("GET /verify?token=s3cret&x=1"),
            "GET /verify?token=[Filtered]"
        );
        assert_eq!(
            scrub_text("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl!"),
            "jwt [Filtered]!"
        );
        assert_eq!(scrub_text("no secrets at all @ here"), "no secrets at all @ here");
        assert_eq!(scrub_text("api@0.1.0"), "api@0.1.0");
        assert_eq!(scrub_text("mail dave@example.com."), "mail [email].");
    }

    #[test]
    fn json_loses_values_under_secret_keys() {
        let v = serde_json::json!({
            "password": "hunter22", "refresh_token": "r", "nested": [{"Cookie": "a=b"}],
            "message": "for carol@example.com", "count": 3, "email_verified": null
        });
        let s = scrub(v);
        assert_eq!(s["password"], "[Filtered]");
        assert_eq!(s["refresh_token"], "[Filtered]");
        assert_eq!(s["nested"][0]["Cookie"], "[Filtered]");
        assert_eq!(s["message"], "for [email]");
        assert_eq!(s["count"], 3);
    }
}
