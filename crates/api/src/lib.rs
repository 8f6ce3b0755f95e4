//! The HTTP API: configuration, the actix app, handlers, services and operator commands.
//! `main.rs` only parses the command line; everything is here so tests build the same app.

pub mod cache;
pub mod cli;
pub mod config;
pub mod dto;
pub mod edge;
pub mod error;
pub mod extract;
pub mod hardening;
pub mod metrics;
pub mod openapi;
pub mod queue;
pub mod ratelimit;
pub mod redis_pool;
pub mod routes;
pub mod seed;
pub mod services;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod validate;
pub mod wire;
