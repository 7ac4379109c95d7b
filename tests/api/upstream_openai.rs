//! The server against the fake OpenAI images API through a `kind = "openai"` provider, configured
//! as an operator writes it in the TOML file: the size and quality sent for a ratio and
//! resolution, the image stored, the multipart of an edit, and what a refusal, a rate limit, an
//! exhausted quota and a hang become. `upstream_chat` has the chat-completions provider.
//! Uses the crate's public API (`config`, `fake`) and `helpers`, nothing internal.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nano_banana::config::{Config, ProviderConfig, RouteConfig};
use nano_banana::fake::openai::{FakeOpenAi, FakeOpenAiOptions, IMAGE_RGB, Scenario};
use serde::Deserialize;
use serde_json::json;

use crate::helpers::{
    TestApp, application, assert_error, balance, data_uri, download_image, png, spawn_app_with,
};

/// The upstream part of a config file.
#[derive(Deserialize)]
struct Upstreams {
    #[serde(default)]
    providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    models: BTreeMap<String, RouteConfig>,
}

/// The server with the `[providers.*]` and `[models.*]` tables of `toml`, a 10 s upstream
/// timeout (the fakes draw 4K PNGs; two cores run the suite) and three attempts per image.
pub async fn app_with_upstreams(toml: &str, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let upstreams: Upstreams = toml::from_str(toml).expect("valid upstream TOML");
    spawn_app_with(move |c| {
        c.providers.extend(upstreams.providers);
        c.models.extend(upstreams.models);
        c.upstream_timeout = Duration::from_secs(10);
        c.max_attempts = 3;
        adjust(c);
    })
    .await
}

pub async fn fake_openai() -> FakeOpenAi {
    FakeOpenAi::start(FakeOpenAiOptions {
        api_key: Some("sk-test".into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// `nano-banana-pro` on one OpenAI route for `upstream_model`.
fn pro_on(fake: &FakeOpenAi, upstream_model: &str) -> String {
    format!(
        r#"
        [providers.my-openai]
        kind = "openai"
        base_url = "{}"
        api_key = "sk-test"
        organization = "org-nb"

        [models."nano-banana-pro"]
        routes = [{{ provider = "my-openai", upstream_model = "{upstream_model}" }}]
        "#,
        fake.base_url()
    )
}

async fn stored_size(app: &TestApp, answer: &crate::helpers::Answer) -> (u32, u32) {
    let url = answer.body["data"][0]["image_url"].as_str().unwrap();
    let (content_type, image) = download_image(app, url).await;
    assert_eq!(content_type, "image/png");
    assert_eq!(
        image.to_rgb8().get_pixel(0, 0).0,
        IMAGE_RGB,
        "made by the fake"
    );
    (image.width(), image.height())
}

#[tokio::test]
async fn gpt_image_1_gets_the_nearest_size_and_quality_and_the_image_is_stored() {
    let fake = fake_openai().await;
    let app = app_with_upstreams(&pro_on(&fake, "gpt-image-1"), |_| {}).await;
    let answer = app
        .post_images(json!({"model": "nano-banana-pro", "prompt": "a lemon",
            "aspect_ratio": "16:9", "resolution": "2K"}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/v1/images/generations");
    assert_eq!(request.authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(request.organization.as_deref(), Some("org-nb"));
    assert_eq!(request.model.as_deref(), Some("gpt-image-1"));
    assert_eq!(request.prompt.as_deref(), Some("a lemon"));
    assert_eq!(request.size.as_deref(), Some("1536x1024"));
    assert_eq!(request.quality.as_deref(), Some("high"));
    assert_eq!(request.output_format.as_deref(), Some("png"));
    assert_eq!(request.response_format, None);
    assert_eq!(stored_size(&app, &answer).await, (1536, 1024));
}

#[tokio::test]
async fn gpt_image_2_gets_the_contracts_size_within_its_limits() {
    let fake = fake_openai().await;
    let app = app_with_upstreams(&pro_on(&fake, "gpt-image-2"), |_| {}).await;
    for (ratio, resolution, size) in [
        ("3:4", "1K", (896, 1200)),
        // 5504x3072 is past 3840 px a side: scaled down, in multiples of 16.
        ("16:9", "4K", (3840, 2144)),
    ] {
        let answer = app
            .post_images(json!({"model": "nano-banana-pro", "prompt": "x",
                "aspect_ratio": ratio, "resolution": resolution}))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let sent = fake.requests().last().unwrap().size.clone();
        assert_eq!(sent, Some(format!("{}x{}", size.0, size.1)));
        assert_eq!(stored_size(&app, &answer).await, size);
    }
}

#[tokio::test]
async fn an_edit_sends_every_input_as_an_image_part() {
    let fake = fake_openai().await;
    let app = app_with_upstreams(&pro_on(&fake, "gpt-image-1.5"), |_| {}).await;
    let (first, second) = (png(60, 40), png(10, 10));
    let answer = app
        .post_images(
            json!({"action": "edit", "model": "nano-banana-pro", "prompt": "combine",
            "image_urls": [data_uri(&first), data_uri(&second)]}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let request = &fake.requests()[0];
    assert_eq!(request.path, "/v1/images/edits");
    assert!(
        request
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("multipart/form-data; boundary="))
    );
    assert_eq!(request.model.as_deref(), Some("gpt-image-1.5"));
    assert_eq!(request.prompt.as_deref(), Some("combine"));
    // No ratio asked: the first input (3:2) decides.
    assert_eq!(request.size.as_deref(), Some("1536x1024"));
    assert_eq!(request.quality.as_deref(), Some("medium"));
    let parts = request.image_parts();
    assert_eq!(parts.len(), 2);
    for (part, bytes) in parts.iter().zip([&first, &second]) {
        assert_eq!(part.name, "image[]");
        assert_eq!(part.content_type.as_deref(), Some("image/png"));
        assert_eq!(&part.bytes[..], &bytes[..]);
    }
    assert_eq!(stored_size(&app, &answer).await, (1536, 1024));
}

#[tokio::test]
async fn a_moderation_refusal_is_forbidden_and_not_billed() {
    let fake = fake_openai().await;
    let app = app_with_upstreams(&pro_on(&fake, "gpt-image-1"), |c| {
        c.admin_key = Some(crate::helpers::ADMIN_KEY.into());
    })
    .await;
    let (id, token) = application(&app, 10, json!({})).await;
    let before = balance(&app, &id).await;
    fake.push_scenario(Scenario::Moderation);
    let answer = app
        .post(
            "/nano-banana/images",
            Some(&token),
            json!({"model": "nano-banana-pro", "prompt": "x"}).to_string(),
        )
        .await;
    assert_error(&answer, 403, "forbidden");
    assert_eq!(
        fake.request_count(),
        1,
        "a refusal is the answer, not retried"
    );
    assert_eq!(balance(&app, &id).await, before, "a refusal is not billed");
}

#[tokio::test]
async fn a_429_is_retried_once_the_time_it_asked_has_passed() {
    let fake = fake_openai().await;
    let app = app_with_upstreams(&pro_on(&fake, "gpt-image-1"), |_| {}).await;
    fake.push_scenario(Scenario::RateLimited {
        retry_after: Duration::from_millis(400),
    });
    let started = Instant::now();
    let answer = app
        .post_images(json!({"model": "nano-banana-pro", "prompt": "x"}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(fake.request_count(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "waited for retry-after-ms: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_exhausted_quota_is_final() {
    let fake = fake_openai().await;
    let app = app_with_upstreams(&pro_on(&fake, "gpt-image-1"), |_| {}).await;
    fake.push_scenario(Scenario::InsufficientQuota);
    let answer = app
        .post_images(json!({"model": "nano-banana-pro", "prompt": "x"}))
        .await;
    assert_error(&answer, 500, "api_error");
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("HTTP 402"), "{message}");
    assert_eq!(
        fake.request_count(),
        1,
        "not retried though 3 attempts are allowed"
    );
}

#[tokio::test]
async fn a_call_that_hangs_is_never_sent_again() {
    let fake = fake_openai().await;
    let app = app_with_upstreams(&pro_on(&fake, "gpt-image-1"), |c| {
        c.upstream_timeout = Duration::from_millis(700);
    })
    .await;
    fake.push_scenario(Scenario::Hang);
    let answer = app
        .post_images(json!({"model": "nano-banana-pro", "prompt": "x"}))
        .await;
    assert_error(&answer, 500, "api_error");
    assert_eq!(fake.request_count(), 1, "it may have been billed upstream");
}
