//! The official SDKs against the real server: OpenAI's `openai` and Google's `google-genai` Python
//! packages (from PyPI, pinned in tests/sdk/requirements.txt), pointed at the server by base URL
//! alone. Each test starts the servers the checks need, then runs one script of tests/sdk/ as a
//! child process with their addresses and tokens in its environment; the script prints a line per
//! check passed and exits non-zero at the first failure.
//!
//! The Python that has the SDKs is `NANO_BANANA_TEST_PYTHON`; scripts/test.sh installs them in a
//! venv and sets it. Without it these tests fail: they never skip.

use std::{path::PathBuf, process::Stdio, time::Duration};

use nano_banana::fake::gemini::{FakeGemini, FakeGeminiOptions};
use serde_json::json;

use crate::helpers::{TestApp, spawn_app_with, use_gemini};

const ADMIN_KEY: &str = "admin-sdk-key";

/// How long one script may take (each takes a few seconds; a loaded CI machine is slower).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// What the scripts talk to.
struct Servers {
    /// Placeholder mode: real PNGs of the requested sizes, no upstream.
    main: TestApp,
    /// A token of an application with no credits, on `main`.
    broke_token: String,
    /// A server whose upstream is a fake Gemini: prompts tagged `[fake:image_safety]` are refused.
    refusing: TestApp,
    _fake: FakeGemini,
}

async fn servers() -> Servers {
    let main = spawn_app_with(|c| c.admin_key = Some(ADMIN_KEY.into())).await;
    let broke_token = application_without_credits(&main).await;
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .expect("the fake Gemini starts");
    let base_url = fake.base_url();
    let refusing = spawn_app_with(move |c| use_gemini(c, &base_url, "test-key")).await;
    Servers {
        main,
        broke_token,
        refusing,
        _fake: fake,
    }
}

/// The token of a new application with 0 credits.
async fn application_without_credits(app: &TestApp) -> String {
    let created = app
        .admin(
            reqwest::Method::POST,
            "/admin/apps",
            Some(json!({"name": "out of credits", "credits": 0})),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let id = created.body["id"].as_str().expect("an id");
    let token = app
        .admin(
            reqwest::Method::POST,
            &format!("/admin/apps/{id}/tokens"),
            Some(json!({})),
        )
        .await;
    assert_eq!(token.status, 200, "{}", token.body);
    token.body["token"].as_str().expect("a token").to_owned()
}

/// The Python that has the pinned SDKs.
fn python() -> PathBuf {
    match std::env::var_os("NANO_BANANA_TEST_PYTHON") {
        Some(python) if !python.is_empty() => PathBuf::from(python),
        _ => panic!(
            "NANO_BANANA_TEST_PYTHON is not set: the SDK tests need a Python 3 with the pinned \
             SDKs of tests/sdk/requirements.txt. Run scripts/test.sh, which installs them in a \
             venv and sets it (or point it at a python that has them). These tests never skip."
        ),
    }
}

/// Starts the servers, runs `tests/sdk/<script>` against them and fails with its output unless it
/// exits 0.
async fn run(script: &str) {
    let python = python();
    let servers = servers().await;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(&path)
        .env("NB_BASE_URL", &servers.main.address)
        .env("NB_TOKEN", &servers.main.token)
        .env("NB_BROKE_TOKEN", &servers.broke_token)
        .env("NB_REFUSING_BASE_URL", &servers.refusing.address)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Nothing from the environment may redirect the SDKs: they talk to loopback, by the base URL
    // the script gives them, with the API version it asks for.
    for variable in [
        "OPENAI_BASE_URL",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_GENAI_API_VERSION",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_GENAI_USE_ENTERPRISE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(variable);
    }
    let child = command.spawn().unwrap_or_else(|e| {
        panic!(
            "could not run {} (NANO_BANANA_TEST_PYTHON): {e}. Run scripts/test.sh, which installs \
             the SDKs in a venv and sets it.",
            python.display()
        )
    });
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {SCRIPT_TIMEOUT:?}"))
        .expect("the script's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Shown by `cargo test -- --nocapture`, and with the failure.
    println!("{stdout}");
    let hint = match stderr.contains("ModuleNotFoundError") {
        true => "\nThis Python lacks the SDKs: run scripts/test.sh, which installs them in a venv.",
        false => "",
    };
    assert!(
        output.status.success(),
        "{script} failed under {} ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}{hint}",
        python.display(),
        output.status
    );
}

#[tokio::test]
async fn the_openai_sdk_works_against_the_server() {
    run("openai_check.py").await;
}

#[tokio::test]
async fn the_google_genai_sdk_works_against_the_server() {
    run("genai_check.py").await;
}
