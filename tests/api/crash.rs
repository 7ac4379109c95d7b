//! The crash test: the real binary as a child process, killed with SIGKILL while tasks run,
//! then started again. Every task must end, every callback must arrive with the final body, and
//! no task may have two different results.

use std::{collections::HashSet, time::Duration};

use nano_banana::fake::gemini::{FakeGemini, FakeGeminiOptions, Latency};
use serde_json::json;

use nano_banana_testkit::free_port;

use crate::{
    helpers::{TOKEN, callback_receiver, scaled, scaled_stack_env},
    procs::{assert_callbacks_match, post, start_server, wait_until_all_ended},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_callbacks_survive_sigkill() {
    let fake = FakeGemini::start(FakeGeminiOptions {
        latency: Latency::Uniform(Duration::from_millis(100), Duration::from_millis(400)),
        ..FakeGeminiOptions::default()
    })
    .await
    .expect("the fake upstream starts");
    let receiver = callback_receiver(0, false).await;
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut env = vec![("NANO_BANANA_WORKERS".to_owned(), "16".to_owned())];
    if scaled() {
        env.extend(scaled_stack_env().await);
    }
    let port = free_port();
    let mut server = start_server(data_dir.path(), port, &fake.base_url(), &env).await;
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
        let url = format!("{}/nano-banana/images", server.base_url);
        let (status, accepted) = post(&client, url, TOKEN, body).await;
        assert_eq!(status, 200, "{accepted}");
        let id = accepted["task_id"].as_str().expect("a task id").to_owned();
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

    let server = start_server(data_dir.path(), port, &fake.base_url(), &env).await;

    // Every task ends, and succeeds.
    let records = wait_until_all_ended(&client, &server.base_url, &ids).await;
    for record in records.values() {
        assert_eq!(record["state"], "succeeded", "{record}");
    }

    // Every callback arrives, with exactly the recorded final body; never two different ones.
    assert_callbacks_match(&receiver, &with_callback, &records).await;
}
