//! The dialects our routes speak, as far as HTTP is concerned: where each finds the caller's
//! credential, and how each answers an error — the contract's body, OpenAI's or Google's, always
//! with `Retry-After` and the limit's headers on a `too_many_requests`. The translation of bodies
//! themselves is `crate::dialects`.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, request::Parts},
    response::{IntoResponse, Response},
};

use super::{HttpError, auth::bearer, error::throttle_headers};
use crate::{
    api::{ApiError, ErrorCode},
    dialects,
};

pub trait Dialect: Send + Sync + 'static {
    /// The message of `no_token` in this dialect.
    const NO_TOKEN: &'static str;

    /// The token of a request: `authorization: Bearer …` unless the dialect says otherwise.
    fn credential(parts: &Parts) -> Option<String> {
        bearer(&parts.headers).map(str::to_owned)
    }

    /// The answer to `error`; `param` names the request field at fault, when one is.
    fn error(trace_id: &str, error: &ApiError, param: Option<&str>) -> Response;
}

/// The Nano Banana contract (and the original service's `/openai/` routes, which answer errors
/// in it).
pub struct Contract;

/// OpenAI's images API under `/v1/`.
pub struct OpenAi;

/// Google's `generateContent`.
pub struct Gemini;

impl Dialect for Contract {
    const NO_TOKEN: &'static str = "No token was provided: send `authorization: Bearer <token>`.";

    fn error(trace_id: &str, error: &ApiError, _param: Option<&str>) -> Response {
        HttpError::new(trace_id, error.clone()).into_response()
    }
}

impl Dialect for OpenAi {
    const NO_TOKEN: &'static str = "No API key was provided: send `Authorization: Bearer <token>` \
                                    with a token of this server.";

    fn error(_trace_id: &str, error: &ApiError, param: Option<&str>) -> Response {
        let (status, body) = dialects::openai::error_body(error, param);
        let mut response = with_status(status, body);
        if error.code == ErrorCode::UsedUp {
            // A 429 that no wait cures: tell OpenAI's SDKs not to retry it.
            response
                .headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        add_throttle(response, error)
    }
}

impl Dialect for Gemini {
    const NO_TOKEN: &'static str = "No API key was provided: send `x-goog-api-key: <token>` (or \
                                    `?key=`) with a token of this server.";

    /// Google's clients send the key as `x-goog-api-key` or `?key=`; a Bearer token works too.
    fn credential(parts: &Parts) -> Option<String> {
        if let Some(key) = parts
            .headers
            .get("x-goog-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            return Some(key.to_owned());
        }
        let from_query = parts.uri.query().and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == "key")
                .map(|(_, key)| key.into_owned())
                .filter(|k| !k.is_empty())
        });
        from_query.or_else(|| bearer(&parts.headers).map(str::to_owned))
    }

    fn error(_trace_id: &str, error: &ApiError, _param: Option<&str>) -> Response {
        let (status, body) = dialects::gemini::error_body(error);
        add_throttle(with_status(status, body), error)
    }
}

fn with_status(status: u16, body: serde_json::Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

fn add_throttle(mut response: Response, error: &ApiError) -> Response {
    if let Some(throttle) = &error.throttle {
        throttle_headers(response.headers_mut(), throttle);
    }
    response
}
