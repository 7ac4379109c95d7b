//! What a failed Gemini call means (docs/upstreams.md, Gemini errors): HTTP errors with their
//! google.rpc.Status and retry delay (Google's [`ErrorDialect`]; what every upstream's errors
//! share, and transport failures, are in `providers::upstream_error`), and a 200 without an
//! image (refused or not). Not here: retrying, which is the caller's, from what these errors say.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;

use super::wire::{Candidate, PromptFeedback, parts};
use crate::providers::ProviderError;
use crate::providers::upstream_error::{
    self, ErrorAnswer, ErrorDialect, MAX_MESSAGE_CHARS, Markup, status_label, truncate,
};

/// Finish reasons that mean "the upstream will not make this image".
pub const REFUSAL_REASONS: &[&str] = &[
    "SAFETY",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "RECITATION",
    "IMAGE_RECITATION",
];

/// Google answers a bad key with 400 INVALID_ARGUMENT and reason API_KEY_INVALID.
pub(super) fn is_key_invalid(status: u16, message: &str) -> bool {
    status == 400 && (message.contains("API_KEY_INVALID") || message.contains("API key not valid"))
}

/// Why a 200 carries no image:
/// * `Refused` (final, 403 to our client): `promptFeedback.blockReason`, or a finish reason in
///   [`REFUSAL_REASONS`]. `RECITATION` and `IMAGE_RECITATION` count as refusals: they are a
///   policy decision about this prompt (it would reproduce protected material), and asking again
///   with the same prompt mostly meets the same answer.
/// * `NoImage`: everything else (`NO_IMAGE`, `IMAGE_OTHER`, `STOP` with text only, `MAX_TOKENS`,
///   `OTHER`, unknown reasons, no candidates at all), with the model's text when it wrote some.
pub(super) fn without_image(
    candidates: &[Candidate<'_>],
    prompt_feedback: Option<&PromptFeedback>,
) -> ProviderError {
    let model_text = parts(candidates)
        .filter(|part| part.thought != Some(true))
        .filter_map(|part| part.text.as_deref())
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let with_detail = |head: String, detail: Option<&str>| match detail.filter(|d| !d.is_empty()) {
        Some(detail) => format!("{head}: {}", truncate(detail, MAX_MESSAGE_CHARS)),
        None => head,
    };

    if let Some(feedback) = prompt_feedback
        && let Some(reason) = &feedback.block_reason
    {
        let detail = feedback.block_reason_message.as_deref();
        return ProviderError::Refused(with_detail(format!("prompt blocked ({reason})"), detail));
    }
    let text_detail = (!model_text.is_empty()).then_some(model_text.as_str());
    if let Some(candidate) = candidates.iter().find(|c| {
        c.finish_reason
            .as_deref()
            .is_some_and(|r| REFUSAL_REASONS.contains(&r))
    }) {
        let reason = candidate.finish_reason.as_deref().unwrap_or_default();
        let detail = candidate.finish_message.as_deref().or(text_detail);
        return ProviderError::Refused(with_detail(reason.to_owned(), detail));
    }
    let head = match candidates.first() {
        None => "the answer has no candidates".to_owned(),
        Some(candidate) => match candidate.finish_reason.as_deref() {
            Some("STOP") | None if !model_text.is_empty() => {
                "the model answered with text only".to_owned()
            }
            Some(reason) => format!("finish reason {reason}"),
            None => "no image part and no finish reason".to_owned(),
        },
    };
    let detail = candidates
        .first()
        .and_then(|c| c.finish_message.as_deref())
        .or(text_detail);
    ProviderError::NoImage(with_detail(head, detail))
}

/// Google's errors (AI Studio and Vertex AI): a google.rpc.Status named by its `status`
/// (`RESOURCE_EXHAUSTED`), the retry delay in its `RetryInfo` detail, a `Retry-After` header or
/// the message's "Please retry in …s", and HTML pages from Google's front ends stripped to text.
pub(super) struct Google;

impl ErrorDialect for Google {
    const MARKUP: Markup = Markup::Strip;

    fn message(error: &Value) -> Option<String> {
        error.get("message")?.as_str().map(str::to_owned)
    }

    fn label(answer: &ErrorAnswer<'_>) -> String {
        answer
            .error
            .and_then(|e| e.get("status"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| status_label(answer.status, true))
    }

    fn retry_after(answer: &ErrorAnswer<'_>) -> Option<Duration> {
        answer
            .error
            .and_then(|e| e.get("details"))
            .and_then(retry_info_delay)
            .or_else(|| retry_after_header(answer.headers))
            .or_else(|| retry_in_message(&answer.text))
    }
}

pub(super) fn upstream_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> ProviderError {
    upstream_error::upstream_error::<Google>(status, headers, body)
}

/// `RetryInfo.retryDelay` from google.rpc.Status details: a protobuf-JSON duration ("15s",
/// "58.934310785s"), or the `{seconds, nanos}` object some gateways re-encode it as.
fn retry_info_delay(details: &Value) -> Option<Duration> {
    let info = details.as_array()?.iter().find(|d| {
        d.get("@type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
    })?;
    match info.get("retryDelay")? {
        Value::String(text) => parse_seconds(text.strip_suffix('s')?),
        Value::Object(fields) => {
            let seconds = fields.get("seconds").and_then(|s| match s {
                Value::String(s) => s.parse::<f64>().ok(),
                other => other.as_f64(),
            })?;
            let nanos = fields.get("nanos").and_then(Value::as_f64).unwrap_or(0.0);
            Duration::try_from_secs_f64(seconds + nanos / 1e9).ok()
        }
        _ => None,
    }
}

fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Quota messages end with "Please retry in 58.934310785s." (python-genai#1875).
fn retry_in_message(message: &str) -> Option<Duration> {
    let rest = &message[message.find("retry in ")? + "retry in ".len()..];
    let end = rest.find('s')?;
    parse_seconds(&rest[..end])
}

fn parse_seconds(text: &str) -> Option<Duration> {
    let seconds: f64 = text.trim().parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// A short, readable piece of a body that is not the JSON we expected (HTML error pages have
/// their markup, styles and scripts stripped).
pub(super) fn excerpt(body: &[u8]) -> String {
    upstream_error::excerpt(body, Google::MARKUP)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use serde_json::json;

    use super::*;

    #[test]
    fn retry_delays_are_read_from_details_header_or_message() {
        let status = StatusCode::TOO_MANY_REQUESTS;
        let details = |delay: Value| {
            json!({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED", "details": [
                {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
            ]}})
            .to_string()
        };
        let retry = |body: String, headers: HeaderMap| {
            upstream_error(status, &headers, body.as_bytes()).retry_after()
        };
        assert_eq!(
            retry(details(json!("1.5s")), HeaderMap::new()),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry(details(json!("58.934310785s")), HeaderMap::new()),
            Some(Duration::new(58, 934_310_785))
        );
        assert_eq!(
            retry(
                details(json!({"seconds": "7", "nanos": 0})),
                HeaderMap::new()
            ),
            Some(Duration::from_secs(7))
        );
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("30"));
        assert_eq!(
            retry(
                json!({"error": {"code": 429, "message": "slow down"}}).to_string(),
                headers
            ),
            Some(Duration::from_secs(30))
        );
        let err = upstream_error(
            status,
            &HeaderMap::new(),
            br#"[{"error": {"code": 429, "message": "Quota exceeded. Please retry in 58.5s.", "status": "RESOURCE_EXHAUSTED"}}]"#,
        );
        assert_eq!(err.retry_after(), Some(Duration::from_millis(58_500)));
        let ProviderError::Upstream { message, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            message,
            "RESOURCE_EXHAUSTED: Quota exceeded. Please retry in 58.5s."
        );
        assert_eq!(retry("not json".to_owned(), HeaderMap::new()), None);
    }

    #[test]
    fn non_json_error_bodies_are_excerpted() {
        let err = upstream_error(StatusCode::PAYLOAD_TOO_LARGE, &HeaderMap::new(), b"");
        let ProviderError::Upstream { message, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(message, "PAYLOAD_TOO_LARGE: (empty body)");
        let long = "x".repeat(10_000);
        let err = upstream_error(StatusCode::BAD_GATEWAY, &HeaderMap::new(), long.as_bytes());
        let ProviderError::Upstream { message, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(message.len() < 400);
    }
}
