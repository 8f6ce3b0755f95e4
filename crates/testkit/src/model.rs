//! The API's bodies as tests see them: small serde structs of the test's own (not the server's
//! types, so a change of the wire format fails a test instead of changing with it), and builders
//! for request bodies with sensible defaults.

use chrono::{DateTime, Utc};
use domain::{CategoryId, SessionId, TaskId, UserId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::PASSWORD;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Admin,
}

/// `UserResponse`: `/v1/users/me`, `/v1/users/{id}`, the `user` of a sign-up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub email_verified: bool,
    pub created_at: DateTime<Utc>,
}

/// A token pair: the body of a login or a refresh.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Tokens {
    #[serde(rename = "access_token")]
    pub access: String,
    #[serde(rename = "refresh_token")]
    pub refresh: String,
    pub token_type: String,
    pub expires_in: u64,
}

/// The body of `POST /v1/auth/signup`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SignedUp {
    pub user: User,
    #[serde(flatten)]
    pub tokens: Tokens,
}

/// A signed-in user: the account as the API returned it and its token pair.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    /// `user.id`, the field tests use most.
    pub user_id: UserId,
    pub access: String,
    pub refresh: String,
}

impl From<SignedUp> for Session {
    fn from(s: SignedUp) -> Self {
        Self {
            user_id: s.user.id,
            user: s.user,
            access: s.tokens.access,
            refresh: s.tokens.refresh,
        }
    }
}

/// One entry of `GET /v1/auth/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SessionInfo {
    pub id: SessionId,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub current: bool,
}

/// A page of a cursor-paginated list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Category {
    pub id: CategoryId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A category as embedded in a task.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CategoryRef {
    pub id: CategoryId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub title: String,
    pub description: Option<String>,
    pub status: String,
    pub priority: String,
    pub due_at: Option<DateTime<Utc>>,
    pub categories: Vec<CategoryRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// One entry of `GET /v1/audit-events`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AuditEvent {
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub actor_id: Option<UserId>,
    pub target_type: Option<String>,
    pub target_id: Option<Uuid>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub data: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
}

/// A sign-up or admin-create body: [`PASSWORD`] and the name "Test User" unless changed.
#[derive(Debug, Clone, Serialize)]
pub struct NewUser {
    pub email: String,
    pub password: String,
    pub name: String,
    /// Only admins may send it (`POST /v1/users`); sign-up refuses the field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

impl NewUser {
    pub fn new(email: &str) -> Self {
        Self {
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
            name: "Test User".to_owned(),
            role: None,
        }
    }

    #[must_use]
    pub fn name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    #[must_use]
    pub fn password(mut self, password: &str) -> Self {
        password.clone_into(&mut self.password);
        self
    }

    #[must_use]
    pub fn role(mut self, role: Role) -> Self {
        self.role = Some(role);
        self
    }
}

/// A `POST /v1/tasks` body: a title, and only the fields set here (the rest take the server's
/// defaults).
#[derive(Debug, Clone, Default, Serialize)]
pub struct NewTask {
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// RFC 3339, sent as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category_ids: Option<Vec<CategoryId>>,
}

impl NewTask {
    pub fn titled(title: &str) -> Self {
        Self {
            title: title.to_owned(),
            ..Self::default()
        }
    }

    #[must_use]
    pub fn description(mut self, description: &str) -> Self {
        self.description = Some(description.to_owned());
        self
    }

    #[must_use]
    pub fn status(mut self, status: &str) -> Self {
        self.status = Some(status.to_owned());
        self
    }

    #[must_use]
    pub fn priority(mut self, priority: &str) -> Self {
        self.priority = Some(priority.to_owned());
        self
    }

    /// `None` sends no `due_at` at all.
    #[must_use]
    pub fn due(mut self, due_at: Option<&str>) -> Self {
        self.due_at = due_at.map(str::to_owned);
        self
    }

    #[must_use]
    pub fn categories(mut self, ids: &[CategoryId]) -> Self {
        self.category_ids = Some(ids.to_vec());
        self
    }
}
