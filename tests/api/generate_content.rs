//! Google's Gemini `generateContent` (`/v1beta/models/{model}:generateContent`, the same under
//! `/v1/`, and `:streamGenerateContent`), over real HTTP: the image answered inline, the task
//! behind it, the three ways of sending the key, Google's stream framing, the safety refusal,
//! and credits, rate limits, idempotency and bad input, each answered in Google's shape.

use base64::Engine as _;
use nano_banana::fake::gemini::{FakeGemini, FakeGeminiOptions, Scenario};
use serde_json::{Value, json};

use crate::helpers::{
    Answer, TestApp, answer, application, balance, png, spawn_admin_app, spawn_app, stored_input,
    task_count, wait_for_task_of,
};

const GENERATE: &str = "/v1beta/models/gemini-2.5-flash-image:generateContent";
const STREAM: &str = "/v1beta/models/gemini-2.5-flash-image:streamGenerateContent";

/// A request of one user turn with one text part.
fn prompt(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

fn post(app: &TestApp, path: &str, key: &str) -> reqwest::RequestBuilder {
    app.client
        .post(format!("{}{path}", app.address))
        .header("x-goog-api-key", key)
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    answer(request.send().await.expect("request sent")).await
}

async fn generate(app: &TestApp, key: &str, body: Value) -> Answer {
    send(
        post(app, GENERATE, key)
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The one image of a `GenerateContentResponse`: its MIME type and pixels.
fn inline_image(response: &Value) -> (String, image::DynamicImage) {
    let candidate = &response["candidates"][0];
    assert_eq!(candidate["finishReason"], "STOP", "{response}");
    assert_eq!(candidate["content"]["role"], "model");
    let parts = candidate["content"]["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), 1, "{response}");
    let inline = &parts[0]["inlineData"];
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(inline["data"].as_str().expect("base64 data"))
        .expect("valid base64");
    let image = image::load_from_memory(&bytes).expect("an image");
    (inline["mimeType"].as_str().unwrap().to_owned(), image)
}

/// Asserts an error in Google's shape: the status, and exactly `{"error": {"code", "message",
/// "status"}}` with the status repeated as `code`.
fn assert_google_error(answer: &Answer, status: u16, name: &str) {
    assert_eq!(answer.status.as_u16(), status, "body: {}", answer.body);
    assert_eq!(
        answer.body.as_object().map(|o| o.len()),
        Some(1),
        "only an error key: {}",
        answer.body
    );
    let error = &answer.body["error"];
    assert_eq!(
        error.as_object().map(|o| o.len()),
        Some(3),
        "{}",
        answer.body
    );
    assert_eq!(error["code"], status, "{}", answer.body);
    assert_eq!(error["status"], name, "{}", answer.body);
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a message: {}",
        answer.body
    );
}

#[tokio::test]
async fn a_prompt_answers_an_inline_png_and_the_task_records_the_translated_request() {
    let app = spawn_app().await;
    let mut body = prompt("a banana boat");
    body["generationConfig"] = json!({"responseModalities": ["TEXT", "IMAGE"],
                                      "imageConfig": {"aspectRatio": "16:9"}});
    let answer = generate(&app, &app.token, body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (mime_type, image) = inline_image(&answer.body);
    assert_eq!(mime_type, "image/png");
    assert_eq!((image.width(), image.height()), (1344, 768), "16:9");
    assert_eq!(answer.body["modelVersion"], "gemini-2.5-flash-image");
    assert!(answer.body["usageMetadata"].is_object());

    let task_id = answer.body["responseId"].as_str().expect("the task's id");
    let record = app.wait_for_task(task_id).await;
    assert_eq!(record["state"], "succeeded");
    assert_eq!(
        record["request"],
        json!({"action": "generate", "prompt": "a banana boat", "model": "nano-banana",
               "aspect_ratio": "16:9", "via": "generateContent"})
    );
    assert_eq!(record["response"]["success"], true);
    assert_eq!(record["response"]["data"].as_array().unwrap().len(), 1);

    // An image part makes an edit, whose ratio follows the image: 300x200 is 3:2.
    let photo = png(300, 200);
    let edit = json!({"contents": [{"parts": [
        {"inlineData": {"mimeType": "image/png", "data": b64(&photo)}},
        {"text": "make it night"},
    ]}]});
    let answer = generate(&app, &app.token, edit).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (_, image) = inline_image(&answer.body);
    assert_eq!((image.width(), image.height()), (1248, 832));
    let record = app
        .wait_for_task(answer.body["responseId"].as_str().unwrap())
        .await;
    assert_eq!(record["request"]["action"], "edit");
    // The image itself went to the image store; the record names it by its SHA-256.
    assert_eq!(
        record["request"]["image_urls"],
        json!([stored_input(&photo)])
    );
}

#[tokio::test]
async fn the_key_may_come_as_x_goog_api_key_query_key_or_bearer_and_the_v1_path_works() {
    let app = spawn_app().await;
    let body = prompt("a key").to_string();
    let url = |path: &str| format!("{}{path}", app.address);
    let json_post = |url: String| {
        app.client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
    };
    let ways = [
        json_post(url(GENERATE)).header("x-goog-api-key", &app.token),
        json_post(format!("{}?key={}", url(GENERATE), app.token)),
        json_post(url(GENERATE)).bearer_auth(&app.token),
        json_post(url("/v1/models/nano-banana:generateContent"))
            .header("x-goog-api-key", &app.token),
    ];
    for request in ways {
        let answer = send(request).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let (_, image) = inline_image(&answer.body);
        assert_eq!((image.width(), image.height()), (1024, 1024));
    }

    let anonymous = send(json_post(url(GENERATE))).await;
    assert_google_error(&anonymous, 403, "PERMISSION_DENIED");
    let wrong = send(json_post(format!("{}?key=not-a-token", url(GENERATE)))).await;
    assert_google_error(&wrong, 400, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn alt_sse_streams_exactly_one_data_event_and_without_it_a_json_array() {
    let app = spawn_app().await;
    let response = post(&app, &format!("{STREAM}?alt=sse"), &app.token)
        .header("content-type", "application/json")
        .body(prompt("a stream").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    // Google's framing, exactly: no comments, no `event:` lines, no `[DONE]`.
    let json_text = text
        .strip_prefix("data: ")
        .and_then(|rest| rest.strip_suffix("\r\n\r\n"))
        .unwrap_or_else(|| panic!("not one `data: …\\r\\n\\r\\n` event: {:?}", &text[..80]));
    assert!(!json_text.contains('\n'), "one line of JSON");
    let event: Value = serde_json::from_str(json_text).expect("JSON");
    let (_, image) = inline_image(&event);
    assert_eq!((image.width(), image.height()), (1024, 1024));
    assert_eq!(event["modelVersion"], "gemini-2.5-flash-image");

    let array = send(
        post(&app, STREAM, &app.token)
            .header("content-type", "application/json")
            .body(prompt("a stream").to_string()),
    )
    .await;
    assert_eq!(array.status, 200, "{}", array.body);
    assert_eq!(array.headers["content-type"], "application/json");
    let items = array.body.as_array().expect("a JSON array");
    assert_eq!(items.len(), 1);
    inline_image(&items[0]);
}

#[tokio::test]
async fn a_safety_refusal_answers_200_with_image_safety_and_no_image_and_is_not_charged() {
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    let base_url = fake.base_url();
    let app = spawn_admin_app(move |c| crate::helpers::use_gemini(c, &base_url, "k")).await;
    let (id, token) = application(&app, 5, json!({})).await;

    fake.push_scenario(Scenario::ImageSafety);
    let refused = generate(&app, &token, prompt("something refused")).await;
    assert_eq!(refused.status, 200, "{}", refused.body);
    let candidates = refused.body["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 1);
    assert_eq!(candidates[0]["finishReason"], "IMAGE_SAFETY");
    assert!(candidates[0].get("content").is_none(), "no image");
    let task_id = refused.body["responseId"].as_str().unwrap();
    let record = wait_for_task_of(&app, &token, task_id).await;
    assert_eq!(record["state"], "failed");
    assert_eq!(record["response"]["error"]["code"], "forbidden");

    fake.push_scenario(Scenario::ImageSafety);
    let streamed = post(&app, &format!("{STREAM}?alt=sse"), &token)
        .header("content-type", "application/json")
        .body(prompt("something refused").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    let text = streamed.text().await.unwrap();
    let event: Value = serde_json::from_str(
        text.strip_prefix("data: ")
            .and_then(|rest| rest.strip_suffix("\r\n\r\n"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(event["candidates"][0]["finishReason"], "IMAGE_SAFETY");

    assert_eq!(fake.request_count(), 2);
    assert_eq!(balance(&app, &id).await, (5, 5), "refusals are not billed");
}

#[tokio::test]
async fn out_of_credits_is_resource_exhausted_and_nothing_is_charged() {
    let app = spawn_admin_app(|_| {}).await;
    let (id, token) = application(&app, 1, json!({})).await;
    let spent = generate(&app, &token, prompt("x")).await;
    assert_eq!(spent.status, 200, "{}", spent.body);
    assert_eq!(balance(&app, &id).await, (0, 0));

    let refused = generate(&app, &token, prompt("one more")).await;
    assert_google_error(&refused, 429, "RESOURCE_EXHAUSTED");
    let refused = send(
        post(&app, &format!("{STREAM}?alt=sse"), &token)
            .header("content-type", "application/json")
            .body(prompt("one more").to_string()),
    )
    .await;
    assert_google_error(&refused, 429, "RESOURCE_EXHAUSTED");
    assert_eq!(balance(&app, &id).await, (0, 0));
    assert_eq!(task_count(&app, &id).await, 1);
}

#[tokio::test]
async fn the_rate_limit_is_resource_exhausted_with_retry_after() {
    let app = spawn_admin_app(|_| {}).await;
    let (id, token) = application(&app, 10, json!({"rate_per_minute": 1, "burst": 1})).await;
    let first = generate(&app, &token, prompt("x")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.headers["x-ratelimit-limit"], "1");

    let refused = generate(&app, &token, prompt("x")).await;
    assert_google_error(&refused, 429, "RESOURCE_EXHAUSTED");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(refused.headers["x-ratelimit-remaining"], "0");
    assert_eq!(balance(&app, &id).await, (9, 9));
    assert_eq!(task_count(&app, &id).await, 1);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_same_image_without_a_second_charge() {
    let app = spawn_admin_app(|_| {}).await;
    let (id, token) = application(&app, 10, json!({})).await;
    let request = || {
        post(&app, GENERATE, &token)
            .header("content-type", "application/json")
            .header("idempotency-key", "gemini-1")
            .body(prompt("only once").to_string())
    };
    let first = send(request()).await;
    let again = send(request()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        again.body["responseId"], first.body["responseId"],
        "one task"
    );
    assert_eq!(
        again.body["candidates"], first.body["candidates"],
        "the same image"
    );
    assert_eq!(balance(&app, &id).await, (9, 9));
    assert_eq!(task_count(&app, &id).await, 1);
}

#[tokio::test]
async fn bad_input_is_refused_in_google_s_shape_and_makes_no_task() {
    let app = spawn_admin_app(|_| {}).await;
    let (id, token) = application(&app, 10, json!({})).await;
    let photo = json!({"inlineData": {"mimeType": "image/png", "data": b64(&png(8, 8))}});
    let mut huge = b"\x89PNG\r\n\x1a\n".to_vec();
    huge.resize(20 * 1024 * 1024, 0);
    let huge = json!({"inlineData": {"mimeType": "image/png", "data": b64(&huge)}});
    let with_config = |config: Value| {
        let mut body = prompt("x");
        body["generationConfig"] = config;
        body
    };
    let json_cases: Vec<(&str, &str, Value)> = vec![
        (
            "two candidates",
            GENERATE,
            with_config(json!({"candidateCount": 2})),
        ),
        (
            "no text part",
            GENERATE,
            json!({"contents": [{"parts": [photo.clone()]}]}),
        ),
        ("no contents", GENERATE, json!({})),
        (
            "text modality only",
            GENERATE,
            with_config(json!({"responseModalities": ["TEXT"]})),
        ),
        (
            "a bad aspect ratio",
            GENERATE,
            with_config(json!({"imageConfig": {"aspectRatio": "5:4"}})),
        ),
        (
            "17 images",
            GENERATE,
            json!({"contents": [{"parts": std::iter::once(json!({"text": "x"}))
                .chain(std::iter::repeat_n(photo.clone(), 17))
                .collect::<Vec<_>>()}]}),
        ),
        (
            "a 20 MB image",
            GENERATE,
            json!({"contents": [{"parts": [{"text": "x"}, huge]}]}),
        ),
    ];
    for (what, path, body) in json_cases {
        let answer = send(
            post(&app, path, &token)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await;
        println!("{what}: {}", answer.body);
        assert_google_error(&answer, 400, "INVALID_ARGUMENT");
    }
    let raw_cases = [
        ("wrong content type", "text/plain", "contents=x"),
        ("broken JSON", "application/json", "{\"contents\": ["),
        ("not an object", "application/json", "[]"),
    ];
    for (what, content_type, body) in raw_cases {
        let answer = send(
            post(&app, GENERATE, &token)
                .header("content-type", content_type)
                .body(body),
        )
        .await;
        println!("{what}: {}", answer.body);
        assert_google_error(&answer, 400, "INVALID_ARGUMENT");
    }
    let not_a_method = send(
        post(
            &app,
            "/v1beta/models/gemini-2.5-flash-image:countTokens",
            &token,
        )
        .header("content-type", "application/json")
        .body(prompt("x").to_string()),
    )
    .await;
    assert_google_error(&not_a_method, 404, "NOT_FOUND");
    // As Google answers a model it does not have.
    let unknown_model = send(
        post(&app, "/v1beta/models/imagen-9:generateContent", &token)
            .header("content-type", "application/json")
            .body(prompt("x").to_string()),
    )
    .await;
    assert_google_error(&unknown_model, 404, "NOT_FOUND");
    assert!(
        unknown_model.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("models/imagen-9 is not found"),
        "{}",
        unknown_model.body
    );

    assert_eq!(balance(&app, &id).await, (10, 10));
    assert_eq!(task_count(&app, &id).await, 0);
}
