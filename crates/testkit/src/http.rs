//! Talking to a running API: raw requests ([`Http::get`], [`Http::post`]… return a [`Res`] to
//! assert on) and typed helpers that read like the API ([`Http::signup`], [`Http::login`],
//! [`Http::create_task`]…): each asserts the success status and returns the decoded body, so a
//! test states its scenario in calls and keeps its assertions for what it is about. Failures are
//! tested with the raw requests or the `try_` variants.

use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::model::{Category, NewTask, NewUser, Page, Session, SessionInfo, SignedUp, Task, Tokens, User};

pub use reqwest::{Method, StatusCode};

/// A response: status, headers and the body parsed as JSON (Null when empty or not JSON).
#[derive(Debug)]
pub struct Res {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Res {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem+json body with this status and code; returns the body.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "body: {}",
            self.body
        );
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["detail"].is_string() && self.body["type"].is_string());
        assert_eq!(
            Some(self.body["request_id"].as_str().unwrap()),
            self.header("x-request-id")
        );
        &self.body
    }

    /// The body decoded as `T`.
    #[track_caller]
    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.body.clone())
            .unwrap_or_else(|e| panic!("cannot decode {}: {e}; body: {}", std::any::type_name::<T>(), self.body))
    }

    /// Asserts the status, then decodes the body as `T`.
    #[track_caller]
    pub fn expect<T: DeserializeOwned>(&self, status: StatusCode) -> T {
        assert_eq!(self.status, status, "body: {}", self.body);
        self.json()
    }

    /// Asserts the status of a response without a body worth decoding.
    #[track_caller]
    pub fn expect_status(&self, status: StatusCode) {
        assert_eq!(self.status, status, "body: {}", self.body);
    }
}

/// An HTTP client bound to one API's base URL.
#[derive(Debug, Clone)]
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

impl Http {
    pub fn new(base: String) -> Self {
        Self {
            base,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Res {
        let res = req.send().await.expect("request failed");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Res { status, headers, body }
    }

    pub async fn request(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Res {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Res {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Res {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Res {
        self.request(Method::PATCH, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Res {
        self.request(Method::DELETE, path, token, None).await
    }

    // --- accounts ---

    /// Signs up `email` with [`crate::PASSWORD`] and the name "Test User".
    pub async fn signup(&self, email: &str) -> Session {
        self.signup_as(&NewUser::new(email)).await
    }

    pub async fn signup_as(&self, user: &NewUser) -> Session {
        let signed: SignedUp = self.try_signup(user).await.expect(StatusCode::CREATED);
        signed.into()
    }

    pub async fn try_signup(&self, user: &NewUser) -> Res {
        self.post("/v1/auth/signup", None, to_json(user)).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Tokens {
        self.try_login(email, password).await.expect(StatusCode::OK)
    }

    pub async fn try_login(&self, email: &str, password: &str) -> Res {
        self.post("/v1/auth/login", None, json!({"email": email, "password": password}))
            .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Tokens {
        self.try_refresh(refresh_token).await.expect(StatusCode::OK)
    }

    pub async fn try_refresh(&self, refresh_token: &str) -> Res {
        self.post("/v1/auth/refresh", None, json!({"refresh_token": refresh_token}))
            .await
    }

    pub async fn logout(&self, refresh_token: &str) {
        self.post("/v1/auth/logout", None, json!({"refresh_token": refresh_token}))
            .await
            .expect_status(StatusCode::NO_CONTENT);
    }

    pub async fn sessions(&self, access: &str) -> Vec<SessionInfo> {
        self.get("/v1/auth/sessions", Some(access)).await.expect(StatusCode::OK)
    }

    pub async fn me(&self, access: &str) -> User {
        self.get("/v1/users/me", Some(access)).await.expect(StatusCode::OK)
    }

    /// `PATCH /v1/users/me` with a raw body (absent and `null` fields matter there).
    pub async fn update_me(&self, access: &str, changes: Value) -> User {
        self.patch("/v1/users/me", Some(access), changes)
            .await
            .expect(StatusCode::OK)
    }

    pub async fn verify_email(&self, token: &str) {
        self.post("/v1/auth/verify-email", None, json!({"token": token}))
            .await
            .expect_status(StatusCode::NO_CONTENT);
    }

    pub async fn forgot_password(&self, email: &str) {
        self.post("/v1/auth/password/forgot", None, json!({"email": email}))
            .await
            .expect_status(StatusCode::ACCEPTED);
    }

    pub async fn try_reset_password(&self, token: &str, new_password: &str) -> Res {
        self.post(
            "/v1/auth/password/reset",
            None,
            json!({"token": token, "new_password": new_password}),
        )
        .await
    }

    pub async fn reset_password(&self, token: &str, new_password: &str) {
        self.try_reset_password(token, new_password)
            .await
            .expect_status(StatusCode::NO_CONTENT);
    }

    // --- administration ---

    pub async fn create_user(&self, admin: &str, user: &NewUser) -> User {
        self.post("/v1/users", Some(admin), to_json(user))
            .await
            .expect(StatusCode::CREATED)
    }

    pub async fn user(&self, admin: &str, id: domain::UserId) -> User {
        self.get(&format!("/v1/users/{id}"), Some(admin))
            .await
            .expect(StatusCode::OK)
    }

    /// `GET /v1/users?{query}` (`query` without the `?`, may be empty).
    pub async fn users(&self, admin: &str, query: &str) -> Page<User> {
        self.get(&with_query("/v1/users", query), Some(admin))
            .await
            .expect(StatusCode::OK)
    }

    // --- tasks and categories ---

    pub async fn create_category(&self, access: &str, name: &str) -> Category {
        self.post("/v1/categories", Some(access), json!({ "name": name }))
            .await
            .expect(StatusCode::CREATED)
    }

    pub async fn create_task(&self, access: &str, task: &NewTask) -> Task {
        self.try_create_task(access, task).await.expect(StatusCode::CREATED)
    }

    pub async fn try_create_task(&self, access: &str, task: &NewTask) -> Res {
        self.post("/v1/tasks", Some(access), to_json(task)).await
    }

    pub async fn task(&self, access: &str, id: domain::TaskId) -> Task {
        self.get(&format!("/v1/tasks/{id}"), Some(access))
            .await
            .expect(StatusCode::OK)
    }

    /// `PATCH /v1/tasks/{id}` with a raw body (absent and `null` fields differ).
    pub async fn update_task(&self, access: &str, id: domain::TaskId, changes: Value) -> Task {
        self.patch(&format!("/v1/tasks/{id}"), Some(access), changes)
            .await
            .expect(StatusCode::OK)
    }

    /// `GET /v1/tasks?{query}` (`query` without the `?`, may be empty).
    pub async fn tasks(&self, access: &str, query: &str) -> Page<Task> {
        self.get(&with_query("/v1/tasks", query), Some(access))
            .await
            .expect(StatusCode::OK)
    }
}

fn to_json(body: &impl Serialize) -> Value {
    serde_json::to_value(body).unwrap()
}

fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}
