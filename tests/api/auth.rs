//! Tokens on every API route; trace ids and `no_api` everywhere.

use std::time::Duration;

use nano_banana::{
    accounts::{Admin, AdminRequest},
    storage::Db,
};
use serde_json::json;

use crate::helpers::{TestApp, assert_error, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_missing_token_is_no_token() {
    let app = spawn_app().await;
    for path in [
        "/nano-banana/images",
        "/nano-banana/tasks",
        "/gemini/images",
        "/nanobanana/tasks",
    ] {
        let answer = app
            .post(path, None, json!({"prompt": "x"}).to_string())
            .await;
        assert_error(&answer, 400, "no_token");
    }
    let answer = app
        .client
        .post(format!("{}/nano-banana/images", app.address))
        .header("authorization", "Basic abc")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_error(&crate::helpers::answer(answer).await, 400, "no_token");
}

#[tokio::test]
async fn an_unknown_token_is_invalid_token() {
    let app = spawn_app().await;
    let answer = app
        .post(
            "/nano-banana/images",
            Some("nb-wrong"),
            json!({"prompt": "x"}).to_string(),
        )
        .await;
    assert_error(&answer, 401, "invalid_token");
}

#[tokio::test]
async fn the_bearer_scheme_and_header_name_are_case_insensitive() {
    let app = spawn_app().await;
    let answer = app
        .client
        .post(format!("{}/nano-banana/tasks", app.address))
        .header("Authorization", format!("bearer {}", app.token))
        .header("accept", "*/*")
        .body(json!({"id": "nope"}).to_string())
        .send()
        .await
        .unwrap();
    let answer = crate::helpers::answer(answer).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, json!({}));
}

#[tokio::test]
async fn unknown_paths_are_no_api_with_or_without_a_token() {
    let app = spawn_app().await;
    for token in [None, Some(app.token.as_str())] {
        let answer = app.post("/nano-banana/videos", token, "{}".into()).await;
        assert_error(&answer, 404, "no_api");
    }
    let answer = crate::helpers::answer(app.get("/nope").await).await;
    assert_error(&answer, 404, "no_api");
    let answer = crate::helpers::answer(app.get("/images/not-a-key.png").await).await;
    assert_error(&answer, 404, "no_api");
}

/// schemathesis' `unsupported_method`: a served path asked with a method it does not take is
/// 405 with `Allow` (it was 404, as if the path did not exist), in the contract's error body.
#[tokio::test]
async fn a_served_path_with_another_method_is_405_with_allow() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        ("GET", "/nano-banana/images", "POST"),
        ("TRACE", "/nano-banana/tasks", "POST"),
        ("DELETE", "/images/some-key.png", "GET,HEAD"),
        ("PATCH", "/healthz", "GET,HEAD"),
        ("PUT", "/v1/models/nano-banana", "GET,HEAD,POST"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = app
            .client
            .request(method.clone(), format!("{}{path}", app.address))
            .header("authorization", format!("Bearer {}", app.token))
            .send()
            .await
            .unwrap();
        let answer = crate::helpers::answer(response).await;
        assert_error(&answer, 405, "no_api");
        crate::helpers::assert_trace_id(&answer);
        assert_eq!(answer.headers["allow"], allow, "{method} {path}");
    }
}

#[tokio::test]
async fn health_and_openapi_answer_without_a_token() {
    let app = spawn_app().await;
    let health = crate::helpers::answer(app.get("/healthz").await).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "ok");
    crate::helpers::assert_trace_id(&health);
    let openapi = crate::helpers::answer(app.get("/openapi.json").await).await;
    assert_eq!(openapi.status, 200);
    assert!(openapi.body["openapi"].as_str().unwrap().starts_with("3."));
}

#[tokio::test]
async fn metrics_cover_the_queue_upstream_and_callbacks() {
    let receiver = crate::helpers::callback_receiver(0, false).await;
    let app = spawn_app().await;
    app.post_images(json!({"prompt": "counted"})).await;
    app.post_images(json!({"prompt": "called back", "callback_url": receiver.url()}))
        .await;
    receiver.wait_for(1).await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    for metric in [
        "nano_banana_tasks{state=\"succeeded\"}",
        "nano_banana_queue_depth",
        "nano_banana_callback_backlog",
        "nano_banana_task_duration_seconds_bucket",
        "nano_banana_upstream_calls_total{provider=\"placeholder\",outcome=\"image\",route=\"placeholder/gemini-2.5-flash-image\"}",
    ] {
        assert!(text.contains(metric), "{metric} in:\n{text}");
    }
    // The delivery is recorded just after the receiver answers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = app.get("/metrics").await.text().await.unwrap();
        if text.contains("nano_banana_callback_deliveries_total{outcome=\"delivered\"}") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no delivery metric:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Revokes every token straight in the database, as another node or the admin CLI would: this
/// process is not told.
async fn revoke_all_elsewhere(app: &TestApp) {
    let db = Db::connect(app.database_url()).await.expect("the database");
    let admin = Admin { db: &db };
    let list = AdminRequest::ListTokens {
        application_id: None,
    };
    let listed = admin.run(&list).await.expect("tokens listed");
    for token in listed["tokens"].as_array().expect("a list") {
        let id = token["id"].as_str().expect("an id").to_owned();
        admin
            .run(&AdminRequest::RevokeToken { id })
            .await
            .expect("revoked");
    }
    db.close().await;
}

#[tokio::test]
async fn a_token_revoked_elsewhere_is_refused_once_its_cached_lookup_expires() {
    let lookup = json!({"id": "nope"});
    // No cache: refused at once.
    let app = spawn_app_with(|c| c.token_cache = Duration::ZERO).await;
    assert_eq!(app.post_tasks(lookup.clone()).await.status, 200);
    revoke_all_elsewhere(&app).await;
    assert_error(&app.post_tasks(lookup.clone()).await, 401, "invalid_token");

    // A one-second cache: refused once the second has passed.
    let app = spawn_app_with(|c| c.token_cache = Duration::from_secs(1)).await;
    assert_eq!(app.post_tasks(lookup.clone()).await.status, 200);
    revoke_all_elsewhere(&app).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_error(&app.post_tasks(lookup.clone()).await, 401, "invalid_token");

    // A long cache: the lookup is reused until this process's admin API is used.
    let app = spawn_app_with(|c| {
        c.token_cache = Duration::from_secs(600);
        c.admin_key = Some("admin-key-for-the-test".into());
    })
    .await;
    assert_eq!(app.post_tasks(lookup.clone()).await.status, 200);
    revoke_all_elsewhere(&app).await;
    assert_eq!(app.post_tasks(lookup.clone()).await.status, 200);
    let listed = app.admin(reqwest::Method::GET, "/admin/tokens", None).await;
    assert_eq!(listed.status, 200);
    assert_error(&app.post_tasks(lookup).await, 401, "invalid_token");
}
