//! The API dialects our users' tools already speak, translated to and from the contract: OpenAI's
//! Images API (`openai.rs`) and Google's Gemini `generateContent` (`gemini.rs`). A request in
//! either becomes the contract's request — the body a task stores (and `/nano-banana/tasks` shows)
//! and the validated `ImagesRequest` it runs — so every dialect shares tokens, credits, limits,
//! idempotency and storage. A finished task's images become that dialect's answer, and a contract
//! error its error shape.
//!
//! Pure translation: no HTTP, no I/O. Imports `api` and `domain` only; `http` calls it.

use serde_json::Value;

use crate::{
    api::{ApiError, ErrorCode},
    domain::{ImagesRequest, Model, RequestLimits},
};

pub mod gemini;
pub mod openai;

/// A request of another dialect, in the contract's terms.
#[derive(Debug, Clone)]
pub struct Translated {
    /// The contract request body (with our own fields) that the task stores.
    pub body: Value,
    /// The same, validated.
    pub request: ImagesRequest,
}

/// A request refused before it became a task: which parameter, why, and whether it was a size
/// limit (413 where the dialect has one) rather than a malformed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub param: Option<String>,
    pub message: String,
    pub too_large: bool,
}

impl Invalid {
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            param: Some(param.into()),
            message: message.into(),
            too_large: false,
        }
    }

    pub fn too_large(param: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            too_large: true,
            ..Invalid::new(param, message)
        }
    }

    /// The contract error behind the refusal: `request_too_large` or `bad_request`.
    pub fn error(&self) -> ApiError {
        let code = if self.too_large {
            ErrorCode::RequestTooLarge
        } else {
            ErrorCode::BadRequest
        };
        ApiError::new(code, self.message.clone())
    }
}

/// What a dialect's parser needs to know about this server.
pub struct Context<'a> {
    pub limits: &'a RequestLimits,
    /// The largest input image, in bytes.
    pub max_image_bytes: usize,
    /// The public model a name means: one of ours, or an upstream id of our routing table.
    pub model_named: &'a (dyn Fn(&str) -> Option<Model> + Sync),
    /// The names `model_named` accepts, for error messages.
    pub model_names: &'a [String],
}

impl Context<'_> {
    fn unknown_model(&self, param: &str, name: &str) -> Invalid {
        Invalid::new(
            param,
            format!(
                "model {name:?} is not available here: use one of {}.",
                self.model_names.join(", ")
            ),
        )
    }
}

/// Validates the translated body as the contract does, so a dialect can never create a task the
/// contract would refuse.
fn validated(body: Value, limits: &RequestLimits) -> Result<Translated, Invalid> {
    match ImagesRequest::parse(&body, limits) {
        Ok(request) => Ok(Translated { body, request }),
        Err(e) => Err(Invalid {
            param: None,
            message: e.0,
            too_large: false,
        }),
    }
}

/// A `data:` URI for uploaded bytes, typed by what they are (sniffed), not by what the client
/// said: SDKs send `application/octet-stream` for raw bytes.
fn data_uri(bytes: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "data:{};base64,{}",
        sniff_mime(bytes),
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The image type of `bytes` by their magic numbers; `application/octet-stream` when none fits
/// (an upload is then refused as not an image, naming the part).
fn sniff_mime(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        "image/jpeg"
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        "image/gif"
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "image/webp"
    } else if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        match &bytes[8..12] {
            b"heic" | b"heix" | b"hevc" | b"hevx" => "image/heic",
            _ => "image/heif",
        }
    } else {
        "application/octet-stream"
    }
}

/// Whole megabytes, for messages.
fn megabytes(bytes: usize) -> String {
    format!("{} MB", bytes / (1024 * 1024))
}
