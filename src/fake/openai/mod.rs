//! A fake OpenAI images API: a real axum server on loopback that speaks
//! `POST …/images/generations` (JSON) and `POST …/images/edits` (multipart), for the tests of the
//! `openai` provider and the integration suite. Imports nothing of the crate outside `fake`.
//!
//! What lives here: the options, the scripted outcomes ([`Scenario`]: a FIFO queue first, then
//! `[fake:…]` tags in the prompt), what each request is recorded as, and the server. A request
//! is answered in `handler`, which also makes the checks OpenAI makes first: the bearer key, the
//! model, `response_format` (refused by GPT image models), the size each model takes, the quality,
//! and at least one image for an edit. Answers are `b64_json` PNGs of the size asked for
//! (`auto`: 1024×1024), or a URL on the fake (`/files/N.png`) for `Scenario::Url` and for a
//! request that asks `response_format: url`. Not here: streaming, masks' semantics, DALL·E 2's
//! square-PNG rules.
//!
//! Prompt tags (the first outcome tag wins): `[fake:success]` `[fake:url]` `[fake:moderation]`
//! `[fake:429]` `[fake:429=2s]` `[fake:quota]` `[fake:500]` `[fake:status=503]` `[fake:hang]`
//! `[fake:garbage]`.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use tokio::sync::watch;

use super::common::{Calls, PngCache, Server, lock, parse_duration, tags};

mod handler;

/// The colour of every image this fake makes (tests tell which upstream made an image by it).
pub const IMAGE_RGB: [u8; 3] = [40, 160, 170];

#[derive(Debug, Clone)]
pub struct FakeOpenAiOptions {
    /// `None`: accept any key (or none at all).
    pub api_key: Option<String>,
    /// Added before every answer in which "the model ran" (images, refusals).
    pub latency: Duration,
    /// How many of the most recent requests [`FakeOpenAi::requests`] keeps.
    pub record_limit: usize,
}

impl Default for FakeOpenAiOptions {
    fn default() -> Self {
        FakeOpenAiOptions {
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
    /// 200 whose `data[0]` is a `url` on the fake instead of `b64_json`.
    Url,
    /// 400 `image_generation_user_error` / `moderation_blocked`, as the safety system answers.
    Moderation,
    /// 429 `rate_limit_exceeded` with `retry-after-ms` and `retry-after` saying this delay.
    RateLimited {
        retry_after: Duration,
    },
    /// 429 `insufficient_quota` ("You exceeded your current quota").
    InsufficientQuota,
    /// 500 `server_error`.
    ServerError,
    /// This status with an OpenAI error body (a 2xx means success).
    Status(u16),
    /// Never answers, until the fake shuts down (then a 503).
    Hang,
    /// 200 with JSON cut short.
    Garbage,
}

fn scenario_from_prompt(prompt: &str) -> Scenario {
    tags(prompt)
        .into_iter()
        .find_map(|tag| match tag {
            "success" => Some(Scenario::Success),
            "url" => Some(Scenario::Url),
            "moderation" => Some(Scenario::Moderation),
            "429" => Some(Scenario::RateLimited {
                retry_after: Duration::from_secs(20),
            }),
            "quota" => Some(Scenario::InsufficientQuota),
            "500" => Some(Scenario::ServerError),
            "hang" => Some(Scenario::Hang),
            "garbage" => Some(Scenario::Garbage),
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

/// A file part of an edit.
#[derive(Debug, Clone)]
pub struct RecordedPart {
    /// `image[]` or `image` (or `mask`).
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

#[derive(Debug, Clone, Default)]
pub struct RecordedRequest {
    pub method: String,
    /// As received, e.g. `/v1/images/edits`.
    pub path: String,
    /// The whole `Authorization` header, e.g. `Bearer sk-…`.
    pub authorization: Option<String>,
    pub organization: Option<String>,
    pub content_type: Option<String>,
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub size: Option<String>,
    pub quality: Option<String>,
    pub response_format: Option<String>,
    pub output_format: Option<String>,
    pub n: Option<u32>,
    /// The names of the fields sent besides the files, in order (JSON keys of a generation).
    pub fields: Vec<String>,
    /// An edit's file parts, in order.
    pub files: Vec<RecordedPart>,
}

impl RecordedRequest {
    /// The parts named `image` or `image[]`.
    pub fn image_parts(&self) -> Vec<&RecordedPart> {
        self.files
            .iter()
            .filter(|p| p.name == "image" || p.name == "image[]")
            .collect()
    }
}

/// A running fake. Dropping it stops accepting connections and answers hanging requests with a
/// 503.
pub struct FakeOpenAi {
    server: Server,
    shared: Arc<Shared>,
}

impl fmt::Debug for FakeOpenAi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeOpenAi")
            .field("addr", &self.server.addr)
            .finish()
    }
}

impl FakeOpenAi {
    /// Binds `127.0.0.1:0` and serves in a tokio task.
    pub async fn start(options: FakeOpenAiOptions) -> io::Result<FakeOpenAi> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            calls: Calls::new(options.record_limit.max(1)),
            options,
            images: PngCache::new(IMAGE_RGB),
            files: Mutex::new(Vec::new()),
            origin: Mutex::new(String::new()),
            shutdown: shutdown_rx,
        });
        let router = Router::new()
            .fallback(handler::handle)
            .with_state(shared.clone());
        let server = Server::start(router, "openai", shutdown).await?;
        *lock(&shared.origin) = server.origin();
        Ok(FakeOpenAi { server, shared })
    }

    /// `http://127.0.0.1:PORT/v1`, the base URL to configure (as OpenAI's ends in `/v1`).
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.origin())
    }

    /// The most recent requests (at most `record_limit`), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.calls.requests()
    }

    /// Every HTTP request received, whatever its path or outcome (file downloads too).
    pub fn request_count(&self) -> usize {
        self.shared.calls.count()
    }

    /// Queues an outcome for a coming request; queued outcomes are taken in order by requests
    /// that pass the checks OpenAI makes first (key, model, fields, size, images).
    pub fn push_scenario(&self, scenario: Scenario) {
        self.shared.calls.push_scenario(scenario);
    }
}

struct Shared {
    options: FakeOpenAiOptions,
    calls: Calls<RecordedRequest, Scenario>,
    images: PngCache,
    /// PNGs served at `/files/N.png` for URL answers.
    files: Mutex<Vec<Bytes>>,
    /// `http://127.0.0.1:PORT`, for the URLs of URL answers.
    origin: Mutex<String>,
    shutdown: watch::Receiver<bool>,
}

#[cfg(test)]
mod tests;
