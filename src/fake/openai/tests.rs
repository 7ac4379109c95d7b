//! The fake OpenAI images API over real HTTP: its checks, answers, scenarios and recording.
//! Imports nothing of the crate outside `fake`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::*;

async fn fake(api_key: Option<&str>) -> FakeOpenAi {
    FakeOpenAi::start(FakeOpenAiOptions {
        api_key: api_key.map(str::to_owned),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn generate(fake: &FakeOpenAi, key: &str, body: Value) -> (u16, HeaderSnapshot, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/images/generations", fake.base_url()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    snapshot(response).await
}

type HeaderSnapshot = reqwest::header::HeaderMap;

async fn snapshot(response: reqwest::Response) -> (u16, HeaderSnapshot, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn decoded_size(b64: &Value) -> (u32, u32) {
    let bytes = BASE64.decode(b64.as_str().unwrap()).unwrap();
    let image = image::load_from_memory(&bytes).unwrap();
    (image.width(), image.height())
}

#[tokio::test]
async fn generations_answer_a_png_of_the_asked_size_and_are_recorded() {
    let fake = fake(Some("sk-test")).await;
    let (status, headers, body) = generate(
        &fake,
        "sk-test",
        json!({"model": "gpt-image-1", "prompt": "a cat", "n": 1, "size": "1536x1024",
            "quality": "high", "output_format": "png"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-request-id"], "req_fake");
    assert_eq!(decoded_size(&body["data"][0]["b64_json"]), (1536, 1024));
    assert_eq!(body["size"], "1536x1024");
    let recorded = &fake.requests()[0];
    assert_eq!(recorded.path, "/v1/images/generations");
    assert_eq!(recorded.authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(recorded.model.as_deref(), Some("gpt-image-1"));
    assert_eq!(recorded.size.as_deref(), Some("1536x1024"));
    assert_eq!(recorded.quality.as_deref(), Some("high"));
    assert_eq!(recorded.n, Some(1));
    assert!(recorded.files.is_empty());
}

#[tokio::test]
async fn the_checks_openai_makes_come_first() {
    let fake = fake(Some("sk-test")).await;
    let (status, _, body) = generate(
        &fake,
        "wrong",
        json!({"model": "gpt-image-1", "prompt": "x"}),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let bad = [
        (json!({"prompt": "x"}), "missing_required_parameter"),
        (
            json!({"model": "gpt-image-1", "prompt": "x", "response_format": "b64_json"}),
            "unknown_parameter",
        ),
        (
            json!({"model": "gpt-image-1", "prompt": "x", "size": "1376x768"}),
            "invalid_value",
        ),
        (
            json!({"model": "gpt-image-2", "prompt": "x", "size": "1000x1000"}),
            "invalid_value",
        ),
        (
            json!({"model": "gpt-image-1", "prompt": "x", "quality": "hd"}),
            "invalid_value",
        ),
    ];
    for (request, code) in bad {
        // A queued outcome is not used up by a request that fails a check.
        fake.push_scenario(Scenario::ServerError);
        let (status, _, body) = generate(&fake, "sk-test", request.clone()).await;
        assert_eq!(status, 400, "{request}: {body}");
        assert_eq!(body["error"]["code"], code, "{request}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(
            matches!(
                fake.shared.calls.next_scenario(),
                Some(Scenario::ServerError)
            ),
            "{request}"
        );
    }
    // Other models take response_format and any size.
    let (status, _, body) = generate(
        &fake,
        "sk-test",
        json!({"model": "sd-1.5", "prompt": "x", "size": "512x768", "response_format": "b64_json"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(decoded_size(&body["data"][0]["b64_json"]), (512, 768));
}

#[tokio::test]
async fn edits_read_every_image_part() {
    let fake = fake(None).await;
    let png = fake.shared.images.get(8, 8).await.unwrap().bytes.clone();
    let form = |name: &'static str| {
        reqwest::Client::new()
            .post(format!("{}/images/edits", fake.base_url()))
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body(
                [
                    "--XyZ\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nmix\r\n".to_owned(),
                    "--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-image-1\r\n".to_owned(),
                    format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n"),
                ]
                .concat()
                .into_bytes()
                .into_iter()
                .chain(png.iter().copied())
                .chain(format!("\r\n--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"b.jpg\"\r\nContent-Type: image/jpeg\r\n\r\nJPEG\r\n--XyZ--\r\n").into_bytes())
                .collect::<Vec<u8>>(),
            )
            .send()
    };
    let (status, _, body) = snapshot(form("image[]").await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        decoded_size(&body["data"][0]["b64_json"]),
        (1024, 1024),
        "size auto"
    );
    let recorded = &fake.requests()[0];
    assert_eq!(recorded.path, "/v1/images/edits");
    assert_eq!(recorded.fields, vec!["prompt", "model"]);
    let parts = recorded.image_parts();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].name, "image[]");
    assert_eq!(parts[0].content_type.as_deref(), Some("image/png"));
    assert_eq!(parts[0].bytes, png);
    assert_eq!(parts[1].filename.as_deref(), Some("b.jpg"));
    assert_eq!(parts[1].content_type.as_deref(), Some("image/jpeg"));

    let (status, _, body) = snapshot(form("mask").await.unwrap()).await;
    assert_eq!(status, 400, "an edit needs an image: {body}");
}

#[tokio::test]
async fn scenarios_answer_as_openai_does() {
    let fake = fake(None).await;
    let request = json!({"model": "gpt-image-1", "prompt": "x"});
    fake.push_scenario(Scenario::Moderation);
    let (status, _, body) = generate(&fake, "k", request.clone()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "moderation_blocked");

    fake.push_scenario(Scenario::RateLimited {
        retry_after: Duration::from_millis(1500),
    });
    let (status, headers, body) = generate(&fake, "k", request.clone()).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(headers["retry-after-ms"], "1500");
    assert_eq!(headers["retry-after"], "1.500");

    fake.push_scenario(Scenario::InsufficientQuota);
    let (status, _, body) = generate(&fake, "k", request.clone()).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["type"], "insufficient_quota");

    fake.push_scenario(Scenario::ServerError);
    assert_eq!(generate(&fake, "k", request.clone()).await.0, 500);
    fake.push_scenario(Scenario::Status(503));
    assert_eq!(generate(&fake, "k", request.clone()).await.0, 503);

    fake.push_scenario(Scenario::Url);
    let (status, _, body) = generate(&fake, "k", request.clone()).await;
    assert_eq!(status, 200);
    let url = body["data"][0]["url"].as_str().unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let png = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    assert_eq!(image::load_from_memory(&png).unwrap().width(), 1024);

    fake.push_scenario(Scenario::Garbage);
    let (status, _, body) = generate(&fake, "k", request.clone()).await;
    assert_eq!(status, 200);
    assert!(body.is_string(), "not JSON: {body}");

    // Tags in the prompt, when nothing is queued.
    let (status, _, _) = generate(
        &fake,
        "k",
        json!({"model": "gpt-image-1", "prompt": "[fake:quota]"}),
    )
    .await;
    assert_eq!(status, 429);
    let (status, headers, _) = generate(
        &fake,
        "k",
        json!({"model": "gpt-image-1", "prompt": "a [fake:429=250ms]"}),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after-ms"], "250");
}

#[tokio::test]
async fn a_hanging_request_is_answered_when_the_fake_stops() {
    let fake = fake(None).await;
    fake.push_scenario(Scenario::Hang);
    let url = format!("{}/images/generations", fake.base_url());
    let call = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .json(&json!({"model": "gpt-image-1", "prompt": "x"}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!call.is_finished(), "it hangs");
    drop(fake);
    let outcome = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, Ok(503) | Err(_)), "{outcome:?}");
}
