//! The HTTP surface: the contract's routes and aliases, our own routes (stored images, health,
//! OpenAPI), the trace-id middleware and the 404 fallback. Handlers parse and authenticate, then
//! hand over to `tasks`; they never touch SQL or the upstreams.

use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request},
    http::HeaderValue,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tracing::Instrument;

use crate::{api::ErrorCode, domain::RequestLimits, tasks::Tasks};

mod admin;
pub mod auth;
pub mod error;
mod files;
mod images;
mod meta;
pub mod server;
mod tasks;

pub use error::HttpError;

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    pub tasks: Arc<Tasks>,
    pub limits: RequestLimits,
    /// Per-application rate limits; `check()` tells readiness whether its store answers.
    pub rate_limiter: Arc<crate::limits::RateLimiter>,
    /// `None`: the admin API is off.
    pub admin_key: Option<Arc<str>>,
    /// Token lookups reused for a few seconds.
    pub tokens: Arc<auth::TokenCache>,
}

/// The request's trace id, set by the middleware before any handler runs.
#[derive(Debug, Clone)]
pub struct TraceId(pub String);

pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let api = Router::new()
        .route("/nano-banana/images", post(images::create))
        .route("/gemini/images", post(images::create))
        .route("/nanobanana/images", post(images::create))
        .route("/nano-banana/tasks", post(tasks::retrieve))
        .route("/gemini/tasks", post(tasks::retrieve))
        .route("/nanobanana/tasks", post(tasks::retrieve))
        .layer(DefaultBodyLimit::max(max_body_bytes));
    Router::new()
        .merge(api)
        .merge(admin::routes(state.clone()))
        .route("/images/{key}", get(files::get))
        .route("/healthz", get(meta::healthz))
        .route("/readyz", get(meta::readyz))
        .route("/openapi.json", get(meta::openapi))
        .route("/metrics", get(meta::metrics))
        .fallback(no_api)
        .method_not_allowed_fallback(no_api)
        .layer(middleware::from_fn(trace))
        .with_state(state)
}

/// Gives every request a fresh trace id (extension + `x-trace-id` response header) and a span.
async fn trace(mut request: Request, next: Next) -> Response {
    let trace_id = uuid::Uuid::new_v4().to_string();
    request.extensions_mut().insert(TraceId(trace_id.clone()));
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        trace_id = %trace_id,
    );
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "answered"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert("x-trace-id", value);
    }
    response
}

async fn no_api(axum::Extension(trace_id): axum::Extension<TraceId>) -> impl IntoResponse {
    HttpError::code(&trace_id.0, ErrorCode::NoApi, "No API at this path.")
}
