//! The server against the fake chat-completions upstream through a `kind = "chat"` provider
//! (OpenRouter's way to Gemini's image models), configured as TOML: the message and image_config
//! sent, the image stored, an edit's content parts, and what no image, a content filter, a 429
//! and a 500 become — including failover from a chat route to an OpenAI one.
//! Uses the crate's public API (`fake`) and `helpers`, nothing internal.

use std::time::Duration;

use nano_banana::fake::chat::{FakeChat, FakeChatOptions, IMAGE_RGB, Scenario};
use nano_banana::fake::openai;
use serde_json::json;

use crate::helpers::{TestApp, application, assert_error, balance, data_uri, download_image, png};
use crate::upstream_openai::{app_with_upstreams, fake_openai};

async fn fake_chat() -> FakeChat {
    FakeChat::start(FakeChatOptions {
        api_key: Some("sk-or-test".into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// `nano-banana-2` on one chat route to Gemini 3.1 Flash Image through "OpenRouter".
fn flash_on(fake: &FakeChat) -> String {
    format!(
        r#"
        [providers.openrouter]
        kind = "chat"
        base_url = "{}"
        api_key = "sk-or-test"

        [models."nano-banana-2"]
        routes = [{{ provider = "openrouter", upstream_model = "google/gemini-3.1-flash-image-preview" }}]
        "#,
        fake.base_url()
    )
}

async fn stored(app: &TestApp, answer: &crate::helpers::Answer) -> ([u8; 3], (u32, u32)) {
    let url = answer.body["data"][0]["image_url"].as_str().unwrap();
    let (_, image) = download_image(app, url).await;
    (
        image.to_rgb8().get_pixel(0, 0).0,
        (image.width(), image.height()),
    )
}

#[tokio::test]
async fn generate_sends_the_ratio_and_size_in_image_config_and_stores_the_image() {
    let fake = fake_chat().await;
    let app = app_with_upstreams(&flash_on(&fake), |_| {}).await;
    let answer = app
        .post_images(json!({"model": "nano-banana-2", "prompt": "a fox",
            "aspect_ratio": "9:16", "resolution": "2K"}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let request = &fake.requests()[0];
    assert_eq!(request.path, "/api/v1/chat/completions");
    assert_eq!(request.authorization.as_deref(), Some("Bearer sk-or-test"));
    assert_eq!(
        request.model.as_deref(),
        Some("google/gemini-3.1-flash-image-preview")
    );
    assert_eq!(request.part_types, vec!["text"]);
    assert_eq!(request.prompt, "a fox");
    assert_eq!(request.modalities, vec!["image", "text"]);
    assert_eq!(request.aspect_ratio.as_deref(), Some("9:16"));
    assert_eq!(request.image_size.as_deref(), Some("2K"));
    assert_eq!(stored(&app, &answer).await, (IMAGE_RGB, (1536, 2752)));
}

#[tokio::test]
async fn an_edit_sends_the_text_then_each_input_as_a_data_url() {
    let fake = fake_chat().await;
    let app = app_with_upstreams(&flash_on(&fake), |_| {}).await;
    let (first, second) = (png(40, 30), png(10, 10));
    let answer = app
        .post_images(
            json!({"action": "edit", "model": "nano-banana-2", "prompt": "combine",
            "image_urls": [data_uri(&first), data_uri(&second)]}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let request = &fake.requests()[0];
    assert_eq!(request.part_types, vec!["text", "image_url", "image_url"]);
    assert_eq!(request.prompt, "combine");
    assert_eq!(request.images.len(), 2);
    for (image, bytes) in request.images.iter().zip([&first, &second]) {
        assert_eq!(image.mime_type, "image/png");
        assert_eq!(&image.bytes[..], &bytes[..]);
    }
    assert_eq!(request.aspect_ratio, None, "the first image decides");
    assert_eq!(request.image_size.as_deref(), Some("1K"));
}

#[tokio::test]
async fn no_image_is_an_api_error_and_a_content_filter_is_forbidden_and_not_billed() {
    let fake = fake_chat().await;
    let app = app_with_upstreams(&flash_on(&fake), |c| {
        c.admin_key = Some(crate::helpers::ADMIN_KEY.into());
    })
    .await;
    let (id, token) = application(&app, 10, json!({})).await;
    let before = balance(&app, &id).await;
    let generate = || {
        app.post(
            "/nano-banana/images",
            Some(&token),
            json!({"model": "nano-banana-2", "prompt": "x"}).to_string(),
        )
    };
    fake.push_scenario(Scenario::NoImage);
    assert_error(&generate().await, 500, "api_error");
    assert_eq!(fake.request_count(), 1, "no image is not retried");
    fake.push_scenario(Scenario::Refused);
    assert_error(&generate().await, 403, "forbidden");
    assert_eq!(fake.request_count(), 2);
    assert_eq!(balance(&app, &id).await, before, "neither is billed");
}

#[tokio::test]
async fn a_500_is_retried() {
    let fake = fake_chat().await;
    let app = app_with_upstreams(&flash_on(&fake), |_| {}).await;
    fake.push_scenario(Scenario::ServerError);
    let answer = app
        .post_images(json!({"model": "nano-banana-2", "prompt": "x"}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(fake.request_count(), 2);
}

/// `nano-banana-pro` through OpenRouter first and OpenAI's gpt-image-1 as the fallback.
#[tokio::test]
async fn a_429_from_the_chat_route_fails_over_to_an_openai_route() {
    let chat = fake_chat().await;
    let openai = fake_openai().await;
    let toml = format!(
        r#"
        [providers.openrouter]
        kind = "chat"
        base_url = "{}"
        api_key = "sk-or-test"

        [providers.my-openai]
        kind = "openai"
        base_url = "{}"
        api_key = "sk-test"

        [models."nano-banana-pro"]
        routes = [
          {{ provider = "openrouter", upstream_model = "google/gemini-3-pro-image-preview", priority = 1 }},
          {{ provider = "my-openai", upstream_model = "gpt-image-1", priority = 2 }},
        ]
        "#,
        chat.base_url(),
        openai.base_url()
    );
    let app = app_with_upstreams(&toml, |_| {}).await;
    chat.push_scenario(Scenario::RateLimited {
        retry_after: Duration::from_secs(30),
    });
    let answer = app
        .post_images(json!({"model": "nano-banana-pro", "prompt": "x", "aspect_ratio": "3:2"}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!((chat.request_count(), openai.request_count()), (1, 1));
    assert_eq!(
        stored(&app, &answer).await,
        (openai::IMAGE_RGB, (1536, 1024)),
        "made by the OpenAI route"
    );
    // The chat route rests for the 30 s it asked: the next image goes to OpenAI at once.
    let again = app
        .post_images(json!({"model": "nano-banana-pro", "prompt": "y"}))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!((chat.request_count(), openai.request_count()), (1, 2));
}
