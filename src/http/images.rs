//! `POST /nano-banana/images` (and aliases): validate, accept as a task, then answer at once
//! (async and callback modes) or when the task ends (sync mode).

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::Value;

use super::{AppState, HttpError, TraceId, auth::Authenticated, submit};
use crate::{
    accounts::Caller,
    api::{self, ApiError},
    dialects::Translated,
    domain::ImagesRequest,
};

pub async fn create(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Authenticated { caller, .. }: Authenticated,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Limits come before any work or reservation.
    let decision = match submit::rate_limit(&state, &caller).await {
        Ok(decision) => decision,
        Err(error) => return HttpError::new(&trace_id, error).into_response(),
    };
    let mut response = create_task(state, trace_id, caller, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    submit::report(&mut response, decision);
    response
}

async fn create_task(
    state: AppState,
    trace_id: String,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let fail = |error: ApiError| HttpError::new(&trace_id, error);
    let body = submit::json_body(body).map_err(fail)?;
    let request =
        ImagesRequest::parse(&body, &state.limits).map_err(|e| fail(ApiError::bad_request(e.0)))?;
    let mut translated = Translated { body, request };
    let submitted = submit::submit(&state, &trace_id, &caller, &headers, &mut translated)
        .await
        .map_err(fail)?;
    if translated.request.answers_at_once() {
        return Ok(Json(api::accepted_body(&submitted.task_id, &trace_id)).into_response());
    }
    drop((translated, headers, caller));
    // If the client goes away, this future is dropped (over HTTP/1.1 once the answer is written:
    // see `http::server`); the task runs on and stays retrievable.
    let result = state.tasks.wait(submitted).await;
    let status = StatusCode::from_u16(result.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Ok((status, Json(result.body)).into_response())
}

/// A JSON value from the body, or the contract's error: 413 over the size limit, 400 for
/// anything that is not JSON (including invalid UTF-8).
pub fn parse_json_body(
    trace_id: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, HttpError> {
    submit::json_body(body).map_err(|e| HttpError::new(trace_id, e))
}
