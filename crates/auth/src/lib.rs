//! Credentials: bcrypt password hashing (always on tokio's blocking pool), JWT access tokens with a
//! pinned algorithm and checked `iss`/`aud`/`exp`/`nbf`, and opaque refresh tokens stored only as
//! SHA-256 hashes.

pub mod jwt;
pub mod password;
pub mod refresh;

pub use jwt::{AccessClaims, JwtError, JwtKeys, TokenIssuer};
pub use password::PasswordHasher;
pub use refresh::RefreshToken;
