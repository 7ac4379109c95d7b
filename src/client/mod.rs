//! The command-line client: `generate`, `edit` and `task`, talking to any server that speaks the
//! Nano Banana Images API contract (ours or the original service), and `admin` (`admin.rs`).
//! Error codes and task states are read as `crate::api` types; bodies and records are otherwise
//! read field by field, so that a server that adds or omits a field still works.
//!
//! Each command is a thin wrapper (spinner on a terminal, printing to stdout) around a core
//! `run_*` function that returns an [`Outcome`], so tests drive the real logic against a fake
//! server without a terminal. Not here: the server side of the contract, argument dispatch
//! (`main.rs`), error printing (the binary prints the returned error as `error: {err:#}`).
//! Imports `api` (and, for `admin`, `accounts`, `storage` and `config`); never `http` or `tasks`.

pub mod admin;
mod api;
mod input;
mod output;
#[cfg(test)]
mod tests;

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};

use api::Api;
use output::Target;

use crate::api::{ErrorCode, TaskState};

/// Connection settings shared by every client command.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientOptions {
    /// Server base URL
    #[arg(
        long,
        env = "NANO_BANANA_BASE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub base_url: String,
    /// Bearer token
    #[arg(long, env = "NANO_BANANA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the raw JSON response instead of a summary; images are then not downloaded
    #[arg(long)]
    pub json: bool,
    /// Give up waiting after this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub timeout: u64,
}

/// Options of an image request. Only the ones given are sent, so the server's defaults apply.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ImageOptions {
    /// Model, e.g. nano-banana, nano-banana-2, nano-banana-pro (server default: nano-banana)
    #[arg(long)]
    pub model: Option<String>,
    /// Aspect ratio: 1:1 3:2 2:3 16:9 9:16 4:3 3:4 (server default: 1:1; for edit, the first
    /// image's)
    #[arg(long, value_name = "RATIO")]
    pub aspect_ratio: Option<String>,
    /// Resolution: 1K 2K 4K (server default: 1K)
    #[arg(long)]
    pub resolution: Option<String>,
    /// Number of images, 1-4 (server default: 1)
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub count: Option<u8>,
    /// Return at once with the task id; fetch the result later with `task ID --wait`
    #[arg(long = "async")]
    pub asynchronous: bool,
    /// URL the server POSTs the final result to; the command returns at once with the task id
    #[arg(long, value_name = "URL")]
    pub callback_url: Option<String>,
    /// Save to FILE (several images: FILE-1.png, FILE-2.png, …) or into DIR (an existing
    /// directory or a path ending in /) as <task_id>-<n>.<ext> [default: current directory]
    #[arg(short, long, value_name = "FILE|DIR")]
    pub output: Option<PathBuf>,
}

/// `generate`: create images from a prompt.
#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    /// What to draw
    pub prompt: String,
    #[command(flatten)]
    pub options: ImageOptions,
    #[command(flatten)]
    pub client: ClientOptions,
}

/// `edit`: change or combine existing images following a prompt.
#[derive(clap::Args, Debug, Clone)]
pub struct EditArgs {
    /// What to change
    pub prompt: String,
    /// Input image: an http(s) URL, a data: URI, or a local PNG/JPEG/WebP/GIF/HEIC file
    /// (repeat for several)
    #[arg(
        short = 'i',
        long = "image",
        value_name = "FILE_OR_URL",
        required = true
    )]
    pub images: Vec<String>,
    #[command(flatten)]
    pub options: ImageOptions,
    #[command(flatten)]
    pub client: ClientOptions,
}

/// `task`: show a task, or wait for it and save its images.
#[derive(clap::Args, Debug, Clone)]
pub struct TaskArgs {
    /// Task id, as printed by `generate --async`
    pub id: String,
    /// Poll until the task has finished, then save its images like `generate`
    #[arg(long)]
    pub wait: bool,
    /// With --wait: where to save, as for `generate`
    #[arg(short, long, value_name = "FILE|DIR")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientOptions,
}

/// Everything a client command can fail with; the message is what the user reads.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no token: pass --token or set NANO_BANANA_TOKEN")]
    MissingToken,
    #[error("invalid --base-url {url:?}: {reason}")]
    BadBaseUrl { url: String, reason: String },
    /// The server answered with the contract's error body; `status` is `None` when the body came
    /// from a finished task record rather than an HTTP response.
    #[error("{code}: {message}{}", trace_suffix(trace_id))]
    Api {
        status: Option<u16>,
        /// One of the contract's codes, or `Other` with what another server sent.
        code: ErrorCode,
        message: String,
        trace_id: Option<String>,
    },
    /// Not the contract: a proxy's error page, an empty body, or JSON of another shape.
    #[error("server answered HTTP {status} with an unexpected body: {excerpt}")]
    UnexpectedResponse { status: u16, excerpt: String },
    #[error("request to {url} failed")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("gave up after {secs}s (see --timeout)")]
    Timeout { secs: u64 },
    #[error(
        "gave up waiting for task {id} after {secs}s (see --timeout); check again with `nano-banana task {id} --wait`"
    )]
    WaitTimeout { id: String, secs: u64 },
    #[error("task not found: {id}")]
    TaskNotFound { id: String },
    #[error("{}: not a PNG, JPEG, WebP, GIF or HEIC/HEIF image", path.display())]
    UnknownImageType { path: PathBuf },
    #[error("cannot read {}", path.display())]
    ReadInput {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot download {url}: {reason}")]
    Download { url: String, reason: String },
    #[error("cannot save {}", path.display())]
    Save {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the HTTP client")]
    HttpSetup(#[source] reqwest::Error),
}

fn trace_suffix(trace_id: &Option<String>) -> String {
    trace_id
        .as_deref()
        .map(|t| format!(" (trace_id {t})"))
        .unwrap_or_default()
}

impl ClientError {
    /// Worth another poll: the server may be restarting or shedding load, while the task itself
    /// lives on in its database.
    fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } | ClientError::Timeout { .. } => true,
            ClientError::Api {
                status: Some(s), ..
            } => *s == 429 || *s >= 500,
            ClientError::UnexpectedResponse { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// What a command produced; the wrappers turn it into stdout lines.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Images were downloaded to these paths, in `data[]` order.
    Saved(Vec<PathBuf>),
    /// `--json`: the server's body (or task record), untouched.
    Raw(Value),
    /// `--async` / `--callback-url`: the server accepted the task.
    Queued { task_id: String },
    /// `task ID` without `--wait`.
    Status(TaskStatus),
}

/// The short view of a task record.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskStatus {
    pub id: String,
    pub state: String,
    pub elapsed: Option<f64>,
    pub image_urls: Vec<String>,
    /// The error line of a failed task.
    pub error: Option<String>,
}

impl Outcome {
    /// The stdout text, one item per line.
    pub fn render(&self) -> String {
        match self {
            Outcome::Saved(paths) => paths.iter().map(|p| format!("{}\n", p.display())).collect(),
            Outcome::Raw(value) => {
                let text =
                    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
                format!("{text}\n")
            }
            Outcome::Queued { task_id } => format!("{task_id}\n"),
            Outcome::Status(s) => {
                let mut text = format!("task {}: {}", s.id, s.state);
                if let Some(elapsed) = s.elapsed {
                    text.push_str(&format!(" in {elapsed:.1}s"));
                }
                text.push('\n');
                for url in &s.image_urls {
                    text.push_str(url);
                    text.push('\n');
                }
                if let Some(error) = &s.error {
                    text.push_str(&format!("error: {error}\n"));
                }
                text
            }
        }
    }
}

/// How the core functions behave where a terminal and a test differ.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub spinner: bool,
    /// First and longest pause between two task polls.
    pub poll_first: Duration,
    pub poll_max: Duration,
}

impl Settings {
    /// For a person at a terminal; the spinner only when stderr is one, so pipes and logs stay
    /// clean.
    pub fn interactive() -> Settings {
        Settings {
            spinner: std::io::stderr().is_terminal(),
            poll_first: Duration::from_secs(1),
            poll_max: Duration::from_secs(5),
        }
    }
}

/// `nano-banana generate`.
pub async fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    print(&run_generate(&args, Settings::interactive()).await?)
}

/// `nano-banana edit`.
pub async fn edit(args: EditArgs) -> anyhow::Result<()> {
    print(&run_edit(&args, Settings::interactive()).await?)
}

/// `nano-banana task`.
pub async fn task(args: TaskArgs) -> anyhow::Result<()> {
    print(&run_task(&args, Settings::interactive()).await?)
}

fn print(outcome: &Outcome) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(outcome.render().as_bytes())?;
    stdout.flush()?;
    Ok(())
}

pub async fn run_generate(args: &GenerateArgs, settings: Settings) -> Result<Outcome, ClientError> {
    let api = Api::new(&args.client)?;
    let body = images_body("generate", &args.prompt, &args.options, None);
    submit(
        &api,
        &body,
        &args.options,
        &args.client,
        settings,
        "generating",
    )
    .await
}

pub async fn run_edit(args: &EditArgs, settings: Settings) -> Result<Outcome, ClientError> {
    let api = Api::new(&args.client)?;
    let image_urls = input::resolve_inputs(&args.images).await?;
    let body = images_body("edit", &args.prompt, &args.options, Some(image_urls));
    submit(
        &api,
        &body,
        &args.options,
        &args.client,
        settings,
        "editing",
    )
    .await
}

/// The request body: `action` and `prompt` always, the rest only when the user gave it.
pub fn images_body(
    action: &str,
    prompt: &str,
    options: &ImageOptions,
    image_urls: Option<Vec<String>>,
) -> Value {
    let mut body = Map::new();
    body.insert("action".into(), json!(action));
    body.insert("prompt".into(), json!(prompt));
    if let Some(urls) = image_urls {
        body.insert("image_urls".into(), json!(urls));
    }
    let optional = [
        ("model", options.model.as_ref().map(|v| json!(v))),
        (
            "aspect_ratio",
            options.aspect_ratio.as_ref().map(|v| json!(v)),
        ),
        ("resolution", options.resolution.as_ref().map(|v| json!(v))),
        ("count", options.count.map(|v| json!(v))),
        (
            "callback_url",
            options.callback_url.as_ref().map(|v| json!(v)),
        ),
        ("async", options.asynchronous.then_some(Value::Bool(true))),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            body.insert(key.into(), value);
        }
    }
    Value::Object(body)
}

async fn submit(
    api: &Api,
    body: &Value,
    options: &ImageOptions,
    client: &ClientOptions,
    settings: Settings,
    activity: &str,
) -> Result<Outcome, ClientError> {
    let spinner = Spinner::start(settings.spinner, activity);
    let response = api.post_images(body).await?;
    if client.json {
        return Ok(Outcome::Raw(response));
    }
    // Async and callback requests are answered with a ticket that has no `data` key.
    if response.get("data").is_none() {
        let task_id = str_field(&response, "task_id").ok_or_else(|| unexpected_ok(&response))?;
        return Ok(Outcome::Queued { task_id });
    }
    spinner.set_message("downloading");
    let target = Target::from_output(options.output.as_deref());
    let requested = options.count.unwrap_or(1);
    save_images(api, &response, &target, requested).await
}

/// Downloads and saves every `data[].image_url` of a success body.
async fn save_images(
    api: &Api,
    success: &Value,
    target: &Target,
    requested: u8,
) -> Result<Outcome, ClientError> {
    let urls: Vec<&str> = success
        .get("data")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.get("image_url").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if urls.is_empty() {
        return Err(unexpected_ok(success));
    }
    let mut images = Vec::with_capacity(urls.len());
    for url in urls {
        images.push(api.fetch_image(url).await?);
    }
    let task_id = str_field(success, "task_id").unwrap_or_else(|| "image".to_string());
    let saved = output::save_all(target, &task_id, requested > 1, &images).await?;
    Ok(Outcome::Saved(saved))
}

pub async fn run_task(args: &TaskArgs, settings: Settings) -> Result<Outcome, ClientError> {
    let api = Api::new(&args.client)?;
    if !args.wait {
        let record = api
            .retrieve_task(&args.id)
            .await?
            .ok_or_else(|| not_found(&args.id))?;
        return Ok(if args.client.json {
            Outcome::Raw(record)
        } else {
            Outcome::Status(task_status(&args.id, &record))
        });
    }
    let record = wait_for(&api, &args.id, args.client.timeout, settings).await?;
    if args.client.json {
        return Ok(Outcome::Raw(record));
    }
    let response = record.get("response").cloned().unwrap_or(Value::Null);
    if TaskState::parse(&state_of(&record)) == Some(TaskState::Failed) {
        return Err(
            api::contract_error(&response, None, None).unwrap_or_else(|| unexpected_ok(&record))
        );
    }
    let requested = record
        .pointer("/request/count")
        .and_then(Value::as_u64)
        .map_or(1, |c| u8::try_from(c).unwrap_or(u8::MAX));
    let target = Target::from_output(args.output.as_deref());
    save_images(&api, &response, &target, requested).await
}

/// Polls until the task is `succeeded` or `failed`, backing off so a long generation costs the
/// server a handful of lookups rather than hundreds.
async fn wait_for(
    api: &Api,
    id: &str,
    timeout_secs: u64,
    settings: Settings,
) -> Result<Value, ClientError> {
    let spinner = Spinner::start(settings.spinner, "waiting");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_secs);
    let mut pause = settings.poll_first;
    loop {
        match api.retrieve_task(id).await {
            Ok(Some(record)) => {
                let state = state_of(&record);
                if TaskState::parse(&state).is_some_and(TaskState::is_terminal) {
                    spinner.set_message("downloading");
                    return Ok(record);
                }
                spinner.set_message(&state);
            }
            Ok(None) => return Err(not_found(id)),
            Err(e) if e.is_transient() => spinner.set_message("waiting (server unavailable)"),
            Err(e) => return Err(e),
        }
        if tokio::time::Instant::now() + pause > deadline {
            return Err(ClientError::WaitTimeout {
                id: id.to_string(),
                secs: timeout_secs,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(settings.poll_max);
    }
}

fn task_status(id: &str, record: &Value) -> TaskStatus {
    let response = record.get("response");
    let image_urls = response
        .and_then(|r| r.get("data"))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| {
                    i.get("image_url")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    TaskStatus {
        id: str_field(record, "id").unwrap_or_else(|| id.to_string()),
        state: state_of(record),
        elapsed: record.get("elapsed").and_then(Value::as_f64),
        image_urls,
        error: response
            .and_then(|r| api::contract_error(r, None, None))
            .map(|e| e.to_string()),
    }
}

fn state_of(record: &Value) -> String {
    str_field(record, "state").unwrap_or_else(|| "unknown".to_string())
}

fn str_field(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_string)
}

fn not_found(id: &str) -> ClientError {
    ClientError::TaskNotFound { id: id.to_string() }
}

/// A 2xx body that is JSON but not what the contract promises here.
fn unexpected_ok(body: &Value) -> ClientError {
    let text = body.to_string();
    ClientError::UnexpectedResponse {
        status: 200,
        excerpt: text.chars().take(200).collect(),
    }
}

/// The stderr spinner ("⠋ generating… 12s"); a hidden no-op bar when disabled. Cleared on drop so
/// every exit path, errors included, leaves the terminal clean before anything is printed.
struct Spinner(ProgressBar);

impl Spinner {
    fn start(show: bool, message: &str) -> Spinner {
        if !show {
            return Spinner(ProgressBar::hidden());
        }
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}… {elapsed}") {
            bar.set_style(style);
        }
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        Spinner(bar)
    }

    fn set_message(&self, message: &str) {
        self.0.set_message(message.to_string());
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
