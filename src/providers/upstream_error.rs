//! What an HTTP upstream's failure means, for every provider that calls one (Gemini on AI Studio
//! and Vertex AI, the images API, chat completions): reading an error answer into a
//! [`ProviderError`] — its `error` object, its message or an excerpt of the body, its retry delay —
//! and the failures every such call shares (no answer at all, an answer over the size cap).
//! What differs between upstream families (how the error is named, where the retry delay is,
//! which answers are refusals or must not be retried) is each family's [`ErrorDialect`], kept
//! next to its provider (`gemini::errors`, `openai::errors`). Not here: retrying, which is the
//! caller's, from what these errors say ([`ProviderError::is_retryable`]).
//!
//! Imports `providers` only, nothing above it.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::{ProviderError, direct};

/// Upstream text (messages, the model's words) is cut to this many characters in errors.
pub(crate) const MAX_MESSAGE_CHARS: usize = 300;

/// An error answer as far as every dialect reads it.
pub(crate) struct ErrorAnswer<'a> {
    pub(crate) status: StatusCode,
    pub(crate) headers: &'a HeaderMap,
    /// The body's `error` object, also when a front end wraps it in a one-element list.
    pub(crate) error: Option<&'a Value>,
    /// The error's message, else an excerpt of the body; at most [`MAX_MESSAGE_CHARS`].
    pub(crate) text: String,
}

/// How one family of upstreams words its HTTP errors.
pub(crate) trait ErrorDialect {
    /// What an excerpt of a body that is not the expected JSON does with HTML markup.
    const MARKUP: Markup;

    /// The error's message in its `error` object.
    fn message(error: &Value) -> Option<String>;

    /// What the error is called in the message we keep (`RESOURCE_EXHAUSTED`,
    /// `rate_limit_exceeded`), from the `error` object or else the status.
    fn label(answer: &ErrorAnswer<'_>) -> String;

    /// How long the upstream asked us to wait before calling again, if it said.
    fn retry_after(answer: &ErrorAnswer<'_>) -> Option<Duration>;

    /// An answer that is not a plain HTTP error: a refusal of the prompt, or a 429 that waiting
    /// does not cure. `None` for the rest.
    fn special(answer: &ErrorAnswer<'_>, label: &str) -> Option<ProviderError> {
        let _ = (answer, label);
        None
    }
}

/// An HTTP error answer (a status that is not 2xx, with the body read up to a cap) as `D` words
/// it: a special case of the dialect's, else `Upstream` with the status, `"{label}: {text}"` and
/// the retry delay the upstream asked for.
pub(crate) fn upstream_error<D: ErrorDialect>(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> ProviderError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let error = json.as_ref().and_then(|v| match v {
        Value::Array(items) => items.first()?.get("error"),
        other => other.get("error"),
    });
    let text = error
        .and_then(D::message)
        .map(|m| truncate(&m, MAX_MESSAGE_CHARS).to_owned())
        .unwrap_or_else(|| excerpt(body, D::MARKUP));
    let answer = ErrorAnswer {
        status,
        headers,
        error,
        text,
    };
    let label = D::label(&answer);
    if let Some(special) = D::special(&answer, &label) {
        return special;
    }
    ProviderError::Upstream {
        status: status.as_u16(),
        message: format!("{label}: {}", answer.text),
        retry_after: D::retry_after(&answer),
    }
}

/// The status's reason as a label when the answer names none: `bad_gateway` or `BAD_GATEWAY`,
/// `http_599` or `HTTP_599` for a status without one.
pub(crate) fn status_label(status: StatusCode, upper: bool) -> String {
    let label = status
        .canonical_reason()
        .map(|r| r.replace(' ', "_"))
        .unwrap_or_else(|| format!("http_{}", status.as_u16()));
    if upper {
        label.to_ascii_uppercase()
    } else {
        label.to_ascii_lowercase()
    }
}

/// A call that got no usable answer.
pub(crate) fn transport_error(err: reqwest::Error) -> ProviderError {
    // Only a failed connect proves the request never left; a timeout or reset after that may
    // have started (and billed) a generation.
    let sent = !err.is_connect();
    // The URL is dropped in case a base URL carries credentials (for the upstream or a proxy).
    let err = err.without_url();
    ProviderError::Transport {
        message: direct::error_chain(&err),
        sent,
    }
}

pub(crate) fn too_large(cap: usize) -> ProviderError {
    ProviderError::InvalidResponse(format!("the answer is larger than {} MiB", cap >> 20))
}

/// Reads at most `cap` bytes; `true` when the body had more.
pub(crate) async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let hint = response.content_length().unwrap_or(0).min(cap as u64) as usize;
    let mut body = Vec::with_capacity(hint);
    while let Some(chunk) = response.chunk().await? {
        if direct::push_capped(&mut body, &chunk, cap) {
            return Ok((body, true));
        }
    }
    Ok((body, false))
}

/// What an excerpt does with HTML markup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Markup {
    /// Left as it is.
    Keep,
    /// Stripped, with the contents of `<style>` and `<script>` blocks (an HTML error page).
    Strip,
}

/// A short, readable piece of a body that is not the JSON we expected.
pub(crate) fn excerpt(body: &[u8], markup: Markup) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(8 << 10)]);
    let text = if markup == Markup::Strip && text.contains('<') {
        strip_markup(&text)
    } else {
        text.into_owned()
    };
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return "(empty body)".to_owned();
    }
    truncate(&collapsed, MAX_MESSAGE_CHARS).to_owned()
}

fn strip_markup(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len());
    let mut at = 0;
    while at < html.len() {
        let Some(open) = html[at..].find('<').map(|i| at + i) else {
            out.push_str(&html[at..]);
            break;
        };
        out.push_str(&html[at..open]);
        // Skip the contents of <style> and <script> blocks, not just their tags.
        let block_end = ["style", "script"].iter().find_map(|tag| {
            lower[open + 1..].starts_with(tag).then(|| {
                lower[open..]
                    .find(&format!("</{tag}"))
                    .map_or(html.len(), |i| open + i)
            })
        });
        let resume = block_end.unwrap_or(open);
        at = match html[resume..].find('>') {
            Some(close) => resume + close + 1,
            None => html.len(),
        };
        out.push(' ');
    }
    out
}

/// At most `max_chars` characters of `text`.
pub(crate) fn truncate(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}
