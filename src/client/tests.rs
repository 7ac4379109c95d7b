//! End-to-end tests of the client commands against a fake contract server on 127.0.0.1:0.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use serde_json::{Value, json};

use super::*;

/// A valid 1×1 RGBA PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

const TOKEN: &str = "tok-123";

/// Polls after which a pending task reports success.
const PENDING_POLLS: usize = 2;

#[derive(Default)]
struct Seen {
    image_requests: Vec<Value>,
    image_auth: Vec<Option<String>>,
    file_auth: Vec<Option<String>>,
    task_polls: usize,
}

#[derive(Clone)]
struct FakeState {
    base: String,
    seen: Arc<Mutex<Seen>>,
}

struct Fake {
    base: String,
    seen: Arc<Mutex<Seen>>,
}

impl Fake {
    async fn start() -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = FakeState {
            base: base.clone(),
            seen: seen.clone(),
        };
        let app = Router::new()
            .route("/nano-banana/images", post(images))
            .route("/nano-banana/tasks", post(tasks))
            .route("/files/{name}", get(file))
            .route("/broken/nano-banana/images", post(broken))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Fake { base, seen }
    }

    fn options(&self) -> ClientOptions {
        ClientOptions {
            base_url: self.base.clone(),
            token: Some(TOKEN.to_string()),
            json: false,
            timeout: 30,
        }
    }

    fn requests(&self) -> Vec<Value> {
        self.seen.lock().unwrap().image_requests.clone()
    }
}

fn auth(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"success": false, "error": {"code": code, "message": message}, "trace_id": "trace-err"});
    (status, Json(body)).into_response()
}

fn success_body(base: &str, task_id: &str, prompt: &str, count: u64) -> Value {
    let data: Vec<Value> = (1..=count)
        .map(|n| json!({"prompt": prompt, "image_url": format!("{base}/files/{task_id}-{n}.png")}))
        .collect();
    json!({"success": true, "task_id": task_id, "trace_id": "trace-ok", "data": data})
}

async fn images(
    State(s): State<FakeState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    {
        let mut seen = s.seen.lock().unwrap();
        seen.image_requests.push(body.clone());
        seen.image_auth.push(auth(&headers));
    }
    let prompt = body["prompt"].as_str().unwrap_or_default();
    if prompt == "refuse" {
        return error_body(StatusCode::FORBIDDEN, "used_up", "balance too low");
    }
    if body.get("async") == Some(&json!(true)) || body.get("callback_url").is_some() {
        return Json(json!({"success": true, "task_id": "task-async", "trace_id": "tr"}))
            .into_response();
    }
    // "cdn:<base>" makes the images live on another origin.
    let image_base = prompt.strip_prefix("cdn:").unwrap_or(&s.base);
    let count = body["count"].as_u64().unwrap_or(1);
    Json(success_body(image_base, "task-sync", prompt, count)).into_response()
}

async fn tasks(State(s): State<FakeState>, Json(body): Json<Value>) -> Response {
    let id = body["id"].as_str().unwrap_or_default().to_string();
    let polls = {
        let mut seen = s.seen.lock().unwrap();
        seen.task_polls += 1;
        seen.task_polls
    };
    let pending = json!({"id": id, "trace_id": "tr", "type": "images", "created_at": 1.0,
        "state": "pending", "request": {"action": "generate", "prompt": "p", "count": 2}});
    match id.as_str() {
        "task-async" if polls <= PENDING_POLLS => Json(pending).into_response(),
        "task-async" => {
            let mut record = pending;
            record["state"] = json!("succeeded");
            record["elapsed"] = json!(11.3);
            record["finished_at"] = json!(12.3);
            record["response"] = success_body(&s.base, "task-async", "p", 2);
            Json(record).into_response()
        }
        "flaky" if polls == 1 => {
            (StatusCode::SERVICE_UNAVAILABLE, "<html>busy</html>").into_response()
        }
        "flaky" => {
            let mut record = pending;
            record["state"] = json!("succeeded");
            record["request"] = json!({"prompt": "p"});
            record["response"] = success_body(&s.base, "flaky", "p", 1);
            Json(record).into_response()
        }
        "forever" => Json(pending).into_response(),
        "task-failed" => {
            let mut record = pending;
            record["state"] = json!("failed");
            record["elapsed"] = json!(2.0);
            record["response"] = json!({"success": false, "task_id": "task-failed", "trace_id": "trace-f",
                "error": {"code": "forbidden", "message": "refused by safety policy"}});
            Json(record).into_response()
        }
        _ => Json(json!({})).into_response(),
    }
}

async fn file(
    State(s): State<FakeState>,
    headers: HeaderMap,
    UrlPath(_name): UrlPath<String>,
) -> Response {
    s.seen.lock().unwrap().file_auth.push(auth(&headers));
    ([(header::CONTENT_TYPE, "image/png")], PNG).into_response()
}

async fn broken() -> Response {
    (
        StatusCode::BAD_GATEWAY,
        [(header::CONTENT_TYPE, "text/html")],
        "<html><body><h1>502 Bad Gateway</h1></body></html>",
    )
        .into_response()
}

fn quiet() -> Settings {
    Settings {
        spinner: false,
        poll_first: Duration::from_millis(5),
        poll_max: Duration::from_millis(20),
    }
}

fn generate_args(fake: &Fake, prompt: &str, options: ImageOptions) -> GenerateArgs {
    GenerateArgs {
        prompt: prompt.to_string(),
        options,
        client: fake.options(),
    }
}

fn into_dir(dir: &Path) -> ImageOptions {
    ImageOptions {
        output: Some(dir.to_path_buf()),
        ..ImageOptions::default()
    }
}

fn saved(outcome: Outcome) -> Vec<std::path::PathBuf> {
    match outcome {
        Outcome::Saved(paths) => paths,
        other => panic!("expected saved images, got {other:?}"),
    }
}

#[tokio::test]
async fn generate_sends_only_what_was_given() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    run_generate(
        &generate_args(&fake, "a cat", into_dir(dir.path())),
        quiet(),
    )
    .await
    .unwrap();
    let options = ImageOptions {
        model: Some("nano-banana-pro".into()),
        aspect_ratio: Some("16:9".into()),
        resolution: Some("2K".into()),
        count: Some(1),
        output: Some(dir.path().to_path_buf()),
        ..ImageOptions::default()
    };
    run_generate(&generate_args(&fake, "a dog", options), quiet())
        .await
        .unwrap();

    let requests = fake.requests();
    assert_eq!(
        requests[0],
        json!({"action": "generate", "prompt": "a cat"})
    );
    assert_eq!(
        requests[1],
        json!({"action": "generate", "prompt": "a dog", "model": "nano-banana-pro",
               "aspect_ratio": "16:9", "resolution": "2K", "count": 1})
    );
    let seen = fake.seen.lock().unwrap();
    assert!(
        seen.image_auth
            .iter()
            .all(|a| a.as_deref() == Some("Bearer tok-123"))
    );
}

#[tokio::test]
async fn edit_sends_urls_as_is_and_files_as_data_uris() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("input.png");
    std::fs::write(&local, PNG).unwrap();
    let args = EditArgs {
        prompt: "make it blue".into(),
        images: vec![
            "https://example.test/a.jpg".into(),
            "data:image/gif;base64,R0lGODlh".into(),
            local.display().to_string(),
        ],
        options: into_dir(dir.path()),
        client: fake.options(),
    };
    run_edit(&args, quiet()).await.unwrap();

    let body = &fake.requests()[0];
    assert_eq!(body["action"], "edit");
    assert_eq!(body["prompt"], "make it blue");
    use base64::Engine as _;
    let expected = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(PNG)
    );
    assert_eq!(
        body["image_urls"],
        json!([
            "https://example.test/a.jpg",
            "data:image/gif;base64,R0lGODlh",
            expected
        ])
    );
    for absent in [
        "model",
        "count",
        "async",
        "aspect_ratio",
        "resolution",
        "callback_url",
    ] {
        assert!(body.get(absent).is_none(), "{absent} was sent");
    }
}

#[tokio::test]
async fn edit_rejects_unknown_file_before_sending() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not an image").unwrap();
    let args = EditArgs {
        prompt: "p".into(),
        images: vec![
            "https://example.test/a.png".into(),
            text.display().to_string(),
        ],
        options: ImageOptions::default(),
        client: fake.options(),
    };
    let err = run_edit(&args, quiet()).await.unwrap_err();
    assert!(matches!(err, ClientError::UnknownImageType { .. }));
    assert!(err.to_string().contains("notes.txt"), "{err}");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn output_file_single_image_is_written_exactly_there() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cat.png");
    let options = ImageOptions {
        output: Some(file.clone()),
        ..ImageOptions::default()
    };
    let paths = saved(
        run_generate(&generate_args(&fake, "a cat", options), quiet())
            .await
            .unwrap(),
    );
    assert_eq!(paths, vec![file.clone()]);
    assert_eq!(std::fs::read(&file).unwrap(), PNG);
    // Our own server's images get the token; the fake saw it.
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.file_auth, vec![Some("Bearer tok-123".to_string())]);
}

#[tokio::test]
async fn output_file_with_count_gets_numbered_names() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cat.png");
    let options = ImageOptions {
        output: Some(file),
        count: Some(3),
        ..ImageOptions::default()
    };
    let paths = saved(
        run_generate(&generate_args(&fake, "a cat", options), quiet())
            .await
            .unwrap(),
    );
    let expected: Vec<_> = (1..=3)
        .map(|n| dir.path().join(format!("cat-{n}.png")))
        .collect();
    assert_eq!(paths, expected);
    for path in &paths {
        assert_eq!(std::fs::read(path).unwrap(), PNG);
    }
}

#[tokio::test]
async fn output_dir_uses_task_id_and_creates_trailing_slash_dirs() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let paths = saved(
        run_generate(
            &generate_args(&fake, "a cat", into_dir(dir.path())),
            quiet(),
        )
        .await
        .unwrap(),
    );
    assert_eq!(paths, vec![dir.path().join("task-sync-1.png")]);

    let fresh = format!("{}/new/", dir.path().display());
    let options = ImageOptions {
        output: Some(fresh.into()),
        count: Some(2),
        ..ImageOptions::default()
    };
    let paths = saved(
        run_generate(&generate_args(&fake, "a cat", options), quiet())
            .await
            .unwrap(),
    );
    assert_eq!(
        paths,
        vec![
            dir.path().join("new/task-sync-1.png"),
            dir.path().join("new/task-sync-2.png")
        ]
    );
    assert!(paths.iter().all(|p| p.is_file()));
}

#[tokio::test]
async fn images_on_another_origin_get_no_token() {
    let server = Fake::start().await;
    let cdn = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let prompt = format!("cdn:{}", cdn.base);
    run_generate(
        &generate_args(&server, &prompt, into_dir(dir.path())),
        quiet(),
    )
    .await
    .unwrap();
    assert_eq!(cdn.seen.lock().unwrap().file_auth, vec![None]);
}

#[tokio::test]
async fn contract_error_body_becomes_the_error_line() {
    let fake = Fake::start().await;
    let err = run_generate(
        &generate_args(&fake, "refuse", ImageOptions::default()),
        quiet(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "used_up: balance too low (trace_id trace-err)"
    );
    assert!(matches!(
        err,
        ClientError::Api {
            status: Some(403),
            ..
        }
    ));
}

#[tokio::test]
async fn non_json_answer_reports_status_and_excerpt() {
    let fake = Fake::start().await;
    let mut args = generate_args(&fake, "a cat", ImageOptions::default());
    args.client.base_url = format!("{}/broken/", fake.base);
    let err = run_generate(&args, quiet()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ClientError::UnexpectedResponse { status: 502, .. }),
        "{text}"
    );
    assert!(text.contains("502 Bad Gateway"), "{text}");
}

#[tokio::test]
async fn unreachable_server_is_a_transport_error() {
    // Bind then drop, so the port is (almost certainly) closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let args = GenerateArgs {
        prompt: "p".into(),
        options: ImageOptions::default(),
        client: ClientOptions {
            base_url: format!("http://127.0.0.1:{port}"),
            token: Some(TOKEN.into()),
            json: false,
            timeout: 5,
        },
    };
    let err = run_generate(&args, quiet()).await.unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err}");
}

#[tokio::test]
async fn json_flag_returns_raw_body_without_downloading() {
    let fake = Fake::start().await;
    let mut args = generate_args(&fake, "a cat", ImageOptions::default());
    args.client.json = true;
    let outcome = run_generate(&args, quiet()).await.unwrap();
    let Outcome::Raw(body) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(body["task_id"], "task-sync");
    assert!(fake.seen.lock().unwrap().file_auth.is_empty());
}

#[tokio::test]
async fn async_prints_task_id_then_task_wait_saves_images() {
    let fake = Fake::start().await;
    let options = ImageOptions {
        asynchronous: true,
        count: Some(2),
        ..ImageOptions::default()
    };
    let outcome = run_generate(&generate_args(&fake, "later", options), quiet())
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Queued {
            task_id: "task-async".into()
        }
    );
    assert_eq!(outcome.render(), "task-async\n");
    assert_eq!(fake.requests()[0]["async"], json!(true));

    let dir = tempfile::tempdir().unwrap();
    let args = TaskArgs {
        id: "task-async".into(),
        wait: true,
        output: Some(dir.path().join("shot.png")),
        client: fake.options(),
    };
    let paths = saved(run_task(&args, quiet()).await.unwrap());
    // The record's request asked for 2 images, so the FILE rule numbers them.
    assert_eq!(
        paths,
        vec![dir.path().join("shot-1.png"), dir.path().join("shot-2.png")]
    );
    assert!(fake.seen.lock().unwrap().task_polls > PENDING_POLLS);
}

#[tokio::test]
async fn callback_url_is_sent_and_answers_with_a_ticket() {
    let fake = Fake::start().await;
    let options = ImageOptions {
        callback_url: Some("https://hooks.example.test/x".into()),
        ..ImageOptions::default()
    };
    let outcome = run_generate(&generate_args(&fake, "p", options), quiet())
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Queued {
            task_id: "task-async".into()
        }
    );
    let body = &fake.requests()[0];
    assert_eq!(body["callback_url"], "https://hooks.example.test/x");
    assert!(body.get("async").is_none());
}

#[tokio::test]
async fn task_without_wait_summarises() {
    let fake = Fake::start().await;
    let args = TaskArgs {
        id: "task-async".into(),
        wait: false,
        output: None,
        client: fake.options(),
    };
    let outcome = run_task(&args, quiet()).await.unwrap();
    assert_eq!(outcome.render(), "task task-async: pending\n");

    let args = TaskArgs {
        id: "task-failed".into(),
        ..args
    };
    let outcome = run_task(&args, quiet()).await.unwrap();
    assert_eq!(
        outcome.render(),
        "task task-failed: failed in 2.0s\nerror: forbidden: refused by safety policy (trace_id trace-f)\n"
    );
}

#[tokio::test]
async fn task_status_lists_image_urls_and_json_is_raw() {
    let fake = Fake::start().await;
    // Get past the pending polls.
    fake.seen.lock().unwrap().task_polls = PENDING_POLLS;
    let mut args = TaskArgs {
        id: "task-async".into(),
        wait: false,
        output: None,
        client: fake.options(),
    };
    let text = run_task(&args, quiet()).await.unwrap().render();
    assert_eq!(
        text,
        format!(
            "task task-async: succeeded in 11.3s\n{0}/files/task-async-1.png\n{0}/files/task-async-2.png\n",
            fake.base
        )
    );
    args.client.json = true;
    let Outcome::Raw(record) = run_task(&args, quiet()).await.unwrap() else {
        panic!()
    };
    assert_eq!(record["state"], "succeeded");
}

#[tokio::test]
async fn unknown_task_is_not_found_with_and_without_wait() {
    let fake = Fake::start().await;
    for wait in [false, true] {
        let args = TaskArgs {
            id: "missing".into(),
            wait,
            output: None,
            client: fake.options(),
        };
        let err = run_task(&args, quiet()).await.unwrap_err();
        assert!(matches!(err, ClientError::TaskNotFound { .. }));
        assert!(err.to_string().starts_with("task not found"));
    }
}

#[tokio::test]
async fn waiting_on_a_failed_task_returns_its_error() {
    let fake = Fake::start().await;
    let args = TaskArgs {
        id: "task-failed".into(),
        wait: true,
        output: None,
        client: fake.options(),
    };
    let err = run_task(&args, quiet()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "forbidden: refused by safety policy (trace_id trace-f)"
    );
}

#[tokio::test]
async fn waiting_survives_a_server_hiccup() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let args = TaskArgs {
        id: "flaky".into(),
        wait: true,
        output: Some(dir.path().to_path_buf()),
        client: fake.options(),
    };
    let paths = saved(run_task(&args, quiet()).await.unwrap());
    assert_eq!(paths, vec![dir.path().join("flaky-1.png")]);
}

#[tokio::test]
async fn waiting_gives_up_at_the_deadline() {
    let fake = Fake::start().await;
    let mut client = fake.options();
    client.timeout = 0;
    let args = TaskArgs {
        id: "forever".into(),
        wait: true,
        output: None,
        client,
    };
    let err = run_task(&args, quiet()).await.unwrap_err();
    assert!(matches!(err, ClientError::WaitTimeout { .. }), "{err}");
    assert!(err.to_string().contains("nano-banana task forever --wait"));
}

#[tokio::test]
async fn missing_token_fails_before_any_request() {
    let fake = Fake::start().await;
    let mut args = generate_args(&fake, "p", ImageOptions::default());
    args.client.token = None;
    let err = run_generate(&args, quiet()).await.unwrap_err();
    assert!(err.to_string().contains("NANO_BANANA_TOKEN"));
    assert!(fake.requests().is_empty());
}

/// The shape the main binary embeds these structs in.
#[derive(clap::Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    Generate(GenerateArgs),
    Edit(EditArgs),
    Task(TaskArgs),
}

#[test]
fn command_line_parses_as_documented() {
    use clap::CommandFactory as _;
    Cli::command().debug_assert();

    let cli = Cli::try_parse_from([
        "nb",
        "generate",
        "a cat",
        "--async",
        "--count",
        "2",
        "-o",
        "out/",
        "--token",
        "t",
        "--base-url",
        "http://127.0.0.1:9",
    ])
    .unwrap();
    let Command::Generate(args) = cli.command else {
        panic!()
    };
    assert!(args.options.asynchronous);
    assert_eq!(args.options.count, Some(2));
    assert_eq!(args.client.timeout, 600);

    let cli = Cli::try_parse_from([
        "nb",
        "edit",
        "p",
        "-i",
        "a.png",
        "--image",
        "https://x/b.png",
    ])
    .unwrap();
    let Command::Edit(args) = cli.command else {
        panic!()
    };
    assert_eq!(args.images, vec!["a.png", "https://x/b.png"]);

    assert!(
        Cli::try_parse_from(["nb", "edit", "p"]).is_err(),
        "-i is required"
    );
    assert!(Cli::try_parse_from(["nb", "generate", "p", "--count", "5"]).is_err());

    let cli = Cli::try_parse_from(["nb", "task", "abc", "--wait", "--json"]).unwrap();
    let Command::Task(args) = cli.command else {
        panic!()
    };
    assert!(args.wait && args.client.json);
}
