//! The crash test: the real binary as a child process, killed with SIGKILL while tasks run,
//! then started again. Every task must end, every callback must arrive with the final body, and
//! no task may have two different results.

use std::{
    collections::{HashMap, HashSet},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nano_banana::fake::gemini::{FakeGemini, FakeGeminiOptions, Latency};
use serde_json::{Value, json};

use crate::helpers::{CallbackReceiver, TOKEN, scaled, scaled_stack_env};

struct Server {
    child: Child,
    address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failing assertion must not leave a server running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_server(
    data_dir: &std::path::Path,
    stack: &[(String, String)],
    upstream: &str,
    port: u16,
) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_nano-banana"))
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .env("NANO_BANANA_BOOTSTRAP_TOKEN", TOKEN)
        .env("NANO_BANANA_GEMINI_BASE_URL", upstream)
        .env("GEMINI_API_KEY", "crash-test-key")
        .env("NANO_BANANA_FETCH_ALLOW", "127.0.0.1/32")
        .env("NANO_BANANA_TASK_LEASE", "2")
        .env("NANO_BANANA_WORKERS", "16")
        .env("RUST_LOG", "warn")
        .envs(stack.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the server binary starts");
    let address = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(format!("{address}/healthz")).send().await
            && response.status() == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server { child, address }
}

async fn post(client: &reqwest::Client, address: &str, path: &str, body: Value) -> Value {
    client
        .post(format!("{address}{path}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .json(&body)
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("a JSON answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_callbacks_survive_sigkill() {
    let fake = FakeGemini::start(FakeGeminiOptions {
        latency: Latency::Uniform(Duration::from_millis(100), Duration::from_millis(400)),
        ..FakeGeminiOptions::default()
    })
    .await
    .unwrap();
    let receiver = CallbackReceiver::start(0, false).await;
    let data_dir = tempfile::tempdir().unwrap();
    let stack = if scaled() {
        scaled_stack_env().await
    } else {
        Vec::new()
    };
    let port = free_port();
    let mut server = start_server(data_dir.path(), &stack, &fake.base_url(), port).await;
    let client = reqwest::Client::new();

    // 240 tasks: every other one with a callback, the rest async.
    let mut ids = Vec::new();
    let mut with_callback = HashSet::new();
    for i in 0..240 {
        let mut body = json!({"prompt": format!("task {i}"), "model": "nano-banana-2"});
        if i % 2 == 0 {
            body["callback_url"] = json!(receiver.url());
        } else {
            body["async"] = json!(true);
        }
        let accepted = post(&client, &server.address, "/nano-banana/images", body).await;
        assert_eq!(accepted["success"], true, "{accepted}");
        let id = accepted["task_id"].as_str().unwrap().to_owned();
        if i % 2 == 0 {
            with_callback.insert(id.clone());
        }
        ids.push(id);
    }

    // Kill it mid-flight: some callbacks delivered, many tasks still queued or running.
    receiver.wait_for(20).await;
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
    let upstream_calls_at_kill = fake.request_count();
    assert!(
        upstream_calls_at_kill < 240,
        "killed too late to prove anything"
    );

    let server = start_server(data_dir.path(), &stack, &fake.base_url(), port).await;

    // Every task ends.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut records: HashMap<String, Value> = HashMap::new();
    loop {
        for chunk in ids.chunks(50) {
            let batch = post(
                &client,
                &server.address,
                "/nano-banana/tasks",
                json!({"action": "retrieve_batch", "ids": chunk}),
            )
            .await;
            for record in batch["items"].as_array().unwrap() {
                records.insert(record["id"].as_str().unwrap().to_owned(), record.clone());
            }
        }
        let finished = records
            .values()
            .filter(|r| r["state"] == "succeeded" || r["state"] == "failed")
            .count();
        if finished == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {finished} of {} tasks finished",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for record in records.values() {
        assert_eq!(record["state"], "succeeded", "{record}");
    }

    // Every callback arrives, with exactly the recorded final body; never two different ones.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: HashSet<String> = receiver
            .received()
            .iter()
            .filter_map(|(_, body)| body["task_id"].as_str().map(str::to_owned))
            .collect();
        if with_callback.is_subset(&delivered) {
            break;
        }
        let missing = with_callback.difference(&delivered).count();
        assert!(
            Instant::now() < deadline,
            "{missing} callbacks never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, body) in receiver.received() {
        let id = body["task_id"].as_str().unwrap();
        assert!(
            with_callback.contains(id),
            "a callback for a task without callback_url"
        );
        assert_eq!(
            body, records[id]["response"],
            "the callback differs from the record"
        );
    }
}
