//! The account pages our e-mails and the OpenID Connect flow point at: `/verify-email`,
//! `/reset-password` and `/login`, with their one script and stylesheet under `/assets/`.
//! Small static HTML compiled into the binary (`crates/api/pages/`), no framework, no CDN; the
//! script calls the public API on this origin. A deployment with its own frontend points
//! `PUBLIC_URL` there instead and ignores these.
//!
//! The pages' CSP ([`PAGES_CSP`]) allows scripts, styles and `fetch` from this origin only: no
//! inline script, no outside resource. `/verify-email` verifies only on a click (a POST), never
//! on a GET, so a mail scanner's prefetch cannot spend the token.

use actix_web::{HttpResponse, http::header, web};
use domain::text::escape_html;

use crate::state::AppState;

/// The policy of the account pages: own script, style and API only; no framing, no `<base>`,
/// forms post only here.
pub const PAGES_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                             img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const VERIFY_EMAIL: &str = include_str!("../../pages/verify-email.html");
const RESET_PASSWORD: &str = include_str!("../../pages/reset-password.html");
const LOGIN: &str = include_str!("../../pages/login.html");
const SCRIPT: &str = include_str!("../../pages/account.js");
const STYLE: &str = include_str!("../../pages/account.css");
const ICON: &str = include_str!("../../pages/icon.svg");

fn page(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CONTENT_SECURITY_POLICY, PAGES_CSP))
        .body(body)
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(body)
}

pub async fn verify_email() -> HttpResponse {
    page(VERIFY_EMAIL.to_owned())
}

pub async fn reset_password() -> HttpResponse {
    page(RESET_PASSWORD.to_owned())
}

/// The password form, and one "Sign in with …" link per configured provider, each starting the
/// `return_to` flow back to this page.
pub async fn login(state: web::Data<AppState>) -> HttpResponse {
    page(LOGIN.replace("<!--providers-->", &provider_links(&state)))
}

/// One link per provider to its authorize route with `return_to` = this page (when that URL is
/// in `OAUTH_RETURN_URLS`; otherwise the flow could not come back here, and no link is shown).
fn provider_links(state: &AppState) -> String {
    let here = format!("{}/login", state.config.public_url);
    if !state.config.oidc.return_urls.contains(&here) {
        return String::new();
    }
    let return_to: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
    state
        .config
        .oidc
        .providers
        .iter()
        .map(|p| {
            let mut label = p.name.replace('_', " ");
            if let Some(first) = label.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            format!(
                "<a class=\"provider\" href=\"/v1/auth/oauth/{}/authorize?return_to={}\">Sign in with {}</a>\n",
                escape_html(&p.name),
                escape_html(&return_to),
                escape_html(&label)
            )
        })
        .collect()
}

pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

pub async fn icon() -> HttpResponse {
    asset("image/svg+xml", ICON)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/verify-email").route(web::get().to(verify_email)))
        .service(web::resource("/reset-password").route(web::get().to(reset_password)))
        .service(web::resource("/login").route(web::get().to(login)))
        .service(web::resource("/assets/account.js").route(web::get().to(script)))
        .service(web::resource("/assets/account.css").route(web::get().to(style)))
        .service(web::resource("/assets/icon.svg").route(web::get().to(icon)));
}
