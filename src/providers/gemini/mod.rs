//! The Gemini `generateContent` provider: a thin HTTP client (docs/upstreams.md, Gemini request,
//! Gemini response and Gemini errors) — hyper's HTTP/2 on connections of our own when the
//! upstream speaks HTTP/2 (`direct`), reqwest otherwise.
//!
//! What lives here: the configuration, the API-key pool and its rotation, one HTTP call per job,
//! and reading the answer into a [`GeneratedImage`] or a [`ProviderError`] the caller can act on;
//! the JSON is in `wire`, the classification of failures in `errors`. What does not: retries and
//! backoff (the caller's; we only report `retry_after`), model-name mapping, fetching inputs.
//!
//! [`GeminiProvider`] is generic over its access — how a call authenticates and which URL it
//! goes to: [`AiStudio`] (the API-key pool, `{base}/{version}/models/…`) by default, or Vertex
//! AI's service-account token (`providers::vertex`). The HTTP side (TLS, lanes, direct HTTP/2
//! connections, reading and classifying the answer) is the same for both.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use reqwest::StatusCode;
use reqwest::header::{
    CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT,
};
use url::Url;

use super::direct::{self, ConnectError, SendError};
use super::lanes::{ConnectionSettings, Lanes};
use super::{GeneratedImage, ImageJob, ImageProvider, ProviderError};

mod errors;
mod wire;

use super::upstream_error::{read_capped, too_large, transport_error};
pub use errors::REFUSAL_REASONS;
use errors::{is_key_invalid, upstream_error};
use wire::parse_success;

pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";
pub const DEFAULT_API_VERSION: &str = "v1beta";
/// Pro at 4K takes 50–70 s, p95 90 s, and more with high thinking (docs/upstreams.md, Latency
/// and timeouts).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A 4K PNG is ~20–30 MB, ×4/3 in base64; anything far beyond is not an image answer.
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Error bodies are a few hundred bytes of JSON or a small HTML page.
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

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
pub(in crate::providers) fn upstream_tls() -> Result<rustls::ClientConfig, rustls::Error> {
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
pub struct GeminiProvider<A = AiStudio> {
    /// The HTTP clients, as many as the calls in flight need (see `lanes`).
    lanes: Lanes<reqwest::Client>,
    /// HTTP/2 calls on connections of our own (see `direct`), when the upstream speaks HTTP/2:
    /// `https://` (decided by the first TLS handshake) or `--upstream-h2c`, and no proxy is
    /// configured in the environment (reqwest's lanes honour it).
    direct: Option<Direct>,
    /// The whole call, sending the inputs through reading the image.
    timeout: Duration,
    max_response_bytes: usize,
    /// How a call authenticates and where it goes.
    pub(in crate::providers) access: A,
}

/// AI Studio's access: `{base}/{version}/models/{model}:generateContent` with an API key from
/// the pool in `x-goog-api-key`.
#[derive(Debug)]
pub struct AiStudio {
    /// `{base}/{version}/models`, to which `{model}:generateContent` is appended.
    models_url: Url,
    /// The key pool: `api_key` may list several keys, comma-separated.
    keys: Vec<KeySlot>,
    /// Round-robin start, so load spreads over the healthy keys.
    next_key: AtomicUsize,
}

/// The header a call authenticates with: AI Studio's `x-goog-api-key`, Vertex AI's
/// `authorization`. The value is marked sensitive.
#[derive(Clone, Copy)]
pub(in crate::providers) struct Auth<'a> {
    pub name: &'a HeaderName,
    pub value: &'a HeaderValue,
}

static API_KEY_HEADER: HeaderName = HeaderName::from_static("x-goog-api-key");

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
        let access = AiStudio {
            models_url,
            keys,
            next_key: AtomicUsize::new(0),
        };
        GeminiProvider::with_access(
            &config.base_url,
            (config.timeout, config.connect_timeout),
            config.connections,
            tls,
            access,
        )
    }

    fn endpoint(&self, upstream_model: &str) -> Url {
        // The SDK accepts both `gemini-x` and `models/gemini-x`; so do we.
        let model = upstream_model
            .strip_prefix("models/")
            .unwrap_or(upstream_model);
        let mut url = self.access.models_url.clone();
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
        let body = request_body(job)?;
        let url = self.endpoint(&job.upstream_model);
        let AiStudio { keys, next_key, .. } = &self.access;
        let count = keys.len();
        let start = next_key.fetch_add(1, Ordering::Relaxed) % count;
        let mut last_error = None;
        // The shortest wait until some key can be used again.
        let mut soonest: Option<Duration> = None;
        let mut note = |rest: Duration| soonest = Some(soonest.map_or(rest, |s| s.min(rest)));
        for offset in 0..count {
            let slot = &keys[(start + offset) % count];
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
            let auth = Auth {
                name: &API_KEY_HEADER,
                value: &slot.header,
            };
            match self.call(url.clone(), auth, &body).await {
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
}

impl<A> GeminiProvider<A> {
    /// The HTTP side, for calls to `base_url`'s scheme, host and port (which decide whether
    /// calls go on direct HTTP/2 connections), with `timeouts` (the whole call, the connect).
    pub(in crate::providers) fn with_access(
        base_url: &Url,
        (timeout, connect_timeout): (Duration, Duration),
        connections: ConnectionSettings,
        tls: rustls::ClientConfig,
        access: A,
    ) -> Result<GeminiProvider<A>, GeminiError> {
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(GeminiError::BaseUrl(base_url.to_string()));
        }
        let h2c = connections.h2c && base_url.scheme() == "http";
        let per_lane = connections.streams_per_connection;
        let direct =
            if (h2c || base_url.scheme() == "https") && !proxy_configured(base_url.scheme()) {
                let target = direct::Target::new(base_url, Arc::new(tls.clone()), connect_timeout)
                    .map_err(|_| GeminiError::BaseUrl(base_url.to_string()))?;
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
            max_response_bytes: MAX_RESPONSE_BYTES,
            access,
        })
    }

    /// One HTTP call: `body` (see [`request_body`]) to `url`, authenticated with `auth`.
    pub(in crate::providers) async fn call(
        &self,
        url: Url,
        auth: Auth<'_>,
        body: &Bytes,
    ) -> Result<GeneratedImage, ProviderError> {
        if let Some(direct) = &self.direct
            && !direct.not_h2.load(Ordering::Relaxed)
        {
            match self.call_direct(direct, &url, auth, body).await {
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
            .header(auth.name, auth.value.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, USER_AGENT_VALUE)
            .body(body.clone())
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
        auth: Auth<'_>,
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
            headers.insert(auth.name, auth.value.clone());
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

/// The JSON body of a job's call, encoded once for however many calls it takes.
pub(in crate::providers) fn request_body(job: &ImageJob) -> Result<Bytes, ProviderError> {
    wire::request_body(job)
        .map(Bytes::from)
        .map_err(|err| ProviderError::InvalidResponse(format!("request encoding: {err}")))
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

pub(in crate::providers) const USER_AGENT_VALUE: &str =
    concat!("nano-banana/", env!("CARGO_PKG_VERSION"));

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
        self.generate_with_pool(job).await
    }
}

#[cfg(test)]
mod tests;
