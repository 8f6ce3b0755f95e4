//! Request extractors: validated JSON bodies and query strings, the authenticated user, and the
//! client's metadata. Every rejection is an [`ApiError`], so it renders as problem+json.

use std::{future::Future, pin::Pin};

use actix_web::{
    FromRequest, HttpMessage, HttpRequest,
    dev::Payload,
    http::header,
    web::{self, Bytes},
};
use db::users::User;
use domain::{FieldError, Role, SessionId, UserId};
use garde::Validate;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::{
    error::ApiError,
    http::request_id::RequestId,
    infra::session_cache::Lookup,
    services::{Actor, RequestMeta},
    state::AppState,
};

/// The largest JSON body accepted by default (api.md: 64 KiB).
pub const JSON_LIMIT: usize = 64 * 1024;

fn garde_errors(report: &garde::Report, root: &str) -> Vec<FieldError> {
    report
        .iter()
        .map(|(path, error)| {
            let field = path.to_string();
            FieldError::new(
                if field.is_empty() { root.to_owned() } else { field },
                error.message().to_string(),
            )
        })
        .collect()
}

/// The field a deserialisation error is about. `root` names the whole input (`body`, `query`) for
/// the rare error that concerns no single field.
fn deserialize_error<E: std::fmt::Display>(err: serde_path_to_error::Error<E>, root: &str) -> FieldError {
    let path = err.path().to_string();
    let inner = err.inner().to_string();
    // serde_path_to_error already includes an unknown field in the path; a missing or duplicated
    // field is reported at its parent, with the name only in the message.
    let named = ["missing field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| inner.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    let field = match (named, path.as_str()) {
        (Some(name), "." | "") => name.to_owned(),
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, "." | "") => root.to_owned(),
        (None, p) => p.to_owned(),
    };
    // Drop serde_json's " at line 1 column 12" suffix: positions mean nothing to API clients.
    let message = inner.split(" at line ").next().unwrap_or(&inner).to_owned();
    FieldError::new(field, message)
}

/// A JSON body: `Content-Type: application/json` (or `+json`), at most [`JSON_LIMIT`] bytes,
/// well-formed (else 400), matching `T` with no unknown fields (else 422 naming the field), and
/// passing `T`'s garde rules (else 422 with every failing field).
#[derive(Debug)]
pub struct ValidJson<T>(pub T);

/// A JSON body read as [`ValidJson`] reads it, for a DTO without garde rules of its own: its
/// fields are parsed into domain values by the handler (`domain`'s parse functions), which reports
/// every bad field at once. One way to validate: shape rules (lengths, ranges) as garde rules on
/// the DTO, domain rules in `domain` — never a derive whose every field is skipped.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// Reads and decodes the body (content type, size, well-formedness, NUL, unknown fields).
fn read_json<T: DeserializeOwned + 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
) -> Pin<Box<dyn Future<Output = Result<T, ApiError>>>> {
    let content_type_ok = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false);
    let body = Bytes::from_request(req, payload);
    Box::pin(async move {
        if !content_type_ok {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = body
            .await
            .map_err(|e| match e.as_response_error().status_code().as_u16() {
                413 => ApiError::PayloadTooLarge,
                _ => ApiError::BadRequest {
                    code: "bad_request",
                    detail: "The request body could not be read.".into(),
                },
            })?;
        // One cheap pass first: well-formedness (else 400, whatever the shape) and no NUL in
        // any string (else 422 naming the field).
        scan_json(&bytes)?;
        // Every body is an object: serde would also read a struct from an array of its fields in
        // order (`[null, null]` as a no-op PATCH; found by schemathesis).
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::field("body", "must be a JSON object"));
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|err| ApiError::Validation(vec![deserialize_error(err, "body")]))
    })
}

impl<T> FromRequest for ValidJson<T>
where
    T: DeserializeOwned + Validate + 'static,
    T::Context: Default,
{
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let value = read_json::<T>(req, payload);
        Box::pin(async move {
            let value = value.await?;
            value
                .validate()
                .map_err(|r| ApiError::Validation(garde_errors(&r, "body")))?;
            Ok(ValidJson(value))
        })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let value = read_json::<T>(req, payload);
        Box::pin(async move { Ok(JsonBody(value.await?)) })
    }
}

/// Postgres `text` cannot hold NUL, so no string that reaches it may contain one. JSON can only
/// carry it escaped (`\u0000`), in any string or key; query strings as `%00`.
const NUL_MESSAGE: &str = "must not contain NUL characters";

/// Walks a JSON document without building it, failing on a string or key that contains NUL.
struct NulFree;

impl<'de> serde::Deserialize<'de> for NulFree {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NulFree)
    }
}

impl<'de> serde::de::Visitor<'de> for NulFree {
    type Value = NulFree;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<NulFree, E> {
        Ok(NulFree)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NulFree, E> {
        Ok(NulFree)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NulFree, E> {
        Ok(NulFree)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NulFree, E> {
        Ok(NulFree)
    }
    fn visit_unit<E>(self) -> Result<NulFree, E> {
        Ok(NulFree)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NulFree, E> {
        if v.contains('\0') {
            Err(E::custom(NUL_MESSAGE))
        } else {
            Ok(NulFree)
        }
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<NulFree, A::Error> {
        while seq.next_element::<NulFree>()?.is_some() {}
        Ok(NulFree)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<NulFree, A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key.contains('\0') {
                return Err(serde::de::Error::custom(NUL_MESSAGE));
            }
            map.next_value::<NulFree>()?;
        }
        Ok(NulFree)
    }
}

fn scan_json(bytes: &[u8]) -> Result<(), ApiError> {
    let malformed = || ApiError::BadRequest {
        code: "malformed_json",
        detail: "The request body is not valid JSON.".into(),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, NulFree>(&mut de) {
        Ok(NulFree) => de.end().map_err(|_| malformed()),
        Err(err) if err.inner().is_data() => Err(ApiError::Validation(vec![deserialize_error(err, "body")])),
        Err(_) => Err(malformed()),
    }
}

/// The decoded query pairs; a NUL (`%00`) in a name or value is a 422 naming the parameter.
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .map(|(k, v)| {
            if k.contains('\0') || v.contains('\0') {
                Err(ApiError::field(&k.replace('\0', ""), NUL_MESSAGE))
            } else {
                Ok((k, v))
            }
        })
        .collect()
}

/// A query string deserialised into `T` (unknown parameters rejected) and validated with garde.
/// Any failure is a 422 naming the parameter. Every parameter of such a `T` takes one value: one
/// given twice is a 422 naming it (lists where repetition means something, such as the task
/// list's `status`, parse their pairs themselves).
#[derive(Debug)]
pub struct ValidQuery<T>(pub T);

/// Every parameter that occurs more than once, in order of first repetition.
fn repeated(pairs: &[(String, String)]) -> Vec<FieldError> {
    let mut seen: Vec<&str> = Vec::new();
    let mut errors: Vec<FieldError> = Vec::new();
    for (key, _) in pairs {
        if !seen.contains(&key.as_str()) {
            seen.push(key);
        } else if !errors.iter().any(|e| &e.field == key) {
            errors.push(FieldError::new(key.clone(), domain::error::REPEATED));
        }
    }
    errors
}

impl<T> FromRequest for ValidQuery<T>
where
    T: DeserializeOwned + Validate + 'static,
    T::Context: Default,
{
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let parsed = (|| {
            let pairs = query_pairs(req.query_string())?;
            let repeated = repeated(&pairs);
            if !repeated.is_empty() {
                return Err(ApiError::Validation(repeated));
            }
            let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(req.query_string().as_bytes()));
            let value: T = serde_path_to_error::deserialize(de)
                .map_err(|err| ApiError::Validation(vec![deserialize_error(err, "query")]))?;
            value
                .validate()
                .map_err(|r| ApiError::Validation(garde_errors(&r, "query")))?;
            Ok(ValidQuery(value))
        })();
        std::future::ready(parsed)
    }
}

/// The `{id}` path segment as the id type the route names (`IdPath<TaskId>`); anything but a
/// UUID is a 422 naming the parameter.
#[derive(Debug, Clone, Copy)]
pub struct IdPath<T>(pub T);

impl<T: From<Uuid>> FromRequest for IdPath<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let raw = req.match_info().get("id").unwrap_or_default();
        std::future::ready(
            Uuid::try_parse(raw)
                .map(|id| IdPath(T::from(id)))
                .map_err(|_| ApiError::field("id", "must be a UUID")),
        )
    }
}

/// Who is calling: the client address (as the rate limiter sees it), the User-Agent (truncated)
/// and the request id — extracted into the services' plain [`RequestMeta`] (`&meta` derefs to it).
#[derive(Debug, Clone)]
pub struct ClientMeta(pub RequestMeta);

impl std::ops::Deref for ClientMeta {
    type Target = RequestMeta;
    fn deref(&self) -> &RequestMeta {
        &self.0
    }
}

impl FromRequest for ClientMeta {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(512).collect::<String>());
        let request_id = RequestId::of(req);
        // The client address as the rate limiter sees it (X-Forwarded-For only from trusted proxies).
        let state = req.app_data::<web::Data<AppState>>();
        let trusted = state.map_or(&[][..], |s| &s.limits.config.trusted_proxies[..]);
        let ip = crate::infra::ratelimit::request_ip(req, trusted).map(|ip| ip.to_string());
        std::future::ready(Ok(Self(RequestMeta {
            request_id,
            ip,
            user_agent,
        })))
    }
}

/// An authenticated caller: a valid access token whose session is live and whose account exists.
///
/// The session check is exact: a revoked session's access tokens stop working at once, not at
/// their expiry, and the user row is current (role changes apply to the next request). It is one
/// Redis round trip when this instance has the session cached under its user's current auth
/// epoch, else one primary-key join in Postgres (see [`crate::infra::session_cache`]).
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user: User,
    pub session_id: SessionId,
}

impl AuthUser {
    pub fn id(&self) -> UserId {
        self.user.id
    }

    pub fn role(&self) -> Role {
        self.user.role
    }

    /// The caller as the services see it.
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: self.user.id,
            session_id: self.session_id,
            role: self.user.role,
        }
    }
}

/// The claims of this request's bearer token, verified already by the request-wide rate limit
/// (which must know whose token it is before anything else runs).
#[derive(Debug, Clone)]
pub(crate) struct Verified(pub auth::AccessClaims);

/// The token of an `Authorization: Bearer …` header, if there is one (unverified).
pub(crate) fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let verified = req.extensions().get::<Verified>().map(|v| v.0.clone());
        let token = if verified.is_some() { None } else { bearer(req) };
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal(anyhow::anyhow!("AppState missing")))?;
            // With rate limits on, the request-wide limit verified the token (and charged its
            // subject) before any database work; otherwise it is verified here.
            let claims = match verified {
                Some(claims) => claims,
                None => {
                    let token = token.ok_or_else(ApiError::unauthorized)?;
                    state.tokens.verify(&token).map_err(|_| ApiError::invalid_token())?
                }
            };
            // The epoch is read before Postgres: what Postgres says is cached under it.
            let stamp = match state.sessions.lookup(claims.sid, claims.sub).await {
                Lookup::Hit(user) => {
                    return Ok(AuthUser {
                        user: *user,
                        session_id: claims.sid,
                    });
                }
                Lookup::Miss(stamp) => stamp,
            };
            let mut conn = state.db.get().await.map_err(db::DbError::from)?;
            let (session, user) = db::sessions::find_live_with_user(&mut conn, claims.sid)
                .await?
                .filter(|(_, user)| user.id == claims.sub)
                .ok_or_else(ApiError::invalid_token)?;
            if let Some(stamp) = stamp {
                state.sessions.store(session.id, &user, session.expires_at, stamp);
            }
            Ok(AuthUser {
                user,
                session_id: session.id,
            })
        })
    }
}

/// An authenticated admin; any other authenticated caller gets 403.
#[derive(Debug, Clone)]
pub struct AdminUser(pub AuthUser);

impl FromRequest for AdminUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let auth = AuthUser::from_request(req, payload);
        Box::pin(async move {
            let user = auth.await?;
            if user.role() != Role::Admin {
                return Err(ApiError::Forbidden {
                    code: "forbidden",
                    detail: "This action needs the admin role.",
                });
            }
            Ok(AdminUser(user))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialised, to test the error paths")]
    struct Body {
        email: String,
        nested: Option<Nested>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialised, to test the error paths")]
    struct Nested {
        n: u8,
    }

    fn err(json: &str) -> FieldError {
        let mut de = serde_json::Deserializer::from_str(json);
        deserialize_error(
            serde_path_to_error::deserialize::<_, Body>(&mut de).unwrap_err(),
            "body",
        )
    }

    #[test]
    fn names_the_offending_field() {
        assert_eq!(err(r#"{"email":"a","role":"admin"}"#).field, "role");
        assert_eq!(err(r#"{}"#).field, "email");
        assert_eq!(err(r#"{"email":5}"#).field, "email");
        assert_eq!(err(r#"{"email":"a","nested":{"n":300}}"#).field, "nested.n");
        assert!(!err(r#"{"email":5}"#).message.contains("line"));
        assert_eq!(err(r#"{"email":"a","email":"b"}"#).field, "email");
        assert_eq!(err(r#"{"email":"a","nested":{"n":1,"n":2}}"#).field, "nested.n");
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialised, to test the error paths")]
    struct Query {
        limit: Option<i64>,
        cursor: Option<String>,
    }

    fn query_err(query: &str) -> Vec<FieldError> {
        let pairs = query_pairs(query).unwrap();
        let repeated = repeated(&pairs);
        if !repeated.is_empty() {
            return repeated;
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        vec![deserialize_error(
            serde_path_to_error::deserialize::<_, Query>(de).unwrap_err(),
            "query",
        )]
    }

    #[test]
    fn a_repeated_query_parameter_is_named_never_body() {
        assert_eq!(
            query_err("limit=1&limit=2&cursor=a&limit=3&cursor=b"),
            [
                FieldError::new("limit", domain::error::REPEATED),
                FieldError::new("cursor", domain::error::REPEATED)
            ]
        );
        assert_eq!(query_err("limit=x")[0].field, "limit");
        assert_eq!(query_err("other=1")[0].field, "other");
    }
}
