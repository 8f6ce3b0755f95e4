//! Integration tests: the real API over HTTP against real Postgres and Redis (see `testkit`).
//! One test binary with modules, so the workspace links once.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod audit;
mod auth;
mod binary;
mod conformance;
mod crafted;
mod credentials;
mod deploy;
mod edge;
mod errors;
mod hardening;
mod mail;
mod oauth;
mod pages;
mod ratelimit;
mod revocation;
mod shared;
mod shop;
mod shop_faults;
mod snapshots;
mod tasks;
mod traces;
mod users;
