//! Google's error answers as the fake sends them (docs/upstreams.md, Gemini errors):
//! google.rpc.Status JSON with its details (ErrorInfo, QuotaFailure, RetryInfo), and the HTML
//! page of a 502. Not here: when each is sent (`handler`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub(super) const JSON_TYPE: &str = "application/json; charset=UTF-8";

pub(super) fn json_response(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_TYPE))],
        body.to_string(),
    )
        .into_response()
}

fn canonical_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        402 | 429 => "RESOURCE_EXHAUSTED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

pub(super) fn status_message(code: u16) -> &'static str {
    match code {
        400 => "Request contains an invalid argument.",
        402 => "Your prepaid credits are exhausted.",
        403 => "Your API key doesn't have the required permissions.",
        404 => "Requested entity was not found.",
        429 => "Resource has been exhausted (e.g. check quota).",
        500 => "An internal error has occurred.",
        503 => "The model is overloaded. Please try again later.",
        504 => "The request timed out. Please try again.",
        _ => "The fake upstream was told to fail.",
    }
}

pub(super) fn google_error(code: u16, message: &str, details: Option<Value>) -> Response {
    let code = if StatusCode::from_u16(code).is_ok() {
        code
    } else {
        500
    };
    let mut error = json!({
        "code": code,
        "message": message,
        "status": canonical_status(code),
    });
    if let Some(details) = details {
        error["details"] = details;
    }
    json_response(code, json!({ "error": error }))
}

pub(super) fn invalid_api_key() -> Response {
    google_error(
        400,
        "API key not valid. Please pass a valid API key.",
        Some(json!([
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": "API key not valid. Please pass a valid API key.",
            },
        ])),
    )
}

/// Vertex AI's answer to a missing, expired or revoked access token.
pub(super) fn unauthenticated() -> Response {
    google_error(
        401,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login \
         cookie or other valid authentication credential. See \
         https://developers.google.com/identity/sign-in/web/devconsole-project.",
        Some(json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "ACCESS_TOKEN_EXPIRED",
            "domain": "googleapis.com",
            "metadata": {"service": "aiplatform.googleapis.com"},
        }])),
    )
}

pub(super) fn rate_limited(model: &str, retry_delay: &str) -> Response {
    google_error(
        429,
        "You exceeded your current quota, please check your plan and billing details. For more \
         information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
        Some(json!([
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{
                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
                    "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": "10",
                }],
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [{
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
        ])),
    )
}

pub(super) fn html_error_502() -> Response {
    const PAGE: &str = "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  \
        <meta name=viewport content=\"initial-scale=1, minimum-scale=1, width=device-width\">\n  \
        <title>Error 502 (Server Error)!!1</title>\n  <style>\n    *{margin:0;padding:0}html,code\
        {font:15px/22px arial,sans-serif}html{background:#fff;color:#222;padding:15px}\n  \
        </style>\n  <a href=//www.google.com/><span id=logo aria-label=Google></span></a>\n  \
        <p><b>502.</b> <ins>That’s an error.</ins>\n  <p>The server encountered a temporary \
        error and could not complete your request.<p>Please try again in 30 seconds.  \
        <ins>That’s all we know.</ins>\n";
    (
        StatusCode::BAD_GATEWAY,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=UTF-8"),
        )],
        PAGE,
    )
        .into_response()
}

pub(super) fn shutting_down() -> Response {
    let mut response = google_error(503, "The fake upstream is shutting down.", None);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
