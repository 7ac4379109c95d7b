//! What every dialect's image route does around the task: the application's rate limit first,
//! then admission (credits, the concurrency limit, idempotency) of the contract request the
//! dialect translated to, and the `X-RateLimit-*` report on whatever the answer is. Errors come
//! back as contract errors; each route answers them in its own dialect.

use axum::{
    body::Bytes,
    extract::rejection::BytesRejection,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde_json::Value;

use super::{AppState, error::rate_limit_headers};
use crate::{
    accounts::Caller,
    api::{ApiError, ErrorCode},
    dialects::Translated,
    limits::{Decision, Verdict},
    tasks::Submitted,
};

/// Counts the request against its application's per-minute limit: the decision to report on the
/// answer (`None` when the application has no limit, or Redis is down and failing open), or the
/// refusal.
pub async fn rate_limit(state: &AppState, caller: &Caller) -> Result<Option<Decision>, ApiError> {
    let Some((per_minute, burst)) = caller.rate_limit else {
        return Ok(None);
    };
    // Boxed, as the token lookup is (the limiter's Redis future is large).
    let verdict = Box::pin(
        state
            .rate_limiter
            .admit(&caller.application_id, per_minute, burst),
    )
    .await;
    match verdict {
        Verdict::Checked(decision) if decision.allowed => Ok(Some(decision)),
        Verdict::Checked(refused) => Err(ApiError::throttled(
            refused.throttle(),
            format!(
                "Too many requests: this application may make {} per minute.",
                refused.limit
            ),
        )),
        // Failing open: no numbers to report, so no rate-limit headers.
        Verdict::Unchecked => Ok(None),
        // The limiter has logged the cause; failing closed.
        Verdict::Unavailable => Err(ApiError::new(
            ErrorCode::ApiError,
            "The rate limiter is unavailable; try again shortly.",
        )),
    }
}

/// Every answer to a rate-limited application says where it stands, refused or not.
pub fn report(response: &mut Response, decision: Option<Decision>) {
    if let Some(decision) = decision {
        rate_limit_headers(
            response.headers_mut(),
            decision.limit,
            decision.remaining,
            decision.reset_secs(),
        );
    }
}

/// Admits the translated request as a task (or names the earlier task of the same
/// `Idempotency-Key`).
pub async fn submit(
    state: &AppState,
    trace_id: &str,
    caller: &Caller,
    headers: &HeaderMap,
    translated: &mut Translated,
) -> Result<Submitted, ApiError> {
    let idempotency_key = idempotency_key(headers)?;
    // Boxed: the submission's database futures are large, and a sync request keeps its
    // handler's future alive while it waits; unboxed, every waiting request would carry their
    // space (~10 KB) for nothing (BENCHMARKS.md, S3).
    Box::pin(state.tasks.submit(
        caller,
        trace_id,
        &mut translated.body,
        &mut translated.request,
        idempotency_key,
    ))
    .await
}

/// The longest `Idempotency-Key` accepted (Stripe's limit).
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Our `Idempotency-Key` header: printable ASCII, at most 255 characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.trim().is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY => {
            Ok(Some(key.trim()))
        }
        _ => Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 printable ASCII characters.",
        )),
    }
}

/// A JSON value from the body: 413 `request_too_large` over the size limit, 400 `bad_request`
/// for anything that is not JSON (including invalid UTF-8).
pub fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::RequestTooLarge, "The request body is too large.")
        } else {
            ApiError::bad_request("The request body could not be read.")
        }
    })?;
    serde_json::from_slice::<Value>(&bytes)
        .map_err(|e| ApiError::bad_request(format!("The request body is not valid JSON: {e}.")))
}

/// The contract error a failed task's body holds (`{"success": false, "error": {"code",
/// "message"}}`), for a dialect to answer in its own shape.
pub fn failure(body: &Value) -> ApiError {
    let code = body
        .pointer("/error/code")
        .and_then(Value::as_str)
        .map_or(ErrorCode::ApiError, ErrorCode::parse);
    let message = body
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("Internal server error.");
    ApiError::new(code, message)
}
