//! What a failed call to an OpenAI-shaped upstream means: the images API and chat completions
//! (OpenAI, OpenRouter, LocalAI and other compatible servers) answer errors as
//! `{"error": {"message", "type", "param", "code"}}` — OpenRouter with a numeric `code` and a
//! `metadata` object instead of `type`. Not here: retrying, which is the caller's.
//!
//! | answer | error | retried |
//! |---|---|---|
//! | 400 `moderation_blocked` (gpt-image), `content_policy_violation` (DALL·E, gateways) | `Refused` → 403 `forbidden`, not billed | no |
//! | 403 whose `metadata` has `reasons`/`flagged_input` (OpenRouter's moderation) | `Refused` | no |
//! | 429 `insufficient_quota` ("You exceeded your current quota") | `Upstream` reported as **402**, with the upstream's 429 in the message | no: waiting does not bring credit back |
//! | 429 (rate limit) | `Upstream` 429, `retry_after` from `retry-after-ms`, else `retry-after` | yes, after that delay |
//! | 500, 502, 503, 504 | `Upstream` | yes |
//! | 401, 402, 403, 404, other 4xx | `Upstream` | no |
//!
//! The 402 for an exhausted quota is a deliberate rewrite: [`ProviderError::is_retryable`] goes by
//! status, and a 429 would make every route cool down and the call be tried again and again for
//! an account that needs a human to add credit. 402 is what OpenRouter itself answers for the
//! same condition.
//!
//! The reading every upstream shares (the `error` object, message or excerpt, transport
//! failures) is `providers::upstream_error`'s; this is OpenAI's [`ErrorDialect`].
//!
//! Imports `providers` only, nothing above it.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;

use crate::providers::ProviderError;
use crate::providers::upstream_error::{self, ErrorAnswer, ErrorDialect, Markup, status_label};

/// `code`s that mean the upstream's safety system refused the prompt or the image.
pub const REFUSAL_CODES: &[&str] = &["moderation_blocked", "content_policy_violation"];

/// The errors of OpenAI-shaped upstreams, as the table above has them.
pub(crate) struct OpenAiShaped;

impl ErrorDialect for OpenAiShaped {
    const MARKUP: Markup = Markup::Keep;

    fn message(error: &Value) -> Option<String> {
        field(Some(error), "message")
    }

    /// The `code` (unless it is OpenRouter's numeric one), else the `type`, else the status.
    fn label(answer: &ErrorAnswer<'_>) -> String {
        field(answer.error, "code")
            .filter(|c| c.parse::<u16>().is_err())
            .or_else(|| field(answer.error, "type"))
            .unwrap_or_else(|| status_label(answer.status, false))
    }

    fn retry_after(answer: &ErrorAnswer<'_>) -> Option<Duration> {
        retry_after_headers(answer.headers)
    }

    /// Refusals by code or by OpenRouter's moderation, and an exhausted quota as 402.
    fn special(answer: &ErrorAnswer<'_>, label: &str) -> Option<ProviderError> {
        let (code, kind) = (field(answer.error, "code"), field(answer.error, "type"));
        let is = |value: &str| code.as_deref() == Some(value) || kind.as_deref() == Some(value);
        let text = &answer.text;
        if REFUSAL_CODES.iter().any(|c| is(c)) {
            return Some(ProviderError::Refused(format!("{label}: {text}")));
        }
        let metadata = answer.error.and_then(|e| e.get("metadata"));
        if answer.status == StatusCode::FORBIDDEN
            && metadata
                .is_some_and(|m| m.get("reasons").is_some() || m.get("flagged_input").is_some())
        {
            return Some(ProviderError::Refused(format!("moderation: {text}")));
        }
        if answer.status == StatusCode::TOO_MANY_REQUESTS && is("insufficient_quota") {
            return Some(ProviderError::Upstream {
                status: 402,
                message: format!("insufficient_quota (the upstream answered HTTP 429): {text}"),
                retry_after: None,
            });
        }
        None
    }
}

/// A field of the `error` object that says something: a non-empty string, or a number
/// (OpenRouter's `code`) as text.
fn field(error: Option<&Value>, name: &str) -> Option<String> {
    error.and_then(|e| e.get(name)).and_then(|v| match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

pub(crate) fn upstream_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> ProviderError {
    upstream_error::upstream_error::<OpenAiShaped>(status, headers, body)
}

/// `retry-after-ms` (OpenAI's, milliseconds), else `Retry-After` in seconds (fractions allowed,
/// as OpenAI's SDK reads it). An HTTP date is not read: no upstream of this kind sends one.
fn retry_after_headers(headers: &HeaderMap) -> Option<Duration> {
    let number = |name| -> Option<f64> {
        let value: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
        (value.is_finite() && value >= 0.0).then_some(value)
    };
    if let Some(ms) = number(reqwest::header::HeaderName::from_static("retry-after-ms")) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    number(RETRY_AFTER).and_then(|s| Duration::try_from_secs_f64(s).ok())
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use serde_json::json;

    use super::*;

    fn classify(
        status: u16,
        body: Value,
        headers: &[(&'static str, &'static str)],
    ) -> ProviderError {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_static(value));
        }
        upstream_error(
            StatusCode::from_u16(status).unwrap(),
            &map,
            body.to_string().as_bytes(),
        )
    }

    fn openai(message: &str, kind: &str, code: Value) -> Value {
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
    }

    #[test]
    fn moderation_is_a_refusal() {
        let err = classify(
            400,
            json!({"error": {"message": "Your request was rejected by the safety system.",
                "type": "image_generation_user_error", "param": null, "code": "moderation_blocked",
                "moderation_details": {"moderation_stage": "input", "categories": ["violence"]}}}),
            &[],
        );
        assert!(
            matches!(&err, ProviderError::Refused(m) if m.contains("safety system")),
            "{err:?}"
        );
        assert!(!err.is_retryable());
        let dalle = classify(
            400,
            openai(
                "blocked",
                "invalid_request_error",
                json!("content_policy_violation"),
            ),
            &[],
        );
        assert!(matches!(dalle, ProviderError::Refused(_)), "{dalle:?}");
        // OpenRouter's moderation: 403 with the flagged input in metadata.
        let flagged = classify(
            403,
            json!({"error": {"code": 403, "message": "Input flagged",
                "metadata": {"reasons": ["violence"], "flagged_input": "…", "provider_name": "x"}}}),
            &[],
        );
        assert!(matches!(flagged, ProviderError::Refused(_)), "{flagged:?}");
        // Any other 400 or 403 is the caller's mistake or the account's: final, not a refusal.
        let bad = classify(
            400,
            openai("bad size", "invalid_request_error", json!("invalid_value")),
            &[],
        );
        assert!(
            matches!(bad, ProviderError::Upstream { status: 400, .. }),
            "{bad:?}"
        );
        let region = classify(
            403,
            openai(
                "Country not supported",
                "request_forbidden",
                json!("unsupported_country_region_territory"),
            ),
            &[],
        );
        assert!(
            matches!(region, ProviderError::Upstream { status: 403, .. }),
            "{region:?}"
        );
        assert!(!region.is_retryable());
    }

    #[test]
    fn rate_limits_are_retryable_with_their_delay_and_quota_is_final() {
        let limited = classify(
            429,
            openai(
                "Rate limit reached for images per minute",
                "requests",
                json!("rate_limit_exceeded"),
            ),
            &[("retry-after-ms", "1500"), ("retry-after", "2")],
        );
        assert!(limited.is_retryable());
        assert_eq!(limited.retry_after(), Some(Duration::from_millis(1500)));
        let ProviderError::Upstream { message, .. } = &limited else {
            panic!()
        };
        assert_eq!(
            message,
            "rate_limit_exceeded: Rate limit reached for images per minute"
        );
        let seconds = classify(
            429,
            json!({"error": {"code": 429, "message": "slow"}}),
            &[("retry-after", "0.25")],
        );
        assert_eq!(seconds.retry_after(), Some(Duration::from_millis(250)));
        assert!(seconds.is_retryable());
        let none = classify(
            429,
            json!({}),
            &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")],
        );
        assert_eq!(none.retry_after(), None);

        let quota = classify(
            429,
            openai(
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                json!("insufficient_quota"),
            ),
            &[("retry-after", "20")],
        );
        let ProviderError::Upstream {
            status,
            message,
            retry_after,
        } = &quota
        else {
            panic!("{quota:?}")
        };
        assert_eq!(*status, 402);
        assert!(
            message.starts_with("insufficient_quota (the upstream answered HTTP 429)"),
            "{message}"
        );
        assert_eq!(*retry_after, None);
        assert!(!quota.is_retryable());
    }

    #[test]
    fn server_errors_are_retryable_and_the_rest_final() {
        for status in [500, 502, 503, 504] {
            let err = classify(
                status,
                openai("The server had an error", "server_error", Value::Null),
                &[],
            );
            assert!(err.is_retryable(), "{status}");
        }
        for status in [401, 402, 403, 404] {
            let err = classify(
                status,
                openai("no", "invalid_request_error", json!("x")),
                &[],
            );
            assert!(matches!(err, ProviderError::Upstream { .. }), "{status}");
            assert!(!err.is_retryable(), "{status}");
        }
        let html = upstream_error(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"<html> bad   gateway </html>",
        );
        let ProviderError::Upstream { message, .. } = &html else {
            panic!()
        };
        assert_eq!(message, "bad_gateway: <html> bad gateway </html>");
        let empty = upstream_error(StatusCode::UNAUTHORIZED, &HeaderMap::new(), b"");
        let ProviderError::Upstream { message, .. } = &empty else {
            panic!()
        };
        assert_eq!(message, "unauthorized: (empty body)");
        let long = "x".repeat(10_000);
        let ProviderError::Upstream { message, .. } =
            upstream_error(StatusCode::BAD_REQUEST, &HeaderMap::new(), long.as_bytes())
        else {
            panic!()
        };
        assert!(message.len() < 400);
    }
}
