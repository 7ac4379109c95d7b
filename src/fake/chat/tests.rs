//! The fake chat-completions upstream over real HTTP: its answers, scenarios and recording.
//! Imports nothing of the crate outside `fake`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::*;

async fn fake(api_key: Option<&str>) -> FakeChat {
    FakeChat::start(FakeChatOptions {
        api_key: api_key.map(str::to_owned),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn chat(fake: &FakeChat, key: &str, body: Value) -> (u16, HeaderMap, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", fake.base_url()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

fn request(prompt: &str, images: &[&str]) -> Value {
    let mut content = vec![json!({"type": "text", "text": prompt})];
    for url in images {
        content.push(json!({"type": "image_url", "image_url": {"url": url}}));
    }
    json!({"model": "google/gemini-3-pro-image-preview",
        "messages": [{"role": "user", "content": content}],
        "modalities": ["image", "text"],
        "image_config": {"aspect_ratio": "16:9", "image_size": "2K"}})
}

#[tokio::test]
async fn an_image_comes_back_as_a_data_url_of_the_configured_size() {
    let fake = fake(Some("or-key")).await;
    let input = format!("data:image/jpeg;base64,{}", BASE64.encode(b"JPEGBYTES"));
    let (status, _, body) = chat(&fake, "or-key", request("a fox", &[&input, &input])).await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "stop");
    let url = choice["message"]["images"][0]["image_url"]["url"]
        .as_str()
        .unwrap();
    let b64 = url.strip_prefix("data:image/png;base64,").unwrap();
    let image = image::load_from_memory(&BASE64.decode(b64).unwrap()).unwrap();
    assert_eq!((image.width(), image.height()), (2752, 1536));
    assert_eq!(image.to_rgb8().get_pixel(0, 0).0, IMAGE_RGB);

    let recorded = &fake.requests()[0];
    assert_eq!(recorded.path, "/api/v1/chat/completions");
    assert_eq!(recorded.authorization.as_deref(), Some("Bearer or-key"));
    assert_eq!(
        recorded.model.as_deref(),
        Some("google/gemini-3-pro-image-preview")
    );
    assert_eq!(recorded.part_types, vec!["text", "image_url", "image_url"]);
    assert_eq!(recorded.prompt, "a fox");
    assert_eq!(recorded.images.len(), 2);
    assert_eq!(recorded.images[0].mime_type, "image/jpeg");
    assert_eq!(&recorded.images[0].bytes[..], b"JPEGBYTES");
    assert_eq!(recorded.modalities, vec!["image", "text"]);
    assert_eq!(recorded.aspect_ratio.as_deref(), Some("16:9"));
    assert_eq!(recorded.image_size.as_deref(), Some("2K"));
    assert_eq!(
        recorded.body["messages"][0]["content"][1]["image_url"]["url"],
        "<image>"
    );

    let (status, _, body) = chat(&fake, "wrong", request("x", &[])).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], 401);
}

#[tokio::test]
async fn scenarios_answer_as_openrouter_does() {
    let fake = fake(None).await;
    fake.push_scenario(Scenario::NoImage);
    let (status, _, body) = chat(&fake, "k", request("x", &[])).await;
    assert_eq!(status, 200);
    assert!(body["choices"][0]["message"].get("images").is_none());
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len()
            > 10
    );

    fake.push_scenario(Scenario::Refused);
    let (_, _, body) = chat(&fake, "k", request("x", &[])).await;
    assert_eq!(body["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(body["choices"][0]["native_finish_reason"], "IMAGE_SAFETY");

    fake.push_scenario(Scenario::RateLimited {
        retry_after: Duration::from_secs(3),
    });
    let (status, headers, body) = chat(&fake, "k", request("x", &[])).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "3");
    assert_eq!(body["error"]["code"], 429);

    fake.push_scenario(Scenario::ServerError);
    assert_eq!(chat(&fake, "k", request("x", &[])).await.0, 500);

    fake.push_scenario(Scenario::ErrorInBody);
    let (status, _, body) = chat(&fake, "k", request("x", &[])).await;
    assert_eq!(status, 200);
    assert_eq!(body["error"]["code"], 502);

    let (status, _, _) = chat(&fake, "k", request("[fake:status=503]", &[])).await;
    assert_eq!(status, 503);

    // Without "image" in modalities, a model answers in words.
    let mut text_only = request("x", &[]);
    text_only["modalities"] = json!(["text"]);
    let (_, _, body) = chat(&fake, "k", text_only).await;
    assert!(body["choices"][0]["message"].get("images").is_none());

    assert_eq!(fake.request_count(), 7);
}

#[test]
fn sizes_follow_the_gemini_3_table() {
    assert_eq!(pixel_size(None, None), (1024, 1024));
    assert_eq!(pixel_size(Some("9:16"), Some("4K")), (3072, 5504));
    assert_eq!(pixel_size(Some("3:2"), Some("1K")), (1264, 848));
}
