//! Credentials: bcrypt password hashing (always on tokio's blocking pool), JWT access tokens with a
//! pinned algorithm and checked `iss`/`aud`/`exp`/`nbf`, and opaque tokens (refresh and e-mail
//! tokens) stored only as SHA-256 hashes.

pub mod jwt;
pub mod opaque;
pub mod password;
pub mod webhook;

pub use jwt::{AccessClaims, JwtError, JwtKeys, TokenIssuer};
pub use opaque::OpaqueToken;
pub use password::PasswordHasher;
