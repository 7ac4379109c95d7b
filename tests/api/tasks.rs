//! `POST /nano-banana/tasks`: records in every state, batches, visibility, validation.

use serde_json::json;

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn unknown_ids_answer_an_empty_object() {
    let app = spawn_app().await;
    let answer = app
        .post_tasks(json!({"action": "retrieve", "id": "no-such-task"}))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, json!({}));
    // action defaults to retrieve
    let answer = app.post_tasks(json!({"id": "no-such-task"})).await;
    assert_eq!(answer.body, json!({}));
}

#[tokio::test]
async fn a_succeeded_record_has_the_contract_shape() {
    let app = spawn_app().await;
    let request = json!({"prompt": "a plum", "async": true, "size": "ignored"});
    let accepted = app.post_images(request.clone()).await;
    let id = accepted.body["task_id"].as_str().unwrap();
    let record = app.wait_for_task(id).await;
    assert_eq!(record["id"], id);
    assert_eq!(record["type"], "images");
    assert_eq!(record["trace_id"], accepted.body["trace_id"]);
    for field in ["application_id", "user_id", "api_id", "credential_id"] {
        assert!(
            uuid::Uuid::parse_str(record[field].as_str().unwrap()).is_ok(),
            "{field}"
        );
    }
    let created = record["created_at"].as_f64().unwrap();
    let started = record["started_at"].as_f64().unwrap();
    let finished = record["finished_at"].as_f64().unwrap();
    assert!(created <= started && started <= finished);
    let elapsed = record["elapsed"].as_f64().unwrap();
    assert!((elapsed - (finished - started)).abs() < 0.002);
    assert_eq!(record["request"], request, "the original request body");
    assert_eq!(record["response"]["success"], true);
    assert_eq!(record["response"]["data"].as_array().unwrap().len(), 1);
    assert!(record.get("data").is_none(), "never a top-level data key");
}

#[tokio::test]
async fn a_failed_record_holds_the_error_body() {
    let app = spawn_app().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let accepted = app
        .post_images(json!({
            "action": "edit", "prompt": "x", "async": true,
            "image_urls": [format!("http://127.0.0.1:{closed}/gone.png")]
        }))
        .await;
    let id = accepted.body["task_id"].as_str().unwrap();
    let record = app.wait_for_task(id).await;
    assert_eq!(record["state"], "failed");
    assert_eq!(record["response"]["success"], false);
    assert_eq!(record["response"]["task_id"], id);
    assert_eq!(record["response"]["error"]["code"], "bad_request");
    assert!(record["finished_at"].is_f64());
}

#[tokio::test]
async fn retrieve_batch_returns_known_ids_in_order() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for prompt in ["one", "two"] {
        let accepted = app
            .post_images(json!({"prompt": prompt, "async": true}))
            .await;
        ids.push(accepted.body["task_id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.wait_for_task(id).await;
    }
    let answer = app
        .post_tasks(json!({"action": "retrieve_batch", "ids": [ids[1], "unknown", ids[0]]}))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["count"], 2);
    let items = answer.body["items"].as_array().unwrap();
    assert_eq!(items[0]["id"], ids[1].as_str());
    assert_eq!(items[1]["id"], ids[0].as_str());
    let empty = app
        .post_tasks(json!({"action": "retrieve_batch", "ids": []}))
        .await;
    assert_eq!(empty.body, json!({"items": [], "count": 0}));
}

#[tokio::test]
async fn invalid_task_queries_are_bad_requests() {
    let app = spawn_app().await;
    let too_many: Vec<String> = (0..51).map(|i| i.to_string()).collect();
    let cases = [
        json!({"action": "retrieve"}),
        json!({"action": "retrieve", "id": 5}),
        json!({"action": "delete", "id": "x"}),
        json!({"action": "retrieve_batch"}),
        json!({"action": "retrieve_batch", "ids": "x"}),
        json!({"action": "retrieve_batch", "ids": [1]}),
        json!({"action": "retrieve_batch", "ids": too_many}),
        json!([]),
    ];
    for body in cases {
        let answer = app.post_tasks(body.clone()).await;
        assert_error(&answer, 400, "bad_request");
    }
}

#[tokio::test]
async fn another_applications_tasks_are_invisible() {
    let app = spawn_app().await;
    let accepted = app
        .post_images(json!({"prompt": "mine", "async": true}))
        .await;
    let id = accepted.body["task_id"].as_str().unwrap().to_owned();
    app.wait_for_task(&id).await;

    let db = &app.db;
    let now = nano_banana::domain::now_ms();
    db.create_application("other-app", "other", "other-user", 0, now)
        .await
        .unwrap();
    let other_token = "nb-other-application-token";
    db.create_token(
        "other-token",
        "other-app",
        &nano_banana::accounts::token_hash(other_token),
        "nb-other",
        "test",
        now,
    )
    .await
    .unwrap();
    let answer = app
        .post(
            "/nano-banana/tasks",
            Some(other_token),
            json!({"id": id}).to_string(),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, json!({}));
    let batch = app
        .post(
            "/nano-banana/tasks",
            Some(other_token),
            json!({"action": "retrieve_batch", "ids": [id]}).to_string(),
        )
        .await;
    assert_eq!(batch.body, json!({"items": [], "count": 0}));
}
