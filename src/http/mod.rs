//! The HTTP surface: the contract's routes and aliases, our own routes (stored images, health,
//! OpenAPI, administration), the trace-id middleware and the 404 fallback. Handlers parse the
//! request into `domain` types, authenticate through `accounts`, hand over to `tasks`, and map
//! every error to the contract's body (`error.rs`).
//!
//! Never here: SQL, upstream calls, token hashing. Nothing below `http` imports it (only `app`).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Instant,
};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request},
    http::HeaderValue,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tracing::Instrument;

use crate::{
    accounts::{Accounts, AdminKey},
    api::ErrorCode,
    domain::RequestLimits,
    limits::RateLimiter,
    storage::{Db, ImageStore},
    tasks::Tasks,
};

mod admin;
pub mod auth;
mod dialect;
pub mod error;
mod files;
mod gemini;
mod images;
mod meta;
mod openai;
pub mod server;
pub mod submit;
mod tasks;

pub use error::HttpError;
pub use server::PeerAddr;

/// What every handler may use: one reference count, cloned per request by axum's `State`.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

/// The services behind the routes.
pub struct Services {
    pub accounts: Accounts,
    pub tasks: Arc<Tasks>,
    /// Stored images, served by `GET /images/{key}`.
    pub images: ImageStore,
    /// For readiness only: handlers reach data through `accounts` and `tasks`.
    pub db: Db,
    pub limits: RequestLimits,
    /// The largest input image, in bytes: uploads are checked against it as they arrive.
    pub max_image_bytes: usize,
    /// Per-application rate limits; `check()` tells readiness whether its store answers.
    pub rate_limiter: RateLimiter,
    /// `None`: the admin API is off.
    pub admin_key: Option<AdminKey>,
}

impl AppState {
    pub fn new(services: Services) -> AppState {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The request's trace id, set by the middleware before any handler runs.
#[derive(Debug, Clone)]
pub struct TraceId(pub String);

/// The API's routes and ours, plus `extra` (the web console), all behind the trace-id layer.
pub fn router(state: AppState, max_body_bytes: usize, extra: Router<AppState>) -> Router {
    let api = Router::new()
        .route("/nano-banana/images", post(images::create))
        .route("/gemini/images", post(images::create))
        .route("/nanobanana/images", post(images::create))
        .route("/nano-banana/tasks", post(tasks::retrieve))
        .route("/gemini/tasks", post(tasks::retrieve))
        .route("/nanobanana/tasks", post(tasks::retrieve))
        .route("/v1/images/generations", post(openai::v1_generations))
        .route("/v1/images/edits", post(openai::v1_edits))
        .route(
            "/openai/images/generations",
            post(openai::original_generations),
        )
        .route("/openai/images/edits", post(openai::original_edits))
        // One path, two dialects: OpenAI's model lookup, and Gemini's `generateContent` under the
        // API version the `google-genai` SDK uses by default.
        .route("/v1/models/{id}", get(openai::model).post(gemini::generate))
        .route("/v1beta/models/{target}", post(gemini::generate))
        .layer(DefaultBodyLimit::max(max_body_bytes));
    Router::new()
        .merge(api)
        .merge(admin::routes(state.clone()))
        .merge(extra)
        .route("/images/{key}", get(files::get))
        .route("/v1/models", get(openai::models))
        .route("/healthz", get(meta::healthz))
        .route("/readyz", get(meta::readyz))
        .route("/openapi.json", get(meta::openapi))
        .route("/metrics", get(meta::metrics))
        .fallback(no_api)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(TraceLayer)
        .with_state(state)
}

/// Gives every request a fresh trace id (extension + `x-trace-id` response header) and a span.
/// A layer of its own rather than `middleware::from_fn`: its future is the route's plus a few
/// fields, where `from_fn` boxes an async block per request and clones the inner service into it
/// (~2 KB more for every waiting request, BENCHMARKS.md S3).
#[derive(Debug, Clone, Copy)]
struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced { inner }
    }
}

#[derive(Debug, Clone)]
struct Traced<S> {
    inner: S,
}

impl<S> tower::Service<Request> for Traced<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TracedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let trace_id = uuid::Uuid::new_v4().to_string();
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            trace_id = %trace_id,
        );
        let header = HeaderValue::from_str(&trace_id).ok();
        request.extensions_mut().insert(TraceId(trace_id));
        let inner = span.in_scope(|| self.inner.call(request));
        TracedFuture {
            inner: inner.instrument(span),
            header,
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    struct TracedFuture<F> {
        #[pin]
        inner: tracing::instrument::Instrumented<F>,
        header: Option<HeaderValue>,
        started: Instant,
    }
}

impl<F, E> Future for TracedFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut response = ready!(this.inner.as_mut().poll(cx))?;
        this.inner.span().in_scope(|| {
            tracing::debug!(
                status = response.status().as_u16(),
                elapsed_us = this.started.elapsed().as_micros() as u64,
                "answered"
            )
        });
        if let Some(value) = this.header.take() {
            response.headers_mut().insert("x-trace-id", value);
        }
        Poll::Ready(Ok(response))
    }
}

async fn no_api(axum::Extension(trace_id): axum::Extension<TraceId>) -> impl IntoResponse {
    HttpError::code(&trace_id.0, ErrorCode::NoApi, "No API at this path.")
}

/// A path we serve, asked with a method it does not take (`GET /nano-banana/images`, `TRACE`, …):
/// 405 as HTTP says, with the `Allow` header axum adds (RFC 9110 requires it), and the contract's
/// error body. The contract gives no code of its own for this, and `no_api` still says what the
/// client needs: nothing answers this method here. (An unknown path stays 404 `no_api`.)
async fn method_not_allowed(axum::Extension(trace_id): axum::Extension<TraceId>) -> Response {
    let mut response = HttpError::code(
        &trace_id.0,
        ErrorCode::NoApi,
        "No API for this method at this path; the Allow header lists the methods it takes.",
    )
    .into_response();
    *response.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    response
}
