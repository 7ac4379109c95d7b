//! The original Nano Banana Images API (or another server of this contract, ours included) as an
//! upstream, so an operator can front the hosted service with local accounts, credits and
//! storage. One image is one task there: `POST /nano-banana/images` with `async: true` and
//! `count: 1` under our token at that service, then `POST /nano-banana/tasks` polled until the
//! task ends, then its `image_url` downloaded.
//!
//! What may be sent again: a submission that surely never reached the service, or that it
//! answered 429 or 5xx (no task was made), or a task of its that failed with `api_error` (not
//! billed there). Once a task exists there, it is only ever polled: a poll that fails is tried
//! again until the call's timeout, and a call that times out with a task outstanding is final
//! (`sent`), since resubmitting could make and bill a second image.
//!
//! Imports `domain` only; the HTTP client is reqwest.

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};

use super::{GeneratedImage, ImageJob, ImageProvider, ProviderError};

/// The largest image downloaded from the service.
const MAX_IMAGE_BYTES: usize = 64 * 1024 * 1024;
/// How much of an error body a message quotes.
const EXCERPT: usize = 300;

#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// The service's base URL (its routes are appended: `/nano-banana/images`).
    pub base_url: String,
    /// Our token at that service.
    pub token: String,
    /// Between two polls of a task.
    pub poll_interval: Duration,
    /// The whole call: submission, polling, download.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

pub struct OriginProvider {
    config: OriginConfig,
    http: reqwest::Client,
}

impl OriginProvider {
    pub fn new(config: OriginConfig) -> Result<OriginProvider, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("nano-banana/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(OriginProvider {
            config: OriginConfig {
                base_url: config.base_url.trim_end_matches('/').to_owned(),
                ..config
            },
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url)
    }

    /// The request body for one image of `job`.
    fn body(job: &ImageJob) -> Value {
        let mut body = json!({
            "prompt": job.prompt,
            "model": job.upstream_model,
            "count": 1,
            "async": true,
        });
        if let Some(ratio) = job.aspect_ratio {
            body["aspect_ratio"] = ratio.as_str().into();
        }
        if let Some(resolution) = job.image_size {
            body["resolution"] = resolution.as_str().into();
        }
        if job.inputs.is_empty() {
            body["action"] = "generate".into();
        } else {
            body["action"] = "edit".into();
            let uris: Vec<String> = job
                .inputs
                .iter()
                .map(|input| {
                    format!(
                        "data:{};base64,{}",
                        input.mime_type,
                        base64::engine::general_purpose::STANDARD.encode(&input.bytes)
                    )
                })
                .collect();
            body["image_urls"] = uris.into();
        }
        body
    }

    /// Submits the task; its id at the service.
    async fn submit(&self, job: &ImageJob, deadline: Instant) -> Result<String, ProviderError> {
        let request = self
            .http
            .post(self.url("/nano-banana/images"))
            .bearer_auth(&self.config.token)
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .json(&Self::body(job))
            .timeout(deadline.saturating_duration_since(Instant::now()));
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == 200
            && let Some(id) = body["task_id"].as_str()
        {
            return Ok(id.to_owned());
        }
        // No task was made there: the contract's error, with the HTTP status it came with.
        Err(contract_error(status, &body, retry_after))
    }

    /// Polls the task until it ends; its final body.
    async fn wait(&self, task_id: &str, deadline: Instant) -> Result<Value, ProviderError> {
        loop {
            let poll = self
                .http
                .post(self.url("/nano-banana/tasks"))
                .bearer_auth(&self.config.token)
                .json(&json!({"action": "retrieve", "id": task_id}))
                .timeout(
                    deadline
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_secs(30)),
                )
                .send()
                .await;
            match poll {
                Ok(response) if response.status().is_success() => {
                    let record: Value = response.json().await.unwrap_or(Value::Null);
                    match record["state"].as_str() {
                        Some("succeeded" | "failed") => return Ok(record["response"].clone()),
                        Some(_) => {}
                        None if record.as_object().is_some_and(|o| o.is_empty()) => {
                            return Err(ProviderError::InvalidResponse(format!(
                                "the service does not know its task {task_id}"
                            )));
                        }
                        None => {}
                    }
                }
                // The task lives on there: a failed poll is tried again, never resubmitted.
                Ok(response) => tracing::warn!(
                    status = response.status().as_u16(),
                    task_id,
                    "polling the origin's task failed; polling again"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, task_id, "polling the origin's task failed; polling again")
                }
            }
            if Instant::now() + self.config.poll_interval >= deadline {
                return Err(ProviderError::Transport {
                    message: format!("the service's task {task_id} did not end in time"),
                    sent: true,
                });
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }

    async fn download(
        &self,
        url: &str,
        deadline: Instant,
    ) -> Result<GeneratedImage, ProviderError> {
        let unreadable = |message: String| ProviderError::Transport {
            message,
            sent: true,
        };
        let mut response = self
            .http
            .get(url)
            .timeout(deadline.saturating_duration_since(Instant::now()))
            .send()
            .await
            .map_err(|e| unreadable(format!("downloading its image failed: {e}")))?;
        if !response.status().is_success() {
            return Err(unreadable(format!(
                "its image answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let declared = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unreadable(format!("downloading its image failed: {e}")))?
        {
            if bytes.len() + chunk.len() > MAX_IMAGE_BYTES {
                return Err(ProviderError::InvalidResponse(
                    "its image is larger than 64 MB".into(),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        let mime_type = match declared {
            Some(mime) if mime.starts_with("image/") => mime,
            _ => image::guess_format(&bytes)
                .map(|f| f.to_mime_type().to_owned())
                .map_err(|_| ProviderError::InvalidResponse("its image is not an image".into()))?,
        };
        Ok(GeneratedImage {
            bytes: Bytes::from(bytes),
            mime_type,
        })
    }
}

#[async_trait::async_trait]
impl ImageProvider for OriginProvider {
    fn name(&self) -> &'static str {
        "nano-banana"
    }

    async fn generate(&self, job: &ImageJob) -> Result<GeneratedImage, ProviderError> {
        let deadline = Instant::now() + self.config.timeout;
        let task_id = self.submit(job, deadline).await?;
        let body = self.wait(&task_id, deadline).await?;
        if body["success"] != Value::Bool(true) {
            // A task that failed there: its error, as the status a sync client would have had.
            let code = body["error"]["code"].as_str().unwrap_or("api_error");
            let status = crate::api::ErrorCode::parse(code).http_status();
            return Err(contract_error(status, &body, None));
        }
        let Some(url) = body["data"][0]["image_url"].as_str() else {
            return Err(ProviderError::NoImage(format!(
                "its task {task_id} succeeded without an image"
            )));
        };
        self.download(url, deadline).await
    }
}

/// A contract error body (with the HTTP status it came with) as a provider error: `forbidden` is
/// a refusal; `too_many_requests` and `api_error` may be tried again; the rest is final.
fn contract_error(status: u16, body: &Value, retry_after: Option<Duration>) -> ProviderError {
    let code = body["error"]["code"].as_str().unwrap_or_default();
    let message = body["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let mut text = body.to_string();
            text.truncate(text.floor_char_boundary(EXCERPT));
            text
        });
    if code == "forbidden" {
        return ProviderError::Refused(message);
    }
    ProviderError::Upstream {
        status,
        message: format!("{code}: {message}"),
        retry_after,
    }
}

/// A failure to get an answer: `sent` unless the connection never carried the request.
fn transport(error: reqwest::Error) -> ProviderError {
    ProviderError::Transport {
        sent: !error.is_connect(),
        message: error.to_string(),
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AspectRatio, Resolution};
    use crate::providers::InputImage;

    fn job(inputs: Vec<InputImage>) -> ImageJob {
        ImageJob {
            prompt: "a lemon".into(),
            model: "nano-banana-pro".into(),
            upstream_model: "nano-banana-pro".into(),
            inputs,
            aspect_ratio: Some(AspectRatio::R16x9),
            image_size: Some(Resolution::R2K),
            width: 2752,
            height: 1536,
        }
    }

    #[test]
    fn one_image_is_one_async_task_there() {
        assert_eq!(
            OriginProvider::body(&job(vec![])),
            json!({"action": "generate", "prompt": "a lemon", "model": "nano-banana-pro",
                   "count": 1, "async": true, "aspect_ratio": "16:9", "resolution": "2K"})
        );
        let input = InputImage {
            bytes: Bytes::from_static(b"png!"),
            mime_type: "image/png",
            width: 1,
            height: 1,
        };
        let body = OriginProvider::body(&job(vec![input]));
        assert_eq!(body["action"], "edit");
        assert_eq!(
            body["image_urls"],
            json!(["data:image/png;base64,cG5nIQ=="])
        );
    }

    #[test]
    fn its_errors_map_to_what_may_be_tried_again() {
        let body = |code: &str| json!({"success": false, "error": {"code": code, "message": "m"}});
        assert!(matches!(
            contract_error(403, &body("forbidden"), None),
            ProviderError::Refused(_)
        ));
        let limited = contract_error(
            429,
            &body("too_many_requests"),
            Some(Duration::from_secs(7)),
        );
        assert!(limited.is_retryable());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));
        assert!(contract_error(500, &body("api_error"), None).is_retryable());
        assert!(!contract_error(403, &body("used_up"), None).is_retryable());
        assert!(!contract_error(401, &body("invalid_token"), None).is_retryable());
        assert!(!contract_error(400, &body("bad_request"), None).is_retryable());
    }
}
