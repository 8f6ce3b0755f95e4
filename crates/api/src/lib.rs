//! The HTTP API: configuration, the actix app, handlers, services and operator commands.
//! `main.rs` only parses the command line; everything is here so tests build the same app.
//!
//! Read top-down: [`startup`] builds [`state`] and the app; [`http`] is the middleware and the
//! extractors; [`routes`] are the handlers; [`services`] the use cases; [`infra`] the Redis-backed
//! pieces (pool, cache, rate limiter, job dispatcher); [`config`], [`metrics`] and [`error`] are
//! shared below them. No module imports one that imports it back.

pub mod cli;
pub mod config;
pub mod dto;
pub mod error;
pub mod http;
pub mod infra;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod seed;
pub mod services;
pub mod startup;
pub mod state;
pub mod validate;
