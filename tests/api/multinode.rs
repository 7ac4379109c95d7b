//! The multi-node test: two `nano-banana serve` processes share PostgreSQL, S3 and Redis (always,
//! whichever stack the rest of the suite runs on). Requests are spread over both; one is
//! SIGKILLed mid-flight. Every task still ends, every callback arrives, images written by one
//! node are served by the other, and the rate limit holds for the two nodes together.

use std::{
    collections::{HashMap, HashSet},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nano_banana::fake::gemini::{FakeGemini, FakeGeminiOptions, Latency};
use serde_json::{Value, json};

use crate::helpers::{CallbackReceiver, TOKEN, scaled_stack_env};

const ADMIN_KEY: &str = "multinode-admin-key";

struct Node {
    child: Child,
    address: String,
    _data_dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

async fn start_node(stack: &[(String, String)], upstream: &str) -> Node {
    let port = free_port();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let child = Command::new(env!("CARGO_BIN_EXE_nano-banana"))
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir.path())
        .env("NANO_BANANA_BOOTSTRAP_TOKEN", TOKEN)
        .env("NANO_BANANA_ADMIN_KEY", ADMIN_KEY)
        .env("NANO_BANANA_GEMINI_BASE_URL", upstream)
        .env("GEMINI_API_KEY", "multinode-key")
        .env("NANO_BANANA_FETCH_ALLOW", "127.0.0.1/32")
        .env("NANO_BANANA_TASK_LEASE", "2")
        .env("NANO_BANANA_WORKERS", "8")
        .env("RUST_LOG", "warn")
        .envs(stack.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the server binary starts");
    let address = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(format!("{address}/readyz")).send().await
            && response.status() == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {address} did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Node {
        child,
        address,
        _data_dir: data_dir,
    }
}

async fn post(client: &reqwest::Client, url: String, token: &str, body: Value) -> (u16, Value) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_everything_and_survive_losing_one() {
    let fake = FakeGemini::start(FakeGeminiOptions {
        latency: Latency::Uniform(Duration::from_millis(100), Duration::from_millis(400)),
        ..FakeGeminiOptions::default()
    })
    .await
    .expect("the fake upstream starts");
    let receiver = CallbackReceiver::start(0, false).await;
    let stack = scaled_stack_env().await;
    // One at a time: the first creates the bootstrap token, the second finds it.
    let mut nodes = vec![
        start_node(&stack, &fake.base_url()).await,
        start_node(&stack, &fake.base_url()).await,
    ];
    let client = reqwest::Client::new();

    // The rate limit holds for both nodes together: 60 a minute (one a second), burst 5.
    let (status, created) = {
        let response = client
            .post(format!("{}/admin/apps", nodes[0].address))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"name": "limited", "credits": 100000, "rate_per_minute": 60, "burst": 5}))
            .send()
            .await
            .expect("request sent");
        (
            response.status(),
            response.json::<Value>().await.expect("JSON"),
        )
    };
    assert_eq!(status, 200, "{created}");
    let app_id = created["id"].as_str().expect("an id");
    let token = client
        .post(format!("{}/admin/apps/{app_id}/tokens", nodes[1].address))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({}))
        .send()
        .await
        .expect("request sent")
        .json::<Value>()
        .await
        .expect("JSON")["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let started = Instant::now();
    let mut admitted = 0;
    let mut refused = 0;
    for i in 0..40 {
        let node = &nodes[i % 2];
        let (status, body) = post(
            &client,
            format!("{}/nano-banana/images", node.address),
            &token,
            json!({"prompt": format!("limited {i}"), "async": true}),
        )
        .await;
        match status {
            200 => admitted += 1,
            429 => refused += 1,
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // GCRA: the burst at once, then one a second; one more for a boundary crossed mid-way.
    let allowed = 5 + elapsed.ceil() as i64 + 1;
    assert!(
        admitted <= allowed,
        "{admitted} admitted in {elapsed:.2} s across two nodes; the limit allows {allowed}"
    );
    assert!(admitted >= 5, "the burst is admitted: {admitted}");
    assert!(refused > 0, "the rest is refused");

    // 120 tasks spread over both nodes: every other one with a callback, the rest async.
    let mut ids = Vec::new();
    let mut with_callback = HashSet::new();
    for i in 0..120 {
        let node = &nodes[i % 2];
        let mut body = json!({"prompt": format!("task {i}"), "model": "nano-banana-2"});
        if i % 2 == 0 {
            body["callback_url"] = json!(receiver.url());
        } else {
            body["async"] = json!(true);
        }
        let (status, accepted) = post(
            &client,
            format!("{}/nano-banana/images", node.address),
            TOKEN,
            body,
        )
        .await;
        assert_eq!(status, 200, "{accepted}");
        let id = accepted["task_id"].as_str().expect("a task id").to_owned();
        if i % 2 == 0 {
            with_callback.insert(id.clone());
        }
        ids.push(id);
    }

    // Kill the first node mid-flight; the second finishes its tasks once their leases expire.
    receiver.wait_for(10).await;
    let mut killed = nodes.remove(0);
    let killed_address = killed.address.clone();
    killed.child.kill().expect("SIGKILL");
    killed.child.wait().expect("reaped");
    assert!(
        fake.request_count() < 120,
        "killed too late to prove anything"
    );
    let survivor = &nodes[0];

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut records: HashMap<String, Value> = HashMap::new();
    loop {
        for chunk in ids.chunks(50) {
            let (status, batch) = post(
                &client,
                format!("{}/nano-banana/tasks", survivor.address),
                TOKEN,
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
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ended} of {} tasks ended",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for record in records.values() {
        assert_eq!(record["state"], "succeeded", "{record}");
    }

    // Every callback arrives (at least once), with the recorded final body.
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
        let id = body["task_id"].as_str().expect("a task id");
        assert!(
            with_callback.contains(id),
            "a callback for a task without one"
        );
        assert_eq!(
            body, records[id]["response"],
            "the callback differs from the record"
        );
    }

    // Images written by the dead node are served by the survivor.
    let mut from_killed = 0;
    for record in records.values() {
        for entry in record["response"]["data"].as_array().expect("data") {
            let url = entry["image_url"].as_str().expect("an image URL");
            let Some(path) = url.strip_prefix(&killed_address) else {
                continue;
            };
            let response = client
                .get(format!("{}{path}", survivor.address))
                .send()
                .await
                .expect("request sent");
            assert_eq!(response.status(), 200, "{path}");
            let bytes = response.bytes().await.expect("image bytes");
            image::load_from_memory(&bytes).expect("a decodable image");
            from_killed += 1;
        }
    }
    assert!(from_killed > 0, "the killed node had made some images");
}
