//! The chat-completions provider (`kind = "chat"`): image models reached through an
//! OpenAI-style `POST {base}/chat/completions` with image output, as OpenRouter offers Gemini's
//! image models (`google/gemini-3-pro-image-preview`, …) and others.
//!
//! The request is one user message whose content is the prompt as a `text` part followed by each
//! input image as an `image_url` part with a `data:` URL (OpenRouter asks for the text first),
//! `modalities: ["image", "text"]`, and OpenRouter's `image_config`: `aspect_ratio` ("16:9") when
//! the job has one and `image_size` ("1K"/"2K"/"4K") when the job has one and the model takes it
//! (not Gemini 2.5 Flash Image). Servers that do not know `image_config` ignore it.
//!
//! The answer's image is the first of `choices[0].message.images[].image_url.url` (a base64
//! `data:` URL; an http(s) URL is downloaded), or failing that the first `image_url` part of a
//! `content` array. A message without an image is `Refused` when `finish_reason` is
//! `content_filter`, `native_finish_reason` is one of Gemini's refusal reasons (`IMAGE_SAFETY`,
//! `PROHIBITED_CONTENT`, …) or the message carries a `refusal`; otherwise `NoImage`, with the
//! model's text. Errors are classified as for the images API (`openai::errors`): OpenRouter's
//! 402 (no credits) is final, 429 and 5xx are retryable, 403 moderation is a refusal. An error
//! OpenRouter reports inside a 200 (`{"error": …}`, when the model failed after the answer
//! started) is treated as that status.
//!
//! Imports `domain` (through `providers`) and nothing above it.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::gemini::REFUSAL_REASONS;
use super::openai::errors::upstream_error;
use super::openai::http::{ClientError, HttpClient, endpoint};
use super::upstream_error::{MAX_MESSAGE_CHARS, truncate};
use super::{GeneratedImage, ImageJob, ImageProvider, ProviderError, upstream_takes_image_size};

pub const DEFAULT_BASE_URL: &str = "https://openrouter.ai/api/v1";

#[derive(Clone)]
pub struct ChatConfig {
    /// With the API version: `https://openrouter.ai/api/v1`.
    pub base_url: Url,
    /// `None`: send no `Authorization` (a local server that wants none).
    pub api_key: Option<String>,
    /// The whole call, sending the inputs through reading the image.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl fmt::Debug for ChatConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatConfig")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

#[derive(Debug)]
pub struct ChatProvider {
    http: HttpClient,
    url: Url,
}

impl ChatProvider {
    pub fn new(config: ChatConfig) -> Result<ChatProvider, ClientError> {
        Ok(ChatProvider {
            http: HttpClient::new(
                config.timeout,
                config.connect_timeout,
                config.api_key.as_deref(),
                &[],
            )?,
            url: endpoint(&config.base_url, &["chat", "completions"])?,
        })
    }

    async fn call(&self, job: &ImageJob) -> Result<GeneratedImage, ProviderError> {
        let body = serde_json::to_vec(&ChatRequest::for_job(job))
            .map_err(|e| ProviderError::InvalidResponse(format!("request encoding: {e}")))?;
        let answer = self.http.post(&self.url, "application/json", body).await?;
        match read_answer(&answer)? {
            Answer::Image(url) => self.http.image_at(&url).await,
            Answer::Failed(error) => Err(error),
        }
    }
}

#[async_trait::async_trait]
impl ImageProvider for ChatProvider {
    fn name(&self) -> &'static str {
        "chat"
    }

    async fn generate(&self, job: &ImageJob) -> Result<GeneratedImage, ProviderError> {
        self.call(job).await
    }
}

#[derive(Debug, Serialize)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    pub messages: [Message<'a>; 1],
    pub modalities: [&'static str; 2],
    #[serde(skip_serializing_if = "ImageConfig::is_empty")]
    pub image_config: ImageConfig,
    pub stream: bool,
}

#[derive(Debug, Serialize)]
pub struct Message<'a> {
    pub role: &'static str,
    pub content: Vec<ContentPart<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Debug, Serialize)]
pub struct ImageUrl {
    pub url: String,
}

#[derive(Debug, Default, Serialize)]
pub struct ImageConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<&'static str>,
}

impl ImageConfig {
    fn is_empty(&self) -> bool {
        self.aspect_ratio.is_none() && self.image_size.is_none()
    }
}

impl<'a> ChatRequest<'a> {
    pub fn for_job(job: &'a ImageJob) -> ChatRequest<'a> {
        let mut content = Vec::with_capacity(1 + job.inputs.len());
        content.push(ContentPart::Text { text: &job.prompt });
        for input in &job.inputs {
            content.push(ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: format!(
                        "data:{};base64,{}",
                        input.mime_type,
                        BASE64.encode(&input.bytes)
                    ),
                },
            });
        }
        // `google/gemini-2.5-flash-image` is Gemini 2.5 Flash Image, which has a single size.
        let bare_model = job.upstream_model.rsplit('/').next().unwrap_or_default();
        ChatRequest {
            model: &job.upstream_model,
            messages: [Message {
                role: "user",
                content,
            }],
            modalities: ["image", "text"],
            image_config: ImageConfig {
                aspect_ratio: job.aspect_ratio.map(|r| r.as_str()),
                image_size: job
                    .image_size
                    .filter(|_| upstream_takes_image_size(bare_model))
                    .map(|s| s.as_str()),
            },
            stream: false,
        }
    }
}

#[derive(Debug, Deserialize)]
struct ChatResponse {
    #[serde(default)]
    choices: Vec<Choice>,
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: Option<AnswerMessage>,
    finish_reason: Option<String>,
    native_finish_reason: Option<String>,
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct AnswerMessage {
    content: Option<Value>,
    #[serde(default)]
    images: Vec<Value>,
    refusal: Option<String>,
}

/// What a 200 carried.
#[derive(Debug)]
enum Answer {
    /// The image's URL (`data:` or http(s)).
    Image(String),
    Failed(ProviderError),
}

fn read_answer(body: &[u8]) -> Result<Answer, ProviderError> {
    let answer: ChatResponse = serde_json::from_slice(body).map_err(|e| {
        ProviderError::InvalidResponse(format!("the answer is not chat-completions JSON: {e}"))
    })?;
    let error = answer
        .error
        .as_ref()
        .or_else(|| answer.choices.first().and_then(|c| c.error.as_ref()));
    if let Some(error) = error {
        return Ok(Answer::Failed(error_in_body(error)));
    }
    let Some(choice) = answer.choices.first() else {
        return Ok(Answer::Failed(ProviderError::NoImage(
            "the answer has no choices".into(),
        )));
    };
    let message = choice.message.as_ref();
    let url = message.and_then(|m| {
        m.images
            .iter()
            .find_map(image_url)
            .or_else(|| m.content.as_ref()?.as_array()?.iter().find_map(image_url))
    });
    if let Some(url) = url {
        return Ok(Answer::Image(url));
    }
    let text = message
        .and_then(|m| match &m.content {
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Array(parts)) => Some(
                parts
                    .iter()
                    .filter_map(|p| p.get("text")?.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        })
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let refusal = message
        .and_then(|m| m.refusal.clone())
        .filter(|r| !r.is_empty());
    let finish = choice.finish_reason.as_deref().unwrap_or("none");
    let native = choice.native_finish_reason.as_deref();
    let detail = |head: String| match refusal.as_deref().or(text.as_deref()) {
        Some(text) => format!("{head}: {}", truncate(text, MAX_MESSAGE_CHARS)),
        None => head,
    };
    let refused = finish == "content_filter"
        || native.is_some_and(|n| REFUSAL_REASONS.contains(&n.to_ascii_uppercase().as_str()))
        || refusal.is_some();
    let reason = match native {
        Some(native) => format!("finish reason {finish} ({native})"),
        None => format!("finish reason {finish}"),
    };
    Ok(Answer::Failed(if refused {
        ProviderError::Refused(detail(reason))
    } else if text.is_some() && finish == "stop" {
        ProviderError::NoImage(detail("the model answered with text only".into()))
    } else {
        ProviderError::NoImage(detail(reason))
    }))
}

/// `{"type": "image_url", "image_url": {"url": …}}` (the type may be left out in `images`).
fn image_url(part: &Value) -> Option<String> {
    if part.get("type").is_some_and(|t| t != "image_url") {
        return None;
    }
    let url = part.get("image_url")?;
    let url = url.get("url").unwrap_or(url).as_str()?;
    (!url.is_empty()).then(|| url.to_owned())
}

/// An error inside a 200: OpenRouter's `{"code": 502, "message": …}` is read as that status.
fn error_in_body(error: &Value) -> ProviderError {
    let status = error
        .get("code")
        .and_then(|c| c.as_u64().or_else(|| c.as_str()?.parse().ok()))
        .and_then(|c| u16::try_from(c).ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let body = serde_json::json!({ "error": error }).to_string();
    upstream_error(status, &HeaderMap::new(), body.as_bytes())
}

#[cfg(test)]
mod tests;
