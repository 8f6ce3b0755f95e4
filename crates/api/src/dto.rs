//! Response bodies shared by several route modules.

use chrono::{DateTime, Utc};
use domain::Role;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// A user as clients see it. Never carries the password hash.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct UserResponse {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub email_verified: bool,
    pub created_at: DateTime<Utc>,
}

impl From<db::users::User> for UserResponse {
    fn from(u: db::users::User) -> Self {
        Self {
            id: u.id.into(),
            role: u.role,
            email: u.email,
            name: u.name,
            email_verified: u.email_verified_at.is_some(),
            created_at: u.created_at,
        }
    }
}

/// A page of a cursor-paginated list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T: ToSchema> Page<T> {
    /// The response body of a service page, each item converted to its response type.
    pub fn of<R>(page: domain::Page<R>, item: impl FnMut(R) -> T) -> Self {
        let page = page.map(item);
        Self {
            items: page.items,
            next_cursor: page.next_cursor,
        }
    }
}
