//! The crash test: the real binary as a child process, killed with SIGKILL while tasks run,
//! then started again. Every task must end, every callback must arrive with the final body, and
//! no task may have two different results.

use std::{collections::HashSet, time::Duration};

use nano_banana::{
    config::Config,
    domain::sha256_hex,
    fake::gemini::{FakeGemini, FakeGeminiOptions, Latency},
    storage::{Db, ImageStore, images::S3Settings},
    tasks::inputs::{FAULT_ENV, PAUSE_AFTER_INPUT_WRITE},
};
use serde_json::json;

use nano_banana_testkit::free_port;

use crate::{
    helpers::{TOKEN, callback_receiver, data_uri, png, scaled, scaled_stack_env},
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

/// The image store a `start_server` child with `env` writes to: its `--data-dir` folder, or the
/// bucket and prefix of `scaled_stack_env`.
fn child_store(data_dir: &std::path::Path, env: &[(String, String)]) -> ImageStore {
    let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let Some(storage) = var("NANO_BANANA_STORAGE") else {
        return ImageStore::local(&data_dir.join("images")).expect("the image folder");
    };
    let (bucket, prefix) = storage
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .expect("s3://BUCKET/PREFIX");
    ImageStore::s3(&S3Settings {
        bucket: bucket.to_owned(),
        prefix: Some(prefix.trim_matches('/').to_owned()).filter(|p| !p.is_empty()),
        endpoint: var("NANO_BANANA_S3_ENDPOINT"),
        region: "us-east-1".to_owned(),
        path_style: true,
        access_key_id: var("NANO_BANANA_S3_ACCESS_KEY_ID"),
        secret_access_key: var("NANO_BANANA_S3_SECRET_ACCESS_KEY"),
    })
    .expect("the bucket")
}

/// SIGKILL between an edit's input write and its task row: the input object is left behind,
/// referenced by no task; after a restart the input sweeper deletes it once its grace period
/// has passed, and no task was created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_orphaned_by_sigkill_before_its_task_row_is_swept() {
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .expect("the fake upstream starts");
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut env = vec![
        ("NANO_BANANA_INPUT_GRACE".to_owned(), "2".to_owned()),
        (
            "NANO_BANANA_INPUT_SWEEP_INTERVAL".to_owned(),
            "1".to_owned(),
        ),
    ];
    if scaled() {
        env.extend(scaled_stack_env().await);
    }
    let store = child_store(data_dir.path(), &env);
    let port = free_port();
    let mut faulty = env.clone();
    faulty.push((FAULT_ENV.to_owned(), PAUSE_AFTER_INPUT_WRITE.to_owned()));
    let mut server = start_server(data_dir.path(), port, &fake.base_url(), &faulty).await;

    let photo = png(64, 48);
    let url = format!("{}/nano-banana/images", server.base_url);
    let body = json!({"action": "edit", "prompt": "lost", "async": true,
                      "image_urls": [data_uri(&photo)]});
    // The submission stops after writing its input: this request never gets an answer.
    let pending = tokio::spawn(async move {
        let _ = reqwest::Client::new()
            .post(url)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await;
    });
    let digest = sha256_hex(&photo);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.read_input(&digest).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the input was never written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
    pending.abort();

    let server = start_server(data_dir.path(), port, &fake.base_url(), &env).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.read_input(&digest).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the orphaned input was not swept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No task came of it: the database holds none, and the upstream was never called.
    let url = env
        .iter()
        .find(|(k, _)| k == "NANO_BANANA_DATABASE_URL")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| Config::with_data_dir(data_dir.path()).database_url);
    let db = Db::connect(&url).await.expect("the server's database");
    let stats = db.queue_stats().await.expect("the task counts");
    assert!(
        stats.tasks_by_state.is_empty(),
        "{:?}",
        stats.tasks_by_state
    );
    db.close().await;
    assert_eq!(fake.request_count(), 0, "no upstream call was made");
    drop(server);
}
