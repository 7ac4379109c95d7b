//! The real `nano-banana` binary as child processes (the crash, multi-node and connection tests),
//! started with the suite's flags through the launcher the benchmark uses too
//! (`nano_banana_testkit::ChildProcess`), and the checks the crash and multi-node tests make once
//! the dust settles: every task ended, every callback arrived intact.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nano_banana_testkit::{CallbackReceiver, ChildProcess};
use serde_json::{Value, json};

use crate::helpers::TOKEN;

/// Starts `nano-banana serve` on `port` (a `free_port()`: a restarted server comes back at the
/// address its stored URLs name) with data under `data_dir`, a Gemini upstream at `upstream`,
/// 2-second task leases and the extra environment `env`; waits until `/readyz`. Killed (if still
/// running) when dropped, so a failing test leaves none.
pub async fn start_server(
    data_dir: &Path,
    port: u16,
    upstream: &str,
    env: &[(String, String)],
) -> ChildProcess {
    start(server_command(data_dir, port, upstream, env), port).await
}

/// The command `start_server` runs, for a test that needs to adjust it first.
pub fn server_command(
    data_dir: &Path,
    port: u16,
    upstream: &str,
    env: &[(String, String)],
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nano-banana"));
    command
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .env("NANO_BANANA_BOOTSTRAP_TOKEN", TOKEN)
        .env("NANO_BANANA_GEMINI_BASE_URL", upstream)
        .env("GEMINI_API_KEY", "process-test-key")
        .env("NANO_BANANA_FETCH_ALLOW", "127.0.0.1/32")
        .env("NANO_BANANA_TASK_LEASE", "2")
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// Spawns `command` (a server listening on `port`) and waits until `/readyz` answers 2xx
/// (it answers 200 or 503), failing at once if the server exits.
pub async fn start(command: Command, port: u16) -> ChildProcess {
    let mut server = ChildProcess::spawn_at("server", command, format!("http://127.0.0.1:{port}"))
        .expect("the server binary starts");
    if let Err(e) = server.wait_healthy("/readyz").await {
        panic!(
            "the server at {} did not become ready: {e:#}",
            server.base_url
        );
    }
    server
}

/// POSTs `body` with `token`; the status and the JSON answer.
pub async fn post(client: &reqwest::Client, url: String, token: &str, body: Value) -> (u16, Value) {
    let response = client
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

/// Reads the tasks back through `address` until every one has ended; their records by id.
pub async fn wait_until_all_ended(
    client: &reqwest::Client,
    address: &str,
    ids: &[String],
) -> HashMap<String, Value> {
    wait_until_ended_as(client, address, TOKEN, ids, Duration::from_secs(120)).await
}

/// Reads the tasks back through `address` with `token` until every one has ended, within
/// `limit`; their records by id.
pub async fn wait_until_ended_as(
    client: &reqwest::Client,
    address: &str,
    token: &str,
    ids: &[String],
    limit: Duration,
) -> HashMap<String, Value> {
    let deadline = Instant::now() + limit;
    let mut records: HashMap<String, Value> = HashMap::new();
    loop {
        for chunk in ids.chunks(50) {
            let (status, batch) = post(
                client,
                format!("{address}/nano-banana/tasks"),
                token,
                json!({"action": "retrieve_batch", "ids": chunk}),
            )
            .await;
            assert_eq!(status, 200, "{batch}");
            for record in batch["items"].as_array().expect("records") {
                let id = record["id"].as_str().expect("an id").to_owned();
                records.insert(id, record.clone());
            }
        }
        let ended = records
            .values()
            .filter(|r| r["state"] == "succeeded" || r["state"] == "failed")
            .count();
        if ended == ids.len() {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "only {ended} of {} tasks ended",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every task in `expected` had its callback (at least once), and checks that each
/// callback is exactly the recorded final body: never one for another task, never a different one.
pub async fn assert_callbacks_match(
    receiver: &CallbackReceiver,
    expected: &HashSet<String>,
    records: &HashMap<String, Value>,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: HashSet<String> = receiver
            .received()
            .iter()
            .filter_map(|(_, body)| body["task_id"].as_str().map(str::to_owned))
            .collect();
        if expected.is_subset(&delivered) {
            break;
        }
        let missing = expected.difference(&delivered).count();
        assert!(
            Instant::now() < deadline,
            "{missing} callbacks never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, body) in receiver.received() {
        let id = body["task_id"].as_str().expect("a task id");
        assert!(
            expected.contains(id),
            "a callback for a task without callback_url"
        );
        assert_eq!(
            body, records[id]["response"],
            "the callback differs from the record"
        );
    }
}
