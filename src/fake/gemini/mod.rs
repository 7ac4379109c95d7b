//! A fake Gemini `generateContent` upstream: a real axum server on loopback that speaks the wire
//! format of upstreams.md §1.2–1.5 and §5, for the integration tests and the benchmark tool, over
//! HTTP/1.1 or cleartext HTTP/2 (prior knowledge; Google's own endpoint negotiates HTTP/2 on TLS).
//!
//! What lives here: routing (`POST /{v1|v1beta}/models/{model}:generateContent`), API-key checks
//! (header or `?key=`), the per-model parameter checks Google does (aspect ratios, `imageSize`,
//! input count), scripted outcomes ([`Scenario`]: a FIFO queue first, then `[fake:…]` tags in the
//! prompt), configurable latency, and real PNGs with the documented pixel sizes. What does not:
//! streaming (`:streamGenerateContent` is a 404 here), Vertex paths, multi-turn chat.
//!
//! Built to be hammered: per request it parses the JSON (without copying the base64 of inputs),
//! looks up a cached PNG and splices its cached base64 into a small serialized envelope. Recorded
//! requests are bounded; bodies are recorded only when `record_bodies` is on.
//!
//! Prompt tags (first outcome tag wins; `slow=` adds to any of them):
//! `[fake:success]` `[fake:thought]` `[fake:blocked]` `[fake:image_safety]` `[fake:no_image]`
//! `[fake:text_only]` `[fake:429]` `[fake:429=30s]` `[fake:500]` `[fake:502]`/`[fake:html]`
//! `[fake:503]` `[fake:504]` `[fake:status=418]` `[fake:slow=200ms]` `[fake:hang]`
//! `[fake:garbage]` `[fake:bad_base64]`.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use image::ImageEncoder as _;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinHandle;

/// The bench sends 8 MB images (≈ 11 MB of base64 each, several per request); Google itself
/// accepts 100 MB of inline data.
const MAX_REQUEST_BYTES: usize = 256 << 20;
/// Side of the interim "thought" image, distinct from any table size so tests can tell them apart.
pub const THOUGHT_IMAGE_SIDE: u32 = 16;
const SOLID_RGB: [u8; 3] = [250, 220, 60];
const THOUGHT_RGB: [u8; 3] = [128, 128, 128];
const IMAGE_PLACEHOLDER: &str = "@@FAKE_GEMINI_IMAGE@@";
const THOUGHT_PLACEHOLDER: &str = "@@FAKE_GEMINI_THOUGHT@@";
const THOUGHT_SIGNATURE: &str = "ZmFrZS10aG91Z2h0LXNpZ25hdHVyZQ==";

#[derive(Debug, thiserror::Error)]
pub enum FakeGeminiError {
    #[error("invalid latency {0:?}: expected none, 250ms, 1s..3s or lognormal:6s,12s")]
    Latency(String),
    #[error("invalid duration {0:?}: expected e.g. 250ms, 1.5s or 2m")]
    Duration(String),
}

#[derive(Debug, Clone)]
pub struct FakeGeminiOptions {
    /// `None`: accept any key (or none at all).
    pub api_key: Option<String>,
    /// Added before every answer in which "the model ran" (images, refusals, no-image, garbage);
    /// HTTP errors (429, 5xx, `Status`) come back at once, as they do from Google.
    pub latency: Latency,
    /// Approximate size in bytes of each returned PNG; 0 = a solid-colour PNG (a few KiB).
    /// Met by filling rows with noise, keeping the table dimensions when they are large enough
    /// (about 3 bytes per pixel), otherwise scaling the dimensions up at the same ratio.
    pub image_bytes: usize,
    /// Keep request bodies (as JSON) in [`RecordedRequest::body`]; turn off for 8 MB bodies.
    pub record_bodies: bool,
    /// How many of the most recent requests [`FakeGemini::requests`] keeps.
    pub record_limit: usize,
}

impl Default for FakeGeminiOptions {
    fn default() -> Self {
        FakeGeminiOptions {
            api_key: None,
            latency: Latency::None,
            image_bytes: 0,
            record_bodies: true,
            record_limit: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Latency {
    #[default]
    None,
    Fixed(Duration),
    /// Uniform between the two bounds (inclusive).
    Uniform(Duration, Duration),
    /// Log-normal with the given median and 95th percentile (upstreams.md §4 profiles).
    LogNormal {
        median: Duration,
        p95: Duration,
    },
}

impl Latency {
    pub fn sample(&self) -> Duration {
        use rand::Rng as _;
        match *self {
            Latency::None => Duration::ZERO,
            Latency::Fixed(d) => d,
            Latency::Uniform(a, b) => {
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                let nanos = rand::rng().random_range(lo.as_nanos()..=hi.as_nanos());
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }
            Latency::LogNormal { median, p95 } => {
                let m = median.as_secs_f64().max(1e-9);
                let sigma = ((p95.as_secs_f64() / m).max(1.0)).ln() / 1.644_853_6;
                let mut rng = rand::rng();
                // Box–Muller; 1 - u keeps the logarithm away from zero.
                let u1: f64 = 1.0 - rng.random::<f64>();
                let u2: f64 = rng.random();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                // The cap only guards against absurd tails, far beyond any p99.
                let secs = (m * (sigma * z).exp()).min(m * 100.0);
                Duration::try_from_secs_f64(secs).unwrap_or(median)
            }
        }
    }
}

/// `none`, `250ms` (fixed), `1s..3s` (uniform), `lognormal:6s,12s` (median, p95).
impl FromStr for Latency {
    type Err = FakeGeminiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || FakeGeminiError::Latency(s.to_owned());
        if s.eq_ignore_ascii_case("none") || s == "0" {
            return Ok(Latency::None);
        }
        if let Some(rest) = s.strip_prefix("lognormal:") {
            let (median, p95) = rest.split_once(',').ok_or_else(bad)?;
            return Ok(Latency::LogNormal {
                median: parse_duration(median).map_err(|_| bad())?,
                p95: parse_duration(p95).map_err(|_| bad())?,
            });
        }
        if let Some((lo, hi)) = s.split_once("..") {
            return Ok(Latency::Uniform(
                parse_duration(lo).map_err(|_| bad())?,
                parse_duration(hi).map_err(|_| bad())?,
            ));
        }
        parse_duration(s).map(Latency::Fixed).map_err(|_| bad())
    }
}

/// `250ms`, `1.5s`, `2m`, `500us`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, FakeGeminiError> {
    let s = s.trim();
    let bad = || FakeGeminiError::Duration(s.to_owned());
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" => 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| bad())
}

/// A scripted outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    Success,
    /// A thought text part and a thought image (16×16) before the real image, whatever the
    /// model (real 2.5 models do not think, but a test asking for this wants it).
    ThoughtThenImage,
    /// 200 with `promptFeedback.blockReason = PROHIBITED_CONTENT` and no candidates.
    PromptBlocked,
    /// 200, `finishReason: IMAGE_SAFETY`, a text part, no image.
    ImageSafety,
    /// 200, `finishReason: NO_IMAGE`, a text part, no image.
    NoImage,
    /// 200, `finishReason: STOP`, text only.
    TextOnly,
    /// 429 RESOURCE_EXHAUSTED with QuotaFailure, Help and RetryInfo (`retry_delay`, e.g. "15s").
    RateLimited {
        retry_delay: String,
    },
    ServerError,
    Unavailable,
    GatewayTimeout,
    /// Waits this long (plus the configured latency), then succeeds.
    Slow(Duration),
    /// Never answers, until the fake shuts down (then a 503).
    Hang,
    /// 200 with `application/json` that is cut short.
    Garbage,
    /// 200 with an image part whose `data` is not base64.
    BadBase64,
    /// 502 with Google's HTML error page.
    HtmlError,
    /// This status with a google.rpc.Status body (a 2xx means success).
    Status(u16),
}

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// As received, e.g. `/v1beta/models/gemini-3-pro-image:generateContent`.
    pub path: String,
    pub query: Option<String>,
    /// The `x-goog-api-key` header.
    pub api_key: Option<String>,
    pub content_type: Option<String>,
    /// The model id from the path, when the path is a generateContent path.
    pub model: Option<String>,
    /// The JSON body; `Null` when `record_bodies` is off or the body is not JSON.
    pub body: Value,
    pub body_len: usize,
    /// `HTTP/1.1` or `HTTP/2.0` (cleartext HTTP/2 with prior knowledge is served too).
    pub http_version: String,
}

/// A running fake. Dropping it stops accepting connections and answers requests still waiting
/// (slow, hanging) with a 503.
pub struct FakeGemini {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl fmt::Debug for FakeGemini {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeGemini")
            .field("addr", &self.addr)
            .finish()
    }
}

impl FakeGemini {
    /// Binds `127.0.0.1:0` and serves in a tokio task.
    pub async fn start(options: FakeGeminiOptions) -> io::Result<FakeGemini> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), options).await
    }

    pub async fn start_on(addr: SocketAddr, options: FakeGeminiOptions) -> io::Result<FakeGemini> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            images: ImageCache::new(options.image_bytes),
            thought_image: OnceCell::new(),
            options,
            recorded: Mutex::new(VecDeque::new()),
            count: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            scenarios: Mutex::new(VecDeque::new()),
            shutdown: shutdown_rx.clone(),
            response_seq: AtomicU64::new(0),
        });
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .with_state(shared.clone());
        // Without TCP_NODELAY small answers can wait for delayed ACKs (~40 ms), which would
        // dominate the benchmark's numbers.
        let counted = shared.clone();
        let listener = listener.tap_io(move |stream| {
            counted.connections.fetch_add(1, Ordering::Relaxed);
            if let Err(err) = stream.set_nodelay(true) {
                tracing::trace!("fake gemini: TCP_NODELAY failed: {err}");
            }
        });
        let mut stop = shutdown_rx;
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            });
            if let Err(err) = serve.await {
                tracing::warn!("fake gemini stopped: {err}");
            }
        });
        Ok(FakeGemini {
            addr,
            shared,
            shutdown,
            server,
        })
    }

    /// `http://127.0.0.1:PORT` (a wildcard bind address is reported as loopback).
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The most recent requests (at most `record_limit`), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.recorded).iter().cloned().collect()
    }

    /// Every HTTP request received, whatever its path or outcome.
    pub fn request_count(&self) -> usize {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Queues an outcome for a coming request. Queued outcomes are taken in order by requests
    /// that pass the checks Google makes first (path, key, JSON, model, parameters), before
    /// any prompt tag is looked at.
    pub fn push_scenario(&self, scenario: Scenario) {
        lock(&self.shared.scenarios).push_back(scenario);
    }

    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for FakeGemini {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        // Frees the port at once; connection tasks still see the signal and close.
        self.server.abort();
    }
}

struct Shared {
    options: FakeGeminiOptions,
    recorded: Mutex<VecDeque<RecordedRequest>>,
    count: AtomicUsize,
    /// TCP connections accepted.
    connections: AtomicUsize,
    scenarios: Mutex<VecDeque<Scenario>>,
    images: ImageCache,
    thought_image: OnceCell<Arc<EncodedImage>>,
    shutdown: watch::Receiver<bool>,
    response_seq: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data behind, still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Request handling

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

struct ParsedRequest {
    prompt: String,
    inputs: usize,
    wants_text: bool,
    aspect_ratio: Option<String>,
    image_size: Option<String>,
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

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.count.fetch_add(1, Ordering::Relaxed);
    let route = parse_route(uri.path());
    let model = route.map(|r| r.model);
    shared.record(&method, &uri, version, &headers, model, &body);

    let Some(route) = route.filter(|_| method == Method::POST) else {
        return google_error(404, "Requested entity was not found.", None);
    };
    if let Some(expected) = &shared.options.api_key {
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

    let queued = lock(&shared.scenarios).pop_front();
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
        if self.options.record_limit == 0 {
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
            content_type: header_str(headers, header::CONTENT_TYPE.as_str()).map(str::to_owned),
            model: model.map(str::to_owned),
            body: body_json,
            body_len: body.len(),
            http_version: format!("{version:?}"),
        };
        let mut recorded = lock(&self.recorded);
        while recorded.len() >= self.options.record_limit {
            recorded.pop_front();
        }
        recorded.push_back(request);
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
}

fn parse_route(path: &str) -> Option<Route<'_>> {
    let mut segments = path.strip_prefix('/')?.split('/');
    let version = segments.next()?;
    let models = segments.next()?;
    let target = segments.next()?;
    if segments.next().is_some() || models != "models" || !matches!(version, "v1" | "v1beta") {
        return None;
    }
    let (model, action) = target.split_once(':')?;
    (action == "generateContent" && !model.is_empty()).then_some(Route { version, model })
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

fn scenario_from_prompt(prompt: &str) -> (Scenario, Duration) {
    let mut outcome = None;
    let mut delay = Duration::ZERO;
    let mut rest = prompt;
    while let Some(start) = rest.find("[fake:") {
        let after = &rest[start + "[fake:".len()..];
        let Some(end) = after.find(']') else { break };
        let tag = after[..end].trim();
        rest = &after[end..];
        if let Some(value) = tag.strip_prefix("slow=") {
            delay += parse_duration(value).unwrap_or_default();
            continue;
        }
        if outcome.is_some() {
            continue;
        }
        outcome = match tag {
            "success" => Some(Scenario::Success),
            "thought" => Some(Scenario::ThoughtThenImage),
            "blocked" => Some(Scenario::PromptBlocked),
            "image_safety" => Some(Scenario::ImageSafety),
            "no_image" => Some(Scenario::NoImage),
            "text_only" => Some(Scenario::TextOnly),
            "429" => Some(Scenario::RateLimited {
                retry_delay: "15s".to_owned(),
            }),
            "500" => Some(Scenario::ServerError),
            "502" | "html" => Some(Scenario::HtmlError),
            "503" => Some(Scenario::Unavailable),
            "504" => Some(Scenario::GatewayTimeout),
            "hang" => Some(Scenario::Hang),
            "garbage" => Some(Scenario::Garbage),
            "bad_base64" => Some(Scenario::BadBase64),
            other => {
                if let Some(delay) = other.strip_prefix("429=") {
                    Some(Scenario::RateLimited {
                        retry_delay: delay.to_owned(),
                    })
                } else {
                    other
                        .strip_prefix("status=")
                        .and_then(|s| s.parse().ok())
                        .map(Scenario::Status)
                }
            }
        };
    }
    (outcome.unwrap_or(Scenario::Success), delay)
}

fn prompt_tokens(request: &ParsedRequest) -> u32 {
    // Roughly Google's accounting: ~4 characters a token, 258 tokens per input image.
    let text = u32::try_from(request.prompt.len() / 4 + 1).unwrap_or(u32::MAX);
    let images = u32::try_from(request.inputs).unwrap_or(u32::MAX);
    text.saturating_add(images.saturating_mul(258))
}

// ---------------------------------------------------------------------------------------------
// Models and their tables (upstreams.md §1.1 and §1.3)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelFamily {
    /// `gemini-2.5-flash-image*`: fixed 1K, no `imageSize`, 10 ratios, ≤ 3 inputs.
    Flash25,
    /// `gemini-3-pro-image*`: 1K/2K/4K, 10 ratios.
    Pro3,
    /// `gemini-3.1-flash-image*`: 512/1K/2K/4K, 14 ratios.
    Flash31,
    /// `gemini-3.1-flash-lite-image`: 512/1K, 14 ratios.
    Lite31,
    /// `gemini-nano-banana-2.1`: 1K/2K/4K, 14 ratios.
    NanoBanana21,
}

const CLASSIC_RATIOS: [&str; 10] = [
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
];
const EXTREME_RATIOS: [&str; 4] = ["1:4", "4:1", "1:8", "8:1"];

impl ModelFamily {
    /// Retired preview ids are still accepted so old configurations keep working here.
    fn of(model: &str) -> Option<ModelFamily> {
        Some(match model {
            "gemini-2.5-flash-image" | "gemini-2.5-flash-image-preview" => ModelFamily::Flash25,
            "gemini-3-pro-image" | "gemini-3-pro-image-preview" | "nano-banana-pro-preview" => {
                ModelFamily::Pro3
            }
            "gemini-3.1-flash-image" | "gemini-3.1-flash-image-preview" => ModelFamily::Flash31,
            "gemini-3.1-flash-lite-image" => ModelFamily::Lite31,
            "gemini-nano-banana-2.1" => ModelFamily::NanoBanana21,
            _ => return None,
        })
    }

    fn sizes(self) -> &'static [&'static str] {
        match self {
            ModelFamily::Flash25 => &[],
            ModelFamily::Pro3 | ModelFamily::NanoBanana21 => &["1K", "2K", "4K"],
            ModelFamily::Flash31 => &["512", "1K", "2K", "4K"],
            ModelFamily::Lite31 => &["512", "1K"],
        }
    }

    fn check(self, request: &ParsedRequest) -> Result<(), String> {
        if request.prompt.is_empty() && request.inputs == 0 {
            return Err("* GenerateContentRequest.contents: contents is not specified".to_owned());
        }
        let max_inputs = if self == ModelFamily::Flash25 { 3 } else { 14 };
        if request.inputs > max_inputs {
            return Err(format!(
                "Too many input images: {} (this model accepts at most {max_inputs}).",
                request.inputs
            ));
        }
        if let Some(ratio) = request.aspect_ratio.as_deref() {
            let extremes = !matches!(self, ModelFamily::Flash25 | ModelFamily::Pro3);
            let known =
                CLASSIC_RATIOS.contains(&ratio) || (extremes && EXTREME_RATIOS.contains(&ratio));
            if !known {
                return Err(format!("Unsupported aspect ratio: {ratio}."));
            }
        }
        if let Some(size) = request.image_size.as_deref() {
            if self == ModelFamily::Flash25 {
                return Err("Image size is not supported for this model.".to_owned());
            }
            if !self.sizes().contains(&size) {
                return Err(format!("Unsupported image size: {size}."));
            }
        }
        Ok(())
    }

    /// Pixel size per upstreams.md. Without an aspect ratio (an edit that follows its first
    /// input) the fake answers 1:1: it does not decode inputs.
    fn dimensions(self, ratio: Option<&str>, size: Option<&str>) -> (u32, u32) {
        let ratio = ratio.unwrap_or("1:1");
        if self == ModelFamily::Flash25 {
            return match ratio {
                "2:3" => (832, 1248),
                "3:2" => (1248, 832),
                "3:4" => (864, 1184),
                "4:3" => (1184, 864),
                "4:5" => (896, 1152),
                "5:4" => (1152, 896),
                "9:16" => (768, 1344),
                "16:9" => (1344, 768),
                "21:9" => (1536, 672),
                _ => (1024, 1024),
            };
        }
        let (w, h) = match ratio {
            "1:4" => (512, 2048),
            "1:8" => (384, 3072),
            "2:3" => (848, 1264),
            "3:2" => (1264, 848),
            "3:4" => (896, 1200),
            "4:1" => (2048, 512),
            "4:3" => (1200, 896),
            "4:5" => (928, 1152),
            "5:4" => (1152, 928),
            "8:1" => (3072, 384),
            "9:16" => (768, 1376),
            "16:9" => (1376, 768),
            // The doc's 512 row says 792x168, an evident typo for half of 1584x672.
            "21:9" => (1584, 672),
            _ => (1024, 1024),
        };
        // Every row of the 3.x table is the 1K size scaled by ½, 2 or 4.
        match size {
            Some("512") => (w / 2, h / 2),
            Some("2K") => (w * 2, h * 2),
            Some("4K") => (w * 4, h * 4),
            _ => (w, h),
        }
    }

    fn image_tokens(self, size: Option<&str>) -> u32 {
        match (self, size) {
            (ModelFamily::Flash25, _) => 1290,
            (ModelFamily::Pro3, Some("4K")) => 2000,
            (ModelFamily::Pro3, _) => 1120,
            (_, Some("512")) => 747,
            (_, Some("2K")) => 1680,
            (_, Some("4K")) => 2520,
            _ => 1120,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Images

type ImageCell = OnceCell<Arc<EncodedImage>>;

struct EncodedImage {
    base64: String,
}

/// One encoded PNG per pixel size, made once on a blocking thread; concurrent first requests
/// for the same size wait for the same encode instead of each allocating the raw pixels.
struct ImageCache {
    target_bytes: usize,
    cells: Mutex<HashMap<(u32, u32), Arc<ImageCell>>>,
}

impl ImageCache {
    fn new(target_bytes: usize) -> ImageCache {
        ImageCache {
            target_bytes,
            cells: Mutex::new(HashMap::new()),
        }
    }

    async fn get(&self, width: u32, height: u32) -> Result<Arc<EncodedImage>, String> {
        let cell = lock(&self.cells)
            .entry((width, height))
            .or_default()
            .clone();
        let target = self.target_bytes;
        let image = cell
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || encode_png(width, height, target, SOLID_RGB))
                    .await
                    .map_err(|err| format!("fake: image encoder failed: {err}"))?
                    .map(Arc::new)
            })
            .await?;
        Ok(image.clone())
    }
}

/// A PNG of `width`×`height` in one colour, or, when `target_bytes` > 0, with enough rows of
/// noise (which deflate cannot shrink) to weigh about `target_bytes`.
fn encode_png(
    width: u32,
    height: u32,
    target_bytes: usize,
    rgb: [u8; 3],
) -> Result<EncodedImage, String> {
    let (width, height, noise_rows) = plan_png(width, height, target_bytes);
    let mut png = png_with_noise(width, height, noise_rows, rgb)?;
    if target_bytes > 0 && noise_rows < height {
        // Solid rows are not free and their cost shifts with the noise around them, so the
        // first guess is off by tens of KiB; a few measured corrections land within a row or
        // two of the target. This runs once per pixel size.
        let row_cost = i64::from(width) * 3 + 1;
        let mut rows = i64::from(noise_rows);
        for _ in 0..4 {
            let missing_rows = (target_bytes as i64 - png.len() as i64) / row_cost;
            let corrected = (rows + missing_rows).clamp(0, i64::from(height));
            if corrected == rows {
                break;
            }
            rows = corrected;
            png = png_with_noise(width, height, u32::try_from(rows).unwrap_or(height), rgb)?;
        }
    }
    Ok(EncodedImage {
        base64: BASE64.encode(&png),
    })
}

fn png_with_noise(
    width: u32,
    height: u32,
    noise_rows: u32,
    rgb: [u8; 3],
) -> Result<Vec<u8>, String> {
    let row_len = width as usize * 3;
    let total = row_len * height as usize;
    let mut raw = vec![0u8; row_len * noise_rows as usize];
    let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ (u64::from(width) << 32 | u64::from(height));
    for chunk in raw.chunks_mut(8) {
        // xorshift64*: plenty random for deflate, far cheaper than a real RNG.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let bytes = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let solid_row: Vec<u8> = rgb.iter().copied().cycle().take(row_len).collect();
    raw.reserve_exact(total - raw.len());
    while raw.len() < total {
        raw.extend_from_slice(&solid_row);
    }
    let mut png = Vec::new();
    // The fast compressor only shrinks runs of zero bytes; the Up filter turns every solid row
    // after the first into zeros, and leaves noise as incompressible as it was.
    PngEncoder::new_with_quality(&mut png, CompressionType::Fast, FilterType::Up)
        .write_image(&raw, width, height, image::ExtendedColorType::Rgb8)
        .map_err(|err| format!("fake: PNG encoding failed: {err}"))?;
    Ok(png)
}

/// (width, height, rows of noise) for a PNG of about `target_bytes`.
fn plan_png(width: u32, height: u32, target_bytes: usize) -> (u32, u32, u32) {
    if target_bytes == 0 {
        return (width, height, 0);
    }
    // Each noise row costs its bytes plus the filter byte; solid rows cost next to nothing.
    let row_cost = width as usize * 3 + 1;
    let full = row_cost * height as usize;
    if target_bytes <= full {
        let rows = (target_bytes / row_cost).max(1);
        return (
            width,
            height,
            u32::try_from(rows).unwrap_or(height).min(height),
        );
    }
    let scale = (target_bytes as f64 / full as f64).sqrt();
    let w = ((f64::from(width) * scale).round() as u32).max(1);
    let h = ((f64::from(height) * scale).round() as u32).max(1);
    (w, h, h)
}

// ---------------------------------------------------------------------------------------------
// Error bodies (upstreams.md §1.5)

const JSON_TYPE: &str = "application/json; charset=UTF-8";

fn json_response(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_TYPE))],
        body.to_string(),
    )
        .into_response()
}

fn canonical_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        402 | 429 => "RESOURCE_EXHAUSTED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

fn status_message(code: u16) -> &'static str {
    match code {
        400 => "Request contains an invalid argument.",
        402 => "Your prepaid credits are exhausted.",
        403 => "Your API key doesn't have the required permissions.",
        404 => "Requested entity was not found.",
        429 => "Resource has been exhausted (e.g. check quota).",
        500 => "An internal error has occurred.",
        503 => "The model is overloaded. Please try again later.",
        504 => "The request timed out. Please try again.",
        _ => "The fake upstream was told to fail.",
    }
}

fn google_error(code: u16, message: &str, details: Option<Value>) -> Response {
    let code = if StatusCode::from_u16(code).is_ok() {
        code
    } else {
        500
    };
    let mut error = json!({
        "code": code,
        "message": message,
        "status": canonical_status(code),
    });
    if let Some(details) = details {
        error["details"] = details;
    }
    json_response(code, json!({ "error": error }))
}

fn invalid_api_key() -> Response {
    google_error(
        400,
        "API key not valid. Please pass a valid API key.",
        Some(json!([
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": "API key not valid. Please pass a valid API key.",
            },
        ])),
    )
}

fn rate_limited(model: &str, retry_delay: &str) -> Response {
    google_error(
        429,
        "You exceeded your current quota, please check your plan and billing details. For more \
         information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
        Some(json!([
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{
                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
                    "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": "10",
                }],
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [{
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
        ])),
    )
}

fn html_error_502() -> Response {
    const PAGE: &str = "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  \
        <meta name=viewport content=\"initial-scale=1, minimum-scale=1, width=device-width\">\n  \
        <title>Error 502 (Server Error)!!1</title>\n  <style>\n    *{margin:0;padding:0}html,code\
        {font:15px/22px arial,sans-serif}html{background:#fff;color:#222;padding:15px}\n  \
        </style>\n  <a href=//www.google.com/><span id=logo aria-label=Google></span></a>\n  \
        <p><b>502.</b> <ins>That’s an error.</ins>\n  <p>The server encountered a temporary \
        error and could not complete your request.<p>Please try again in 30 seconds.  \
        <ins>That’s all we know.</ins>\n";
    (
        StatusCode::BAD_GATEWAY,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=UTF-8"),
        )],
        PAGE,
    )
        .into_response()
}

fn shutting_down() -> Response {
    let mut response = google_error(503, "The fake upstream is shutting down.", None);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(fake: &FakeGemini, path: &str, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", fake.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    fn decoded_png(body: &Value) -> image::DynamicImage {
        let parts = body["candidates"][0]["content"]["parts"]
            .as_array()
            .unwrap();
        let data = parts.last().unwrap()["inlineData"]["data"]
            .as_str()
            .unwrap();
        image::load_from_memory(&BASE64.decode(data).unwrap()).unwrap()
    }

    #[test]
    fn latency_parses_all_forms() {
        assert_eq!("none".parse::<Latency>().unwrap(), Latency::None);
        assert_eq!(
            "250ms".parse::<Latency>().unwrap(),
            Latency::Fixed(Duration::from_millis(250))
        );
        assert_eq!(
            "1s..1.5s".parse::<Latency>().unwrap(),
            Latency::Uniform(Duration::from_secs(1), Duration::from_millis(1500))
        );
        assert_eq!(
            "lognormal:6s,12s".parse::<Latency>().unwrap(),
            Latency::LogNormal {
                median: Duration::from_secs(6),
                p95: Duration::from_secs(12)
            }
        );
        assert!("soon".parse::<Latency>().is_err());
        let uniform = Latency::Uniform(Duration::from_millis(10), Duration::from_millis(20));
        for _ in 0..100 {
            let d = uniform.sample();
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
        }
        let lognormal = Latency::LogNormal {
            median: Duration::from_secs(6),
            p95: Duration::from_secs(12),
        };
        let mut samples: Vec<_> = (0..2001).map(|_| lognormal.sample()).collect();
        samples.sort();
        let median = samples[1000].as_secs_f64();
        assert!((4.5..8.0).contains(&median), "median {median}");
    }

    #[test]
    fn prompt_tags_pick_an_outcome_and_add_delay() {
        assert_eq!(
            scenario_from_prompt("a cat"),
            (Scenario::Success, Duration::ZERO)
        );
        assert_eq!(
            scenario_from_prompt("x [fake:slow=20ms] [fake:503] [fake:500]"),
            (Scenario::Unavailable, Duration::from_millis(20))
        );
        assert_eq!(
            scenario_from_prompt("[fake:429=2s]").0,
            Scenario::RateLimited {
                retry_delay: "2s".into()
            }
        );
        assert_eq!(
            scenario_from_prompt("[fake:status=418]").0,
            Scenario::Status(418)
        );
    }

    #[test]
    fn dimensions_follow_the_tables() {
        let d = |m: &str, r: Option<&str>, s: Option<&str>| {
            ModelFamily::of(m).unwrap().dimensions(r, s)
        };
        assert_eq!(d("gemini-2.5-flash-image", Some("16:9"), None), (1344, 768));
        assert_eq!(d("gemini-3-pro-image", None, None), (1024, 1024));
        assert_eq!(
            d("gemini-3-pro-image", Some("16:9"), Some("2K")),
            (2752, 1536)
        );
        assert_eq!(
            d("gemini-3.1-flash-image", Some("21:9"), Some("512")),
            (792, 336)
        );
        assert_eq!(
            d("gemini-3.1-flash-image", Some("1:8"), Some("4K")),
            (1536, 12288)
        );
        assert_eq!(
            d("gemini-3.1-flash-image", Some("3:4"), Some("512")),
            (448, 600)
        );
    }

    #[tokio::test]
    async fn png_size_follows_image_bytes() {
        for target in [50_000, 300_000, 2_000_000, 5_000_000] {
            let png = BASE64
                .decode(encode_png(1024, 1024, target, SOLID_RGB).unwrap().base64)
                .unwrap();
            let ratio = png.len() as f64 / target as f64;
            assert!((0.9..1.1).contains(&ratio), "{target}: got {}", png.len());
            image::load_from_memory(&png).unwrap();
        }
    }

    #[tokio::test]
    async fn serves_v1_with_query_key_and_response_format() {
        let fake = FakeGemini::start(FakeGeminiOptions {
            api_key: Some("k".into()),
            ..Default::default()
        })
        .await
        .unwrap();
        let body = json!({
            "contents": [{"parts": [{"text": "hi"}]}],
            "generation_config": {"responseFormat": {"image": {"aspectRatio": "3:2", "imageSize": "1K"}}},
        });
        let (status, answer) = post(
            &fake,
            "/v1/models/gemini-3.1-flash-image:generateContent?key=k",
            body.clone(),
        )
        .await;
        assert_eq!(status, 200);
        let image = decoded_png(&answer);
        assert_eq!((image.width(), image.height()), (1264, 848));
        assert_eq!(answer["modelVersion"], "gemini-3.1-flash-image");

        let (status, answer) = post(
            &fake,
            "/v1/models/gemini-3.1-flash-image:generateContent?key=nope",
            body,
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(answer["error"]["details"][0]["reason"], "API_KEY_INVALID");
    }

    #[tokio::test]
    async fn rejects_unknown_paths_models_and_parameters() {
        let fake = FakeGemini::start(FakeGeminiOptions::default())
            .await
            .unwrap();
        let body = json!({"contents": [{"parts": [{"text": "hi"}]}]});
        let (status, _) = post(
            &fake,
            "/v2/models/gemini-3-pro-image:generateContent",
            body.clone(),
        )
        .await;
        assert_eq!(status, 404);
        let (status, answer) = post(&fake, "/v1beta/models/imagen-9:generateContent", body).await;
        assert_eq!(status, 404);
        assert_eq!(answer["error"]["status"], "NOT_FOUND");
        let sized = json!({
            "contents": [{"parts": [{"text": "hi"}]}],
            "generationConfig": {"imageConfig": {"imageSize": "2K"}},
        });
        let (status, answer) = post(
            &fake,
            "/v1beta/models/gemini-2.5-flash-image:generateContent",
            sized,
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(answer["error"]["status"], "INVALID_ARGUMENT");
        assert_eq!(fake.request_count(), 3);
    }

    #[tokio::test]
    async fn recording_is_bounded_and_bodies_optional() {
        let fake = FakeGemini::start(FakeGeminiOptions {
            record_bodies: false,
            record_limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
        for i in 0..3 {
            let body = json!({"contents": [{"parts": [{"text": format!("p{i}")}]}]});
            let (status, _) = post(
                &fake,
                "/v1beta/models/gemini-3-pro-image:generateContent",
                body,
            )
            .await;
            assert_eq!(status, 200);
        }
        let recorded = fake.requests();
        assert_eq!(fake.request_count(), 3);
        assert_eq!(recorded.len(), 2);
        assert!(recorded.iter().all(|r| r.body.is_null() && r.body_len > 0));
        assert_eq!(recorded[1].model.as_deref(), Some("gemini-3-pro-image"));
    }

    #[tokio::test]
    async fn shutdown_releases_hanging_requests() {
        let fake = FakeGemini::start(FakeGeminiOptions::default())
            .await
            .unwrap();
        fake.push_scenario(Scenario::Hang);
        let url = format!(
            "{}/v1beta/models/gemini-3-pro-image:generateContent",
            fake.base_url()
        );
        let request = tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .json(&json!({"contents": [{"parts": [{"text": "wait"}]}]}))
                .send()
                .await
        });
        // Shut down only once the request has arrived, so it really is hanging.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while fake.request_count() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "request never arrived"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fake.shutdown();
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.status(), 503);
    }
}
