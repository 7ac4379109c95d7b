//! The wire contract: error codes, the success/accepted/error bodies and the task record, exactly as
//! `docs/contract.md` and `openapi.json` spell them. Shared by the server (which writes them) and
//! the tests and client (which read them).
//!
//! Imports nothing of the crate: every other module may use it, it uses none of them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

mod record;

pub use record::{TaskBatch, TaskRecord};

/// The id of the one API this server offers, as task records show it (`api_id`) and as a token's
/// `apis` list names it.
pub const IMAGES_API_ID: &str = "5f1e3a0c-9b7d-4c2e-8a61-3d2b9f4e7c10";

/// The contract's error codes. The HTTP status of each is fixed by the contract. `Other` is a code
/// this version does not know, read from another server (the client talks to any server that
/// speaks the contract); we never send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    NoToken,
    BadRequest,
    Disabled,
    ApiNotImplemented,
    InvalidToken,
    TokenExpired,
    TokenMismatched,
    UsedUp,
    Forbidden,
    NoApi,
    RequestTooLarge,
    TooManyRequests,
    ApiError,
    Other(String),
}

impl ErrorCode {
    const KNOWN: [ErrorCode; 13] = [
        ErrorCode::NoToken,
        ErrorCode::BadRequest,
        ErrorCode::Disabled,
        ErrorCode::ApiNotImplemented,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::TokenMismatched,
        ErrorCode::UsedUp,
        ErrorCode::Forbidden,
        ErrorCode::NoApi,
        ErrorCode::RequestTooLarge,
        ErrorCode::TooManyRequests,
        ErrorCode::ApiError,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::NoToken => "no_token",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Disabled => "disabled",
            ErrorCode::ApiNotImplemented => "api_not_implemented",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenMismatched => "token_mismatched",
            ErrorCode::UsedUp => "used_up",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NoApi => "no_api",
            ErrorCode::RequestTooLarge => "request_too_large",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::ApiError => "api_error",
            ErrorCode::Other(code) => code,
        }
    }

    /// The code of `text`; `Other` when it is none of the contract's.
    pub fn parse(text: &str) -> ErrorCode {
        ErrorCode::KNOWN
            .into_iter()
            .find(|code| code.as_str() == text)
            .unwrap_or_else(|| ErrorCode::Other(text.to_owned()))
    }

    pub fn http_status(&self) -> u16 {
        match self {
            ErrorCode::NoToken
            | ErrorCode::BadRequest
            | ErrorCode::Disabled
            | ErrorCode::ApiNotImplemented => 400,
            ErrorCode::InvalidToken | ErrorCode::TokenExpired | ErrorCode::TokenMismatched => 401,
            ErrorCode::UsedUp | ErrorCode::Forbidden => 403,
            ErrorCode::NoApi => 404,
            ErrorCode::RequestTooLarge => 413,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::ApiError | ErrorCode::Other(_) => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Ok(ErrorCode::parse(&text))
    }
}

/// A contract error: a code and a message meant for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// For `too_many_requests`: which limit refused, and when to come back (sent as headers).
    pub throttle: Option<Throttle>,
}

/// Which limit answered `too_many_requests`, and when a client should come back. Every dialect
/// sends it as `Retry-After` plus the limit's own headers, so a client can tell the two apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// The per-minute request rate (`X-RateLimit-Limit`, `-Remaining`, `-Reset`). Exact: a
    /// request sent `retry_after` seconds later is admitted.
    Rate {
        limit: u64,
        remaining: u64,
        retry_after: u64,
        reset: u64,
    },
    /// The most unfinished tasks at a time (`X-Concurrency-Limit`, `X-Concurrency-Remaining`).
    /// `retry_after` is an estimate of when one of them finishes, not a promise.
    Concurrency { limit: u64, retry_after: u64 },
}

impl Throttle {
    /// Whole seconds, at least 1.
    pub fn retry_after(&self) -> u64 {
        match *self {
            Throttle::Rate { retry_after, .. } | Throttle::Concurrency { retry_after, .. } => {
                retry_after.max(1)
            }
        }
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            throttle: None,
        }
    }

    /// `too_many_requests`, with the limit that refused.
    pub fn throttled(throttle: Throttle, message: impl Into<String>) -> ApiError {
        ApiError {
            throttle: Some(throttle),
            ..ApiError::new(ErrorCode::TooManyRequests, message)
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    /// The generic internal error; the details go to the log, never to the client.
    pub fn internal() -> ApiError {
        ApiError::new(ErrorCode::ApiError, "Internal server error.")
    }

    /// `api_error` for a dependency that is down for now (the database): the client may try
    /// again shortly. The cause goes to the log.
    pub fn unavailable(dependency: &str) -> ApiError {
        ApiError::new(
            ErrorCode::ApiError,
            format!("The {dependency} is unavailable right now; try again shortly."),
        )
    }

    /// `{"success": false, "task_id"?, "trace_id", "error": {"code", "message"}}`.
    pub fn body(&self, trace_id: &str, task_id: Option<&str>) -> Value {
        let mut body = Map::new();
        body.insert("success".into(), Value::Bool(false));
        if let Some(task_id) = task_id {
            body.insert("task_id".into(), Value::String(task_id.to_owned()));
        }
        body.insert("trace_id".into(), Value::String(trace_id.to_owned()));
        body.insert(
            "error".into(),
            json!({"code": self.code, "message": self.message}),
        );
        Value::Object(body)
    }
}

/// One entry of a success body's `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEntry {
    pub prompt: String,
    pub image_url: String,
}

/// `{"success": true, "task_id", "trace_id", "data": [...]}`.
pub fn success_body(task_id: &str, trace_id: &str, data: &[ImageEntry]) -> Value {
    json!({"success": true, "task_id": task_id, "trace_id": trace_id, "data": data})
}

/// The immediate answer of async and callback mode: no `data` key.
pub fn accepted_body(task_id: &str, trace_id: &str) -> Value {
    json!({"success": true, "task_id": task_id, "trace_id": trace_id})
}

/// Where a task is in its life. Stored as these strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Processing,
    Succeeded,
    Failed,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Processing => "processing",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        match s {
            "pending" => Some(TaskState::Pending),
            "processing" => Some(TaskState::Processing),
            "succeeded" => Some(TaskState::Succeeded),
            "failed" => Some(TaskState::Failed),
            _ => None,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Failed)
    }
}

/// Unix milliseconds as the contract's float seconds, rounded to the millisecond.
pub fn unix_seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_contract_shape() {
        let body = ApiError::bad_request("prompt is required.").body("t-1", None);
        assert_eq!(
            body,
            json!({"success": false, "trace_id": "t-1",
                   "error": {"code": "bad_request", "message": "prompt is required."}})
        );
        let body = ApiError::internal().body("t-1", Some("task-9"));
        assert_eq!(body["task_id"], "task-9");
        assert_eq!(body["error"]["code"], "api_error");
    }

    #[test]
    fn statuses_match_the_contract_table() {
        assert_eq!(ErrorCode::NoToken.http_status(), 400);
        assert_eq!(ErrorCode::InvalidToken.http_status(), 401);
        assert_eq!(ErrorCode::Forbidden.http_status(), 403);
        assert_eq!(ErrorCode::NoApi.http_status(), 404);
        assert_eq!(ErrorCode::RequestTooLarge.http_status(), 413);
        assert_eq!(ErrorCode::TooManyRequests.http_status(), 429);
        assert_eq!(ErrorCode::ApiError.http_status(), 500);
        assert_eq!(
            serde_json::to_value(ErrorCode::ApiNotImplemented).unwrap(),
            "api_not_implemented"
        );
    }

    #[test]
    fn every_code_reads_back_and_other_servers_codes_are_kept() {
        for code in ErrorCode::KNOWN {
            let text = serde_json::to_value(&code).unwrap();
            assert_eq!(serde_json::from_value::<ErrorCode>(text).unwrap(), code);
        }
        let other: ErrorCode = serde_json::from_value(json!("quota_exceeded")).unwrap();
        assert_eq!(other, ErrorCode::Other("quota_exceeded".into()));
        assert_eq!(other.to_string(), "quota_exceeded");
        assert_eq!(other.http_status(), 500);
    }

    #[test]
    fn accepted_body_has_no_data_key() {
        let body = accepted_body("a", "b");
        assert!(body.get("data").is_none());
        assert_eq!(body["success"], true);
    }
}
