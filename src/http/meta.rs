//! Our own operational routes: liveness and the OpenAPI document.

use axum::{
    http::header,
    response::{IntoResponse, Json},
};
use serde_json::json;

/// The OpenAPI 3 document of the whole API, kept in the repository next to the code it
/// describes (a test checks the two agree).
pub const OPENAPI: &str = include_str!("../../openapi.json");

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
