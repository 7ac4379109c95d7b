//! The one place where contract errors become HTTP responses. Every error body carries the
//! request's trace id (and the task id when a task exists); internals are logged by whoever
//! turned them into an `ApiError`, never sent.

use axum::{
    Json,
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use crate::api::{ApiError, ErrorCode};

/// An error answer for one request.
#[derive(Debug)]
pub struct HttpError {
    pub trace_id: String,
    pub error: ApiError,
    /// Seconds, for `too_many_requests`.
    pub retry_after: Option<u64>,
}

impl HttpError {
    pub fn new(trace_id: &str, error: ApiError) -> HttpError {
        HttpError {
            trace_id: trace_id.to_owned(),
            error,
            retry_after: None,
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
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}
