//! The OpenAI images provider (`kind = "openai"`): `gpt-image-1`, `gpt-image-1.5`, `gpt-image-2`
//! at OpenAI, and any server that speaks the same API (LocalAI, gateways). A generate is
//! `POST {base}/images/generations` (JSON), an edit `POST {base}/images/edits` (multipart, one
//! part per input image); the answer's `data[0]` is base64, or a URL that is downloaded
//! (docs/upstreams.md, OpenAI images API).
//!
//! What lives here: the configuration and one HTTP call per job. The size/quality table and the
//! bodies are in `wire`, the classification of failures in `errors` (shared with `chat`), the
//! HTTP client in `http` (shared too). What does not: retries (the caller's), fetching inputs.
//! Imports `domain` and nothing above it.

use std::fmt;
use std::time::Duration;

use url::Url;

use super::{GeneratedImage, ImageJob, ImageProvider, ProviderError};

pub(crate) mod errors;
pub(crate) mod http;
pub mod wire;

pub use http::ClientError;
use http::{HttpClient, decode_base64_image, endpoint};
use wire::{Found, GenerationRequest, Plan, edit_body, first_image};

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// gpt-image-1 at high quality takes about a minute; gpt-image-2 at 4K longer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct OpenAiConfig {
    /// With the API version: `https://api.openai.com/v1`, `http://localai:8080/v1`.
    pub base_url: Url,
    /// `None`: send no `Authorization` (a local server that wants none).
    pub api_key: Option<String>,
    /// `OpenAI-Organization`, when set.
    pub organization: Option<String>,
    /// The whole call, sending the inputs through reading the image.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl OpenAiConfig {
    /// OpenAI's endpoint and the default timeouts.
    pub fn new(api_key: impl Into<String>) -> OpenAiConfig {
        OpenAiConfig {
            base_url: Url::parse(DEFAULT_BASE_URL).expect("the default base URL is a valid URL"),
            api_key: Some(api_key.into()),
            organization: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("organization", &self.organization)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

#[derive(Debug)]
pub struct OpenAiProvider {
    http: HttpClient,
    generations_url: Url,
    edits_url: Url,
}

impl OpenAiProvider {
    pub fn new(config: OpenAiConfig) -> Result<OpenAiProvider, ClientError> {
        let extra: Vec<(&'static str, &str)> = config
            .organization
            .as_deref()
            .filter(|o| !o.is_empty())
            .map(|o| ("openai-organization", o))
            .into_iter()
            .collect();
        Ok(OpenAiProvider {
            http: HttpClient::new(
                config.timeout,
                config.connect_timeout,
                config.api_key.as_deref(),
                &extra,
            )?,
            generations_url: endpoint(&config.base_url, &["images", "generations"])?,
            edits_url: endpoint(&config.base_url, &["images", "edits"])?,
        })
    }

    async fn call(&self, job: &ImageJob) -> Result<GeneratedImage, ProviderError> {
        let plan = Plan::for_job(job);
        let encoding =
            |e: serde_json::Error| ProviderError::InvalidResponse(format!("request encoding: {e}"));
        let body = if job.inputs.is_empty() {
            let json = serde_json::to_vec(&GenerationRequest::new(job, &plan)).map_err(encoding)?;
            self.http
                .post(&self.generations_url, "application/json", json)
                .await?
        } else {
            let form = edit_body(job, &plan);
            let content_type = form.content_type();
            self.http
                .post(&self.edits_url, &content_type, form.finish())
                .await?
        };
        match first_image(&body).map_err(ProviderError::InvalidResponse)? {
            Found::Base64(b64) => decode_base64_image(&b64),
            Found::Url(url) => self.http.image_at(&url).await,
        }
    }
}

#[async_trait::async_trait]
impl ImageProvider for OpenAiProvider {
    fn name(&self) -> &'static str {
        "openai"
    }

    async fn generate(&self, job: &ImageJob) -> Result<GeneratedImage, ProviderError> {
        self.call(job).await
    }
}

#[cfg(test)]
mod tests;
