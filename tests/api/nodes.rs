//! Several nodes on one database (in-process here; `multinode.rs` uses real processes): what one
//! node accepts, another may run, and the answer still reaches the client that asked.

use serde_json::json;

use crate::helpers::{download_image, share_state, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_sync_request_is_answered_when_another_node_runs_the_task() {
    let worker = spawn_app().await;
    // An API-only node: it accepts and answers, and runs nothing itself.
    let gateway = spawn_app_with(|c| {
        share_state(c, &worker);
        c.workers = 0;
    })
    .await;

    let answer = gateway
        .post_images(json!({"prompt": "accepted by one node, made by the other", "count": 2}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["success"], true, "{}", answer.body);
    let data = answer.body["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    for entry in data {
        let url = entry["image_url"].as_str().expect("an image URL");
        // The node that made the image named it under its own base URL.
        assert!(url.starts_with(&worker.address), "{url}");
        let (_, image) = download_image(&worker, url).await;
        assert_eq!((image.width(), image.height()), (1024, 1024));
    }

    // The record reads the same through either node.
    let id = answer.body["task_id"].as_str().expect("a task id");
    for node in [&worker, &gateway] {
        let record = node
            .post_tasks(json!({"action": "retrieve", "id": id}))
            .await;
        assert_eq!(record.body["state"], "succeeded", "{}", record.body);
    }
}

#[tokio::test]
async fn an_api_only_node_queues_work_for_the_others() {
    let gateway = spawn_app_with(|c| c.workers = 0).await;
    let accepted = gateway
        .post_images(json!({"prompt": "nobody runs this yet", "async": true}))
        .await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    let id = accepted.body["task_id"]
        .as_str()
        .expect("a task id")
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let record = gateway
        .post_tasks(json!({"action": "retrieve", "id": id}))
        .await;
    assert_eq!(record.body["state"], "pending", "{}", record.body);

    // A worker node on the same database picks it up.
    let worker = spawn_app_with(|c| share_state(c, &gateway)).await;
    let record = worker.wait_for_task(&id).await;
    assert_eq!(record["state"], "succeeded", "{record}");
}

#[tokio::test]
async fn readiness_names_the_dependency_that_fails() {
    let app = spawn_app().await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("JSON");
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["checks"]["database"]["status"], "ok", "{body}");
    assert_eq!(body["checks"]["storage"]["status"], "ok", "{body}");

    // A Redis that is down: the node still starts (rate limits fail open here), but it is not
    // ready, and says why; liveness is unaffected.
    let broken = spawn_app_with(|c| {
        let mut redis = nano_banana::limits::RedisSettings::new("redis://127.0.0.1:1");
        redis.timeout = std::time::Duration::from_millis(200);
        c.redis = Some(redis);
    })
    .await;
    let ready = broken.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("JSON");
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["checks"]["redis"]["status"], "error", "{body}");
    assert!(
        body["checks"]["redis"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    assert_eq!(body["checks"]["database"]["status"], "ok", "{body}");
    assert_eq!(broken.get("/healthz").await.status(), 200);
}
