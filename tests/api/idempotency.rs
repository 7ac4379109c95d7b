//! `Idempotency-Key`: a retried POST returns the original task instead of creating another.

use serde_json::json;

use crate::helpers::{answer, assert_error, spawn_app};

async fn post_with_key(
    app: &crate::helpers::TestApp,
    key: &str,
    body: serde_json::Value,
) -> crate::helpers::Answer {
    let response = app
        .client
        .post(format!("{}/nano-banana/images", app.address))
        .header("authorization", format!("Bearer {}", app.token))
        .header("idempotency-key", key)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    answer(response).await
}

#[tokio::test]
async fn a_repeated_sync_request_returns_the_original_result() {
    let app = spawn_app().await;
    let body = json!({"prompt": "once only", "count": 2});
    let first = post_with_key(&app, "key-1", body.clone()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    // Same fields in another order: the same request.
    let second = post_with_key(&app, "key-1", json!({"count": 2, "prompt": "once only"})).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body["task_id"], first.body["task_id"]);
    assert_eq!(
        second.body["data"], first.body["data"],
        "the same images, not new ones"
    );
    assert_ne!(
        second.headers["x-trace-id"], first.headers["x-trace-id"],
        "a fresh trace id"
    );
}

#[tokio::test]
async fn a_repeated_async_request_returns_the_original_task() {
    let app = spawn_app().await;
    let body = json!({"prompt": "async once", "async": true});
    let first = post_with_key(&app, "key-2", body.clone()).await;
    let second = post_with_key(&app, "key-2", body.clone()).await;
    assert_eq!(first.body["task_id"], second.body["task_id"]);
    let other = post_with_key(&app, "key-3", body).await;
    assert_ne!(
        other.body["task_id"], first.body["task_id"],
        "another key is another task"
    );
}

#[tokio::test]
async fn reusing_a_key_for_another_request_or_a_bad_key_is_a_bad_request() {
    let app = spawn_app().await;
    post_with_key(&app, "key-4", json!({"prompt": "a", "async": true})).await;
    let reused = post_with_key(&app, "key-4", json!({"prompt": "b", "async": true})).await;
    assert_error(&reused, 400, "bad_request");
    assert!(
        reused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );
    let too_long = post_with_key(&app, &"k".repeat(256), json!({"prompt": "a"})).await;
    assert_error(&too_long, 400, "bad_request");
}
