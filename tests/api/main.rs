//! The integration suite: one binary, the real server on a random port, driven over HTTP.

mod helpers;

mod admin;
mod auth;
mod backup;
mod billing;
mod callbacks;
mod connections;
mod console;
mod console_browser;
mod crash;
mod database;
mod faults;
mod gemini;
mod generate_content;
mod hostile;
mod idempotency;
mod images;
mod lifecycle;
mod migrate;
mod multinode;
mod nodes;
mod openai;
mod openapi;
mod origin;
mod procs;
mod ratelimit_redis;
mod routing;
mod sdk;
mod storage;
mod tasks;
mod tls;
mod upstream_chat;
mod upstream_openai;
mod vertex;
mod webdriver;
