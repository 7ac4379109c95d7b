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

use super::{AppState, HttpError, TraceId, auth::Authenticated, error::rate_limit_headers};
use crate::{
    api::{self, ApiError, ErrorCode},
    domain::ImagesRequest,
    limits::Verdict,
};

pub async fn create(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    // Limits come before any work or reservation.
    let decision = match caller.rate_limit {
        None => None,
        Some((per_minute, burst)) => {
            // Boxed, as the token lookup is (the limiter's Redis future is large).
            match Box::pin(
                state
                    .rate_limiter
                    .admit(&caller.application_id, per_minute, burst),
            )
            .await
            {
                Verdict::Checked(decision) => Some(decision),
                // Failing open: no numbers to report, so no rate-limit headers.
                Verdict::Unchecked => None,
                Verdict::Unavailable => {
                    // The limiter has logged the cause; failing closed.
                    return Err(HttpError::new(
                        &trace_id,
                        ApiError::new(
                            ErrorCode::ApiError,
                            "The rate limiter is unavailable; try again shortly.",
                        ),
                    ));
                }
            }
        }
    };
    let answer = match decision.filter(|d| !d.allowed) {
        Some(refused) => Err(HttpError::new(
            &trace_id,
            ApiError::throttled(
                refused.throttle(),
                format!(
                    "Too many requests: this application may make {} per minute.",
                    refused.limit
                ),
            ),
        )),
        None => create_task(state, trace_id, caller, headers, body).await,
    };
    let mut response = answer.unwrap_or_else(IntoResponse::into_response);
    // Every answer to a rate-limited application says where it stands, refused or not.
    if let Some(decision) = decision {
        rate_limit_headers(
            response.headers_mut(),
            decision.limit,
            decision.remaining,
            decision.reset_secs(),
        );
    }
    Ok(response)
}

async fn create_task(
    state: AppState,
    trace_id: String,
    caller: crate::accounts::Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let idempotency_key = idempotency_key(&trace_id, &headers)?;
    let body = parse_json_body(&trace_id, body)?;
    let request = ImagesRequest::parse(&body, &state.limits)
        .map_err(|e| HttpError::new(&trace_id, ApiError::bad_request(e.0)))?;
    // Boxed: the submission's database futures are large, and a sync request keeps this
    // handler's future alive while it waits; unboxed, every waiting request would carry their
    // space (~10 KB) for nothing (BENCHMARKS.md, S3).
    let submitted =
        Box::pin(
            state
                .tasks
                .submit(&caller, &trace_id, &body, &request, idempotency_key),
        )
        .await
        .map_err(|e| HttpError::new(&trace_id, e))?;
    if request.answers_at_once() {
        return Ok(Json(api::accepted_body(&submitted.task_id, &trace_id)).into_response());
    }
    drop((body, request, headers, caller));
    // If the client goes away, this future is dropped (over HTTP/1.1 once the answer is written:
    // see `http::server`); the task runs on and stays retrievable.
    let result = state.tasks.wait(submitted).await;
    let status = StatusCode::from_u16(result.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Ok((status, Json(result.body)).into_response())
}

/// The longest `Idempotency-Key` accepted (Stripe's limit).
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Our `Idempotency-Key` header: printable ASCII, at most 255 characters.
fn idempotency_key<'a>(
    trace_id: &str,
    headers: &'a HeaderMap,
) -> Result<Option<&'a str>, HttpError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.trim().is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY => {
            Ok(Some(key.trim()))
        }
        _ => Err(HttpError::code(
            trace_id,
            ErrorCode::BadRequest,
            "Idempotency-Key must be 1 to 255 printable ASCII characters.",
        )),
    }
}

/// A JSON object from the body, or the contract's error: 413 over the size limit, 400 for
/// anything that is not JSON (including invalid UTF-8).
pub fn parse_json_body(
    trace_id: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, HttpError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::code(
                trace_id,
                ErrorCode::RequestTooLarge,
                "The request body is too large.",
            )
        } else {
            HttpError::code(
                trace_id,
                ErrorCode::BadRequest,
                "The request body could not be read.",
            )
        }
    })?;
    serde_json::from_slice::<Value>(&bytes).map_err(|e| {
        HttpError::code(
            trace_id,
            ErrorCode::BadRequest,
            format!("The request body is not valid JSON: {e}."),
        )
    })
}
