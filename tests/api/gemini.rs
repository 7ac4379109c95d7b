//! The server against a fake Gemini upstream that speaks the real wire format: the request we
//! send, and how each upstream outcome maps to the contract.

use std::time::Duration;

use nano_banana::fake::gemini::{FakeGemini, FakeGeminiOptions, Scenario};
use serde_json::json;

use crate::helpers::{TestApp, assert_error, data_uri, download_image, png, spawn_app_with};

async fn app_with_fake(options: FakeGeminiOptions) -> (TestApp, FakeGemini) {
    let fake = FakeGemini::start(options).await.unwrap();
    let base_url = fake.base_url();
    let app = spawn_app_with(move |c| {
        crate::helpers::use_gemini(c, &base_url, "test-key");
        c.upstream_timeout = Duration::from_millis(500);
        c.max_attempts = 3;
    })
    .await;
    (app, fake)
}

async fn fake_app() -> (TestApp, FakeGemini) {
    app_with_fake(FakeGeminiOptions {
        api_key: Some("test-key".into()),
        ..FakeGeminiOptions::default()
    })
    .await
}

#[tokio::test]
async fn generate_sends_geminis_format() {
    let (app, fake) = fake_app().await;
    let answer = app
        .post_images(json!({"prompt": "a banana", "aspect_ratio": "16:9"}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        "/v1beta/models/gemini-2.5-flash-image:generateContent"
    );
    assert_eq!(request.api_key.as_deref(), Some("test-key"));
    let body = &request.body;
    assert_eq!(body["contents"][0]["parts"][0]["text"], "a banana");
    assert_eq!(body["contents"][0]["parts"].as_array().unwrap().len(), 1);
    let config = &body["generationConfig"];
    assert_eq!(config["responseModalities"], json!(["TEXT", "IMAGE"]));
    assert_eq!(config["imageConfig"]["aspectRatio"], "16:9");
    assert!(
        config["imageConfig"].get("imageSize").is_none(),
        "2.5 Flash Image takes no imageSize"
    );
    let (_, image) =
        download_image(&app, answer.body["data"][0]["image_url"].as_str().unwrap()).await;
    assert_eq!((image.width(), image.height()), (1344, 768));
}

#[tokio::test]
async fn pro_sends_the_image_size_and_official_models_route_too() {
    let (app, fake) = fake_app().await;
    let answer = app
        .post_images(
            json!({"prompt": "x", "model": "nano-banana-pro:official", "resolution": "2K"}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let request = &fake.requests()[0];
    assert_eq!(request.model.as_deref(), Some("gemini-3-pro-image"));
    assert_eq!(
        request.body["generationConfig"]["imageConfig"]["imageSize"],
        "2K"
    );
    assert_eq!(
        request.body["generationConfig"]["imageConfig"]["aspectRatio"],
        "1:1"
    );
}

#[tokio::test]
async fn edit_sends_inline_images_and_no_ratio() {
    let (app, fake) = fake_app().await;
    let first = png(40, 30);
    let second = png(10, 10);
    let answer = app
        .post_images(json!({
            "action": "edit", "prompt": "combine", "model": "nano-banana-2",
            "image_urls": [data_uri(&first), data_uri(&second)]
        }))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = &fake.requests()[0].body;
    let parts = body["contents"][0]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0]["text"], "combine");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(parts[1]["inline_data"]["mime_type"], "image/png");
    assert_eq!(parts[1]["inline_data"]["data"], b64.encode(&first));
    assert_eq!(parts[2]["inline_data"]["data"], b64.encode(&second));
    let image_config = &body["generationConfig"]["imageConfig"];
    assert!(
        image_config.get("aspectRatio").is_none(),
        "the first image decides: {body}"
    );
    assert_eq!(image_config["imageSize"], "1K");
}

#[tokio::test]
async fn thought_images_are_skipped() {
    let (app, fake) = fake_app().await;
    fake.push_scenario(Scenario::ThoughtThenImage);
    let answer = app
        .post_images(json!({"prompt": "x", "model": "nano-banana-2", "aspect_ratio": "3:2"}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["data"].as_array().unwrap().len(), 1);
    let (_, image) =
        download_image(&app, answer.body["data"][0]["image_url"].as_str().unwrap()).await;
    assert_eq!(
        (image.width(), image.height()),
        (1264, 848),
        "the final image, not the thought"
    );
}

#[tokio::test]
async fn safety_refusals_are_forbidden_and_not_retried() {
    let (app, fake) = fake_app().await;
    for scenario in [Scenario::ImageSafety, Scenario::PromptBlocked] {
        let before = fake.request_count();
        fake.push_scenario(scenario.clone());
        let answer = app.post_images(json!({"prompt": "x"})).await;
        assert_error(&answer, 403, "forbidden");
        assert!(answer.body["task_id"].is_string());
        assert_eq!(fake.request_count() - before, 1, "{scenario:?} is final");
    }
}

#[tokio::test]
async fn a_200_without_an_image_is_an_api_error() {
    let (app, fake) = fake_app().await;
    for scenario in [
        Scenario::NoImage,
        Scenario::TextOnly,
        Scenario::Garbage,
        Scenario::BadBase64,
    ] {
        let before = fake.request_count();
        fake.push_scenario(scenario.clone());
        let answer = app.post_images(json!({"prompt": "x"})).await;
        assert_error(&answer, 500, "api_error");
        assert_eq!(
            fake.request_count() - before,
            1,
            "{scenario:?} is not retried"
        );
    }
}

#[tokio::test]
async fn rate_limits_and_outages_are_retried_then_succeed() {
    let (app, fake) = fake_app().await;
    fake.push_scenario(Scenario::RateLimited {
        retry_delay: "0.05s".into(),
    });
    fake.push_scenario(Scenario::Unavailable);
    let answer = app.post_images(json!({"prompt": "x"})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test]
async fn persistent_upstream_failures_become_api_errors_after_the_attempts() {
    let (app, fake) = fake_app().await;
    for scenario in [
        Scenario::ServerError,
        Scenario::Unavailable,
        Scenario::GatewayTimeout,
        Scenario::HtmlError,
    ] {
        let before = fake.request_count();
        for _ in 0..3 {
            fake.push_scenario(scenario.clone());
        }
        let answer = app.post_images(json!({"prompt": "x"})).await;
        assert_error(&answer, 500, "api_error");
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("after 3 attempts"), "{message}");
        assert_eq!(fake.request_count() - before, 3, "{scenario:?}");
    }
}

#[tokio::test]
async fn a_slow_upstream_times_out_into_an_api_error() {
    let (app, fake) = fake_app().await;
    for _ in 0..3 {
        fake.push_scenario(Scenario::Hang);
    }
    let answer = app.post_images(json!({"prompt": "x"})).await;
    assert_error(&answer, 500, "api_error");
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be reached")
    );
}

#[tokio::test]
async fn a_wrong_api_key_is_an_api_error_without_retries() {
    let (app, fake) = app_with_fake(FakeGeminiOptions {
        api_key: Some("another-key".into()),
        ..FakeGeminiOptions::default()
    })
    .await;
    let answer = app.post_images(json!({"prompt": "x"})).await;
    assert_error(&answer, 500, "api_error");
    assert_eq!(fake.request_count(), 1);
    assert!(
        !answer.body.to_string().contains("test-key"),
        "the key never leaks"
    );
}

#[tokio::test]
async fn count_makes_parallel_calls_and_partial_success_returns_what_worked() {
    let (app, fake) = fake_app().await;
    fake.push_scenario(Scenario::Success);
    fake.push_scenario(Scenario::ImageSafety);
    fake.push_scenario(Scenario::Success);
    let answer = app.post_images(json!({"prompt": "x", "count": 3})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test]
async fn a_running_task_shows_the_processing_record_shape() {
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    // Long enough to be seen running even on a loaded machine.
    fake.push_scenario(Scenario::Slow(Duration::from_millis(1000)));
    let app = app_with_keys(&fake, "k").await;
    let accepted = app.post_images(json!({"prompt": "x", "async": true})).await;
    let id = accepted.body["task_id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let running = loop {
        let record = app.post_tasks(json!({"id": id})).await.body;
        if record["state"] == "processing" {
            break record;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never seen processing: {record}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        running.get("response").is_none(),
        "no response key while running: {running}"
    );
    assert!(running.get("finished_at").is_none());
    assert!(running.get("elapsed").is_none());
    assert!(running["started_at"].is_f64());
    let done = app.wait_for_task(id).await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["response"]["data"].as_array().unwrap().len(), 1);
}

async fn app_with_keys(fake: &FakeGemini, keys: &str) -> TestApp {
    let base_url = fake.base_url();
    let keys = keys.to_owned();
    spawn_app_with(move |c| {
        crate::helpers::use_gemini(c, &base_url, &keys);
        c.upstream_timeout = Duration::from_millis(2000);
    })
    .await
}

#[tokio::test]
async fn a_rate_limited_key_rests_and_the_next_key_is_used() {
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    let app = app_with_keys(&fake, "key-one,key-two").await;
    fake.push_scenario(Scenario::RateLimited {
        retry_delay: "30s".into(),
    });
    let answer = app.post_images(json!({"prompt": "x"})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let keys: Vec<Option<String>> = fake.requests().iter().map(|r| r.api_key.clone()).collect();
    assert_eq!(keys, [Some("key-one".into()), Some("key-two".into())]);
    // key-one rests for 30 s: the next requests all go to key-two.
    for _ in 0..2 {
        assert_eq!(app.post_images(json!({"prompt": "y"})).await.status, 200);
    }
    let later: Vec<Option<String>> = fake.requests()[2..]
        .iter()
        .map(|r| r.api_key.clone())
        .collect();
    assert_eq!(later, [Some("key-two".into()), Some("key-two".into())]);
}

#[tokio::test]
async fn an_invalid_key_is_taken_out_of_the_pool() {
    let fake = FakeGemini::start(FakeGeminiOptions {
        api_key: Some("good-key".into()),
        ..FakeGeminiOptions::default()
    })
    .await
    .unwrap();
    let app = app_with_keys(&fake, "bad-key,good-key").await;
    for _ in 0..3 {
        assert_eq!(app.post_images(json!({"prompt": "x"})).await.status, 200);
    }
    let bad_calls = fake
        .requests()
        .iter()
        .filter(|r| r.api_key.as_deref() == Some("bad-key"))
        .count();
    assert_eq!(bad_calls, 1, "tried once, then never again");
}

#[tokio::test]
async fn a_timeout_after_sending_is_not_resent_on_another_key() {
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    let app = app_with_keys(&fake, "key-one,key-two").await;
    fake.push_scenario(Scenario::Hang);
    let answer = app.post_images(json!({"prompt": "x"})).await;
    assert_error(&answer, 500, "api_error");
    assert_eq!(
        fake.request_count(),
        1,
        "the possibly billed call was not re-sent"
    );
}
