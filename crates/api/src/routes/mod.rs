//! The route table: every path the API serves, in one place.

use actix_web::web;

pub mod audit;
pub mod auth;
pub mod categories;
pub mod health;
pub mod metrics;
pub mod oauth;
pub mod orders;
pub mod pages;
pub mod products;
pub mod tasks;
pub mod users;

/// A cached (or freshly loaded) JSON body, with `X-Cache: hit|miss`.
pub(crate) fn cached_json((body, status): (bytes::Bytes, crate::infra::cache::CacheStatus)) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("X-Cache", status.header_value()))
        .body(body)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health/live").route(web::get().to(health::live)))
        .service(web::resource("/health/ready").route(web::get().to(health::ready)))
        .configure(pages::configure)
        .service(
            web::scope("/v1")
                .service(web::resource("/auth/signup").route(web::post().to(auth::signup)))
                .service(web::resource("/auth/login").route(web::post().to(auth::login)))
                .service(web::resource("/auth/refresh").route(web::post().to(auth::refresh)))
                .service(web::resource("/auth/logout").route(web::post().to(auth::logout)))
                .service(web::resource("/auth/sessions").route(web::get().to(auth::list_sessions)))
                .service(web::resource("/auth/sessions/{id}").route(web::delete().to(auth::revoke_session)))
                .service(web::resource("/auth/verify-email").route(web::post().to(auth::verify_email)))
                .service(web::resource("/auth/password/forgot").route(web::post().to(auth::forgot_password)))
                .service(web::resource("/auth/password/reset").route(web::post().to(auth::reset_password)))
                .service(web::resource("/auth/oauth/exchange").route(web::post().to(oauth::exchange)))
                .service(web::resource("/auth/oauth/{provider}/authorize").route(web::get().to(oauth::authorize)))
                .service(web::resource("/auth/oauth/{provider}/callback").route(web::get().to(oauth::callback)))
                .service(web::resource("/users/me/identities").route(web::get().to(oauth::list_identities)))
                .service(web::resource("/users/me/identities/{id}").route(web::delete().to(oauth::unlink_identity)))
                .service(web::resource("/audit-events").route(web::get().to(audit::list)))
                .service(
                    web::resource("/categories")
                        .route(web::get().to(categories::list_categories))
                        .route(web::post().to(categories::create_category)),
                )
                .service(
                    web::resource("/categories/{id}")
                        .route(web::patch().to(categories::rename_category))
                        .route(web::delete().to(categories::delete_category)),
                )
                .service(
                    web::resource("/tasks")
                        .route(web::get().to(tasks::list))
                        .route(web::post().to(tasks::create)),
                )
                .service(
                    web::resource("/tasks/{id}")
                        .route(web::get().to(tasks::get))
                        .route(web::patch().to(tasks::update))
                        .route(web::delete().to(tasks::delete)),
                )
                .service(web::resource("/tasks/{id}/restore").route(web::post().to(tasks::restore)))
                .service(
                    web::resource("/products")
                        .route(web::get().to(products::list))
                        .route(web::post().to(products::create)),
                )
                .service(
                    web::resource("/products/{id}")
                        .route(web::get().to(products::get))
                        .route(web::patch().to(products::update))
                        .route(web::delete().to(products::delete)),
                )
                .service(web::resource("/products/{id}/stock").route(web::post().to(products::adjust_stock)))
                .service(web::resource("/products/{id}/stock-movements").route(web::get().to(products::movements)))
                .service(
                    web::resource("/orders")
                        .route(web::get().to(orders::list))
                        .route(web::post().to(orders::create)),
                )
                .service(web::resource("/orders/{id}").route(web::get().to(orders::get)))
                .service(web::resource("/orders/{id}/events").route(web::get().to(orders::events)))
                .service(web::resource("/orders/{id}/cancel").route(web::post().to(orders::cancel)))
                .service(web::resource("/orders/{id}/ship").route(web::post().to(orders::ship)))
                .service(web::resource("/orders/{id}/deliver").route(web::post().to(orders::deliver)))
                .service(web::resource("/webhooks/payments").route(web::post().to(orders::payment_webhook)))
                .service(
                    web::resource("/users/me")
                        .route(web::get().to(users::get_me))
                        .route(web::patch().to(users::patch_me)),
                )
                .service(
                    web::resource("/users")
                        .route(web::get().to(users::list))
                        .route(web::post().to(users::create)),
                )
                .service(
                    web::resource("/users/{id}")
                        .route(web::get().to(users::get))
                        .route(web::patch().to(users::update))
                        .route(web::delete().to(users::delete)),
                ),
        );
}
