//! One request to the fake, from routing and the checks Google makes first (path, key, JSON,
//! model, parameters) to the scripted outcome's answer; records what came in. Not here: the
//! model tables (`models`), the PNGs (`images`), error bodies (`errors`).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::errors::{
    JSON_TYPE, google_error, html_error_502, invalid_api_key, json_response, rate_limited,
    shutting_down, status_message, unauthenticated,
};
use super::images::{THOUGHT_RGB, encode_png};
use super::models::ModelFamily;
use super::{RecordedRequest, Scenario, Shared, THOUGHT_IMAGE_SIDE, scenario_from_prompt};

const IMAGE_PLACEHOLDER: &str = "@@FAKE_GEMINI_IMAGE@@";
const THOUGHT_PLACEHOLDER: &str = "@@FAKE_GEMINI_THOUGHT@@";
const THOUGHT_SIGNATURE: &str = "ZmFrZS10aG91Z2h0LXNpZ25hdHVyZQ==";

/// Only what the fake looks at; the base64 of inputs is skipped, not copied.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WireRequest<'a> {
    #[serde(borrow)]
    contents: Vec<WireContent<'a>>,
    #[serde(alias = "generation_config")]
    generation_config: Option<WireGenerationConfig>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireContent<'a> {
    #[serde(borrow)]
    parts: Vec<WirePart<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WirePart<'a> {
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(alias = "inline_data")]
    inline_data: Option<IgnoredAny>,
    #[serde(alias = "file_data")]
    file_data: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WireGenerationConfig {
    #[serde(alias = "response_modalities")]
    response_modalities: Option<Vec<String>>,
    #[serde(alias = "image_config")]
    image_config: Option<WireImageConfig>,
    /// The Sept-2026 doc samples' `responseFormat.image`; kept loose because the SDK types it
    /// as a list.
    #[serde(alias = "response_format")]
    response_format: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WireImageConfig {
    #[serde(alias = "aspect_ratio")]
    aspect_ratio: Option<String>,
    #[serde(alias = "image_size")]
    image_size: Option<String>,
}

pub(super) struct ParsedRequest {
    pub(super) prompt: String,
    pub(super) inputs: usize,
    wants_text: bool,
    pub(super) aspect_ratio: Option<String>,
    pub(super) image_size: Option<String>,
}

impl ParsedRequest {
    fn from_wire(wire: WireRequest<'_>) -> ParsedRequest {
        let mut prompt = String::new();
        let mut inputs = 0;
        for part in wire.contents.iter().flat_map(|c| c.parts.iter()) {
            if let Some(text) = &part.text {
                if !prompt.is_empty() {
                    prompt.push('\n');
                }
                prompt.push_str(text);
            }
            if part.inline_data.is_some() || part.file_data.is_some() {
                inputs += 1;
            }
        }
        let config = wire.generation_config.unwrap_or_default();
        let wants_text = config
            .response_modalities
            .as_ref()
            .is_none_or(|m| m.iter().any(|m| m.eq_ignore_ascii_case("text")));
        let mut aspect_ratio = None;
        let mut image_size = None;
        if let Some(image) = config.image_config {
            aspect_ratio = image.aspect_ratio;
            image_size = image.image_size;
        }
        if let Some(image) = config.response_format.as_ref().and_then(|f| f.get("image")) {
            let field = |camel: &str, snake: &str| {
                image
                    .get(camel)
                    .or_else(|| image.get(snake))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            aspect_ratio = aspect_ratio.or_else(|| field("aspectRatio", "aspect_ratio"));
            image_size = image_size.or_else(|| field("imageSize", "image_size"));
        }
        ParsedRequest {
            prompt,
            inputs,
            wants_text,
            aspect_ratio,
            image_size,
        }
    }
}

pub(super) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.calls.received();
    let route = parse_route(uri.path());
    let model = route.map(|r| r.model);
    shared.record(&method, &uri, version, &headers, model, &body);

    let Some(route) = route.filter(|_| method == Method::POST) else {
        return google_error(404, "Requested entity was not found.", None);
    };
    if route.vertex {
        if let Some(tokens) = &shared.options.vertex_tokens
            && !bearer(&headers).is_some_and(|token| tokens.accepts(token))
        {
            return unauthenticated();
        }
    } else if let Some(expected) = &shared.options.api_key {
        let presented = header_str(&headers, "x-goog-api-key")
            .map(str::to_owned)
            .or_else(|| query_key(&uri));
        if presented.as_deref() != Some(expected.as_str()) {
            return invalid_api_key();
        }
    }
    let request = match serde_json::from_slice::<WireRequest<'_>>(&body) {
        Ok(wire) => ParsedRequest::from_wire(wire),
        Err(err) => {
            return google_error(400, &format!("Invalid JSON payload received. {err}"), None);
        }
    };
    let Some(model) = ModelFamily::of(route.model) else {
        return google_error(
            404,
            &format!(
                "models/{} is not found for API version {}, or is not supported for \
                 generateContent. Call ListModels to see the list of available models and \
                 their supported methods.",
                route.model, route.version
            ),
            None,
        );
    };
    if let Err(message) = model.check(&request) {
        return google_error(400, &message, None);
    }

    let queued = shared.calls.next_scenario();
    let (scenario, extra_delay) = match queued {
        Some(Scenario::Slow(delay)) => (Scenario::Success, delay),
        Some(scenario) => (scenario, Duration::ZERO),
        None => scenario_from_prompt(&request.prompt),
    };
    let model_ran = !matches!(
        scenario,
        Scenario::RateLimited { .. }
            | Scenario::ServerError
            | Scenario::Unavailable
            | Scenario::GatewayTimeout
            | Scenario::HtmlError
            | Scenario::Status(_)
            | Scenario::Hang
    );
    let delay = if model_ran {
        shared.options.latency.sample() + extra_delay
    } else {
        extra_delay
    };
    if scenario == Scenario::Hang || !delay.is_zero() {
        let mut stop = shared.shutdown.clone();
        let wait = async {
            if scenario == Scenario::Hang {
                std::future::pending::<()>().await;
            } else {
                tokio::time::sleep(delay).await;
            }
        };
        tokio::select! {
            () = wait => {}
            _ = stop.wait_for(|stopped| *stopped) => return shutting_down(),
        }
    }
    shared.answer(scenario, route.model, model, &request).await
}

impl Shared {
    fn record(
        &self,
        method: &Method,
        uri: &Uri,
        version: Version,
        headers: &HeaderMap,
        model: Option<&str>,
        body: &Bytes,
    ) {
        if !self.calls.records() {
            return;
        }
        let body_json = if self.options.record_bodies {
            serde_json::from_slice(body).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        let request = RecordedRequest {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            api_key: header_str(headers, "x-goog-api-key").map(str::to_owned),
            bearer: bearer(headers).map(str::to_owned),
            content_type: header_str(headers, header::CONTENT_TYPE.as_str()).map(str::to_owned),
            model: model.map(str::to_owned),
            body: body_json,
            body_len: body.len(),
            http_version: format!("{version:?}"),
        };
        self.calls.record(request);
    }

    async fn answer(
        &self,
        scenario: Scenario,
        model_id: &str,
        model: ModelFamily,
        request: &ParsedRequest,
    ) -> Response {
        let seq = self.response_seq.fetch_add(1, Ordering::Relaxed);
        let prompt_tokens = prompt_tokens(request);
        let envelope = |candidates: Value, candidate_tokens: u32| {
            json!({
                "candidates": candidates,
                "usageMetadata": {
                    "promptTokenCount": prompt_tokens,
                    "candidatesTokenCount": candidate_tokens,
                    "totalTokenCount": prompt_tokens + candidate_tokens,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
                },
                "modelVersion": model_id,
                "responseId": format!("fake-{seq:016x}"),
            })
        };
        let refusal = |reason: &str, text: &str| {
            envelope(
                json!([{
                    "content": {"parts": [{"text": text}], "role": "model"},
                    "finishReason": reason,
                    "index": 0,
                }]),
                12,
            )
        };
        match scenario {
            Scenario::Success | Scenario::Slow(_) | Scenario::Hang => {
                self.success(model_id, model, request, false, seq).await
            }
            Scenario::ThoughtThenImage => self.success(model_id, model, request, true, seq).await,
            Scenario::PromptBlocked => json_response(
                200,
                json!({
                    "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                    "usageMetadata": {
                        "promptTokenCount": prompt_tokens,
                        "totalTokenCount": prompt_tokens,
                    },
                    "modelVersion": model_id,
                    "responseId": format!("fake-{seq:016x}"),
                }),
            ),
            Scenario::ImageSafety => json_response(
                200,
                refusal(
                    "IMAGE_SAFETY",
                    "I can't create that image. Try another prompt.",
                ),
            ),
            Scenario::NoImage => json_response(
                200,
                refusal(
                    "NO_IMAGE",
                    "I could not generate an image for this request.",
                ),
            ),
            Scenario::TextOnly => json_response(
                200,
                refusal(
                    "STOP",
                    "Here is a description instead: a small ripe banana.",
                ),
            ),
            Scenario::RateLimited { retry_delay } => rate_limited(model_id, &retry_delay),
            Scenario::ServerError => google_error(500, "An internal error has occurred.", None),
            Scenario::Unavailable => google_error(
                503,
                "The model is overloaded. Please try again later.",
                None,
            ),
            Scenario::GatewayTimeout => {
                google_error(504, "The request timed out. Please try again.", None)
            }
            Scenario::Garbage => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_TYPE))],
                "{\"candidates\": [{\"content\": {\"parts\": [{\"inlineData\": {\"mimeT",
            )
                .into_response(),
            Scenario::BadBase64 => json_response(
                200,
                envelope(
                    json!([{
                        "content": {"parts": [{"inlineData": {
                            "mimeType": "image/png",
                            "data": "!!this is *not* base64!!",
                        }}], "role": "model"},
                        "finishReason": "STOP",
                        "index": 0,
                    }]),
                    model.image_tokens(request.image_size.as_deref()),
                ),
            ),
            Scenario::HtmlError => html_error_502(),
            Scenario::Status(status) if (200..300).contains(&status) => {
                self.success(model_id, model, request, false, seq).await
            }
            Scenario::Status(status) => google_error(status, status_message(status), None),
        }
    }

    async fn success(
        &self,
        model_id: &str,
        model: ModelFamily,
        request: &ParsedRequest,
        with_thought: bool,
        seq: u64,
    ) -> Response {
        let (width, height) = model.dimensions(
            request.aspect_ratio.as_deref(),
            request.image_size.as_deref(),
        );
        let image = match self.images.get(width, height).await {
            Ok(image) => image,
            Err(message) => return google_error(500, &message, None),
        };
        let mut parts = Vec::new();
        if request.wants_text && model == ModelFamily::Flash25 {
            parts.push(json!({"text": "Here is the image you asked for."}));
        }
        let thought = if with_thought {
            let thought = self
                .thought_image
                .get_or_try_init(|| async {
                    encode_png(THOUGHT_IMAGE_SIDE, THOUGHT_IMAGE_SIDE, 0, THOUGHT_RGB).map(Arc::new)
                })
                .await;
            match thought {
                Ok(thought) => {
                    parts.push(json!({"text": "**Composing the scene**", "thought": true}));
                    parts.push(json!({
                        "inlineData": {"mimeType": "image/png", "data": THOUGHT_PLACEHOLDER},
                        "thought": true,
                    }));
                    Some(thought.clone())
                }
                Err(message) => return google_error(500, &message, None),
            }
        } else {
            None
        };
        parts.push(json!({
            "inlineData": {"mimeType": "image/png", "data": IMAGE_PLACEHOLDER},
            "thoughtSignature": THOUGHT_SIGNATURE,
        }));
        let prompt_tokens = prompt_tokens(request);
        let image_tokens = model.image_tokens(request.image_size.as_deref());
        let body = json!({
            "candidates": [{
                "content": {"parts": parts, "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            }],
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": image_tokens,
                "totalTokenCount": prompt_tokens + image_tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
                "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": image_tokens}],
            },
            "modelVersion": model_id,
            "responseId": format!("fake-{seq:016x}"),
        });
        // The envelope is small; splicing the cached base64 in costs one copy instead of a
        // serializer pass over megabytes.
        let mut envelope = body.to_string();
        if let Some(thought) = &thought {
            envelope = envelope.replacen(THOUGHT_PLACEHOLDER, &thought.base64, 1);
        }
        let Some(at) = envelope.find(IMAGE_PLACEHOLDER) else {
            return google_error(500, "fake: image placeholder lost", None);
        };
        let mut out = Vec::with_capacity(envelope.len() + image.base64.len());
        out.extend_from_slice(&envelope.as_bytes()[..at]);
        out.extend_from_slice(image.base64.as_bytes());
        out.extend_from_slice(&envelope.as_bytes()[at + IMAGE_PLACEHOLDER.len()..]);
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_TYPE))],
            out,
        )
            .into_response()
    }
}

#[derive(Debug, Clone, Copy)]
struct Route<'a> {
    version: &'a str,
    model: &'a str,
    /// A Vertex AI path (`/v1/projects/…/publishers/google/models/…`), authenticated by a bearer
    /// token.
    vertex: bool,
}

/// AI Studio's `/{v1|v1beta}/models/{model}:generateContent`, or Vertex AI's
/// `/{v1|v1beta1}/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent`.
fn parse_route(path: &str) -> Option<Route<'_>> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let (version, target, vertex) = match segments[..] {
        [version @ ("v1" | "v1beta"), "models", target] => (version, target, false),
        [
            version @ ("v1" | "v1beta1"),
            "projects",
            project,
            "locations",
            location,
            "publishers",
            "google",
            "models",
            target,
        ] if !project.is_empty() && !location.is_empty() => (version, target, true),
        _ => return None,
    };
    let (model, action) = target.split_once(':')?;
    (action == "generateContent" && !model.is_empty()).then_some(Route {
        version,
        model,
        vertex,
    })
}

/// The token of an `authorization: Bearer …` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = header_str(headers, header::AUTHORIZATION.as_str())?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn query_key(uri: &Uri) -> Option<String> {
    let query = uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "key")
        .map(|(_, value)| value.into_owned())
}

fn prompt_tokens(request: &ParsedRequest) -> u32 {
    // Roughly Google's accounting: ~4 characters a token, 258 tokens per input image.
    let text = u32::try_from(request.prompt.len() / 4 + 1).unwrap_or(u32::MAX);
    let images = u32::try_from(request.inputs).unwrap_or(u32::MAX);
    text.saturating_add(images.saturating_mul(258))
}
