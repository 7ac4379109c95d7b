//! A fake chat-completions upstream with image output, as OpenRouter offers Gemini's image
//! models: a real axum server on loopback that answers `POST …/chat/completions` with an
//! assistant message whose `images[0].image_url.url` is a `data:image/png;base64,…` URL. For the
//! tests of the `chat` provider and the integration suite. Imports nothing of the crate outside
//! `fake`.
//!
//! What lives here: the options, the scripted outcomes ([`Scenario`]: a FIFO queue first, then
//! `[fake:…]` tags in the prompt), what each request is recorded as (the content parts, the
//! decoded input images, `modalities`, `image_config`), and the handler. The image's size follows
//! `image_config` as Gemini 3 image models make it (`aspect_ratio`, default 1:1; `image_size`
//! 1K/2K/4K, default 1K). A request whose `modalities` lack `image` gets text only, as a real
//! model would answer. Errors are OpenRouter's `{"error": {"code": 429, "message", "metadata"}}`.
//! Not here: streaming, tools, several choices.
//!
//! Prompt tags (the first outcome tag wins): `[fake:success]` `[fake:no_image]`
//! `[fake:refused]` `[fake:429]` `[fake:429=2s]` `[fake:500]` `[fake:status=503]`
//! `[fake:error_in_body]` `[fake:hang]`.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::common::{
    Calls, PngCache, Server, parse_duration, retry_after_seconds, stopped, tags, unix_now,
};

/// The colour of every image this fake makes (tests tell which upstream made an image by it).
pub const IMAGE_RGB: [u8; 3] = [200, 90, 160];

#[derive(Debug, Clone)]
pub struct FakeChatOptions {
    /// `None`: accept any key (or none at all).
    pub api_key: Option<String>,
    /// Added before every answer in which "the model ran".
    pub latency: Duration,
    /// How many of the most recent requests [`FakeChat::requests`] keeps.
    pub record_limit: usize,
}

impl Default for FakeChatOptions {
    fn default() -> Self {
        FakeChatOptions {
            api_key: None,
            latency: Duration::ZERO,
            record_limit: 1000,
        }
    }
}

/// A scripted outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    Success,
    /// 200, text only: `finish_reason: stop`, no images.
    NoImage,
    /// 200, no image: `finish_reason: content_filter`, `native_finish_reason: IMAGE_SAFETY`.
    Refused,
    /// 429 with `Retry-After` saying this delay.
    RateLimited {
        retry_after: Duration,
    },
    /// 500.
    ServerError,
    /// This status with an OpenRouter error body (a 2xx means success).
    Status(u16),
    /// 200 whose body is `{"error": {"code": 502, …}}`: the model failed after the answer began.
    ErrorInBody,
    /// Never answers, until the fake shuts down (then a 503).
    Hang,
}

fn scenario_from_prompt(prompt: &str) -> Scenario {
    tags(prompt)
        .into_iter()
        .find_map(|tag| match tag {
            "success" => Some(Scenario::Success),
            "no_image" => Some(Scenario::NoImage),
            "refused" => Some(Scenario::Refused),
            "429" => Some(Scenario::RateLimited {
                retry_after: Duration::from_secs(20),
            }),
            "500" => Some(Scenario::ServerError),
            "error_in_body" => Some(Scenario::ErrorInBody),
            "hang" => Some(Scenario::Hang),
            other => {
                if let Some(delay) = other.strip_prefix("429=") {
                    parse_duration(delay).map(|retry_after| Scenario::RateLimited { retry_after })
                } else {
                    other
                        .strip_prefix("status=")
                        .and_then(|s| s.parse().ok())
                        .map(Scenario::Status)
                }
            }
        })
        .unwrap_or(Scenario::Success)
}

/// An input image of the request, decoded from its `data:` URL.
#[derive(Debug, Clone)]
pub struct RecordedImage {
    /// From the data URL, e.g. `image/png`; for a plain URL, the URL.
    pub mime_type: String,
    pub bytes: Bytes,
}

#[derive(Debug, Clone, Default)]
pub struct RecordedRequest {
    pub method: String,
    /// As received, e.g. `/api/v1/chat/completions`.
    pub path: String,
    /// The whole `Authorization` header.
    pub authorization: Option<String>,
    pub model: Option<String>,
    /// The `type` of each content part of the first message, in order (`text`, `image_url`).
    pub part_types: Vec<String>,
    /// The text parts, joined with newlines.
    pub prompt: String,
    pub images: Vec<RecordedImage>,
    pub modalities: Vec<String>,
    pub aspect_ratio: Option<String>,
    pub image_size: Option<String>,
    /// The JSON body, with every image URL replaced by `<image>`.
    pub body: Value,
}

/// A running fake. Dropping it stops accepting connections and answers hanging requests with a
/// 503.
pub struct FakeChat {
    server: Server,
    shared: Arc<Shared>,
}

impl fmt::Debug for FakeChat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeChat")
            .field("addr", &self.server.addr)
            .finish()
    }
}

impl FakeChat {
    /// Binds `127.0.0.1:0` and serves in a tokio task.
    pub async fn start(options: FakeChatOptions) -> io::Result<FakeChat> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            calls: Calls::new(options.record_limit.max(1)),
            options,
            images: PngCache::new(IMAGE_RGB),
            shutdown: shutdown_rx,
        });
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let server = Server::start(router, "chat", shutdown).await?;
        Ok(FakeChat { server, shared })
    }

    /// `http://127.0.0.1:PORT/api/v1`, the base URL to configure (OpenRouter's shape).
    pub fn base_url(&self) -> String {
        format!("{}/api/v1", self.server.origin())
    }

    /// The most recent requests (at most `record_limit`), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.calls.requests()
    }

    /// Every HTTP request received, whatever its path or outcome.
    pub fn request_count(&self) -> usize {
        self.shared.calls.count()
    }

    /// Queues an outcome for a coming request; queued outcomes are taken in order by requests
    /// that pass the first checks (key, JSON, model, messages).
    pub fn push_scenario(&self, scenario: Scenario) {
        self.shared.calls.push_scenario(scenario);
    }
}

struct Shared {
    options: FakeChatOptions,
    calls: Calls<RecordedRequest, Scenario>,
    images: PngCache,
    shutdown: watch::Receiver<bool>,
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    shared.calls.received();
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    if !path.ends_with("/chat/completions") {
        return error(404, "Not Found", None);
    }
    if method != Method::POST {
        return error(405, "Method Not Allowed", None);
    }
    let authorization = header_text(request.headers(), header::AUTHORIZATION.as_str());
    let body = match axum::body::to_bytes(request.into_body(), usize::MAX).await {
        Ok(body) => body,
        Err(e) => return error(400, &format!("could not read the body: {e}"), None),
    };
    let mut recorded = RecordedRequest {
        method: method.to_string(),
        path,
        authorization,
        ..RecordedRequest::default()
    };
    let parsed = serde_json::from_slice::<Value>(&body);
    if let Ok(json) = &parsed {
        read_request(json, &mut recorded);
    }
    shared.calls.record(recorded.clone());
    if let Some(key) = &shared.options.api_key
        && recorded.authorization.as_deref() != Some(&format!("Bearer {key}"))
    {
        return error(401, "No auth credentials found", None);
    }
    if parsed.is_err() {
        return error(400, "Invalid JSON body", None);
    }
    let Some(model) = recorded.model.clone() else {
        return error(400, "No model given", None);
    };
    if recorded.part_types.is_empty() {
        return error(
            400,
            "Input required: specify \"prompt\" or \"messages\"",
            None,
        );
    }

    let queued = shared.calls.next_scenario();
    let scenario = queued.unwrap_or_else(|| scenario_from_prompt(&recorded.prompt));
    let ran = matches!(
        scenario,
        Scenario::Success | Scenario::NoImage | Scenario::Refused | Scenario::ErrorInBody
    );
    if ran && !shared.options.latency.is_zero() {
        tokio::time::sleep(shared.options.latency).await;
    }
    let wants_image = recorded.modalities.iter().any(|m| m == "image");
    match scenario {
        Scenario::Success if !wants_image => completion(
            &model,
            "I can only describe the image in words.",
            None,
            "stop",
            "STOP",
        ),
        Scenario::Success => image_answer(&shared, &model, &recorded).await,
        Scenario::Status(status) if (200..300).contains(&status) => {
            image_answer(&shared, &model, &recorded).await
        }
        Scenario::NoImage => completion(
            &model,
            "I could not make an image of that, but here is a description.",
            None,
            "stop",
            "STOP",
        ),
        Scenario::Refused => completion(&model, "", None, "content_filter", "IMAGE_SAFETY"),
        Scenario::RateLimited { retry_after } => {
            let mut response = error(
                429,
                &format!("{model} is temporarily rate-limited upstream. Please retry shortly."),
                Some(json!({"provider_name": "Google AI Studio"})),
            );
            if let Ok(value) = HeaderValue::from_str(&retry_after_seconds(retry_after)) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Scenario::ServerError => error(500, "Internal Server Error", None),
        Scenario::Status(status) => error(status, "The fake was told to fail.", None),
        Scenario::ErrorInBody => json_response(
            200,
            &json!({"id": "gen-fake", "object": "chat.completion", "created": unix_now(),
                "model": model, "choices": [],
                "error": {"code": 502, "message": "Provider returned error",
                    "metadata": {"provider_name": "Google AI Studio"}}}),
        ),
        Scenario::Hang => {
            stopped(shared.shutdown.clone()).await;
            error(503, "The fake is shutting down.", None)
        }
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Fills `recorded` from the JSON: model, content parts, decoded images, modalities, image_config.
fn read_request(json: &Value, recorded: &mut RecordedRequest) {
    recorded.model = json.get("model").and_then(Value::as_str).map(str::to_owned);
    recorded.modalities = json
        .get("modalities")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let config = json.get("image_config");
    let config_text = |name: &str| {
        config
            .and_then(|c| c.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    recorded.aspect_ratio = config_text("aspect_ratio");
    recorded.image_size = config_text("image_size");
    let mut texts = Vec::new();
    let content = json
        .get("messages")
        .and_then(|m| m.get(0))
        .and_then(|m| m.get("content"));
    match content {
        Some(Value::String(text)) => {
            recorded.part_types.push("text".into());
            texts.push(text.clone());
        }
        Some(Value::Array(parts)) => {
            for part in parts {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or("?");
                recorded.part_types.push(kind.to_owned());
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    texts.push(text.to_owned());
                }
                if let Some(url) = part
                    .get("image_url")
                    .and_then(|u| u.get("url"))
                    .and_then(Value::as_str)
                {
                    recorded.images.push(decode_data_url(url));
                }
            }
        }
        _ => {}
    }
    recorded.prompt = texts.join("\n");
    let mut body = json.clone();
    if let Some(Value::Array(messages)) = body.get_mut("messages") {
        for message in messages {
            if let Some(Value::Array(parts)) = message.get_mut("content") {
                for part in parts {
                    if let Some(url) = part.get_mut("image_url").and_then(|u| u.get_mut("url")) {
                        *url = json!("<image>");
                    }
                }
            }
        }
    }
    recorded.body = body;
}

fn decode_data_url(url: &str) -> RecordedImage {
    let decoded = url.strip_prefix("data:").and_then(|rest| {
        let (head, data) = rest.split_once(',')?;
        let mime = head.strip_suffix(";base64")?;
        Some(RecordedImage {
            mime_type: mime.to_owned(),
            bytes: Bytes::from(BASE64.decode(data).ok()?),
        })
    });
    decoded.unwrap_or_else(|| RecordedImage {
        mime_type: url.chars().take(100).collect(),
        bytes: Bytes::new(),
    })
}

/// The pixel size Gemini 3 image models make for a ratio and size (the fake's own copy).
fn pixel_size(aspect_ratio: Option<&str>, image_size: Option<&str>) -> (u32, u32) {
    let (w, h) = match aspect_ratio.unwrap_or("1:1") {
        "2:3" => (848, 1264),
        "3:2" => (1264, 848),
        "3:4" => (896, 1200),
        "4:3" => (1200, 896),
        "4:5" => (928, 1152),
        "5:4" => (1152, 928),
        "9:16" => (768, 1376),
        "16:9" => (1376, 768),
        "21:9" => (1584, 672),
        _ => (1024, 1024),
    };
    let scale = match image_size.unwrap_or("1K") {
        "2K" => 2,
        "4K" => 4,
        _ => 1,
    };
    (w * scale, h * scale)
}

async fn image_answer(shared: &Shared, model: &str, recorded: &RecordedRequest) -> Response {
    let (width, height) = pixel_size(
        recorded.aspect_ratio.as_deref(),
        recorded.image_size.as_deref(),
    );
    match shared.images.get(width, height).await {
        Ok(png) => completion(
            model,
            "Here is your image.",
            Some(format!("data:image/png;base64,{}", png.base64)),
            "stop",
            "STOP",
        ),
        Err(message) => error(500, &message, None),
    }
}

fn completion(
    model: &str,
    text: &str,
    image: Option<String>,
    finish_reason: &str,
    native_finish_reason: &str,
) -> Response {
    let images: Vec<Value> = image
        .into_iter()
        .enumerate()
        .map(|(index, url)| json!({"type": "image_url", "image_url": {"url": url}, "index": index}))
        .collect();
    let mut message =
        json!({"role": "assistant", "content": text, "refusal": null, "reasoning": null});
    if !images.is_empty() {
        message["images"] = Value::Array(images);
    }
    json_response(
        200,
        &json!({
            "id": "gen-fake",
            "provider": "Google AI Studio",
            "model": model,
            "object": "chat.completion",
            "created": unix_now(),
            "choices": [{
                "logprobs": null,
                "finish_reason": finish_reason,
                "native_finish_reason": native_finish_reason,
                "index": 0,
                "message": message
            }],
            "usage": {"prompt_tokens": 12, "completion_tokens": 1290, "total_tokens": 1302}
        }),
    )
}

fn error(status: u16, message: &str, metadata: Option<Value>) -> Response {
    let mut error = json!({"code": status, "message": message});
    if let Some(metadata) = metadata {
        error["metadata"] = metadata;
    }
    json_response(status, &json!({ "error": error }))
}

fn json_response(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
