//! The Gemini `generateContent` provider: a thin HTTP client (upstreams.md §1.2–1.5) — hyper's
//! HTTP/2 on connections of our own when the upstream speaks HTTP/2 (`direct`), reqwest otherwise.
//!
//! What lives here: building the request (text part first, then the inputs as `inline_data`,
//! `imageConfig` only when the job asks), one HTTP call per job, and turning the answer into a
//! [`GeneratedImage`] or a [`ProviderError`] the caller can act on. What does not: retries and
//! backoff (the caller's; we only report `retry_after`), model-name mapping, fetching inputs.
//!
//! Classification of a 200 without an image:
//! * `Refused` (final, 403 to our client): `promptFeedback.blockReason`, or a finish reason in
//!   [`REFUSAL_REASONS`]. `RECITATION` and `IMAGE_RECITATION` count as refusals: they are a
//!   policy decision about this prompt (it would reproduce protected material), and asking again
//!   with the same prompt mostly meets the same answer.
//! * `NoImage`: everything else (`NO_IMAGE`, `IMAGE_OTHER`, `STOP` with text only, `MAX_TOKENS`,
//!   `OTHER`, unknown reasons, no candidates at all), with the model's text when it wrote some.
//!
//! The response is parsed into structs whose every field is optional and whose enums are plain
//! strings, so new finish reasons, new fields or missing ones never make an answer unreadable.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use bytes::Bytes;
use http_body_util::Full;
use reqwest::StatusCode;
use reqwest::header::{
    CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::direct::{self, ConnectError, SendError};
use super::lanes::{ConnectionSettings, Lanes};
use super::{GeneratedImage, ImageJob, ImageProvider, ProviderError};

pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";
pub const DEFAULT_API_VERSION: &str = "v1beta";
/// Pro at 4K takes 50–70 s, p95 90 s, and more with high thinking (upstreams.md §4).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A 4K PNG is ~20–30 MB, ×4/3 in base64; anything far beyond is not an image answer.
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Error bodies are a few hundred bytes of JSON or a small HTML page.
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;
/// Upstream text (messages, the model's words) is cut to this many characters in errors.
const MAX_MESSAGE_CHARS: usize = 300;

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

#[derive(Clone)]
pub struct GeminiConfig {
    /// May carry a path prefix (a proxy): `https://proxy.example/google`.
    pub base_url: Url,
    pub api_version: String,
    pub api_key: String,
    /// The whole call, sending the inputs through reading the image.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub connections: ConnectionSettings,
}

impl GeminiConfig {
    /// Google's endpoint, `v1beta`, and the default timeouts.
    pub fn new(api_key: impl Into<String>) -> GeminiConfig {
        GeminiConfig {
            base_url: Url::parse(DEFAULT_BASE_URL).expect("the default base URL is a valid URL"),
            api_version: DEFAULT_API_VERSION.to_owned(),
            api_key: api_key.into(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            connections: ConnectionSettings::default(),
        }
    }
}

impl fmt::Debug for GeminiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiConfig")
            .field("base_url", &self.base_url.as_str())
            .field("api_version", &self.api_version)
            .field("api_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("connections", &self.connections)
            .finish()
    }
}

/// Why a [`GeminiProvider`] could not be built; all are configuration mistakes.
#[derive(Debug, thiserror::Error)]
pub enum GeminiError {
    #[error("the Gemini base URL {0} must be an http:// or https:// URL")]
    BaseUrl(String),
    #[error("the Gemini API version {0:?} must be one non-empty path segment, like v1beta")]
    ApiVersion(String),
    #[error("the Gemini API key is empty or has characters an HTTP header cannot carry")]
    ApiKey,
    #[error("could not build the HTTP client for Gemini: {0}")]
    Client(#[source] reqwest::Error),
    #[error("could not set up TLS for Gemini (the system's root certificates?): {0}")]
    Tls(#[source] rustls::Error),
}

/// The TLS configuration every lane's client shares (cloning it shares the verifier). Built per
/// client, as reqwest does by default, it would read and parse the system's root certificates
/// once per lane — every 100 calls in flight — and keep a copy of them in each.
///
/// What reqwest builds by default: the platform's verifier and roots, TLS 1.2 and 1.3, and
/// ALPN offering HTTP/2 (what Google's endpoints choose) before HTTP/1.1.
fn upstream_tls() -> Result<rustls::ClientConfig, rustls::Error> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[derive(Debug)]
pub struct GeminiProvider {
    /// The HTTP clients, as many as the calls in flight need (see `lanes`).
    lanes: Lanes<reqwest::Client>,
    /// HTTP/2 calls on connections of our own (see `direct`), when the upstream speaks HTTP/2:
    /// `https://` (decided by the first TLS handshake) or `--upstream-h2c`, and no proxy is
    /// configured in the environment (reqwest's lanes honour it).
    direct: Option<Direct>,
    /// The whole call, sending the inputs through reading the image.
    timeout: Duration,
    /// `{base}/{version}/models`, to which `{model}:generateContent` is appended.
    models_url: Url,
    /// The key pool: `api_key` may list several keys, comma-separated.
    keys: Vec<KeySlot>,
    /// Round-robin start, so load spreads over the healthy keys.
    next_key: AtomicUsize,
    max_response_bytes: usize,
}

/// One upstream API key and its health.
#[derive(Debug)]
struct KeySlot {
    /// Marked sensitive, so it stays out of `Debug` output.
    header: HeaderValue,
    /// For logs: the position and the last four characters, never the key.
    label: String,
    /// Rate-limited or out of quota until then.
    cooling_until: Mutex<Option<Instant>>,
    /// Refused as invalid: never used again by this process.
    invalid: AtomicBool,
}

/// How long a key rests after a 429 or a quota/permission error that said nothing more.
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(60);

impl GeminiProvider {
    pub fn new(config: GeminiConfig) -> Result<GeminiProvider, GeminiError> {
        GeminiProvider::with_tls(config, upstream_tls().map_err(GeminiError::Tls)?)
    }

    /// With this TLS configuration instead of the platform's (tests: a CA of their own).
    fn with_tls(
        config: GeminiConfig,
        tls: rustls::ClientConfig,
    ) -> Result<GeminiProvider, GeminiError> {
        let mut models_url = config.base_url.clone();
        if !matches!(models_url.scheme(), "http" | "https") {
            return Err(GeminiError::BaseUrl(config.base_url.to_string()));
        }
        let version = config.api_version.trim_matches('/');
        if version.is_empty() || version.contains('/') {
            return Err(GeminiError::ApiVersion(config.api_version.clone()));
        }
        models_url.set_fragment(None);
        models_url
            .path_segments_mut()
            .map_err(|()| GeminiError::BaseUrl(config.base_url.to_string()))?
            .pop_if_empty()
            .extend([version, "models"]);

        let keys = config
            .api_key
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .enumerate()
            .map(|(i, key)| {
                let mut header = HeaderValue::from_str(key).map_err(|_| GeminiError::ApiKey)?;
                header.set_sensitive(true);
                let tail: String = key
                    .chars()
                    .rev()
                    .take(4)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                Ok(KeySlot {
                    header,
                    label: format!("key {} (…{tail})", i + 1),
                    cooling_until: Mutex::new(None),
                    invalid: AtomicBool::new(false),
                })
            })
            .collect::<Result<Vec<_>, GeminiError>>()?;
        if keys.is_empty() {
            return Err(GeminiError::ApiKey);
        }

        let (timeout, connect_timeout) = (config.timeout, config.connect_timeout);
        let h2c = config.connections.h2c && models_url.scheme() == "http";
        let per_lane = config.connections.streams_per_connection;
        let direct = if (h2c || models_url.scheme() == "https")
            && !proxy_configured(models_url.scheme())
        {
            let target = direct::Target::new(&models_url, Arc::new(tls.clone()), connect_timeout)
                .map_err(|_| GeminiError::BaseUrl(config.base_url.to_string()))?;
            let lanes = Lanes::new(per_lane, || {
                Ok::<_, std::convert::Infallible>(direct::Connection::default())
            })
            .unwrap_or_else(|never| match never {});
            Some(Direct {
                target,
                lanes,
                not_h2: AtomicBool::new(false),
            })
        } else {
            None
        };
        let lanes = Lanes::new(per_lane, move || {
            let builder = reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(connect_timeout)
                .tls_backend_preconfigured(tls.clone());
            if h2c {
                builder.http2_prior_knowledge().build()
            } else {
                builder.build()
            }
        })
        .map_err(GeminiError::Client)?;
        Ok(GeminiProvider {
            lanes,
            direct,
            timeout,
            models_url,
            keys,
            next_key: AtomicUsize::new(0),
            max_response_bytes: MAX_RESPONSE_BYTES,
        })
    }

    fn endpoint(&self, upstream_model: &str) -> Url {
        // The SDK accepts both `gemini-x` and `models/gemini-x`; so do we.
        let model = upstream_model
            .strip_prefix("models/")
            .unwrap_or(upstream_model);
        let mut url = self.models_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(&format!("{model}:generateContent"));
        }
        url
    }

    /// One image through the key pool: a key that answers 429 or a quota/permission error rests
    /// (as long as `RetryInfo` asks, else a minute) and the next key is tried at once, since
    /// such an answer was not billed; an invalid key is taken out for good. Anything else —
    /// notably a timeout after the request was sent, which may have been billed — is returned
    /// without trying another key.
    async fn generate_with_pool(&self, job: &ImageJob) -> Result<GeneratedImage, ProviderError> {
        let count = self.keys.len();
        let start = self.next_key.fetch_add(1, Ordering::Relaxed) % count;
        let mut last_error = None;
        // The shortest wait until some key can be used again.
        let mut soonest: Option<Duration> = None;
        let mut note = |rest: Duration| soonest = Some(soonest.map_or(rest, |s| s.min(rest)));
        for offset in 0..count {
            let slot = &self.keys[(start + offset) % count];
            if slot.invalid.load(Ordering::Relaxed) {
                continue;
            }
            let now = Instant::now();
            {
                let cooling = slot
                    .cooling_until
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(until) = *cooling
                    && until > now
                {
                    note(until - now);
                    continue;
                }
            }
            match self.call(job, &slot.header).await {
                Err(ProviderError::Upstream {
                    status,
                    message,
                    retry_after,
                }) if is_key_invalid(status, &message) => {
                    slot.invalid.store(true, Ordering::Relaxed);
                    tracing::error!(
                        key = %slot.label,
                        "GEMINI API KEY REFUSED AS INVALID: taken out of the pool until restart"
                    );
                    last_error = Some(ProviderError::Upstream {
                        status,
                        message,
                        retry_after,
                    });
                }
                Err(ProviderError::Upstream {
                    status: status @ (429 | 403),
                    message,
                    retry_after,
                }) => {
                    let rest = retry_after.unwrap_or(DEFAULT_COOLDOWN);
                    *slot
                        .cooling_until
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + rest);
                    tracing::warn!(key = %slot.label, status, cooldown_ms = rest.as_millis() as u64, "Gemini key rests");
                    note(rest);
                    last_error = Some(ProviderError::Upstream {
                        status,
                        message,
                        retry_after,
                    });
                }
                other => return other,
            }
        }
        match last_error {
            // Every usable key was tried and refused: say when one is back.
            Some(ProviderError::Upstream {
                status, message, ..
            }) if status == 429 || status == 403 => Err(ProviderError::Upstream {
                status,
                message,
                retry_after: soonest,
            }),
            Some(error) => Err(error),
            None => Err(ProviderError::Upstream {
                status: 429,
                message: "every Gemini API key is resting or invalid".into(),
                retry_after: soonest,
            }),
        }
    }

    async fn call(
        &self,
        job: &ImageJob,
        api_key: &HeaderValue,
    ) -> Result<GeneratedImage, ProviderError> {
        let body = serde_json::to_vec(&GenerateContentRequest::for_job(job))
            .map_err(|err| ProviderError::InvalidResponse(format!("request encoding: {err}")))?;
        let body = Bytes::from(body);
        let url = self.endpoint(&job.upstream_model);
        if let Some(direct) = &self.direct
            && !direct.not_h2.load(Ordering::Relaxed)
        {
            match self.call_direct(direct, &url, api_key, &body).await {
                Some(outcome) => return outcome,
                None => {
                    if !direct.not_h2.swap(true, Ordering::Relaxed) {
                        tracing::info!(
                            "the Gemini upstream did not choose HTTP/2 in the TLS handshake: \
                             calls go through the HTTP/1.1 client from now on"
                        );
                    }
                }
            }
        }

        // Held until the answer has been read: the call occupies a stream of the lane till then.
        let lane = self.lanes.acquire();
        let mut response = lane
            .client()
            .post(url)
            .header("x-goog-api-key", api_key.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, USER_AGENT_VALUE)
            .body(body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        self.answer(status, &headers, move |cap| async move {
            read_capped(&mut response, cap)
                .await
                .map_err(transport_error)
        })
        .await
    }

    /// The call on one of our own HTTP/2 connections; `None` when the upstream turned out not to
    /// speak HTTP/2 (nothing was sent).
    async fn call_direct(
        &self,
        direct: &Direct,
        url: &Url,
        api_key: &HeaderValue,
        body: &Bytes,
    ) -> Option<Result<GeneratedImage, ProviderError>> {
        let uri = match url.as_str().parse::<http::Uri>() {
            Ok(uri) => uri,
            Err(e) => {
                return Some(Err(ProviderError::Transport {
                    message: format!("the endpoint is not a valid URI: {e}"),
                    sent: false,
                }));
            }
        };
        let request = || {
            let mut request = http::Request::new(Full::new(body.clone()));
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = uri.clone();
            let headers = request.headers_mut();
            headers.insert("x-goog-api-key", api_key.clone());
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
            request
        };
        // Held until the answer has been read: the call occupies a stream of the lane till then.
        let lane = direct.lanes.acquire();
        let mut handed = false;
        let call = async {
            let response = match direct
                .target
                .send(lane.client(), request, &mut handed)
                .await
            {
                Ok(response) => response,
                Err(SendError::Connect(ConnectError::NotH2)) => return None,
                Err(SendError::Connect(ConnectError::Failed(message))) => {
                    return Some(Err(ProviderError::Transport {
                        message,
                        sent: false,
                    }));
                }
                Err(SendError::Failed { message, sent }) => {
                    return Some(Err(ProviderError::Transport { message, sent }));
                }
            };
            let (parts, mut body) = response.into_parts();
            let answer = self.answer(parts.status, &parts.headers, |cap| async move {
                direct::read_capped(&mut body, cap)
                    .await
                    .map_err(|message| ProviderError::Transport {
                        message,
                        sent: true,
                    })
            });
            Some(answer.await)
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(outcome) => outcome,
            Err(_) => Some(Err(ProviderError::Transport {
                message: format!(
                    "the upstream did not answer within {} s",
                    self.timeout.as_secs_f64()
                ),
                sent: handed,
            })),
        }
    }

    /// The upstream's answer: its error, or the image. `read` reads at most so many bytes of the
    /// body (`true`: there was more); it is called once.
    async fn answer<F>(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        read: impl FnOnce(usize) -> F,
    ) -> Result<GeneratedImage, ProviderError>
    where
        F: Future<Output = Result<(Vec<u8>, bool), ProviderError>>,
    {
        if !status.is_success() {
            // A failed read still leaves the status, which says more than a transport error.
            let body = read(MAX_ERROR_BODY_BYTES)
                .await
                .map(|(body, _)| body)
                .unwrap_or_default();
            return Err(upstream_error(status, headers, &body));
        }
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|len| len.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_response_bytes as u64) {
            return Err(too_large(self.max_response_bytes));
        }
        let (body, truncated) = read(self.max_response_bytes).await?;
        if truncated {
            return Err(too_large(self.max_response_bytes));
        }
        parse_success(&body)
    }
}

/// See [`GeminiProvider::direct`].
struct Direct {
    target: direct::Target,
    lanes: Lanes<direct::Connection>,
    /// A TLS handshake chose HTTP/1.1 (or nothing): every call goes through reqwest's lanes.
    not_h2: AtomicBool,
}

impl fmt::Debug for Direct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Direct")
            .field("lanes", &self.lanes)
            .field("not_h2", &self.not_h2)
            .finish()
    }
}

const USER_AGENT_VALUE: &str = concat!("nano-banana/", env!("CARGO_PKG_VERSION"));

/// Whether reqwest would send calls to a `scheme` URL through a proxy named in the environment;
/// such calls stay with reqwest. (`NO_PROXY` is not consulted: with a proxy named at all, the
/// calls keep the behaviour they had before the direct client existed.)
fn proxy_configured(scheme: &str) -> bool {
    proxy_named(scheme, |name| std::env::var_os(name))
}

fn proxy_named(scheme: &str, var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    let names: &[&str] = if scheme == "https" {
        &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
    } else {
        &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
    };
    names
        .iter()
        .any(|name| var(name).is_some_and(|value| !value.is_empty()))
}

#[async_trait::async_trait]
impl ImageProvider for GeminiProvider {
    fn name(&self) -> &'static str {
        "gemini"
    }

    async fn generate(&self, job: &ImageJob) -> Result<GeneratedImage, ProviderError> {
        let started = Instant::now();
        let result = self.generate_with_pool(job).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(image) => tracing::debug!(
                upstream_model = %job.upstream_model,
                inputs = job.inputs.len(),
                bytes = image.bytes.len(),
                elapsed_ms,
                "gemini made an image"
            ),
            Err(err) => tracing::debug!(
                upstream_model = %job.upstream_model,
                inputs = job.inputs.len(),
                elapsed_ms,
                error = %err,
                "gemini call failed"
            ),
        }
        result
    }
}

/// Google answers a bad key with 400 INVALID_ARGUMENT and reason API_KEY_INVALID.
fn is_key_invalid(status: u16, message: &str) -> bool {
    status == 400 && (message.contains("API_KEY_INVALID") || message.contains("API key not valid"))
}

// ---------------------------------------------------------------------------------------------
// Request

#[derive(Serialize)]
struct GenerateContentRequest<'a> {
    contents: [RequestContent<'a>; 1],
    #[serde(rename = "generationConfig")]
    generation_config: GenerationConfig,
}

#[derive(Serialize)]
struct RequestContent<'a> {
    role: &'static str,
    parts: Vec<RequestPart<'a>>,
}

/// snake_case inside parts, as Google's own REST samples send it.
#[derive(Serialize)]
#[serde(untagged)]
enum RequestPart<'a> {
    Text { text: &'a str },
    Inline { inline_data: InlineData },
}

#[derive(Serialize)]
struct InlineData {
    mime_type: &'static str,
    data: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    response_modalities: [&'static str; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    image_config: Option<ImageConfig>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    aspect_ratio: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_size: Option<&'static str>,
}

impl<'a> GenerateContentRequest<'a> {
    fn for_job(job: &'a ImageJob) -> GenerateContentRequest<'a> {
        let mut parts = Vec::with_capacity(1 + job.inputs.len());
        parts.push(RequestPart::Text { text: &job.prompt });
        parts.extend(job.inputs.iter().map(|input| RequestPart::Inline {
            inline_data: InlineData {
                mime_type: input.mime_type,
                data: general_purpose::STANDARD.encode(&input.bytes),
            },
        }));
        let aspect_ratio = job.aspect_ratio.map(|r| r.as_str());
        let image_size = job.image_size.map(|s| s.as_str());
        GenerateContentRequest {
            contents: [RequestContent {
                role: "user",
                parts,
            }],
            generation_config: GenerationConfig {
                response_modalities: ["TEXT", "IMAGE"],
                image_config: (aspect_ratio.is_some() || image_size.is_some()).then_some(
                    ImageConfig {
                        aspect_ratio,
                        image_size,
                    },
                ),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Success answers

// The image's base64 (megabytes) is borrowed from the response body rather than copied into a
// `String`; the structs carry the body's lifetime for that (BENCHMARKS.md, S2).
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct GenerateContentResponse<'a> {
    #[serde(borrow)]
    candidates: Option<Vec<Candidate<'a>>>,
    #[serde(alias = "prompt_feedback")]
    prompt_feedback: Option<PromptFeedback>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(borrow)]
    content: Option<Content<'a>>,
    #[serde(alias = "finish_reason")]
    finish_reason: Option<String>,
    #[serde(alias = "finish_message")]
    finish_message: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Content<'a> {
    #[serde(borrow)]
    parts: Option<Vec<Part<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Part<'a> {
    text: Option<String>,
    thought: Option<bool>,
    #[serde(alias = "inline_data", borrow)]
    inline_data: Option<Blob<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Blob<'a> {
    #[serde(alias = "mime_type")]
    mime_type: Option<String>,
    /// Borrowed unless the JSON string has escapes (then serde hands over an owned copy).
    #[serde(borrow)]
    data: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(alias = "block_reason")]
    block_reason: Option<String>,
    #[serde(alias = "block_reason_message")]
    block_reason_message: Option<String>,
}

fn parse_success(body: &[u8]) -> Result<GeneratedImage, ProviderError> {
    // serde would read a JSON array into these structs field by field; only an object is an
    // answer.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ProviderError::InvalidResponse(format!(
            "not a JSON object: {}",
            excerpt(body)
        )));
    }
    let answer: GenerateContentResponse = serde_json::from_slice(body).map_err(|err| {
        ProviderError::InvalidResponse(format!(
            "not a generateContent answer ({err}): {}",
            excerpt(body)
        ))
    })?;
    let candidates = answer.candidates.unwrap_or_default();
    let parts = || {
        candidates
            .iter()
            .filter_map(|c| c.content.as_ref()?.parts.as_ref())
            .flatten()
    };

    // Gemini 3 models send interim "thought images" before the real one; the last non-thought
    // image is the answer.
    let image = parts()
        .filter(|part| part.thought != Some(true))
        .filter_map(|part| part.inline_data.as_ref())
        .rfind(|blob| {
            blob.mime_type
                .as_deref()
                .is_some_and(|m| m.to_ascii_lowercase().starts_with("image/"))
        });
    if let Some(blob) = image {
        let data = blob.data.as_deref().unwrap_or_default();
        let bytes = decode_base64(data).ok_or_else(|| {
            ProviderError::InvalidResponse(format!(
                "the image part is not base64 ({} bytes starting {:?})",
                data.len(),
                truncate(data, 40)
            ))
        })?;
        if bytes.is_empty() {
            return Err(ProviderError::InvalidResponse(
                "the image part is empty".to_owned(),
            ));
        }
        return Ok(GeneratedImage {
            bytes: bytes.into(),
            mime_type: blob.mime_type.clone().unwrap_or_default(),
        });
    }

    let model_text = parts()
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

    if let Some(feedback) = &answer.prompt_feedback
        && let Some(reason) = &feedback.block_reason
    {
        let detail = feedback.block_reason_message.as_deref();
        return Err(ProviderError::Refused(with_detail(
            format!("prompt blocked ({reason})"),
            detail,
        )));
    }
    let text_detail = (!model_text.is_empty()).then_some(model_text.as_str());
    if let Some(candidate) = candidates.iter().find(|c| {
        c.finish_reason
            .as_deref()
            .is_some_and(|r| REFUSAL_REASONS.contains(&r))
    }) {
        let reason = candidate.finish_reason.as_deref().unwrap_or_default();
        let detail = candidate.finish_message.as_deref().or(text_detail);
        return Err(ProviderError::Refused(with_detail(
            reason.to_owned(),
            detail,
        )));
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
    Err(ProviderError::NoImage(with_detail(head, detail)))
}

/// Google sends standard base64 with padding; proxies have been seen to drop the padding,
/// wrap lines, or use the URL-safe alphabet.
fn decode_base64(data: &str) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    if let Ok(bytes) = STANDARD.decode(data) {
        return Some(bytes);
    }
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD
        .decode(&compact)
        .or_else(|_| URL_SAFE.decode(&compact))
        .ok()
}

// ---------------------------------------------------------------------------------------------
// HTTP errors and transport failures

/// Reads at most `cap` bytes; `true` when the body had more.
async fn read_capped(
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

fn too_large(cap: usize) -> ProviderError {
    ProviderError::InvalidResponse(format!("the answer is larger than {} MiB", cap >> 20))
}

fn transport_error(err: reqwest::Error) -> ProviderError {
    // Only a failed connect proves the request never left; a timeout or reset after that may
    // have started (and billed) a generation.
    let sent = !err.is_connect();
    // The URL is dropped in case a base URL carries credentials for a proxy.
    let err = err.without_url();
    ProviderError::Transport {
        message: direct::error_chain(&err),
        sent,
    }
}

fn upstream_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    // google.rpc.Status is wrapped in `error`; some front ends wrap that in a one-element list.
    let error = json.as_ref().and_then(|v| match v {
        Value::Array(items) => items.first()?.get("error"),
        other => other.get("error"),
    });
    let canonical = error
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .map(|r| r.to_ascii_uppercase().replace(' ', "_"))
                .unwrap_or_else(|| format!("HTTP_{}", status.as_u16()))
        });
    let text = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(|m| truncate(m, MAX_MESSAGE_CHARS).to_owned())
        .unwrap_or_else(|| excerpt(body));
    let retry_after = error
        .and_then(|e| e.get("details"))
        .and_then(retry_info_delay)
        .or_else(|| retry_after_header(headers))
        .or_else(|| retry_in_message(&text));
    ProviderError::Upstream {
        status: status.as_u16(),
        message: format!("{canonical}: {text}"),
        retry_after,
    }
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
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(8 << 10)]);
    let text = if text.contains('<') {
        strip_html(&text)
    } else {
        text.into_owned()
    };
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return "(empty body)".to_owned();
    }
    truncate(&collapsed, MAX_MESSAGE_CHARS).to_owned()
}

fn strip_html(html: &str) -> String {
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

fn truncate(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::domain::{AspectRatio, Resolution};
    use crate::fake::gemini::{FakeGemini, FakeGeminiOptions, Scenario, THOUGHT_IMAGE_SIDE};
    use crate::providers::InputImage;

    const KEY: &str = "test-key-123";

    async fn fake() -> FakeGemini {
        FakeGemini::start(FakeGeminiOptions {
            api_key: Some(KEY.to_owned()),
            ..Default::default()
        })
        .await
        .unwrap()
    }

    fn config(base_url: &str) -> GeminiConfig {
        GeminiConfig {
            base_url: Url::parse(base_url).unwrap(),
            ..GeminiConfig::new(KEY)
        }
    }

    fn provider(fake: &FakeGemini) -> GeminiProvider {
        GeminiProvider::new(config(&fake.base_url())).unwrap()
    }

    /// `config`, speaking cleartext HTTP/2 (on our own connections) when `h2c`.
    fn transport_config(base_url: &str, h2c: bool) -> GeminiConfig {
        GeminiConfig {
            connections: ConnectionSettings {
                h2c,
                ..ConnectionSettings::default()
            },
            ..config(base_url)
        }
    }

    /// Over HTTP/1.1 through reqwest, and over HTTP/2 on connections of our own (`direct`).
    fn both_transports(fake: &FakeGemini) -> [GeminiProvider; 2] {
        let h2c = GeminiProvider::new(transport_config(&fake.base_url(), true)).unwrap();
        assert!(h2c.direct.is_some());
        [provider(fake), h2c]
    }

    fn job(prompt: &str) -> ImageJob {
        ImageJob {
            prompt: prompt.to_owned(),
            model: "nano-banana-pro".to_owned(),
            upstream_model: "gemini-3-pro-image".to_owned(),
            inputs: Vec::new(),
            aspect_ratio: None,
            image_size: None,
            width: 1024,
            height: 1024,
        }
    }

    fn input(bytes: &'static [u8], mime_type: &'static str) -> InputImage {
        InputImage {
            bytes: Bytes::from_static(bytes),
            mime_type,
            width: 1,
            height: 1,
        }
    }

    fn dimensions(image: &GeneratedImage) -> (u32, u32) {
        let decoded = image::load_from_memory(&image.bytes).unwrap();
        (decoded.width(), decoded.height())
    }

    #[tokio::test]
    async fn generate_sends_the_canonical_request_without_image_config() {
        let fake = fake().await;
        let image = provider(&fake).generate(&job("a banana")).await.unwrap();
        assert_eq!(image.mime_type, "image/png");
        assert_eq!(dimensions(&image), (1024, 1024));

        let requests = fake.requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.path,
            "/v1beta/models/gemini-3-pro-image:generateContent"
        );
        assert_eq!(request.model.as_deref(), Some("gemini-3-pro-image"));
        assert_eq!(request.api_key.as_deref(), Some(KEY));
        assert_eq!(request.query, None);
        assert_eq!(request.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            request.body,
            json!({
                "contents": [{"role": "user", "parts": [{"text": "a banana"}]}],
                "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]},
            })
        );
    }

    #[tokio::test]
    async fn edit_sends_inputs_as_inline_data_after_the_text() {
        let fake = fake().await;
        let mut edit = job("make it red");
        edit.inputs = vec![
            input(b"\x89PNG first", "image/png"),
            input(b"\xff\xd8\xff second", "image/jpeg"),
        ];
        edit.aspect_ratio = Some(AspectRatio::R16x9);
        edit.image_size = Some(Resolution::R2K);
        let image = provider(&fake).generate(&edit).await.unwrap();
        assert_eq!(dimensions(&image), (2752, 1536));

        let body = &fake.requests()[0].body;
        assert_eq!(
            body["contents"][0]["parts"],
            json!([
                {"text": "make it red"},
                {"inline_data": {
                    "mime_type": "image/png",
                    "data": general_purpose::STANDARD.encode(b"\x89PNG first"),
                }},
                {"inline_data": {
                    "mime_type": "image/jpeg",
                    "data": general_purpose::STANDARD.encode(b"\xff\xd8\xff second"),
                }},
            ])
        );
        assert_eq!(
            body["generationConfig"]["imageConfig"],
            json!({"aspectRatio": "16:9", "imageSize": "2K"})
        );
    }

    #[tokio::test]
    async fn image_config_carries_only_what_the_job_sets() {
        let fake = fake().await;
        let provider = provider(&fake);
        let mut only_ratio = job("wide");
        only_ratio.upstream_model = "gemini-2.5-flash-image".to_owned();
        only_ratio.aspect_ratio = Some(AspectRatio::R3x2);
        let image = provider.generate(&only_ratio).await.unwrap();
        assert_eq!(dimensions(&image), (1248, 832));

        let mut only_size = job("big");
        only_size.image_size = Some(Resolution::R4K);
        provider.generate(&only_size).await.unwrap();

        let requests = fake.requests();
        assert_eq!(
            requests[0].path,
            "/v1beta/models/gemini-2.5-flash-image:generateContent"
        );
        assert_eq!(
            requests[0].body["generationConfig"]["imageConfig"],
            json!({"aspectRatio": "3:2"})
        );
        assert_eq!(
            requests[1].body["generationConfig"]["imageConfig"],
            json!({"imageSize": "4K"})
        );
    }

    #[tokio::test]
    async fn thought_images_are_skipped() {
        let fake = fake().await;
        fake.push_scenario(Scenario::ThoughtThenImage);
        let image = provider(&fake).generate(&job("think")).await.unwrap();
        assert_eq!(dimensions(&image), (1024, 1024));
        assert_ne!(dimensions(&image), (THOUGHT_IMAGE_SIDE, THOUGHT_IMAGE_SIDE));

        // Also through a prompt tag, on a 2.5 model.
        let mut tagged = job("think [fake:thought]");
        tagged.upstream_model = "gemini-2.5-flash-image".to_owned();
        let image = provider(&fake).generate(&tagged).await.unwrap();
        assert_eq!(dimensions(&image), (1024, 1024));
    }

    #[tokio::test]
    async fn safety_outcomes_are_refusals() {
        let fake = fake().await;
        let provider = provider(&fake);
        fake.push_scenario(Scenario::PromptBlocked);
        fake.push_scenario(Scenario::ImageSafety);

        let err = provider.generate(&job("x")).await.unwrap_err();
        let ProviderError::Refused(message) = &err else {
            panic!("{err:?}")
        };
        assert!(message.contains("PROHIBITED_CONTENT"), "{message}");
        assert!(!err.is_retryable());

        let err = provider.generate(&job("x")).await.unwrap_err();
        let ProviderError::Refused(message) = &err else {
            panic!("{err:?}")
        };
        assert!(
            message.starts_with("IMAGE_SAFETY: I can't create"),
            "{message}"
        );

        let err = provider
            .generate(&job("x [fake:image_safety]"))
            .await
            .unwrap_err();
        assert!(matches!(err, ProviderError::Refused(_)), "{err:?}");
    }

    #[tokio::test]
    async fn no_image_and_text_only_are_no_image() {
        let fake = fake().await;
        let provider = provider(&fake);
        fake.push_scenario(Scenario::NoImage);
        let err = provider.generate(&job("x")).await.unwrap_err();
        let ProviderError::NoImage(message) = &err else {
            panic!("{err:?}")
        };
        assert!(
            message.starts_with("finish reason NO_IMAGE: I could not"),
            "{message}"
        );
        assert!(!err.is_retryable());

        let err = provider
            .generate(&job("x [fake:text_only]"))
            .await
            .unwrap_err();
        let ProviderError::NoImage(message) = &err else {
            panic!("{err:?}")
        };
        assert!(message.contains("text only"), "{message}");
        assert!(message.contains("a small ripe banana"), "{message}");
    }

    #[tokio::test]
    async fn rate_limit_reports_retry_info() {
        let fake = fake().await;
        for provider in both_transports(&fake) {
            fake.push_scenario(Scenario::RateLimited {
                retry_delay: "15s".to_owned(),
            });
            let err = provider.generate(&job("x")).await.unwrap_err();
            let ProviderError::Upstream {
                status,
                message,
                retry_after,
            } = &err
            else {
                panic!("{err:?}")
            };
            assert_eq!(*status, 429);
            assert!(
                message.starts_with("RESOURCE_EXHAUSTED: You exceeded"),
                "{message}"
            );
            assert_eq!(*retry_after, Some(Duration::from_secs(15)));
            assert!(err.is_retryable());
            assert_eq!(err.retry_after(), Some(Duration::from_secs(15)));
        }
    }

    #[tokio::test]
    async fn server_errors_are_retryable_upstream_errors() {
        let fake = fake().await;
        let provider = provider(&fake);
        for (scenario, code, canonical) in [
            (Scenario::ServerError, 500, "INTERNAL"),
            (Scenario::Unavailable, 503, "UNAVAILABLE"),
            (Scenario::GatewayTimeout, 504, "DEADLINE_EXCEEDED"),
        ] {
            fake.push_scenario(scenario);
            let err = provider.generate(&job("x")).await.unwrap_err();
            let ProviderError::Upstream {
                status, message, ..
            } = &err
            else {
                panic!("{err:?}")
            };
            assert_eq!(*status, code);
            assert!(message.starts_with(canonical), "{message}");
            assert!(err.is_retryable());
        }
        fake.push_scenario(Scenario::Status(403));
        let err = provider.generate(&job("x")).await.unwrap_err();
        assert!(
            matches!(&err, ProviderError::Upstream { status: 403, .. }),
            "{err:?}"
        );
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn garbage_and_bad_base64_are_invalid_responses() {
        let fake = fake().await;
        let provider = provider(&fake);
        fake.push_scenario(Scenario::Garbage);
        fake.push_scenario(Scenario::BadBase64);
        let err = provider.generate(&job("x")).await.unwrap_err();
        assert!(matches!(err, ProviderError::InvalidResponse(_)), "{err:?}");
        let err = provider.generate(&job("x")).await.unwrap_err();
        let ProviderError::InvalidResponse(message) = &err else {
            panic!("{err:?}")
        };
        assert!(message.contains("not base64"), "{message}");
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn over_h2c_calls_beyond_a_connections_streams_open_another_connection() {
        let fake = FakeGemini::start(FakeGeminiOptions {
            api_key: Some(KEY.to_owned()),
            latency: crate::fake::gemini::Latency::Fixed(Duration::from_millis(400)),
            ..Default::default()
        })
        .await
        .unwrap();
        let multiplexed = GeminiProvider::new(GeminiConfig {
            connections: ConnectionSettings {
                streams_per_connection: 2,
                h2c: true,
            },
            ..config(&fake.base_url())
        })
        .unwrap();
        let job = job("x");
        let calls = (0..5).map(|_| multiplexed.generate(&job));
        for result in futures_util::future::join_all(calls).await {
            assert!(result.is_ok(), "{result:?}");
        }
        let versions: Vec<String> = fake
            .requests()
            .into_iter()
            .map(|r| r.http_version)
            .collect();
        assert_eq!(versions, vec!["HTTP/2.0"; 5]);
        // Five calls at two per connection: three connections (one would have made the
        // calls beyond two wait). A racing connect may add one, never fewer.
        let connections = fake.connection_count();
        assert!((3..=5).contains(&connections), "{connections} connections");
        let direct = multiplexed.direct.as_ref().expect("h2c calls go direct");
        assert_eq!(direct.lanes.count(), 3);
        assert_eq!(direct.target.connections_made(), 3);

        // Without h2c the same provider speaks HTTP/1.1, one call per connection.
        let plain = provider(&fake);
        assert!(plain.generate(&job).await.is_ok());
        let last = fake.requests().pop().unwrap();
        assert_eq!(last.http_version, "HTTP/1.1");
    }

    #[tokio::test]
    async fn a_slow_or_hanging_upstream_times_out_as_sent() {
        let fake = fake().await;
        // Over HTTP/1.1 (reqwest) and over HTTP/2 on our own connections.
        for h2c in [false, true] {
            fake.push_scenario(Scenario::Slow(Duration::from_secs(120)));
            fake.push_scenario(Scenario::Hang);
            let provider = GeminiProvider::new(GeminiConfig {
                timeout: Duration::from_millis(300),
                ..transport_config(&fake.base_url(), h2c)
            })
            .unwrap();
            assert_eq!(provider.direct.is_some(), h2c);
            for _ in 0..2 {
                let err = provider.generate(&job("x")).await.unwrap_err();
                assert!(
                    matches!(err, ProviderError::Transport { sent: true, .. }),
                    "{err:?}"
                );
                // It may have been billed: never re-sent.
                assert!(!err.is_retryable());
            }
        }
        assert_eq!(fake.request_count(), 4);
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        for h2c in [false, true] {
            let provider =
                GeminiProvider::new(transport_config(&format!("http://{addr}"), h2c)).unwrap();
            let err = provider.generate(&job("x")).await.unwrap_err();
            let ProviderError::Transport { sent, message } = &err else {
                panic!("{err:?}")
            };
            assert!(!sent, "{message}");
            assert!(err.is_retryable());
            assert!(!message.contains(KEY));
        }
    }

    #[tokio::test]
    async fn an_http2_connection_that_ended_is_made_again() {
        let fake = fake().await;
        let front = Front::start(&fake, None).await;
        let provider = GeminiProvider::new(transport_config(&front.base_url, true)).unwrap();
        assert!(provider.generate(&job("x")).await.is_ok());
        // The connection is cut. The next call finds it ended and makes a new one — unless it
        // is written before the lane has noticed: then it fails (a broken pipe, as it would
        // through reqwest) and the call after it makes the new connection.
        front.cut();
        let mut attempts = 0;
        while let Err(err) = provider.generate(&job("x")).await {
            attempts += 1;
            assert!(
                matches!(err, ProviderError::Transport { .. }) && attempts < 5,
                "{err:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(fake.connection_count(), 2);
        let direct = provider.direct.as_ref().unwrap();
        assert_eq!(direct.target.connections_made(), 2);
        assert_eq!(direct.lanes.count(), 1);
        let versions: Vec<String> = fake
            .requests()
            .into_iter()
            .map(|r| r.http_version)
            .collect();
        assert_eq!(versions, vec!["HTTP/2.0"; 2]);
    }

    /// A front for `fake` that passes bytes on, decrypting TLS first when given the ALPN
    /// protocols to offer (with the test certificate: `127.0.0.1`, signed by `testdata/ca.der`).
    struct Front {
        base_url: String,
        connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    }

    impl Front {
        async fn start(fake: &FakeGemini, alpn: Option<&[&[u8]]>) -> Front {
            use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
            let acceptor = alpn.map(|alpn| {
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                    include_bytes!("testdata/leaf.key.der").to_vec(),
                ));
                let leaf = CertificateDer::from(include_bytes!("testdata/leaf.der").to_vec());
                let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![leaf], key)
                .unwrap();
                server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
                tokio_rustls::TlsAcceptor::from(Arc::new(server))
            });
            let scheme = if acceptor.is_some() { "https" } else { "http" };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base_url = format!("{scheme}://{}", listener.local_addr().unwrap());
            let upstream = fake.local_addr();
            let connections = Arc::new(Mutex::new(Vec::new()));
            let tracked = connections.clone();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    let connection = tokio::spawn(async move {
                        let mut plain = tokio::net::TcpStream::connect(upstream).await?;
                        match acceptor {
                            Some(acceptor) => {
                                let mut tls = acceptor.accept(tcp).await?;
                                tokio::io::copy_bidirectional(&mut tls, &mut plain).await
                            }
                            None => {
                                let mut tcp = tcp;
                                tokio::io::copy_bidirectional(&mut tcp, &mut plain).await
                            }
                        }
                    });
                    tracked.lock().unwrap().push(connection.abort_handle());
                }
            });
            Front {
                base_url,
                connections,
            }
        }

        /// Closes every connection made so far, on both sides.
        fn cut(&self) {
            for connection in self.connections.lock().unwrap().drain(..) {
                connection.abort();
            }
        }
    }

    /// The client side: the test CA only, ALPN as `upstream_tls` offers it.
    fn test_tls() -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(
                include_bytes!("testdata/ca.der").to_vec(),
            ))
            .unwrap();
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = upstream_tls().unwrap().alpn_protocols;
        tls
    }

    /// Two calls through a TLS front that offers `alpn`: the provider, and the HTTP versions
    /// the fake saw; with the fake's connection count.
    async fn two_calls_over_tls(alpn: &[&[u8]]) -> (GeminiProvider, Vec<String>, usize) {
        let fake = fake().await;
        let front = Front::start(&fake, Some(alpn)).await;
        let provider = GeminiProvider::with_tls(config(&front.base_url), test_tls()).unwrap();
        for _ in 0..2 {
            assert!(provider.generate(&job("x")).await.is_ok());
        }
        let versions = fake
            .requests()
            .into_iter()
            .map(|r| r.http_version)
            .collect();
        (provider, versions, fake.connection_count())
    }

    #[tokio::test]
    async fn a_tls_upstream_that_chooses_http2_is_called_on_our_own_connections() {
        let (provider, versions, connections) = two_calls_over_tls(&[b"h2", b"http/1.1"]).await;
        assert_eq!(versions, vec!["HTTP/2.0"; 2]);
        let direct = provider.direct.as_ref().unwrap();
        assert!(!direct.not_h2.load(Ordering::Relaxed));
        // One connection of ours, one TLS handshake, for both calls.
        assert_eq!(direct.target.connections_made(), 1);
        assert_eq!(connections, 1);
    }

    #[tokio::test]
    async fn a_tls_upstream_that_chooses_http1_is_called_through_reqwest() {
        let (provider, versions, _) = two_calls_over_tls(&[b"http/1.1"]).await;
        assert_eq!(versions, vec!["HTTP/1.1"; 2]);
        let direct = provider.direct.as_ref().unwrap();
        assert!(direct.not_h2.load(Ordering::Relaxed));
        assert_eq!(direct.target.connections_made(), 0);
    }

    #[tokio::test]
    async fn calls_waiting_on_a_connect_that_fails_fail_with_it() {
        // Accepts connections and never says a word: the TLS handshake times out.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(tcp);
            }
        });
        let provider = GeminiProvider::with_tls(
            GeminiConfig {
                connect_timeout: Duration::from_millis(300),
                ..config(&format!("https://{addr}"))
            },
            test_tls(),
        )
        .unwrap();
        let job = job("x");
        let calls = (0..3).map(|_| provider.generate(&job));
        for result in futures_util::future::join_all(calls).await {
            let Err(ProviderError::Transport { sent, message }) = &result else {
                panic!("{result:?}")
            };
            assert!(!sent && message.contains("timed out"), "{message}");
        }
        // One lane, one connect for the three calls (not one connect timeout after another).
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // A call that comes later tries again.
        assert!(provider.generate(&job).await.is_err());
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_tls_upstream_with_a_certificate_we_do_not_trust_is_refused_unsent() {
        let fake = fake().await;
        let front = Front::start(&fake, Some(&[b"h2"])).await;
        // The platform's roots: the test CA is not among them.
        let provider = GeminiProvider::new(config(&front.base_url)).unwrap();
        let err = provider.generate(&job("x")).await.unwrap_err();
        let ProviderError::Transport { sent, message } = &err else {
            panic!("{err:?}")
        };
        assert!(!sent, "{message}");
        assert!(message.contains("certificate"), "{message}");
        assert_eq!(fake.request_count(), 0);
    }

    #[tokio::test]
    async fn an_html_error_page_becomes_an_excerpt() {
        let fake = fake().await;
        fake.push_scenario(Scenario::HtmlError);
        let err = provider(&fake).generate(&job("x")).await.unwrap_err();
        let ProviderError::Upstream {
            status, message, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(*status, 502);
        assert!(message.starts_with("BAD_GATEWAY: Error 502"), "{message}");
        assert!(message.contains("That’s an error."), "{message}");
        assert!(!message.contains("margin"), "styles leaked: {message}");
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn a_wrong_key_is_a_final_400() {
        let fake = fake().await;
        let provider = GeminiProvider::new(GeminiConfig {
            api_key: "wrong".to_owned(),
            ..config(&fake.base_url())
        })
        .unwrap();
        let err = provider.generate(&job("x")).await.unwrap_err();
        let ProviderError::Upstream {
            status, message, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(*status, 400);
        assert!(
            message.starts_with("INVALID_ARGUMENT: API key not valid"),
            "{message}"
        );
        assert!(!err.is_retryable());
        assert!(!format!("{provider:?}").contains("wrong"));
    }

    #[tokio::test]
    async fn an_unknown_model_is_a_404() {
        let fake = fake().await;
        let mut unknown = job("x");
        unknown.upstream_model = "imagen-9".to_owned();
        let err = provider(&fake).generate(&unknown).await.unwrap_err();
        assert!(
            matches!(&err, ProviderError::Upstream { status: 404, message, .. } if message.starts_with("NOT_FOUND")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_oversized_answer_is_rejected() {
        let fake = FakeGemini::start(FakeGeminiOptions {
            image_bytes: 200_000,
            ..Default::default()
        })
        .await
        .unwrap();
        for mut provider in both_transports(&fake) {
            let image = provider.generate(&job("x")).await.unwrap();
            assert!(image.bytes.len() > 150_000);
            provider.max_response_bytes = 100_000;
            let err = provider.generate(&job("x")).await.unwrap_err();
            assert!(matches!(err, ProviderError::InvalidResponse(_)), "{err:?}");
        }
    }

    #[test]
    fn endpoint_keeps_a_base_path_prefix() {
        let endpoint = |base: &str, version: &str, model: &str| {
            GeminiProvider::new(GeminiConfig {
                api_version: version.to_owned(),
                ..config(base)
            })
            .unwrap()
            .endpoint(model)
            .to_string()
        };
        assert_eq!(
            endpoint(
                "https://generativelanguage.googleapis.com",
                "v1beta",
                "gemini-3-pro-image"
            ),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-3-pro-image:generateContent"
        );
        assert_eq!(
            endpoint(
                "http://127.0.0.1:9/proxy/google/",
                "v1",
                "models/gemini-3.1-flash-image"
            ),
            "http://127.0.0.1:9/proxy/google/v1/models/gemini-3.1-flash-image:generateContent"
        );
        assert_eq!(
            endpoint(
                "http://127.0.0.1:9/proxy",
                "/v1beta/",
                "gemini-2.5-flash-image"
            ),
            "http://127.0.0.1:9/proxy/v1beta/models/gemini-2.5-flash-image:generateContent"
        );
    }

    #[test]
    fn bad_configuration_is_rejected_and_the_key_never_printed() {
        let err = |config: GeminiConfig| GeminiProvider::new(config).unwrap_err();
        assert!(matches!(err(GeminiConfig::new("")), GeminiError::ApiKey));
        assert!(matches!(
            err(GeminiConfig::new("a\nb")),
            GeminiError::ApiKey
        ));
        assert!(matches!(
            err(GeminiConfig {
                api_version: "v1/x".into(),
                ..GeminiConfig::new("k")
            }),
            GeminiError::ApiVersion(_)
        ));
        assert!(matches!(
            err(GeminiConfig {
                base_url: Url::parse("ftp://example.com").unwrap(),
                ..GeminiConfig::new("k")
            }),
            GeminiError::BaseUrl(_)
        ));
        let config = GeminiConfig::new("super-secret");
        assert!(!format!("{config:?}").contains("super-secret"));
        let provider = GeminiProvider::new(config).unwrap();
        assert!(!format!("{provider:?}").contains("super-secret"));
    }

    #[test]
    fn a_proxy_in_the_environment_keeps_calls_with_reqwest() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert!(!proxy_named("https", env(&[])));
        assert!(proxy_named(
            "https",
            env(&[("HTTPS_PROXY", "http://proxy:3128")])
        ));
        assert!(proxy_named(
            "https",
            env(&[("all_proxy", "socks5://proxy:1080")])
        ));
        assert!(proxy_named(
            "http",
            env(&[("http_proxy", "http://proxy:3128")])
        ));
        // Another scheme's proxy, or an empty value, is no proxy for this one.
        assert!(!proxy_named(
            "https",
            env(&[("HTTP_PROXY", "http://proxy:3128")])
        ));
        assert!(!proxy_named("https", env(&[("HTTPS_PROXY", "")])));
    }

    #[test]
    fn the_shared_tls_configuration_offers_http2_first() {
        let tls = upstream_tls().unwrap();
        // Set by hand: a preconfigured client takes the configuration as it is, and without
        // ALPN a TLS upstream would be spoken to in HTTP/1.1, a connection per call.
        assert_eq!(
            tls.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(tls.enable_sni);
    }

    fn parse(body: Value) -> Result<GeneratedImage, ProviderError> {
        parse_success(body.to_string().as_bytes())
    }

    #[test]
    fn parsing_is_lenient_and_takes_the_last_real_image() {
        let first = general_purpose::STANDARD.encode(b"first");
        let last = general_purpose::STANDARD_NO_PAD.encode(b"last!");
        let image = parse(json!({
            "candidates": [{
                "content": {"parts": [
                    {"text": "here you go"},
                    {"inline_data": {"mime_type": "image/jpeg", "data": first}},
                    {"inlineData": {"mimeType": "image/webp", "data": last}, "thoughtSignature": "x"},
                    {"inlineData": {"mimeType": "image/png", "data": "dGhvdWdodA=="}, "thought": true},
                    {"inlineData": {"mimeType": "application/pdf", "data": "cGRm"}},
                ]},
                "finishReason": "SOMETHING_NEW_IN_2027",
                "safetyRatings": null,
            }],
            "newTopLevelField": {"a": 1},
        }))
        .unwrap();
        assert_eq!(&image.bytes[..], b"last!");
        assert_eq!(image.mime_type, "image/webp");
    }

    #[test]
    fn image_data_with_json_escapes_is_read_like_plain_data() {
        // `/` may be sent as `\/` (a JSON escape some proxies use): the image data is then not
        // borrowed from the body but unescaped into a copy, with the same bytes.
        let bytes: Vec<u8> = (0..=255u8).collect();
        let plain = general_purpose::STANDARD.encode(&bytes);
        assert!(plain.contains('/'));
        let escaped = plain.replace('/', "\\/");
        let body = format!(
            r#"{{"candidates":[{{"content":{{"parts":[{{"inlineData":{{"mimeType":"image/png","data":"{escaped}"}}}}]}}}}]}}"#
        );
        let image = parse_success(body.as_bytes()).unwrap();
        assert_eq!(&image.bytes[..], &bytes[..]);
    }

    #[test]
    fn answers_without_images_are_classified() {
        let refused = |body: Value| match parse(body) {
            Err(ProviderError::Refused(message)) => message,
            other => panic!("{other:?}"),
        };
        let no_image = |body: Value| match parse(body) {
            Err(ProviderError::NoImage(message)) => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refused(
                json!({"promptFeedback": {"blockReason": "SAFETY", "blockReasonMessage": "Prompt was blocked due to safety"}})
            ),
            "prompt blocked (SAFETY): Prompt was blocked due to safety"
        );
        assert_eq!(
            refused(
                json!({"candidates": [{"finishReason": "IMAGE_SAFETY", "finishMessage": "contenuto non consentito", "content": {"parts": []}}]})
            ),
            "IMAGE_SAFETY: contenuto non consentito"
        );
        assert_eq!(
            refused(json!({"candidates": [{"finishReason": "IMAGE_PROHIBITED_CONTENT"}]})),
            "IMAGE_PROHIBITED_CONTENT"
        );
        assert_eq!(
            refused(json!({"candidates": [{"finishReason": "IMAGE_RECITATION"}]})),
            "IMAGE_RECITATION"
        );
        assert_eq!(
            no_image(
                json!({"candidates": [{"finishReason": "NO_IMAGE", "content": {"parts": [{"text": "Nö"}]}}]})
            ),
            "finish reason NO_IMAGE: Nö"
        );
        assert_eq!(
            no_image(json!({"candidates": [{"finishReason": "IMAGE_OTHER"}]})),
            "finish reason IMAGE_OTHER"
        );
        assert_eq!(
            no_image(json!({"candidates": [{"content": {"parts": [
                {"text": "thinking hard", "thought": true},
                {"inlineData": {"mimeType": "image/png", "data": "dGhvdWdodA=="}, "thought": true},
                {"text": "a description instead"},
            ]}, "finishReason": "STOP"}]})),
            "the model answered with text only: a description instead"
        );
        assert_eq!(
            no_image(json!({"candidates": [], "usageMetadata": {}})),
            "the answer has no candidates"
        );
        assert_eq!(
            no_image(json!({"candidates": [{"finishReason": "MAX_TOKENS"}]})),
            "finish reason MAX_TOKENS"
        );
        for garbage in [&b"<html>oops</html>"[..], b"[]", b"\"text\"", b""] {
            assert!(
                matches!(
                    parse_success(garbage),
                    Err(ProviderError::InvalidResponse(_))
                ),
                "{garbage:?}"
            );
        }
        let empty = parse(json!({"candidates": [{"content": {"parts": [
            {"inlineData": {"mimeType": "image/png", "data": ""}}
        ]}}]}));
        assert!(matches!(empty, Err(ProviderError::InvalidResponse(_))));
    }

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
