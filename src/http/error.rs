//! The one place where contract errors become HTTP responses. Every error body carries the
//! request's trace id (and the task id when a task exists); internals are logged by whoever
//! turned them into an `ApiError`, never sent.

use axum::{
    Json,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use crate::api::{ApiError, ErrorCode, Throttle};

/// An error answer for one request.
#[derive(Debug)]
pub struct HttpError {
    pub trace_id: String,
    pub error: ApiError,
}

impl HttpError {
    pub fn new(trace_id: &str, error: ApiError) -> HttpError {
        HttpError {
            trace_id: trace_id.to_owned(),
            error,
        }
    }

    pub fn code(trace_id: &str, code: ErrorCode, message: impl Into<String>) -> HttpError {
        HttpError::new(trace_id, ApiError::new(code, message))
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.error.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.error.body(&self.trace_id, None))).into_response();
        if let Some(throttle) = &self.error.throttle {
            throttle_headers(response.headers_mut(), throttle);
        }
        response
    }
}

/// `Retry-After` and the refusing limit's own headers, on a `too_many_requests` answer of any
/// dialect.
pub fn throttle_headers(headers: &mut HeaderMap, throttle: &Throttle) {
    headers.insert("retry-after", HeaderValue::from(throttle.retry_after()));
    match *throttle {
        Throttle::Rate {
            limit,
            remaining,
            reset,
            ..
        } => rate_limit_headers(headers, limit, remaining, reset),
        Throttle::Concurrency { limit, .. } => {
            headers.insert("x-concurrency-limit", HeaderValue::from(limit));
            headers.insert("x-concurrency-remaining", HeaderValue::from(0u64));
        }
    }
}

/// `X-RateLimit-*`: sent on every answer to an application with a per-minute limit.
pub fn rate_limit_headers(headers: &mut HeaderMap, limit: u64, remaining: u64, reset: u64) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
}
