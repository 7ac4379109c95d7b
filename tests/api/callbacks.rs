//! Callback mode: the final body is POSTed to `callback_url`, retried until a 2xx, every attempt
//! recorded; a receiver that never answers holds up nothing else.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{callback_receiver, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_final_body_arrives_at_the_callback_url() {
    let receiver = callback_receiver(0, false).await;
    let app = spawn_app().await;
    let accepted = app
        .post_images(json!({"prompt": "a white siamese cat", "callback_url": receiver.url()}))
        .await;
    assert_eq!(accepted.status, 200);
    assert!(accepted.body.get("data").is_none());
    let id = accepted.body["task_id"].as_str().unwrap();
    let posts = receiver.wait_for(1).await;
    let (headers, body) = &posts[0];
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["success"], true);
    assert_eq!(body["task_id"], id);
    assert_eq!(body["trace_id"], accepted.body["trace_id"]);
    assert_eq!(body["data"][0]["prompt"], "a white siamese cat");
    let record = app.wait_for_task(id).await;
    assert_eq!(
        &record["response"], body,
        "the callback carries exactly the record's response"
    );
}

#[tokio::test]
async fn a_failing_receiver_is_retried_until_it_accepts() {
    let receiver = callback_receiver(3, false).await;
    let app = spawn_app().await;
    let accepted = app
        .post_images(json!({"prompt": "x", "callback_url": receiver.url()}))
        .await;
    let id = accepted.body["task_id"].as_str().unwrap();
    let posts = receiver.wait_for(4).await;
    assert!(posts.iter().all(|(_, body)| body["task_id"] == id));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = app.db.callback_status(id).await.unwrap();
        if status == Some((4, "delivered".to_owned())) {
            break;
        }
        assert!(Instant::now() < deadline, "callback status: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_receiver_that_never_answers_holds_up_nothing_else() {
    let stuck = callback_receiver(0, true).await;
    let healthy = callback_receiver(0, false).await;
    let app = spawn_app_with(|c| c.callback_timeout = Duration::from_millis(300)).await;
    for _ in 0..3 {
        app.post_images(json!({"prompt": "stuck", "callback_url": stuck.url()}))
            .await;
    }
    let accepted = app
        .post_images(json!({"prompt": "fine", "callback_url": healthy.url()}))
        .await;
    let posts = healthy.wait_for(1).await;
    assert_eq!(posts[0].1["task_id"], accepted.body["task_id"]);
    // The stuck receiver is retried (its attempts time out), and never fails a task.
    stuck.wait_for(4).await;
    let id = accepted.body["task_id"].as_str().unwrap();
    assert_eq!(app.wait_for_task(id).await["state"], "succeeded");
}

#[tokio::test]
async fn a_refused_or_dummy_callback_url_never_fails_the_task() {
    let app = spawn_app().await;
    for url in [
        "http://169.254.169.254/latest",
        "dummy",
        "http://10.0.0.1/cb",
    ] {
        let accepted = app
            .post_images(json!({"prompt": "x", "callback_url": url}))
            .await;
        assert_eq!(accepted.status, 200, "{url}: {}", accepted.body);
        let id = accepted.body["task_id"].as_str().unwrap();
        assert_eq!(app.wait_for_task(id).await["state"], "succeeded");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = app.db.callback_status(id).await.unwrap();
            if status == Some((1, "failed".to_owned())) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{url}: callback status {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn signed_callbacks_verify_with_an_independent_standard_webhooks_implementation() {
    use base64::Engine;
    let key = [7u8; 32];
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let receiver = callback_receiver(1, false).await;
    let app = spawn_app_with(|c| c.callback_signing_key = Some(key.to_vec())).await;
    app.post_images(json!({"prompt": "signed", "callback_url": receiver.url()}))
        .await;
    let posts = receiver.wait_for(2).await;
    let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
    let raw = receiver.raw_bodies();
    for ((headers, _), bytes) in posts.iter().zip(&raw) {
        let mut http_headers = reqwest::header::HeaderMap::new();
        for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            http_headers.insert(name, headers[name].to_str().unwrap().parse().unwrap());
        }
        verifier
            .verify(bytes, &http_headers)
            .expect("a valid signature");
    }
    assert_eq!(
        posts[0].0["webhook-id"], posts[1].0["webhook-id"],
        "stable across retries"
    );
    let wrong = standardwebhooks::Webhook::new(&format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([8u8; 32])
    ))
    .unwrap();
    let mut http_headers = reqwest::header::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        http_headers.insert(name, posts[0].0[name].to_str().unwrap().parse().unwrap());
    }
    assert!(wrong.verify(&raw[0], &http_headers).is_err());
}
