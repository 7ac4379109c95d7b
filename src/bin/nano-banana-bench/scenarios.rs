//! Scenarios S1–S6 (described, with their targets, in BENCHMARKS.md). Each starts its own fake upstream (with that scenario's latency
//! and image size) and its own server on a fresh database, measures the same load sent to the
//! fake directly (or to a static file server, S6) and through the server, and records the
//! targets as met or missed.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use nano_banana_testkit::{Behaviour, CallbackReceiver, ChildProcess, Usage};
use serde_json::{Value, json};

use super::{
    Scale,
    load::{Outcome, Plan, Stop, drive},
    procs::{self, Binaries, FakeSpec, ServerSpec, TOKEN, WorkDir},
    report::{Report, Row},
};

const PROMPT: &str = "a nano banana on a plate";
/// The upstream model of the default `nano-banana` model: "direct" generate calls go to it too.
const UPSTREAM_MODEL: &str = "gemini-2.5-flash-image";
/// Edits with four inputs need a model that takes more than three (2.5 Flash Image does not):
/// `nano-banana-pro`, whose upstream model this is.
const EDIT_MODEL: &str = "nano-banana-pro";
const EDIT_UPSTREAM_MODEL: &str = "gemini-3-pro-image";
/// The server's default number of workers.
const DEFAULT_WORKERS: usize = 64;
/// File descriptors the server needs besides its connections (database, log, listeners, …).
const FD_RESERVE: usize = 512;

pub(super) struct Bench {
    pub bins: Binaries,
    pub scale: Scale,
    pub open_files: u64,
    pub report: Report,
}

impl Bench {
    /// S1: small images, instant upstream, sync generate at concurrency 1 and 64; at 64 also
    /// through OpenAI's `/v1/images/generations` with `response_format=url`.
    pub async fn s1(&mut self, work: &WorkDir) -> anyhow::Result<()> {
        let fake = self.fake("none", self.scale.small_image, work, "s1")?;
        let direct = Endpoint::gemini(&fake, generate_content(), 64);
        let d1 = self.phase("S1", "direct", 1, &fake, None, &direct).await?;
        let d64 = self.phase("S1", "direct", 64, &fake, None, &direct).await?;
        let server = self
            .server(&fake, ServerSpec::workers(DEFAULT_WORKERS), work, "s1")
            .await?;
        let through = Endpoint::images(&server, generate_body(), 64);
        let s1 = self
            .phase("S1", "server", 1, &server, Some(&fake), &through)
            .await?;
        let s64 = self
            .phase("S1", "server", 64, &server, Some(&fake), &through)
            .await?;
        // The same generations in OpenAI's dialect, answered with our hosted URLs: what the
        // dialect layer (its parsing, its answer's shape) adds per request, on the same server.
        let openai = Endpoint::openai(&server, openai_generate_body(), 64);
        let v64 = self
            .phase("S1", "server /v1", 64, &server, Some(&fake), &openai)
            .await?;
        if let (Some(native), Some(dialect)) = (cpu_per_request(&s64), cpu_per_request(&v64)) {
            let ratio = dialect / native;
            self.report.verdict(
                "S1",
                "CPU per request, /v1/images/generations (url) vs /nano-banana/images, concurrency 64",
                format!(
                    "{:.0} % ({:.3} vs {:.3} ms)",
                    ratio * 100.0,
                    dialect * 1000.0,
                    native * 1000.0
                ),
                "≤ 110 %",
                Some(ratio <= 1.10),
            );
        }
        if let (Some(direct), Some(through)) = (d1.p50, s1.p50) {
            let added = through.as_secs_f64() * 1000.0 - direct.as_secs_f64() * 1000.0;
            self.report.verdict(
                "S1",
                "added p50 latency, concurrency 1",
                format!("{added:.3} ms"),
                "≤ 1 ms",
                Some(added <= 1.0),
            );
        }
        self.ratio(
            "S1",
            "throughput vs direct, concurrency 64",
            &s64,
            &d64,
            0.5,
        );
        self.report.rows.extend([d1, d64, s1, s64, v64]);
        Ok(())
    }

    /// S2: 2 MB images, instant upstream, concurrency 8.
    pub async fn s2(&mut self, work: &WorkDir) -> anyhow::Result<()> {
        let fake = self.fake("none", self.scale.s2_image, work, "s2")?;
        let direct = Endpoint::gemini(&fake, generate_content(), 8);
        let d8 = self.phase("S2", "direct", 8, &fake, None, &direct).await?;
        let server = self
            .server(&fake, ServerSpec::workers(DEFAULT_WORKERS), work, "s2")
            .await?;
        let through = Endpoint::images(&server, generate_body(), 8);
        let s8 = self
            .phase("S2", "server", 8, &server, Some(&fake), &through)
            .await?;
        self.ratio("S2", "throughput vs direct, concurrency 8", &s8, &d8, 0.9);
        self.report.rows.extend([d8, s8]);
        Ok(())
    }

    /// S3: many concurrent sync requests waiting on a slow upstream.
    pub async fn s3(&mut self, work: &WorkDir) -> anyhow::Result<()> {
        let n = self.scale.s3_requests;
        let limit = usize::try_from(self.open_files).unwrap_or(usize::MAX);
        if limit < n + FD_RESERVE {
            bail!(
                "S3 needs {} open files in this process but RLIMIT_NOFILE is {limit}: raise the \
                 limit (ulimit -n) or lower --s3-requests",
                n + FD_RESERVE
            );
        }
        // The server holds one connection per waiting client; its upstream calls share
        // cleartext HTTP/2 connections, 100 calls each (as they would share TLS ones with
        // Google), so every request gets a worker.
        let spec = ServerSpec {
            workers: n,
            upstream_h2c: true,
        };
        let fake = self.fake(self.scale.s3_latency, 0, work, "s3")?;
        let plan = Plan {
            concurrency: n,
            stop: Stop::Requests(n),
            ramp: if self.scale.quick {
                Duration::ZERO
            } else {
                Duration::from_secs(2)
            },
        };
        // Each endpoint's client keeps its connections open until it is dropped: the direct
        // phase's 10,000 must be closed before the server phase opens 10,000 more.
        let d = {
            let direct = Endpoint::gemini(&fake, generate_content(), n);
            self.measure("S3", "direct", plan, &fake, None, &direct)
                .await?
        };
        let server = self.server(&fake, spec, work, "s3").await?;
        let through = Endpoint::images(&server, generate_body(), n);
        let s = self
            .measure("S3", "server", plan, &server, Some(&fake), &through)
            .await?;
        self.report.verdict(
            "S3",
            format!("{n} concurrent sync requests succeed"),
            format!("{} of {n}", s.ok),
            "all",
            Some(s.ok == n && s.errors == 0),
        );
        let rss_mb = s.peak_rss_bytes as f64 / (1024.0 * 1024.0);
        self.report.verdict(
            "S3",
            "server peak RSS",
            format!("{rss_mb:.0} MB"),
            "≤ 300 MB",
            Some(rss_mb <= 300.0),
        );
        self.report.rows.extend([d, s]);
        Ok(())
    }

    /// S4: async requests with callbacks: accepted, completed and delivered per second.
    pub async fn s4(&mut self, work: &WorkDir) -> anyhow::Result<()> {
        let n = self.scale.s4_tasks;
        let concurrency = 64;
        let fake = self.fake("none", self.scale.small_image, work, "s4")?;
        let direct = Endpoint::gemini(&fake, generate_content(), concurrency);
        let d = self
            .phase("S4", "direct", concurrency, &fake, None, &direct)
            .await?;
        // Thousands of callbacks: keep the tally (first arrival per task), not every post.
        let receiver = CallbackReceiver::start(Behaviour {
            tally_only: true,
            ..Behaviour::default()
        })
        .await
        .context("binding the callback receiver")?;
        let server = self
            .server(&fake, ServerSpec::workers(DEFAULT_WORKERS), work, "s4")
            .await?;
        let accepted = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let body = json!({"prompt": PROMPT, "callback_url": receiver.url()});
        let mut submit = Endpoint::images(&server, body, concurrency);
        submit.check = Check::Accepted(accepted.clone());

        let before = Snapshot::take(&server, Some(&fake))?;
        let started = Instant::now();
        let plan = Plan {
            concurrency,
            stop: Stop::Requests(n),
            ramp: Duration::ZERO,
        };
        let outcome = drive(plan, submit.caller()).await;
        let mut accept = Row::from_outcome("S4 accept", "server", concurrency, &outcome);
        Snapshot::take(&server, Some(&fake))?.fill(&before, &mut accept);

        let expected = outcome.ok;
        let deadline = started + Duration::from_secs(60) + Duration::from_millis(n as u64 * 20);
        while receiver.delivered() < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let deliveries = receiver.deliveries();
        let delivered = deliveries.first.len();
        let last = deliveries.first.values().max().copied().unwrap_or(started);
        let delivery_elapsed = last.saturating_duration_since(started);
        let mut deliver = Row::from_outcome(
            "S4 deliver",
            "server",
            concurrency,
            &Outcome {
                ok: delivered,
                errors: expected.saturating_sub(delivered) + deliveries.failures,
                first_error: (delivered < expected)
                    .then(|| format!("{} callbacks never arrived", expected - delivered)),
                latencies: Vec::new(),
                elapsed: delivery_elapsed,
            },
        );
        Snapshot::take(&server, Some(&fake))?.fill(&before, &mut deliver);

        let ids = accepted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let completed = completion_span(&server, &ids).await?;
        let per_second = |count: usize, span: f64| {
            if span > 0.0 { count as f64 / span } else { 0.0 }
        };
        self.report.notes.push(format!(
            "S4: {expected} tasks accepted at {:.0}/s; completed at {:.0}/s (first accepted → \
             last finished, from the task records); callbacks delivered at {:.0}/s (first \
             accepted → last callback received); {} repeated deliveries",
            accept.per_second,
            per_second(expected, completed),
            per_second(delivered, delivery_elapsed.as_secs_f64()),
            deliveries.repeats,
        ));
        self.report.verdict(
            "S4",
            "tasks accepted per second (concurrency 64)",
            format!("{:.0}/s", accept.per_second),
            "≥ 1,000/s",
            Some(accept.per_second >= 1000.0),
        );
        self.report.verdict(
            "S4",
            "callbacks delivered",
            format!("{delivered} of {n}"),
            "all",
            Some(delivered == n && deliveries.failures == 0),
        );
        self.report.rows.extend([d, accept, deliver]);
        Ok(())
    }

    /// S5: edits with four large `data:` URI inputs.
    pub async fn s5(&mut self, work: &WorkDir) -> anyhow::Result<()> {
        let concurrency = if self.scale.quick { 1 } else { 4 };
        let png = tokio::task::spawn_blocking({
            let size = self.scale.s5_input;
            move || noise_png(size)
        })
        .await
        .context("making the input image")??;
        let inputs = vec![png; 4];
        let fake = self.fake("none", self.scale.small_image, work, "s5")?;
        let direct = Endpoint::gemini_model(
            &fake,
            EDIT_UPSTREAM_MODEL,
            edit_content(&inputs),
            concurrency,
        );
        let d = self
            .phase("S5", "direct", concurrency, &fake, None, &direct)
            .await?;
        let server = self
            .server(&fake, ServerSpec::workers(DEFAULT_WORKERS), work, "s5")
            .await?;
        let through = Endpoint::images(&server, edit_body(&inputs), concurrency);
        let s = self
            .phase("S5", "server", concurrency, &server, Some(&fake), &through)
            .await?;
        self.ratio("S5", "throughput vs direct (no target)", &s, &d, 0.0);
        self.report.rows.extend([d, s]);
        Ok(())
    }

    /// S6: GET of a stored image, next to a plain static file server serving the same file.
    pub async fn s6(&mut self, work: &WorkDir) -> anyhow::Result<()> {
        let concurrency = 16;
        let fake = self.fake("none", self.scale.s6_image, work, "s6")?;
        let server = self
            .server(&fake, ServerSpec::workers(DEFAULT_WORKERS), work, "s6")
            .await?;
        let image_url = generate_one(&server).await?;
        let key = image_url
            .rsplit_once("/images/")
            .map(|(_, key)| key.to_owned())
            .context("the image URL has no /images/ key")?;
        let file = work.path().join("s6-data").join("images").join(&key);
        let size = std::fs::metadata(&file)
            .with_context(|| format!("the stored image {}", file.display()))?
            .len();
        let plain = procs::start_static(&self.bins, &file, work, "s6")?;

        let mut from_static = Endpoint::get(&format!("{}/image", plain.base_url), concurrency);
        from_static.check = Check::Length(size);
        let st = self
            .phase("S6", "static", concurrency, &plain, None, &from_static)
            .await?;
        let mut from_server = Endpoint::get(&image_url, concurrency);
        from_server.check = Check::Length(size);
        let s = self
            .phase("S6", "server", concurrency, &server, None, &from_server)
            .await?;
        self.ratio(
            "S6",
            &format!(
                "GET {} KB image vs static server, concurrency {concurrency}",
                size / 1000
            ),
            &s,
            &st,
            0.5,
        );
        self.report.rows.extend([st, s]);
        Ok(())
    }

    // ---- helpers ------------------------------------------------------------------------

    fn fake(
        &self,
        latency: &str,
        image_bytes: usize,
        work: &WorkDir,
        label: &str,
    ) -> anyhow::Result<ChildProcess> {
        let spec = FakeSpec {
            latency: latency.to_owned(),
            image_bytes,
        };
        procs::start_fake(&self.bins, &spec, work, label)
    }

    async fn server(
        &self,
        fake: &ChildProcess,
        spec: ServerSpec,
        work: &WorkDir,
        label: &str,
    ) -> anyhow::Result<ChildProcess> {
        let mut server = procs::start_server(&self.bins, &spec, fake, work, label)?;
        server.wait_healthy("/healthz").await?;
        Ok(server)
    }

    /// A timed phase of S1, S2, S4, S5, S6: warm up, then the scale's duration (or, in quick
    /// runs, a handful of requests).
    async fn phase(
        &self,
        scenario: &'static str,
        via: &'static str,
        concurrency: usize,
        answering: &ChildProcess,
        upstream: Option<&ChildProcess>,
        endpoint: &Endpoint,
    ) -> anyhow::Result<Row> {
        if !self.scale.warmup.is_zero() {
            let warmup = Plan {
                concurrency,
                stop: Stop::After(self.scale.warmup),
                ramp: Duration::ZERO,
            };
            drive(warmup, endpoint.caller()).await;
        }
        let stop = if self.scale.quick {
            Stop::Requests(self.scale.quick_requests)
        } else {
            Stop::After(self.scale.duration)
        };
        let plan = Plan {
            concurrency,
            stop,
            ramp: Duration::ZERO,
        };
        self.measure(scenario, via, plan, answering, upstream, endpoint)
            .await
    }

    async fn measure(
        &self,
        scenario: &'static str,
        via: &'static str,
        plan: Plan,
        answering: &ChildProcess,
        upstream: Option<&ChildProcess>,
        endpoint: &Endpoint,
    ) -> anyhow::Result<Row> {
        eprintln!("  {scenario} {via} × {}", plan.concurrency);
        let before = Snapshot::take(answering, upstream)?;
        let outcome = drive(plan, endpoint.caller()).await;
        let mut row = Row::from_outcome(scenario, via, plan.concurrency, &outcome);
        Snapshot::take(answering, upstream)?.fill(&before, &mut row);
        Ok(row)
    }

    fn ratio(
        &mut self,
        scenario: &'static str,
        measure: &str,
        through: &Row,
        reference: &Row,
        target: f64,
    ) {
        let ratio = if reference.per_second > 0.0 {
            through.per_second / reference.per_second
        } else {
            0.0
        };
        let wanted = if target > 0.0 {
            format!("≥ {:.0} %", target * 100.0)
        } else {
            "–".to_owned()
        };
        self.report.verdict(
            scenario,
            measure,
            format!(
                "{:.0} % ({:.1} vs {:.1} req/s)",
                ratio * 100.0,
                through.per_second,
                reference.per_second
            ),
            wanted,
            (target > 0.0).then_some(ratio >= target),
        );
    }
}

/// Usage of the processes of a phase, taken before and after it.
struct Snapshot {
    answering: Usage,
    upstream: Option<Usage>,
    client: Usage,
}

impl Snapshot {
    fn take(answering: &ChildProcess, upstream: Option<&ChildProcess>) -> anyhow::Result<Snapshot> {
        Ok(Snapshot {
            answering: answering.usage()?,
            upstream: upstream.map(ChildProcess::usage).transpose()?,
            client: Usage::of_self()?,
        })
    }

    /// Fills `row` with what happened since `before`.
    fn fill(&self, before: &Snapshot, row: &mut Row) {
        row.peak_rss_bytes = self.answering.peak_rss_bytes;
        row.cpu = self.answering.cpu.saturating_sub(before.answering.cpu);
        row.upstream_cpu = self
            .upstream
            .zip(before.upstream)
            .map(|(after, before)| after.cpu.saturating_sub(before.cpu));
        row.client_cpu = self.client.cpu.saturating_sub(before.client.cpu);
    }
}

/// One kind of request of the load generator, and what its answer must be.
#[derive(Clone)]
struct Endpoint {
    client: reqwest::Client,
    url: Arc<str>,
    headers: reqwest::header::HeaderMap,
    /// `None`: a GET.
    body: Option<Bytes>,
    check: Check,
}

#[derive(Clone)]
enum Check {
    /// Any 2xx.
    Status,
    /// The contract's success body with at least one image.
    Images,
    /// OpenAI's images answer with at least one hosted `url`.
    OpenAiUrls,
    /// The contract's accepted body; its task id is kept.
    Accepted(Arc<Mutex<Vec<String>>>),
    /// A body of exactly this many bytes.
    Length(u64),
}

impl Endpoint {
    fn new(url: &str, body: Option<Value>, concurrency: usize) -> Endpoint {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            // Long enough for S3's second upstream round and a slow debug build.
            .timeout(Duration::from_secs(600))
            .build()
            .unwrap_or_default();
        Endpoint {
            client,
            url: url.into(),
            headers: reqwest::header::HeaderMap::new(),
            body: body.map(|b| Bytes::from(b.to_string())),
            check: Check::Status,
        }
    }

    /// `POST /v1beta/models/{model}:generateContent` of the fake upstream.
    fn gemini(fake: &ChildProcess, body: Value, concurrency: usize) -> Endpoint {
        Endpoint::gemini_model(fake, UPSTREAM_MODEL, body, concurrency)
    }

    fn gemini_model(fake: &ChildProcess, model: &str, body: Value, concurrency: usize) -> Endpoint {
        let url = format!("{}/v1beta/models/{model}:generateContent", fake.base_url);
        let mut endpoint = Endpoint::new(&url, Some(body), concurrency);
        endpoint.header("x-goog-api-key", "fake");
        endpoint.header("content-type", "application/json");
        endpoint
    }

    /// `POST /nano-banana/images` of the server.
    fn images(server: &ChildProcess, body: Value, concurrency: usize) -> Endpoint {
        let url = format!("{}/nano-banana/images", server.base_url);
        let mut endpoint = Endpoint::new(&url, Some(body), concurrency);
        endpoint.header("authorization", &format!("Bearer {TOKEN}"));
        endpoint.header("content-type", "application/json");
        endpoint.check = Check::Images;
        endpoint
    }

    /// `POST /v1/images/generations` of the server (OpenAI's images API).
    fn openai(server: &ChildProcess, body: Value, concurrency: usize) -> Endpoint {
        let url = format!("{}/v1/images/generations", server.base_url);
        let mut endpoint = Endpoint::new(&url, Some(body), concurrency);
        endpoint.header("authorization", &format!("Bearer {TOKEN}"));
        endpoint.header("content-type", "application/json");
        endpoint.check = Check::OpenAiUrls;
        endpoint
    }

    fn get(url: &str, concurrency: usize) -> Endpoint {
        Endpoint::new(url, None, concurrency)
    }

    fn header(&mut self, name: &'static str, value: &str) {
        if let Ok(value) = reqwest::header::HeaderValue::from_str(value) {
            self.headers.insert(name, value);
        }
    }

    fn caller(
        &self,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
    + Send
    + Sync
    + 'static {
        let endpoint = self.clone();
        move || Box::pin(endpoint.clone().send())
    }

    async fn send(self) -> Result<(), String> {
        let request = match &self.body {
            Some(body) => self.client.post(&*self.url).body(body.clone()),
            None => self.client.get(&*self.url),
        };
        let answer = request
            .headers(self.headers.clone())
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = answer.status();
        let body = answer.bytes().await.map_err(|e| error_chain(&e))?;
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", excerpt(&body)));
        }
        match &self.check {
            Check::Status => Ok(()),
            Check::Length(expected) if body.len() as u64 == *expected => Ok(()),
            Check::Length(expected) => Err(format!("{} bytes instead of {expected}", body.len())),
            Check::Images => {
                let parsed: Value = serde_json::from_slice(&body).unwrap_or_default();
                let images = parsed["data"].as_array().map_or(0, Vec::len);
                if parsed["success"] == true && images > 0 {
                    Ok(())
                } else {
                    Err(format!("not a success with images: {}", excerpt(&body)))
                }
            }
            Check::OpenAiUrls => {
                let parsed: Value = serde_json::from_slice(&body).unwrap_or_default();
                if parsed["data"][0]["url"].is_string() {
                    Ok(())
                } else {
                    Err(format!(
                        "not an images answer with URLs: {}",
                        excerpt(&body)
                    ))
                }
            }
            Check::Accepted(ids) => {
                let parsed: Value = serde_json::from_slice(&body).unwrap_or_default();
                match parsed["task_id"].as_str() {
                    Some(id) if parsed["success"] == true => {
                        ids.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(id.to_owned());
                        Ok(())
                    }
                    _ => Err(format!("not an accepted task: {}", excerpt(&body))),
                }
            }
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

/// The contract's sync generate request.
fn generate_body() -> Value {
    json!({"action": "generate", "prompt": PROMPT})
}

/// OpenAI's generate request for the same image, answered with a hosted URL.
fn openai_generate_body() -> Value {
    json!({"model": "nano-banana", "prompt": PROMPT, "response_format": "url"})
}

/// The answering process's CPU time per successful request of a phase, in seconds.
fn cpu_per_request(row: &Row) -> Option<f64> {
    (row.ok > 0).then(|| row.cpu.as_secs_f64() / row.ok as f64)
}

/// The contract's sync edit request with `data:` URI inputs.
fn edit_body(inputs: &[Vec<u8>]) -> Value {
    let urls: Vec<String> = inputs
        .iter()
        .map(|png| format!("data:image/png;base64,{}", BASE64.encode(png)))
        .collect();
    json!({"action": "edit", "model": EDIT_MODEL, "prompt": PROMPT, "image_urls": urls})
}

/// The Gemini request the server sends for a generate job (`providers/gemini.rs`).
fn generate_content() -> Value {
    json!({
        "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]},
    })
}

/// The Gemini request the server sends for an edit job with these inputs on `EDIT_MODEL`
/// (a Gemini 3 model, so it carries `imageSize`).
fn edit_content(inputs: &[Vec<u8>]) -> Value {
    let mut parts = vec![json!({"text": PROMPT})];
    parts.extend(
        inputs.iter().map(
            |png| json!({"inline_data": {"mime_type": "image/png", "data": BASE64.encode(png)}}),
        ),
    );
    json!({
        "contents": [{"role": "user", "parts": parts}],
        "generationConfig": {
            "responseModalities": ["TEXT", "IMAGE"],
            "imageConfig": {"imageSize": "1K"},
        },
    })
}

/// One sync generate through the server; returns the image URL.
async fn generate_one(server: &ChildProcess) -> anyhow::Result<String> {
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/nano-banana/images", server.base_url))
        .bearer_auth(TOKEN)
        .json(&generate_body())
        .send()
        .await
        .context("generating the image to serve")?
        .json()
        .await
        .context("reading the generate answer")?;
    answer["data"][0]["image_url"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no image URL in {answer}"))
}

/// Seconds from the first task created to the last finished, from the task records.
async fn completion_span(server: &ChildProcess, ids: &[String]) -> anyhow::Result<f64> {
    let client = reqwest::Client::new();
    let mut first_created = f64::MAX;
    let mut last_finished = f64::MIN;
    for chunk in ids.chunks(50) {
        let answer: Value = client
            .post(format!("{}/nano-banana/tasks", server.base_url))
            .bearer_auth(TOKEN)
            .json(&json!({"action": "retrieve_batch", "ids": chunk}))
            .send()
            .await
            .context("retrieving task records")?
            .json()
            .await
            .context("reading task records")?;
        for item in answer["items"].as_array().into_iter().flatten() {
            if let Some(created) = item["created_at"].as_f64() {
                first_created = first_created.min(created);
            }
            if let Some(finished) = item["finished_at"].as_f64() {
                last_finished = last_finished.max(finished);
            }
        }
    }
    Ok((last_finished - first_created).max(0.0))
}

/// A PNG of random pixels (which deflate cannot shrink) weighing about `target_bytes`.
fn noise_png(target_bytes: usize) -> anyhow::Result<Vec<u8>> {
    use image::{
        ImageEncoder as _,
        codecs::png::{CompressionType, FilterType, PngEncoder},
    };
    use rand::Rng as _;
    let side = ((target_bytes as f64 / 3.0).sqrt().ceil() as u32).max(1);
    let mut pixels = vec![0u8; side as usize * side as usize * 3];
    rand::rng().fill(&mut pixels[..]);
    let mut png = Vec::with_capacity(pixels.len() + 1024);
    PngEncoder::new_with_quality(&mut png, CompressionType::Fast, FilterType::NoFilter)
        .write_image(&pixels, side, side, image::ExtendedColorType::Rgb8)
        .context("encoding the input PNG")?;
    Ok(png)
}
