//! Domain types shared by the API and the worker: value types that can only hold valid values
//! ("parse, don't validate"), enums with their string forms, pagination primitives and the
//! domain error. Nothing here performs I/O.

pub mod duration;
pub mod email;
pub mod error;
pub mod id;
pub mod input;
pub mod jobs;
pub mod orders;
pub mod pagination;
pub mod password;
pub mod query;
pub mod shop;
pub mod tasks;
pub mod text;
pub mod time;
pub mod user;

pub use email::Email;
pub use error::{DomainError, FieldError};
pub use id::{CategoryId, OrderId, ProductId, SessionId, TaskId, UserId};
pub use pagination::{Cursor, Limit, Page};
pub use password::Password;
pub use user::{Role, UserName};
