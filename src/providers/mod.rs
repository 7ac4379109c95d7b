//! Image providers: the one trait every upstream (Gemini on AI Studio or Vertex AI, the original
//! service, the offline placeholder, …) implements, the types that cross it, and the routing table
//! that maps a public model name to its routes. Providers never see HTTP requests, our API tokens
//! or the database: they import `domain` (and `api`, to read a contract upstream's error codes),
//! nothing above them.

use std::time::Duration;

use bytes::Bytes;

use crate::domain::{AspectRatio, Resolution};

pub mod chat;
pub mod direct;
pub mod gemini;
pub mod lanes;
pub mod openai;
pub mod origin;
pub mod placeholder;
pub mod routing;
pub(crate) mod upstream_error;
pub mod vertex;

pub use routing::{ModelRoutes, Pick, Route, RouteStatus, Routes};

/// An image given to the upstream as a reference (the `image_urls` of an edit), already fetched,
/// size-checked and sniffed.
#[derive(Debug, Clone)]
pub struct InputImage {
    pub bytes: Bytes,
    /// Sniffed from the bytes: `image/png`, `image/jpeg`, `image/webp`, `image/gif`, `image/heic`, `image/heif`.
    pub mime_type: &'static str,
    pub width: u32,
    pub height: u32,
}

/// One image the upstream should make (a request with `count: 3` is three jobs).
#[derive(Debug, Clone)]
pub struct ImageJob {
    pub prompt: String,
    /// Public model name from the request, e.g. `nano-banana-pro` (for labels and logs).
    pub model: String,
    /// The upstream's model id, e.g. `gemini-3-pro-image`.
    pub upstream_model: String,
    /// Reference images for an edit, in request order; empty for generate.
    pub inputs: Vec<InputImage>,
    /// `None`: send no aspect ratio, the upstream follows the first input image.
    pub aspect_ratio: Option<AspectRatio>,
    /// `None`: the model has a single size, send no `imageSize`.
    pub image_size: Option<Resolution>,
    /// The exact pixel size expected (used by the placeholder; informative for real upstreams).
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone)]
pub struct GeneratedImage {
    pub bytes: Bytes,
    /// As the upstream declared it (`image/png`, `image/jpeg`, …).
    pub mime_type: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The upstream's safety policy refused this image. Never retried; maps to 403 `forbidden`.
    #[error("the upstream refused to make this image: {0}")]
    Refused(String),
    /// A well-formed answer without an image (NO_IMAGE, text only, …). Maps to `api_error`.
    #[error("the upstream returned no image: {0}")]
    NoImage(String),
    /// The upstream answered with an HTTP error.
    #[error("the upstream answered HTTP {status}: {message}")]
    Upstream {
        status: u16,
        message: String,
        /// From `RetryInfo.retryDelay` or `Retry-After`, when the upstream said.
        retry_after: Option<Duration>,
    },
    /// No usable HTTP answer. `sent` is false when the request surely never reached the upstream
    /// (connection refused, DNS failure), true when it may have (timeout after sending, reset).
    #[error("the upstream could not be reached: {message}")]
    Transport { message: String, sent: bool },
    /// A 200 whose body is not what the wire format promises (garbage, bad base64, …).
    #[error("the upstream's answer could not be read: {0}")]
    InvalidResponse(String),
}

impl ProviderError {
    /// Whether trying the same call again later may succeed and is safe: 429, 500, 502, 503,
    /// 504 and failures to reach the upstream at all. Refusals, 4xx, unreadable answers and
    /// timeouts after the request was sent are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Upstream { status, .. } => {
                matches!(status, 429 | 500 | 502 | 503 | 504)
            }
            // A request that may have reached the upstream may have been billed: never re-sent.
            ProviderError::Transport { sent, .. } => !sent,
            ProviderError::Refused(_)
            | ProviderError::NoImage(_)
            | ProviderError::InvalidResponse(_) => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Upstream { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[async_trait::async_trait]
pub trait ImageProvider: Send + Sync {
    /// Short name for logs and metrics: `gemini`, `placeholder`.
    fn name(&self) -> &'static str;
    /// Makes one image. Retries are the caller's business: do one upstream call per invocation.
    /// So are timing and logging the call: [`Route::generate`] does both for every provider.
    async fn generate(&self, job: &ImageJob) -> Result<GeneratedImage, ProviderError>;
}

/// Gemini 2.5 Flash Image has a single size and rejects `imageSize`; every later model takes it.
pub fn upstream_takes_image_size(upstream_model: &str) -> bool {
    !upstream_model.starts_with("gemini-2.5")
}
