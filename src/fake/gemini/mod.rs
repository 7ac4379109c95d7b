//! A fake Gemini `generateContent` upstream: a real axum server on loopback that speaks the wire
//! format of docs/upstreams.md (Gemini request, Gemini response, Gemini errors; The fake
//! upstream), for the integration tests and the benchmark tool, over HTTP/1.1 or cleartext HTTP/2
//! (prior knowledge; Google's own endpoint negotiates HTTP/2 on TLS).
//!
//! What lives here: routing (`POST /{v1|v1beta}/models/{model}:generateContent`, and Vertex AI's
//! `POST /{v1|v1beta1}/projects/{project}/locations/{location}/publishers/google/models/
//! {model}:generateContent`), API-key checks (header or `?key=`; on Vertex paths a bearer token
//! issued by the fake token endpoint, `fake::oauth`), the per-model parameter checks Google does
//! (aspect ratios, `imageSize`, input count), scripted outcomes ([`Scenario`]: a FIFO queue
//! first, then `[fake:…]` tags in the prompt), configurable latency, and real PNGs with the
//! documented pixel sizes. What does not: streaming (`:streamGenerateContent` is a 404 here),
//! Vertex AI's express mode (API keys on Vertex paths), multi-turn chat.
//!
//! Built to be hammered: per request it parses the JSON (without copying the base64 of inputs),
//! looks up a cached PNG and splices its cached base64 into a small serialized envelope. Recorded
//! requests are bounded; bodies are recorded only when `record_bodies` is on.
//!
//! This file: the options, the scripted outcomes and the server. A request is answered in
//! `handler`, with the tables of `models`, the PNGs of `images` and the error bodies of `errors`.
//!
//! Prompt tags (first outcome tag wins; `slow=` adds to any of them):
//! `[fake:success]` `[fake:thought]` `[fake:blocked]` `[fake:image_safety]` `[fake:no_image]`
//! `[fake:text_only]` `[fake:429]` `[fake:429=30s]` `[fake:500]` `[fake:502]`/`[fake:html]`
//! `[fake:503]` `[fake:504]` `[fake:status=418]` `[fake:slow=200ms]` `[fake:hang]`
//! `[fake:garbage]` `[fake:bad_base64]`.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{OnceCell, watch};

mod errors;
mod handler;
mod images;
mod models;

use super::common::{Calls, Server, lock};
use super::oauth::IssuedTokens;
use handler::handle;
use images::{EncodedImage, ImageCache};

/// Side of the interim "thought" image, distinct from any table size so tests can tell them apart.
pub const THOUGHT_IMAGE_SIDE: u32 = 16;

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
    /// On Vertex AI paths, accept only `authorization: Bearer <token>` with a token of these
    /// (issued by a [`crate::fake::oauth::FakeTokenEndpoint`]); others get a 401
    /// UNAUTHENTICATED. `None`: accept any token (or none at all).
    pub vertex_tokens: Option<IssuedTokens>,
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
            vertex_tokens: None,
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
    /// Log-normal with the given median and 95th percentile (the profiles of docs/upstreams.md,
    /// Latency and timeouts).
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

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// As received, e.g. `/v1beta/models/gemini-3-pro-image:generateContent`, or on Vertex AI
    /// `/v1/projects/p/locations/global/publishers/google/models/gemini-3-pro-image:generateContent`.
    pub path: String,
    pub query: Option<String>,
    /// The `x-goog-api-key` header.
    pub api_key: Option<String>,
    /// The token of an `authorization: Bearer …` header.
    pub bearer: Option<String>,
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
    server: Server,
    shared: Arc<Shared>,
}

impl fmt::Debug for FakeGemini {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeGemini")
            .field("addr", &self.server.addr)
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
            calls: Calls::new(options.record_limit),
            options,
            connections: AtomicUsize::new(0),
            shutdown: shutdown_rx,
            response_seq: AtomicU64::new(0),
        });
        let router = Router::new().fallback(handle).with_state(shared.clone());
        // Without TCP_NODELAY small answers can wait for delayed ACKs (~40 ms), which would
        // dominate the benchmark's numbers.
        let counted = shared.clone();
        let listener = listener.tap_io(move |stream| {
            counted.connections.fetch_add(1, Ordering::Relaxed);
            if let Err(err) = stream.set_nodelay(true) {
                tracing::trace!("fake gemini: TCP_NODELAY failed: {err}");
            }
        });
        let server = Server::serve(listener, addr, router, "gemini", shutdown);
        Ok(FakeGemini { server, shared })
    }

    /// `http://127.0.0.1:PORT` (a wildcard bind address is reported as loopback).
    pub fn base_url(&self) -> String {
        let addr = self.server.addr;
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, addr.port()))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The most recent requests (at most `record_limit`), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.calls.requests()
    }

    /// Every HTTP request received, whatever its path or outcome.
    pub fn request_count(&self) -> usize {
        self.shared.calls.count()
    }

    /// TCP connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Queues an outcome for a coming request. Queued outcomes are taken in order by requests
    /// that pass the checks Google makes first (path, key, JSON, model, parameters), before
    /// any prompt tag is looked at.
    pub fn push_scenario(&self, scenario: Scenario) {
        self.shared.calls.push_scenario(scenario);
    }

    pub fn shutdown(self) {
        drop(self);
    }
}

struct Shared {
    options: FakeGeminiOptions,
    calls: Calls<RecordedRequest, Scenario>,
    /// TCP connections accepted.
    connections: AtomicUsize,
    images: ImageCache,
    thought_image: OnceCell<Arc<EncodedImage>>,
    shutdown: watch::Receiver<bool>,
    response_seq: AtomicU64,
}

#[cfg(test)]
mod tests;
