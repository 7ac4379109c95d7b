//! Our own operational routes: liveness and the OpenAPI document.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Json, Response},
};
use serde_json::json;

use super::AppState;

/// The OpenAPI 3 document of the whole API, kept in the repository next to the code it
/// describes (a test checks the two agree).
pub const OPENAPI: &str = include_str!("../../openapi.json");

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Prometheus metrics. Queue gauges are read from the database at scrape time, so they are
/// right for the whole deployment, not just this process.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let Some(handle) = crate::telemetry::metrics() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable\n",
        )
            .into_response();
    };
    match state.tasks.db().queue_stats().await {
        Ok(stats) => {
            for state_name in ["pending", "processing", "succeeded", "failed"] {
                let n = stats
                    .tasks_by_state
                    .iter()
                    .find(|(s, _)| s == state_name)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("nano_banana_tasks", "state" => state_name).set(n as f64);
                if state_name == "pending" {
                    metrics::gauge!("nano_banana_queue_depth").set(n as f64);
                }
            }
            metrics::gauge!("nano_banana_callback_backlog").set(stats.callback_backlog as f64);
        }
        Err(e) => tracing::warn!(error = %e, "could not read queue statistics"),
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
