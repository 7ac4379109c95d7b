//! The provider against the fake OpenAI images API over real HTTP: what is sent for generate and
//! edit, both answer forms, and how failures come back. The size table and bodies are tested in
//! `wire`, the error classification in `errors`; the fake itself in `crate::fake::openai`.
//! Imports `domain`, `providers` and `fake::openai`, nothing else of the crate.

use bytes::Bytes;

use super::*;
use crate::domain::{AspectRatio, Resolution};
use crate::fake::openai::{FakeOpenAi, FakeOpenAiOptions, IMAGE_RGB, Scenario};
use crate::providers::InputImage;

const KEY: &str = "sk-test-123";

async fn fake() -> FakeOpenAi {
    FakeOpenAi::start(FakeOpenAiOptions {
        api_key: Some(KEY.to_owned()),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// A provider with room for a loaded machine's slow fake (2K images in a debug build).
fn provider(fake: &FakeOpenAi) -> OpenAiProvider {
    provider_with_timeout(fake, Duration::from_secs(60))
}

/// A provider that gives up on a call after `timeout` (for the hang scenario).
fn provider_with_timeout(fake: &FakeOpenAi, timeout: Duration) -> OpenAiProvider {
    OpenAiProvider::new(OpenAiConfig {
        base_url: Url::parse(&fake.base_url()).unwrap(),
        organization: Some("org-nb".into()),
        timeout,
        ..OpenAiConfig::new(KEY)
    })
    .unwrap()
}

fn job(upstream_model: &str, prompt: &str) -> ImageJob {
    ImageJob {
        prompt: prompt.to_owned(),
        model: "nano-banana-pro".to_owned(),
        upstream_model: upstream_model.to_owned(),
        inputs: Vec::new(),
        aspect_ratio: Some(AspectRatio::R16x9),
        image_size: Some(Resolution::R2K),
        width: 2752,
        height: 1536,
    }
}

fn png(width: u32, height: u32) -> Bytes {
    let image = image::RgbImage::from_pixel(width, height, image::Rgb([1, 2, 3]));
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    Bytes::from(out.into_inner())
}

fn size_of(image: &GeneratedImage) -> (u32, u32) {
    let decoded = image::load_from_memory(&image.bytes).unwrap();
    assert_eq!(decoded.to_rgb8().get_pixel(0, 0).0, IMAGE_RGB);
    (decoded.width(), decoded.height())
}

#[tokio::test]
async fn generate_posts_json_with_the_mapped_size() {
    let fake = fake().await;
    let provider = provider(&fake);
    let image = provider
        .generate(&job("gpt-image-1", "a lemon"))
        .await
        .unwrap();
    assert_eq!(image.mime_type, "image/png");
    assert_eq!(size_of(&image), (1536, 1024));
    let request = &fake.requests()[0];
    assert_eq!(request.path, "/v1/images/generations");
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    assert_eq!(request.authorization.as_deref(), Some("Bearer sk-test-123"));
    assert_eq!(request.organization.as_deref(), Some("org-nb"));
    assert_eq!(request.model.as_deref(), Some("gpt-image-1"));
    assert_eq!(request.prompt.as_deref(), Some("a lemon"));
    assert_eq!(request.size.as_deref(), Some("1536x1024"));
    assert_eq!(request.quality.as_deref(), Some("high"));
    assert_eq!(request.output_format.as_deref(), Some("png"));
    assert_eq!(request.response_format, None);
    assert_eq!(request.n, Some(1));

    let image = provider
        .generate(&job("gpt-image-2", "a lemon"))
        .await
        .unwrap();
    assert_eq!(size_of(&image), (2752, 1536));
    assert_eq!(fake.requests()[1].size.as_deref(), Some("2752x1536"));

    // A compatible server is asked for base64 explicitly.
    provider
        .generate(&job("stablediffusion", "x"))
        .await
        .unwrap();
    let request = &fake.requests()[2];
    assert_eq!(request.response_format.as_deref(), Some("b64_json"));
    assert_eq!(request.quality, None);
    assert_eq!(request.size.as_deref(), Some("1536x1024"));
}

#[tokio::test]
async fn edit_posts_multipart_with_one_part_per_input() {
    let fake = fake().await;
    let provider = provider(&fake);
    let mut job = job("gpt-image-1.5", "combine them");
    let (first, second) = (png(30, 20), png(10, 10));
    job.inputs = vec![
        InputImage {
            bytes: first.clone(),
            mime_type: "image/png",
            width: 30,
            height: 20,
        },
        InputImage {
            bytes: second.clone(),
            mime_type: "image/png",
            width: 10,
            height: 10,
        },
    ];
    job.aspect_ratio = None;
    job.width = 1264;
    job.height = 848;
    job.image_size = Some(Resolution::R1K);
    let image = provider.generate(&job).await.unwrap();
    assert_eq!(size_of(&image), (1536, 1024));
    let request = &fake.requests()[0];
    assert_eq!(request.path, "/v1/images/edits");
    assert!(
        request
            .content_type
            .as_deref()
            .unwrap()
            .starts_with("multipart/form-data; boundary=")
    );
    assert_eq!(
        request.fields,
        vec!["prompt", "model", "n", "size", "quality", "output_format"]
    );
    assert_eq!(request.quality.as_deref(), Some("medium"));
    let parts = request.image_parts();
    assert_eq!(parts.len(), 2);
    assert!(parts.iter().all(|p| p.name == "image[]"));
    assert!(
        parts
            .iter()
            .all(|p| p.content_type.as_deref() == Some("image/png"))
    );
    assert_eq!(parts[0].filename.as_deref(), Some("image-1.png"));
    assert_eq!(parts[0].bytes, first);
    assert_eq!(parts[1].bytes, second);
}

#[tokio::test]
async fn a_url_answer_is_downloaded() {
    let fake = fake().await;
    fake.push_scenario(Scenario::Url);
    let image = provider(&fake)
        .generate(&job("gpt-image-1", "x"))
        .await
        .unwrap();
    assert_eq!(size_of(&image), (1536, 1024));
    // The call and the download.
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn failures_come_back_classified() {
    let fake = fake().await;
    let provider = provider(&fake);
    let job = job("gpt-image-1", "x");

    fake.push_scenario(Scenario::Moderation);
    let err = provider.generate(&job).await.unwrap_err();
    assert!(matches!(err, ProviderError::Refused(_)), "{err:?}");

    fake.push_scenario(Scenario::RateLimited {
        retry_after: Duration::from_millis(2500),
    });
    let err = provider.generate(&job).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Upstream { status: 429, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_millis(2500)));

    fake.push_scenario(Scenario::InsufficientQuota);
    let err = provider.generate(&job).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Upstream { status: 402, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());

    fake.push_scenario(Scenario::ServerError);
    let err = provider.generate(&job).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Upstream { status: 500, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());

    fake.push_scenario(Scenario::Garbage);
    let err = provider.generate(&job).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidResponse(_)), "{err:?}");

    // A hang is a timeout after sending: it may have been billed, so it is final.
    fake.push_scenario(Scenario::Hang);
    let impatient = provider_with_timeout(&fake, Duration::from_millis(1500));
    let err = impatient.generate(&job).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Transport { sent: true, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());

    let wrong_key = OpenAiProvider::new(OpenAiConfig {
        base_url: Url::parse(&fake.base_url()).unwrap(),
        ..OpenAiConfig::new("sk-wrong")
    })
    .unwrap();
    let err = wrong_key.generate(&job).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Upstream { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn an_unreachable_upstream_was_never_sent_to() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let provider = OpenAiProvider::new(OpenAiConfig {
        base_url: Url::parse(&format!("http://127.0.0.1:{port}/v1")).unwrap(),
        ..OpenAiConfig::new(KEY)
    })
    .unwrap();
    let err = provider
        .generate(&job("gpt-image-1", "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Transport { sent: false, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[test]
fn configuration_mistakes_are_refused_and_keys_stay_out_of_debug() {
    let bad = OpenAiProvider::new(OpenAiConfig {
        base_url: Url::parse("ftp://example.com/v1").unwrap(),
        ..OpenAiConfig::new(KEY)
    });
    assert!(matches!(bad, Err(ClientError::BaseUrl(_))));
    let bad = OpenAiProvider::new(OpenAiConfig::new("key\nwith a newline"));
    assert!(matches!(bad, Err(ClientError::Header)));
    let config = OpenAiConfig::new("sk-secret");
    assert!(!format!("{config:?}").contains("sk-secret"));
    let provider = OpenAiProvider::new(config).unwrap();
    assert!(!format!("{provider:?}").contains("sk-secret"));
}
