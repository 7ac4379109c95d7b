//! Our own operational routes: liveness, readiness, metrics and the OpenAPI document.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Json, Response},
};
use std::time::Duration;

use serde_json::json;

use super::AppState;

/// The OpenAPI 3 document of the whole API, kept in the repository next to the code it
/// describes (a test checks the two agree).
pub const OPENAPI: &str = include_str!("../../openapi.json");

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: every shared dependency answers within a short timeout. 503 with the failing
/// check named (and nothing secret) otherwise, so a load balancer stops sending traffic here.
pub async fn readyz(State(state): State<AppState>) -> Response {
    const TIMEOUT: Duration = Duration::from_secs(2);
    async fn check<E: std::fmt::Display>(
        probe: impl std::future::Future<Output = Result<(), E>>,
    ) -> Result<(), String> {
        match tokio::time::timeout(TIMEOUT, probe).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
        }
    }
    let mut checks = vec![
        ("database", check(state.db.ping()).await),
        ("storage", check(state.images.check()).await),
    ];
    if state.rate_limiter.is_shared() {
        checks.push(("redis", check(state.rate_limiter.check()).await));
    }
    let ready = checks.iter().all(|(_, result)| result.is_ok());
    let report: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .map(|(name, result)| {
            let value = match result {
                Ok(()) => json!({"status": "ok"}),
                Err(error) => json!({"status": "error", "error": error}),
            };
            (name.to_owned(), value)
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({"status": if ready { "ready" } else { "unavailable" }, "checks": report});
    (status, Json(body)).into_response()
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
    match state.tasks.queue_stats().await {
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
