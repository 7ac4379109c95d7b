//! nano-banana: a self-hosted server for the Nano Banana Images API.
//!
//! Data flows one way: `http` → `domain` → `tasks` → `providers` / `storage`. `api` holds the
//! wire contract shared by the server, the client commands and the tests.

pub mod admin;
pub mod api;
pub mod app;
pub mod client;
pub mod config;
pub mod domain;
pub mod fake;
pub mod fetch;
pub mod http;
pub mod limits;
pub mod providers;
pub mod storage;
pub mod tasks;
pub mod telemetry;
