//! Business operations: each function is one use case with its transaction boundary. Handlers
//! translate HTTP to these calls; these call the `db` query modules.

pub mod audit;
pub mod auth;
pub mod jobs;
pub mod tasks;
pub mod users;
