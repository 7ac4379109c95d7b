//! Restarts and graceful shutdown: tasks and images outlive the process that made them.

use std::time::Duration;

use nano_banana::fake::gemini::{FakeGemini, FakeGeminiOptions, Scenario};
use serde_json::json;

use crate::helpers::{download_image, spawn_app, spawn_app_with};

#[tokio::test]
async fn tasks_and_images_survive_a_restart() {
    let app = spawn_app().await;
    let answer = app.post_images(json!({"prompt": "durable"})).await;
    let id = answer.body["task_id"].as_str().unwrap().to_owned();
    let url = answer.body["data"][0]["image_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let app = app.restart().await;
    let record = app.post_tasks(json!({"id": id})).await.body;
    assert_eq!(record["state"], "succeeded");
    // The image URL of the old process is served by the new one (same path, new port).
    let path = &url[url.find("/images/").unwrap()..];
    let (_, image) = download_image(&app, path).await;
    assert_eq!(image.width(), 1024);
}

#[tokio::test]
async fn a_graceful_stop_lets_running_tasks_finish() {
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    fake.push_scenario(Scenario::Slow(Duration::from_millis(500)));
    let base_url = fake.base_url();
    let app = spawn_app_with(move |c| {
        crate::helpers::use_gemini(c, &base_url, "k");
    })
    .await;
    let accepted = app
        .post_images(json!({"prompt": "slow", "async": true}))
        .await;
    let id = accepted.body["task_id"].as_str().unwrap().to_owned();
    // Wait until the upstream has the request, then stop while it is in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fake.request_count() == 0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let app = app.restart().await;
    let record = app.post_tasks(json!({"id": id})).await.body;
    assert_eq!(
        record["state"], "succeeded",
        "finished during the grace period: {record}"
    );
    assert_eq!(fake.request_count(), 1, "not run twice");
}

#[tokio::test]
async fn the_first_token_is_created_once() {
    let app = spawn_app().await;
    let app = app.restart().await;
    // The bootstrap token of the first start still works; no second one was made.
    let answer = app.post_tasks(json!({"id": "x"})).await;
    assert_eq!(answer.status, 200);
    assert_eq!(app.db.count_tokens().await.unwrap(), 1);
}

#[tokio::test]
async fn a_sync_task_finishes_after_its_client_disconnects() {
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    fake.push_scenario(Scenario::Slow(Duration::from_millis(600)));
    let base_url = fake.base_url();
    let app = spawn_app_with(move |c| {
        crate::helpers::use_gemini(c, &base_url, "k");
    })
    .await;
    let body = json!({"prompt": "patience"});
    let impatient = app
        .client
        .post(format!("{}/nano-banana/images", app.address))
        .header("authorization", format!("Bearer {}", app.token))
        .header("idempotency-key", "disconnect-1")
        .timeout(Duration::from_millis(100))
        .body(body.to_string())
        .send()
        .await;
    assert!(impatient.is_err(), "the client gave up");
    // The same request again (a client retry) gets the original task's result once it ends,
    // and the upstream was called only once.
    let retry = app
        .client
        .post(format!("{}/nano-banana/images", app.address))
        .header("authorization", format!("Bearer {}", app.token))
        .header("idempotency-key", "disconnect-1")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let answer = crate::helpers::answer(retry).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let id = answer.body["task_id"].as_str().unwrap();
    assert_eq!(
        app.post_tasks(json!({"id": id})).await.body["state"],
        "succeeded"
    );
    assert_eq!(fake.request_count(), 1);
}

/// With a worker free, an accepted task is written already claimed and runs at once (no trip
/// through the queue); with every worker busy it is queued, and runs when the worker frees.
#[tokio::test]
async fn a_task_is_claimed_at_admission_when_a_worker_is_free_and_queued_otherwise() {
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    fake.push_scenario(Scenario::Slow(Duration::from_millis(1500)));
    fake.push_scenario(Scenario::Slow(Duration::from_millis(100)));
    let base_url = fake.base_url();
    let app = spawn_app_with(move |c| {
        crate::helpers::use_gemini(c, &base_url, "k");
        c.workers = 1;
    })
    .await;
    let body = json!({"prompt": "one worker", "async": true});
    let first = app.post_images(body.clone()).await;
    let first = first.body["task_id"].as_str().unwrap().to_owned();
    let second = app.post_images(body).await;
    let second = second.body["task_id"].as_str().unwrap().to_owned();
    let record = app.post_tasks(json!({"id": first})).await.body;
    assert_eq!(
        record["state"], "processing",
        "claimed at admission: {record}"
    );
    let record = app.post_tasks(json!({"id": second})).await.body;
    assert_eq!(
        record["state"], "pending",
        "queued behind the busy worker: {record}"
    );
    for id in [first, second] {
        let record = app.wait_for_task(&id).await;
        assert_eq!(record["state"], "succeeded", "{record}");
    }
    assert_eq!(fake.request_count(), 2);
}
