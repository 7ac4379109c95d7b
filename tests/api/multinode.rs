//! The multi-node test: two `nano-banana serve` processes share PostgreSQL, S3 and Redis (always,
//! whichever stack the rest of the suite runs on). Requests are spread over both; one is
//! SIGKILLed mid-flight. Every task still ends, every callback arrives, images written by one
//! node are served by the other, and the rate limit holds for the two nodes together.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use nano_banana::fake::gemini::{FakeGemini, FakeGeminiOptions, Latency};
use serde_json::{Value, json};

use nano_banana_testkit::{ChildProcess, free_port};

use crate::{
    helpers::{TOKEN, callback_receiver, scaled_stack_env},
    procs::{assert_callbacks_match, post, start_server, wait_until_all_ended},
};

const ADMIN_KEY: &str = "multinode-admin-key";

/// A node: its own (unused) data folder, everything else shared through `stack`.
async fn start_node(
    stack: &[(String, String)],
    upstream: &str,
) -> (ChildProcess, tempfile::TempDir) {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut env = vec![
        ("NANO_BANANA_ADMIN_KEY".to_owned(), ADMIN_KEY.to_owned()),
        ("NANO_BANANA_WORKERS".to_owned(), "8".to_owned()),
    ];
    env.extend(stack.iter().cloned());
    let node = start_server(data_dir.path(), free_port(), upstream, &env).await;
    (node, data_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_everything_and_survive_losing_one() {
    let fake = FakeGemini::start(FakeGeminiOptions {
        latency: Latency::Uniform(Duration::from_millis(200), Duration::from_millis(600)),
        ..FakeGeminiOptions::default()
    })
    .await
    .expect("the fake upstream starts");
    let receiver = callback_receiver(0, false).await;
    let stack = scaled_stack_env().await;
    // One at a time: the first creates the bootstrap token, the second finds it.
    let (first, _first_dir) = start_node(&stack, &fake.base_url()).await;
    let (second, _second_dir) = start_node(&stack, &fake.base_url()).await;
    let mut nodes = vec![first, second];
    let client = reqwest::Client::new();

    // The rate limit holds for both nodes together: 60 a minute (one a second), burst 5.
    let (status, created) = {
        let response = client
            .post(format!("{}/admin/apps", nodes[0].base_url))
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
        .post(format!("{}/admin/apps/{app_id}/tokens", nodes[1].base_url))
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
            format!("{}/nano-banana/images", node.base_url),
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

    // 120 tasks spread over both nodes (upstream calls counted from here): every other one with a callback, the rest async.
    let calls_before = fake.request_count();
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
            format!("{}/nano-banana/images", node.base_url),
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
    receiver.wait_for(5).await;
    let mut killed = nodes.remove(0);
    let killed_address = killed.base_url.clone();
    killed.child.kill().expect("SIGKILL");
    killed.child.wait().expect("reaped");
    assert!(
        fake.request_count() - calls_before < 120,
        "killed too late to prove anything"
    );
    let survivor = &nodes[0];

    let records = wait_until_all_ended(&client, &survivor.base_url, &ids).await;
    for record in records.values() {
        assert_eq!(record["state"], "succeeded", "{record}");
    }

    // Every callback arrives (at least once), with the recorded final body.
    assert_callbacks_match(&receiver, &with_callback, &records).await;

    // Images written by the dead node are served by the survivor.
    let mut from_killed = 0;
    for record in records.values() {
        for entry in record["response"]["data"].as_array().expect("data") {
            let url = entry["image_url"].as_str().expect("an image URL");
            let Some(path) = url.strip_prefix(&killed_address) else {
                continue;
            };
            let response = client
                .get(format!("{}{path}", survivor.base_url))
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
