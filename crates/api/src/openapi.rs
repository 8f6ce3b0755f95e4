//! The OpenAPI document (served at `/openapi.json`, browsable at `/docs` with a vendored Swagger UI).

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Task Shop API",
        description = "Accounts, tasks and a small shop. Errors are RFC 9457 `application/problem+json` \
            bodies with a stable `code`, field-level `errors` and the `request_id` (also sent as `X-Request-Id` \
            on every response). Lists use opaque cursors: `?limit=1..100&cursor=…` → `{items, next_cursor}`. \
            Request bodies over 64 KiB get 413; malformed JSON 400; a non-JSON content type 415; unknown \
            fields 422. Every GET also answers HEAD. Every 503 carries `Retry-After`. Malformed HTTP gets a 400 \
            problem, request heads over 128 KiB or 96 headers 431, a head not sent within \
            `CLIENT_REQUEST_TIMEOUT` 408 (each closes the connection).",
        version = "1.0.0"
    ),
    paths(
        routes::health::live,
        routes::health::ready,
        crate::routes::metrics::scrape,
        routes::auth::signup,
        routes::auth::login,
        routes::auth::refresh,
        routes::auth::logout,
        routes::auth::list_sessions,
        routes::auth::revoke_session,
        routes::auth::verify_email,
        routes::auth::forgot_password,
        routes::auth::reset_password,
        routes::oauth::authorize,
        routes::oauth::callback,
        routes::oauth::exchange,
        routes::oauth::list_identities,
        routes::oauth::unlink_identity,
        routes::audit::list,
        routes::categories::list_categories,
        routes::categories::create_category,
        routes::categories::rename_category,
        routes::categories::delete_category,
        routes::tasks::list,
        routes::tasks::create,
        routes::tasks::get,
        routes::tasks::update,
        routes::tasks::delete,
        routes::tasks::restore,
        routes::users::get_me,
        routes::users::patch_me,
        routes::users::list,
        routes::users::create,
        routes::users::get,
        routes::users::update,
        routes::users::delete,
        routes::products::list,
        routes::products::get,
        routes::products::create,
        routes::products::update,
        routes::products::delete,
        routes::products::adjust_stock,
        routes::products::movements,
        routes::orders::create,
        routes::orders::list,
        routes::orders::get,
        routes::orders::events,
        routes::orders::cancel,
        routes::orders::ship,
        routes::orders::deliver,
        routes::orders::payment_webhook,
    ),
    components(schemas(crate::error::Problem, domain::FieldError, domain::jobs::AuditEventType)),
    modifiers(&BearerAuth, &ResponseDescriptions, &HttpConformance),
    tags(
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "auth", description = "Sign-up, login, token rotation, sessions"),
        (name = "users", description = "Your profile; user administration (admin)"),
        (name = "products", description = "The catalogue (public, cached); products and stock (admin)"),
        (name = "orders", description = "Checkout with Idempotency-Key, orders and their timeline, transitions, the payment webhook"),
        (name = "audit", description = "The append-only audit log (admin)"),
        (name = "tasks", description = "Your tasks and categories"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// OpenAPI requires a description on every response and unique operation ids: default empty
/// descriptions to the status' reason phrase ("OK", "Created"…) and prefix each operation id
/// with its tag (`users_list`, `tasks_list`).
struct ResponseDescriptions;

impl Modify for ResponseDescriptions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in ops.into_iter().flatten() {
                if let (Some(id), Some(tag)) = (op.operation_id.as_mut(), op.tags.as_ref().and_then(|t| t.first())) {
                    *id = format!("{tag}_{id}");
                }
                for (status, response) in op.responses.responses.iter_mut() {
                    if let utoipa::openapi::RefOr::T(r) = response
                        && r.description.is_empty()
                    {
                        let reason = status
                            .parse::<u16>()
                            .ok()
                            .and_then(|s| actix_web::http::StatusCode::from_u16(s).ok())
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("Response");
                        r.description = reason.to_owned();
                    }
                }
            }
        }
    }
}

/// What holds for every operation, written once: each GET also answers HEAD (same status and
/// headers, no body); every `/v1` operation may answer 503 (a backing service down, or the request
/// not handled within `REQUEST_TIMEOUT`) and 500; one with a body 400/408/413/415/422 (the edge's
/// own rejections); one with a bearer requirement 401; one with parameters 422; every `/v1`
/// operation may answer 429 (the request-wide `USER`/`ANON` budget, charged on every request);
/// every 503 and 429 carries `Retry-After`.
struct HttpConformance;

impl Modify for HttpConformance {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Object, Ref, RefOr, Response, Type, header::Header, path::Operation};
        let problem = |description: &str| {
            let mut r = Response::new(description);
            r.content.insert(
                crate::error::PROBLEM_JSON.to_owned(),
                RefOr::T(Content::new(Some(Ref::from_schema_name("Problem")))),
            );
            RefOr::T(r)
        };
        let mut retry_after = Header::new(Object::with_type(Type::Integer));
        retry_after.description = Some("Seconds to wait before retrying.".to_owned());
        for (path, item) in openapi.paths.paths.iter_mut() {
            let ops: [&mut Option<Operation>; 4] = [&mut item.get, &mut item.post, &mut item.patch, &mut item.delete];
            for op in ops.into_iter().flatten() {
                let responses = &mut op.responses.responses;
                if path.starts_with("/v1/") {
                    responses.entry("503".to_owned()).or_insert_with(|| {
                        problem(
                            "A backing service is unavailable (`service_unavailable`), or the request was not \
                             handled within `REQUEST_TIMEOUT` (`request_timeout`); retry after `Retry-After` seconds",
                        )
                    });
                    if op.request_body.is_some() {
                        responses.entry("408".to_owned()).or_insert_with(|| {
                            problem("The request body stopped arriving (`request_timeout`); the connection is closed")
                        });
                        // The edge's own rejections of a body, before the handler runs.
                        for (status, what) in [
                            ("400", "The body is not valid JSON (`malformed_json`)"),
                            ("413", "The body is larger than 64 KiB (`payload_too_large`)"),
                            ("415", "The body is not `application/json` (`unsupported_media_type`)"),
                            (
                                "422",
                                "A field is missing, unknown or invalid (`validation_failed`, field named)",
                            ),
                        ] {
                            responses.entry(status.to_owned()).or_insert_with(|| problem(what));
                        }
                    }
                    if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                        responses.entry("401".to_owned()).or_insert_with(|| {
                            problem(
                                "No valid access token, or its session was revoked (`unauthorized`, `invalid_token`)",
                            )
                        });
                    }
                    let parameters = op.parameters.as_deref().unwrap_or_default();
                    if !parameters.is_empty() {
                        responses.entry("422".to_owned()).or_insert_with(|| {
                            problem("A path or query parameter is invalid, unknown or repeated (`validation_failed`)")
                        });
                    }
                    responses.entry("429".to_owned()).or_insert_with(|| {
                        problem(
                            "Too many requests (`rate_limited`): the request-wide budget is spent — `USER` per \
                             user for a verified access token, `ANON` per client address otherwise; retry after \
                             `Retry-After` seconds",
                        )
                    });
                    responses.entry("500".to_owned()).or_insert_with(|| {
                        problem("An unexpected error (`internal_error`); the detail is logged, not sent")
                    });
                }
                for status in ["429", "503"] {
                    if let Some(RefOr::T(refused)) = responses.get_mut(status) {
                        refused
                            .headers
                            .insert("Retry-After".to_owned(), RefOr::T(retry_after.clone()));
                    }
                }
            }
            if let (Some(get), None) = (&item.get, &item.head) {
                let mut head = get.clone();
                head.operation_id = get.operation_id.as_ref().map(|id| format!("{id}_head"));
                head.description = Some(
                    "Like GET, without a body: the same status and headers (including `Content-Length`).".to_owned(),
                );
                for response in head.responses.responses.values_mut() {
                    if let RefOr::T(r) = response {
                        r.content.clear();
                    }
                }
                item.head = Some(head);
            }
        }
    }
}
