//! The provider against the fake chat-completions upstream over real HTTP: the message sent for
//! generate and edit, and how answers without an image and failures come back.
//! Imports `domain`, `providers` and `fake::chat`, nothing else of the crate.

use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::domain::{AspectRatio, Resolution};
use crate::fake::chat::{FakeChat, FakeChatOptions, IMAGE_RGB, Scenario};
use crate::providers::InputImage;

const KEY: &str = "sk-or-test";

async fn fake() -> FakeChat {
    FakeChat::start(FakeChatOptions {
        api_key: Some(KEY.to_owned()),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// A provider with room for a loaded machine's slow fake (2K images in a debug build).
fn provider(fake: &FakeChat) -> ChatProvider {
    provider_with_timeout(fake, Duration::from_secs(60))
}

/// A provider that gives up on a call after `timeout` (for the hang scenario).
fn provider_with_timeout(fake: &FakeChat, timeout: Duration) -> ChatProvider {
    ChatProvider::new(ChatConfig {
        base_url: Url::parse(&fake.base_url()).unwrap(),
        api_key: Some(KEY.to_owned()),
        timeout,
        connect_timeout: Duration::from_secs(5),
    })
    .unwrap()
}

fn job(prompt: &str) -> ImageJob {
    ImageJob {
        prompt: prompt.to_owned(),
        model: "nano-banana-pro".to_owned(),
        upstream_model: "google/gemini-3-pro-image-preview".to_owned(),
        inputs: Vec::new(),
        aspect_ratio: Some(AspectRatio::R16x9),
        image_size: Some(Resolution::R2K),
        width: 2752,
        height: 1536,
    }
}

#[tokio::test]
async fn generate_sends_one_user_message_with_modalities_and_image_config() {
    let fake = fake().await;
    let image = provider(&fake).generate(&job("a fox")).await.unwrap();
    assert_eq!(image.mime_type, "image/png");
    let decoded = image::load_from_memory(&image.bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (2752, 1536));
    assert_eq!(decoded.to_rgb8().get_pixel(0, 0).0, IMAGE_RGB);
    let request = &fake.requests()[0];
    assert_eq!(request.path, "/api/v1/chat/completions");
    assert_eq!(request.authorization.as_deref(), Some("Bearer sk-or-test"));
    assert_eq!(
        request.body,
        json!({"model": "google/gemini-3-pro-image-preview",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a fox"}]}],
            "modalities": ["image", "text"],
            "image_config": {"aspect_ratio": "16:9", "image_size": "2K"},
            "stream": false})
    );
}

#[tokio::test]
async fn edit_sends_the_inputs_as_data_urls_after_the_text() {
    let fake = fake().await;
    let mut job = job("combine");
    job.upstream_model = "google/gemini-2.5-flash-image".into();
    job.aspect_ratio = None;
    job.inputs = vec![
        InputImage {
            bytes: Bytes::from_static(b"\x89PNG\r\n\x1a\nfirst"),
            mime_type: "image/png",
            width: 1,
            height: 1,
        },
        InputImage {
            bytes: Bytes::from_static(b"\xFF\xD8\xFFsecond"),
            mime_type: "image/jpeg",
            width: 1,
            height: 1,
        },
    ];
    provider(&fake).generate(&job).await.unwrap();
    let request = &fake.requests()[0];
    assert_eq!(request.part_types, vec!["text", "image_url", "image_url"]);
    assert_eq!(request.images[0].mime_type, "image/png");
    assert_eq!(&request.images[0].bytes[..], b"\x89PNG\r\n\x1a\nfirst");
    assert_eq!(request.images[1].mime_type, "image/jpeg");
    // No ratio (the first image decides) and no size for Gemini 2.5 Flash Image.
    assert!(
        request.body.get("image_config").is_none(),
        "{}",
        request.body
    );
}

#[tokio::test]
async fn answers_without_an_image_and_failures_come_back_classified() {
    let fake = fake().await;
    let provider = provider(&fake);
    let job = job("x");

    fake.push_scenario(Scenario::NoImage);
    let err = provider.generate(&job).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::NoImage(m) if m.contains("text only") && m.contains("description")),
        "{err:?}"
    );
    fake.push_scenario(Scenario::Refused);
    let err = provider.generate(&job).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Refused(m) if m.contains("IMAGE_SAFETY")),
        "{err:?}"
    );
    fake.push_scenario(Scenario::RateLimited {
        retry_after: Duration::from_secs(7),
    });
    let err = provider.generate(&job).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Upstream { status: 429, .. }),
        "{err:?}"
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    fake.push_scenario(Scenario::ServerError);
    let err = provider.generate(&job).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    fake.push_scenario(Scenario::ErrorInBody);
    let err = provider.generate(&job).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Upstream { status: 502, .. }),
        "{err:?}"
    );
    fake.push_scenario(Scenario::Status(402));
    let err = provider.generate(&job).await.unwrap_err();
    assert!(!err.is_retryable(), "no credits is final: {err:?}");
    fake.push_scenario(Scenario::Hang);
    let impatient = provider_with_timeout(&fake, Duration::from_millis(1500));
    let err = impatient.generate(&job).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Transport { sent: true, .. }),
        "{err:?}"
    );
}

#[test]
fn answers_are_read_tolerantly() {
    let image = |body: serde_json::Value| match read_answer(body.to_string().as_bytes()).unwrap() {
        Answer::Image(url) => url,
        Answer::Failed(err) => panic!("{err:?}"),
    };
    let failed = |body: serde_json::Value| match read_answer(body.to_string().as_bytes()).unwrap() {
        Answer::Image(url) => panic!("{url}"),
        Answer::Failed(err) => err,
    };
    assert_eq!(
        image(
            json!({"choices": [{"message": {"images": [{"image_url": {"url": "data:image/png;base64,AA"}}]}}]})
        ),
        "data:image/png;base64,AA"
    );
    // An image part in a content array, as some servers answer.
    assert_eq!(
        image(json!({"choices": [{"message": {"content": [
            {"type": "text", "text": "here"},
            {"type": "image_url", "image_url": {"url": "https://cdn/x.png"}}]}}]})),
        "https://cdn/x.png"
    );
    assert!(matches!(
        failed(json!({"choices": []})),
        ProviderError::NoImage(_)
    ));
    assert!(matches!(
        failed(
            json!({"choices": [{"finish_reason": "stop", "native_finish_reason": "PROHIBITED_CONTENT", "message": {"content": ""}}]})
        ),
        ProviderError::Refused(_)
    ));
    assert!(matches!(
        failed(
            json!({"choices": [{"finish_reason": "stop", "message": {"content": null, "refusal": "I can't help with that."}}]})
        ),
        ProviderError::Refused(_)
    ));
    assert!(matches!(
        failed(json!({"choices": [{"finish_reason": "length", "message": {"content": "partial"}}]})),
        ProviderError::NoImage(m) if m.contains("length")
    ));
    assert!(matches!(
        failed(
            json!({"choices": [{"finish_reason": "error", "error": {"code": 429, "message": "later"}}]})
        ),
        ProviderError::Upstream { status: 429, .. }
    ));
    assert!(read_answer(b"not json").is_err());
}
