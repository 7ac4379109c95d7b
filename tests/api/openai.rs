//! OpenAI's images API (`/v1/images/generations`, `/v1/images/edits`, `/v1/models`) and the
//! original service's form of it (`/openai/images/…`, with `callback_url` and `async`), over real
//! HTTP: the images made, their sizes and formats, masks, streams, the task behind every request,
//! and credits, rate limits, idempotency and bad input, each answered in the route's own shape.

use base64::Engine as _;
use nano_banana::fake::gemini::{FakeGemini, FakeGeminiOptions, Scenario};
use serde_json::{Value, json};

use crate::helpers::{
    Answer, ImageHost, TestApp, answer, application, assert_error, assert_trace_id, balance,
    callback_receiver, download_image, png, spawn_admin_app, spawn_app, stored_input, task_count,
    wait_for_task_of,
};

/// A multipart/form-data body built by hand, so that tests can also send broken ones.
struct Form {
    boundary: &'static str,
    body: Vec<u8>,
}

impl Form {
    fn new() -> Form {
        Form {
            boundary: "nb-test-boundary-7MA4YWxkTrZu0gW",
            body: Vec::new(),
        }
    }

    fn text(mut self, name: &str, value: &str) -> Form {
        let head = format!(
            "--{}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n",
            self.boundary
        );
        self.body.extend_from_slice(head.as_bytes());
        self.body.extend_from_slice(value.as_bytes());
        self.body.extend_from_slice(b"\r\n");
        self
    }

    fn file(mut self, name: &str, file_name: &str, bytes: &[u8]) -> Form {
        let head = format!(
            "--{}\r\ncontent-disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\n\
             content-type: image/png\r\n\r\n",
            self.boundary
        );
        self.body.extend_from_slice(head.as_bytes());
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    fn finish(mut self) -> (String, Vec<u8>) {
        let end = format!("--{}--\r\n", self.boundary);
        self.body.extend_from_slice(end.as_bytes());
        (self.content_type(), self.body)
    }
}

/// A POST with `token` as a Bearer token.
fn post(app: &TestApp, path: &str, token: &str) -> reqwest::RequestBuilder {
    app.client
        .post(format!("{}{path}", app.address))
        .bearer_auth(token)
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    answer(request.send().await.expect("request sent")).await
}

async fn post_json(app: &TestApp, path: &str, token: &str, body: Value) -> Answer {
    send(
        post(app, path, token)
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}

async fn post_form(app: &TestApp, path: &str, token: &str, form: Form) -> Answer {
    let (content_type, body) = form.finish();
    send(
        post(app, path, token)
            .header("content-type", content_type)
            .body(body),
    )
    .await
}

fn decode_b64(text: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text.as_str().expect("a base64 string"))
        .expect("valid base64")
}

/// An image of the answer's `data[i].b64_json`, decoded: its format and pixels.
fn b64_image(body: &Value, i: usize) -> (image::ImageFormat, image::DynamicImage) {
    let bytes = decode_b64(&body["data"][i]["b64_json"]);
    let format = image::guess_format(&bytes).expect("a known image format");
    (format, image::load_from_memory(&bytes).expect("decodes"))
}

/// Asserts an error in OpenAI's shape: the status, and exactly `{"error": {"message", "type",
/// "param", "code"}}` with these values.
fn assert_openai_error(
    answer: &Answer,
    status: u16,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
) {
    assert_eq!(answer.status.as_u16(), status, "body: {}", answer.body);
    let error = &answer.body["error"];
    assert_eq!(
        answer.body.as_object().map(|o| o.len()),
        Some(1),
        "only an error key: {}",
        answer.body
    );
    let mut keys: Vec<&str> = error
        .as_object()
        .expect("an error object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["code", "message", "param", "type"],
        "{}",
        answer.body
    );
    assert_eq!(error["type"], kind, "{}", answer.body);
    assert_eq!(error["code"], json!(code), "{}", answer.body);
    assert_eq!(error["param"], json!(param), "{}", answer.body);
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a message: {}",
        answer.body
    );
}

/// The `Retry-After` of an answer, in seconds.
fn retry_after(answer: &Answer) -> u64 {
    answer
        .headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("a Retry-After header: {:?}", answer.headers))
        .to_str()
        .unwrap()
        .parse()
        .expect("whole seconds")
}

/// An application's balance and task count stay as they were.
async fn assert_untouched(app: &TestApp, id: &str, credits: i64, tasks: i64) {
    assert_eq!(balance(app, id).await, (credits, credits), "balance");
    assert_eq!(task_count(app, id).await, tasks, "tasks");
}

async fn app_with_fake() -> (TestApp, FakeGemini) {
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    let base_url = fake.base_url();
    let app = spawn_admin_app(move |c| crate::helpers::use_gemini(c, &base_url, "k")).await;
    (app, fake)
}

#[tokio::test]
async fn generations_make_n_images_of_the_size_asked_as_base64_pngs() {
    let app = spawn_app().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let answer = post_json(
        &app,
        "/v1/images/generations",
        &app.token,
        json!({"prompt": "a lemon tree", "n": 2, "size": "1536x1024", "model": "nano-banana"}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.headers["content-type"], "application/json");
    let body = &answer.body;
    assert!(body.get("success").is_none(), "OpenAI's shape: {body}");
    let created = body["created"].as_i64().expect("created in Unix seconds");
    assert!(
        (before..=before + 60).contains(&created),
        "created {created}"
    );
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    for i in 0..2 {
        assert!(body["data"][i].get("url").is_none(), "b64_json by default");
        let (format, image) = b64_image(body, i);
        assert_eq!(format, image::ImageFormat::Png);
        // 1536x1024 is 3:2; nano-banana makes 3:2 at 1248x832.
        assert_eq!((image.width(), image.height()), (1248, 832));
    }
    assert_eq!(body["size"], "1248x832");
    assert_eq!(body["output_format"], "png");
    assert_eq!(body["background"], "opaque");
    assert_eq!(body["usage"]["total_tokens"], 0);
}

#[tokio::test]
async fn response_format_url_serves_the_image_that_b64_json_carries() {
    let app = spawn_app().await;
    let request = |format: &str| json!({"prompt": "a plum", "response_format": format});
    let by_url = post_json(&app, "/v1/images/generations", &app.token, request("url")).await;
    assert_eq!(by_url.status, 200, "{}", by_url.body);
    let entry = &by_url.body["data"][0];
    assert!(entry.get("b64_json").is_none(), "{entry}");
    let url = entry["url"].as_str().expect("a url");
    let served = app.get(url).await;
    assert_eq!(served.status(), 200, "{url}");
    assert_eq!(served.headers()["content-type"], "image/png");
    let served = served.bytes().await.unwrap();
    let image = image::load_from_memory(&served).unwrap();
    assert_eq!((image.width(), image.height()), (1024, 1024));

    let inline = post_json(
        &app,
        "/v1/images/generations",
        &app.token,
        request("b64_json"),
    )
    .await;
    assert_eq!(inline.status, 200, "{}", inline.body);
    assert!(inline.body["data"][0].get("url").is_none());
    // The placeholder draws the same job the same way: the same bytes either way.
    assert_eq!(decode_b64(&inline.body["data"][0]["b64_json"]), served);
}

#[tokio::test]
async fn output_format_jpeg_gives_jpeg_bytes_and_webp_webp() {
    let app = spawn_app().await;
    let answer = post_json(
        &app,
        "/v1/images/generations",
        &app.token,
        json!({"prompt": "a pear", "output_format": "jpeg", "output_compression": 80}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["output_format"], "jpeg");
    let bytes = decode_b64(&answer.body["data"][0]["b64_json"]);
    assert!(
        bytes.starts_with(&[0xff, 0xd8, 0xff]),
        "JPEG's magic number"
    );
    let (format, image) = b64_image(&answer.body, 0);
    assert_eq!(format, image::ImageFormat::Jpeg);
    assert_eq!((image.width(), image.height()), (1024, 1024));

    let answer = post_json(
        &app,
        "/v1/images/generations",
        &app.token,
        json!({"prompt": "a pear", "output_format": "webp", "response_format": "url"}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["output_format"], "webp");
    let (content_type, image) =
        download_image(&app, answer.body["data"][0]["url"].as_str().unwrap()).await;
    assert_eq!(content_type, "image/webp");
    assert_eq!((image.width(), image.height()), (1024, 1024));
}

#[tokio::test]
async fn an_edit_with_a_mask_keeps_the_first_image_where_the_mask_is_opaque() {
    let (app, fake) = app_with_fake().await;
    let original_png = png(64, 48);
    let original = image::load_from_memory(&original_png).unwrap().to_rgba8();
    // Opaque (keep) on the left half, transparent (may change) on the right.
    let mask = image::RgbaImage::from_fn(64, 48, |x, _| {
        image::Rgba([0, 0, 0, if x < 32 { 255 } else { 0 }])
    });
    let mut mask_png = std::io::Cursor::new(Vec::new());
    mask.write_to(&mut mask_png, image::ImageFormat::Png)
        .unwrap();
    let form = Form::new()
        .text("prompt", "paint the right half yellow")
        .file("image", "photo.png", &original_png)
        .file("mask", "mask.png", mask_png.get_ref());
    let answer = post_form(&app, "/v1/images/edits", &app.token, form).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(fake.request_count(), 1, "one upstream call");
    let (format, made) = b64_image(&answer.body, 0);
    assert_eq!(format, image::ImageFormat::Png);
    let made = made.to_rgba8();
    assert_eq!(made.dimensions(), (64, 48), "the original's size");
    assert_eq!(answer.body["size"], "64x48");
    for y in 0..48 {
        for x in 0..32 {
            assert_eq!(
                made.get_pixel(x, y),
                original.get_pixel(x, y),
                "kept at ({x}, {y})"
            );
        }
        for x in 32..64 {
            // The fake upstream paints every image (250, 220, 60).
            let [r, g, b, a] = made.get_pixel(x, y).0;
            let near = |v: u8, want: u8| v.abs_diff(want) <= 1;
            assert!(
                near(r, 250) && near(g, 220) && near(b, 60) && a == 255,
                "changed at ({x}, {y}): {:?}",
                [r, g, b, a]
            );
        }
    }
}

/// The events of a `text/event-stream` body: (event name, data as JSON).
fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str(value.trim()).expect("JSON data"));
                } else {
                    panic!("an unexpected line {line:?} in {block:?}");
                }
            }
            (name.expect("an event name"), data.expect("a data line"))
        })
        .collect()
}

async fn stream_of(request: reqwest::RequestBuilder) -> Vec<(String, Value)> {
    let response = request.send().await.expect("request sent");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    sse_events(&response.text().await.unwrap())
}

#[tokio::test]
async fn stream_true_sends_one_completed_event_per_image() {
    let app = spawn_app().await;
    let events = stream_of(
        post(&app, "/v1/images/generations", &app.token)
            .header("content-type", "application/json")
            .body(json!({"prompt": "a kiwi", "n": 2, "stream": true}).to_string()),
    )
    .await;
    assert_eq!(events.len(), 2, "{events:?}");
    for (name, data) in &events {
        assert_eq!(name, "image_generation.completed");
        assert_eq!(data["type"], "image_generation.completed");
        assert!(data["created_at"].is_i64(), "{data}");
        assert_eq!(data["size"], "1024x1024");
        let bytes = decode_b64(&data["b64_json"]);
        let image = image::load_from_memory(&bytes).unwrap();
        assert_eq!((image.width(), image.height()), (1024, 1024));
    }

    let (content_type, body) = Form::new()
        .text("prompt", "make it a painting")
        .text("stream", "true")
        .file("image[]", "photo.png", &png(300, 200))
        .finish();
    let events = stream_of(
        post(&app, "/v1/images/edits", &app.token)
            .header("content-type", content_type)
            .body(body),
    )
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    let (name, data) = &events[0];
    assert_eq!(name, "image_edit.completed");
    assert_eq!(data["type"], "image_edit.completed");
    // An edit without a size follows its image: 300x200 is 3:2.
    assert_eq!(data["size"], "1248x832");
    let image = image::load_from_memory(&decode_b64(&data["b64_json"])).unwrap();
    assert_eq!((image.width(), image.height()), (1248, 832));
}

#[tokio::test]
async fn models_lists_ours_and_the_upstream_ids_and_tokens_are_checked() {
    let app = spawn_app().await;
    let listed = send(
        app.client
            .get(format!("{}/v1/models", app.address))
            .bearer_auth(&app.token),
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["object"], "list");
    let ids: Vec<&str> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model", "{m}");
            m["id"].as_str().unwrap()
        })
        .collect();
    for id in ["nano-banana", "gemini-2.5-flash-image"] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    let one = send(
        app.client
            .get(format!("{}/v1/models/gemini-2.5-flash-image", app.address))
            .bearer_auth(&app.token),
    )
    .await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.body["id"], "gemini-2.5-flash-image");
    let unknown = send(
        app.client
            .get(format!("{}/v1/models/dall-e-3", app.address))
            .bearer_auth(&app.token),
    )
    .await;
    assert_openai_error(
        &unknown,
        404,
        "invalid_request_error",
        Some("model_not_found"),
        Some("model"),
    );

    let anonymous = send(app.client.get(format!("{}/v1/models", app.address))).await;
    assert_openai_error(&anonymous, 401, "invalid_request_error", None, None);
    let wrong = post_json(
        &app,
        "/v1/images/generations",
        "nb-not-a-token",
        json!({"prompt": "x"}),
    )
    .await;
    assert_openai_error(
        &wrong,
        401,
        "invalid_request_error",
        Some("invalid_api_key"),
        None,
    );
}

#[tokio::test]
async fn a_safety_refusal_is_moderation_blocked_on_v1_forbidden_on_openai_and_not_charged() {
    let (app, fake) = app_with_fake().await;
    let (id, token) = application(&app, 5, json!({})).await;
    fake.push_scenario(Scenario::ImageSafety);
    let refused = post_json(
        &app,
        "/v1/images/generations",
        &token,
        json!({"prompt": "something refused"}),
    )
    .await;
    assert_openai_error(
        &refused,
        400,
        "image_generation_user_error",
        Some("moderation_blocked"),
        None,
    );

    fake.push_scenario(Scenario::ImageSafety);
    let refused = post_json(
        &app,
        "/openai/images/generations",
        &token,
        json!({"prompt": "something refused"}),
    )
    .await;
    assert_error(&refused, 403, "forbidden");
    let task_id = refused.body["task_id"].as_str().expect("the task's id");
    let record = wait_for_task_of(&app, &token, task_id).await;
    assert_eq!(record["state"], "failed");
    assert_eq!(record["response"]["error"]["code"], "forbidden");

    // Streamed, the refusal comes after the 200: an `error` event in OpenAI's shape.
    fake.push_scenario(Scenario::ImageSafety);
    let events = stream_of(
        post(&app, "/v1/images/generations", &token)
            .header("content-type", "application/json")
            .body(json!({"prompt": "something refused", "stream": true}).to_string()),
    )
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    let (name, data) = &events[0];
    assert_eq!(name, "error");
    assert_eq!(data["type"], "error");
    assert_eq!(data["error"]["type"], "image_generation_user_error");
    assert_eq!(data["error"]["code"], "moderation_blocked");

    assert_eq!(fake.request_count(), 3);
    assert_eq!(balance(&app, &id).await, (5, 5), "refusals are not billed");
}

#[tokio::test]
async fn original_generations_async_is_a_task_whose_record_holds_the_translated_request() {
    let app = spawn_app().await;
    let accepted = post_json(
        &app,
        "/openai/images/generations",
        &app.token,
        json!({"prompt": "a lemon tree", "n": 2, "size": "1536x1024", "async": true,
               "response_format": "url", "quality": "high"}),
    )
    .await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    assert_trace_id(&accepted);
    let mut keys: Vec<&str> = accepted
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["success", "task_id", "trace_id"],
        "{}",
        accepted.body
    );
    assert_eq!(accepted.body["success"], true);
    let id = accepted.body["task_id"].as_str().unwrap();

    let record = app.wait_for_task(id).await;
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(record["trace_id"], accepted.body["trace_id"]);
    assert_eq!(
        record["request"],
        json!({"action": "generate", "prompt": "a lemon tree", "model": "nano-banana",
               "count": 2, "aspect_ratio": "3:2", "resolution": "1K", "async": true,
               "via": "/openai/images/generations"}),
    );
    let response = &record["response"];
    assert_eq!(response["success"], true, "{response}");
    assert_eq!(response["task_id"], id);
    assert_eq!(response["trace_id"], accepted.body["trace_id"]);
    let data = response["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for entry in data {
        assert_eq!(entry["prompt"], "a lemon tree");
        let (_, image) = download_image(&app, entry["image_url"].as_str().unwrap()).await;
        assert_eq!((image.width(), image.height()), (1248, 832));
    }
}

#[tokio::test]
async fn original_edits_deliver_the_contract_body_to_the_callback_url() {
    let receiver = callback_receiver(0, false).await;
    let app = spawn_app().await;
    let photo = png(300, 200);
    let form = Form::new()
        .text("prompt", "add a hat")
        .text("callback_url", &receiver.url())
        .file("image", "photo.png", &photo);
    let accepted = post_form(&app, "/openai/images/edits", &app.token, form).await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    assert!(accepted.body.get("data").is_none(), "{}", accepted.body);
    assert_eq!(accepted.body["success"], true);
    let id = accepted.body["task_id"].as_str().unwrap();

    let posts = receiver.wait_for(1).await;
    let (headers, delivered) = &posts[0];
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(delivered["success"], true, "{delivered}");
    assert_eq!(delivered["task_id"], id);
    assert_eq!(delivered["trace_id"], accepted.body["trace_id"]);
    assert_eq!(delivered["data"][0]["prompt"], "add a hat");
    let (_, image) =
        download_image(&app, delivered["data"][0]["image_url"].as_str().unwrap()).await;
    assert_eq!(
        (image.width(), image.height()),
        (1248, 832),
        "3:2 like the photo"
    );

    let record = app.wait_for_task(id).await;
    assert_eq!(&record["response"], delivered, "the record's response");
    let request = &record["request"];
    assert_eq!(request["action"], "edit");
    assert_eq!(request["via"], "/openai/images/edits");
    assert_eq!(request["callback_url"], receiver.url());
    assert_eq!(request["image_urls"], json!([stored_input(&photo)]));
    assert!(request.get("aspect_ratio").is_none(), "the photo decides");

    // A JSON edit of an image URL, async.
    let host = ImageHost::start(png(40, 30)).await;
    let accepted = post_json(
        &app,
        "/openai/images/edits",
        &app.token,
        json!({"prompt": "sharpen", "image": host.url("/in.png"), "async": true}),
    )
    .await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    let id = accepted.body["task_id"].as_str().unwrap();
    let record = app.wait_for_task(id).await;
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(
        record["request"],
        json!({"action": "edit", "prompt": "sharpen", "model": "nano-banana", "count": 1,
               "resolution": "1K", "image_urls": [host.url("/in.png")], "async": true,
               "via": "/openai/images/edits"})
    );
    let response = &record["response"];
    assert_eq!(response["success"], true, "{response}");
    assert_eq!(response["task_id"], id);
    assert_eq!(response["data"][0]["prompt"], "sharpen");
    let (_, image) = download_image(&app, response["data"][0]["image_url"].as_str().unwrap()).await;
    assert_eq!(
        (image.width(), image.height()),
        (1184, 864),
        "4:3 like 40x30"
    );
}

#[tokio::test]
async fn the_original_form_answers_success_in_openai_s_shape_and_errors_in_the_contract_s() {
    let app = spawn_app().await;
    let made = post_json(
        &app,
        "/openai/images/generations",
        &app.token,
        json!({"prompt": "a fig", "size": "1024x1536"}),
    )
    .await;
    assert_eq!(made.status, 200, "{}", made.body);
    assert!(made.body.get("success").is_none(), "{}", made.body);
    assert!(made.body["created"].is_i64());
    let (_, image) = b64_image(&made.body, 0);
    assert_eq!((image.width(), image.height()), (832, 1248), "2:3");

    let refused = post_json(
        &app,
        "/openai/images/generations",
        &app.token,
        json!({"prompt": "a fig", "n": 9}),
    )
    .await;
    assert_error(&refused, 400, "bad_request");
    assert!(refused.body.get("task_id").is_none());
}

#[tokio::test]
async fn out_of_credits_is_insufficient_quota_on_v1_used_up_on_openai_and_nothing_is_charged() {
    let app = spawn_admin_app(|_| {}).await;
    let (id, token) = application(&app, 1, json!({})).await;
    let spent = post_json(
        &app,
        "/v1/images/generations",
        &token,
        json!({"prompt": "x"}),
    )
    .await;
    assert_eq!(spent.status, 200, "{}", spent.body);
    assert_untouched(&app, &id, 0, 1).await;

    let generation = json!({"prompt": "one more"});
    let refused = post_json(&app, "/v1/images/generations", &token, generation.clone()).await;
    assert_openai_error(
        &refused,
        429,
        "insufficient_quota",
        Some("insufficient_quota"),
        None,
    );
    assert_eq!(refused.headers["x-should-retry"], "false");
    let form = Form::new()
        .text("prompt", "one more")
        .file("image", "a.png", &png(20, 20));
    let refused = post_form(&app, "/v1/images/edits", &token, form).await;
    assert_openai_error(
        &refused,
        429,
        "insufficient_quota",
        Some("insufficient_quota"),
        None,
    );
    assert_eq!(refused.headers["x-should-retry"], "false");

    let mut asynchronous = generation.clone();
    asynchronous["async"] = json!(true);
    let refused = post_json(&app, "/openai/images/generations", &token, asynchronous).await;
    assert_error(&refused, 403, "used_up");
    assert!(refused.body.get("task_id").is_none());
    let form = Form::new()
        .text("prompt", "one more")
        .text("async", "true")
        .file("image", "a.png", &png(20, 20));
    let refused = post_form(&app, "/openai/images/edits", &token, form).await;
    assert_error(&refused, 403, "used_up");
    assert!(refused.body.get("task_id").is_none());

    assert_untouched(&app, &id, 0, 1).await;
}

#[tokio::test]
async fn the_rate_limit_refuses_with_retry_after_in_each_form() {
    let app = spawn_admin_app(|_| {}).await;
    let limits = json!({"rate_per_minute": 1, "burst": 1});
    let form = || {
        Form::new()
            .text("prompt", "x")
            .file("image", "a.png", &png(20, 20))
    };

    let (v1, token) = application(&app, 10, limits.clone()).await;
    let first = post_json(
        &app,
        "/v1/images/generations",
        &token,
        json!({"prompt": "x"}),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.headers["x-ratelimit-limit"], "1");
    let refusals = [
        post_json(
            &app,
            "/v1/images/generations",
            &token,
            json!({"prompt": "x"}),
        )
        .await,
        post_form(&app, "/v1/images/edits", &token, form()).await,
    ];
    for refused in &refusals {
        assert_openai_error(refused, 429, "requests", Some("rate_limit_exceeded"), None);
        assert!((1..=60).contains(&retry_after(refused)), "{}", refused.body);
        assert_eq!(refused.headers["x-ratelimit-remaining"], "0");
    }
    assert_untouched(&app, &v1, 9, 1).await;

    let (original, token) = application(&app, 10, limits).await;
    let first = post_json(
        &app,
        "/openai/images/generations",
        &token,
        json!({"prompt": "x", "async": true}),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let refusals = [
        post_json(
            &app,
            "/openai/images/generations",
            &token,
            json!({"prompt": "x", "async": true}),
        )
        .await,
        post_form(&app, "/openai/images/edits", &token, form()).await,
    ];
    for refused in &refusals {
        assert_error(refused, 429, "too_many_requests");
        assert!((1..=60).contains(&retry_after(refused)), "{}", refused.body);
        assert!(refused.body.get("task_id").is_none());
    }
    wait_for_task_of(&app, &token, first.body["task_id"].as_str().unwrap()).await;
    assert_untouched(&app, &original, 9, 1).await;
}

#[tokio::test]
async fn an_idempotency_key_replays_the_same_task_without_a_second_charge() {
    let app = spawn_admin_app(|_| {}).await;
    let (id, token) = application(&app, 10, json!({})).await;

    let generation = json!({"prompt": "once", "n": 2, "response_format": "url"});
    let with_key = |path: &str, key: &str| post(&app, path, &token).header("idempotency-key", key);
    let first = send(
        with_key("/v1/images/generations", "gen-1")
            .header("content-type", "application/json")
            .body(generation.to_string()),
    )
    .await;
    let again = send(
        with_key("/v1/images/generations", "gen-1")
            .header("content-type", "application/json")
            .body(generation.to_string()),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(first.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        again.body["data"], first.body["data"],
        "the same image URLs"
    );
    assert_untouched(&app, &id, 8, 1).await;
    let reused = send(
        with_key("/v1/images/generations", "gen-1")
            .header("content-type", "application/json")
            .body(json!({"prompt": "another"}).to_string()),
    )
    .await;
    assert_openai_error(&reused, 400, "invalid_request_error", None, None);
    let message = reused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("Idempotency-Key"), "{message}");

    let photo = png(30, 30);
    let edit = || {
        let (content_type, body) = Form::new()
            .text("prompt", "once")
            .file("image", "a.png", &photo)
            .finish();
        with_key("/v1/images/edits", "edit-1")
            .header("content-type", content_type)
            .body(body)
    };
    let first = send(edit()).await;
    let again = send(edit()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        decode_b64(&again.body["data"][0]["b64_json"]),
        decode_b64(&first.body["data"][0]["b64_json"])
    );
    assert_untouched(&app, &id, 7, 2).await;

    let asynchronous = json!({"prompt": "once", "async": true});
    let original = || {
        with_key("/openai/images/generations", "original-1")
            .header("content-type", "application/json")
            .body(asynchronous.to_string())
    };
    let first = send(original()).await;
    let again = send(original()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        again.body["task_id"], first.body["task_id"],
        "the same task"
    );
    assert_ne!(
        again.body["trace_id"], first.body["trace_id"],
        "a fresh trace"
    );
    wait_for_task_of(&app, &token, first.body["task_id"].as_str().unwrap()).await;
    assert_untouched(&app, &id, 6, 3).await;
}

/// A bad request on an images route: what it sends, and the `param` OpenAI's shape names.
struct Bad {
    what: &'static str,
    content_type: String,
    body: Vec<u8>,
    status: u16,
    param: Option<&'static str>,
}

impl Bad {
    fn json(what: &'static str, body: Value, param: &'static str) -> Bad {
        Bad {
            what,
            content_type: "application/json".into(),
            body: body.to_string().into_bytes(),
            status: 400,
            param: Some(param),
        }
    }

    fn form(what: &'static str, form: Form, param: Option<&'static str>) -> Bad {
        let (content_type, body) = form.finish();
        Bad {
            what,
            content_type,
            body,
            status: 400,
            param,
        }
    }

    fn raw(what: &'static str, content_type: &str, body: &[u8]) -> Bad {
        Bad {
            what,
            content_type: content_type.into(),
            body: body.to_vec(),
            status: 400,
            param: None,
        }
    }
}

/// Bad generations: each wrong in one way only.
fn bad_generations() -> Vec<Bad> {
    let fine = json!({"prompt": "x"});
    let with = |field: &str, value: Value| {
        let mut body = fine.clone();
        body[field] = value;
        body
    };
    vec![
        Bad::raw("wrong content type", "text/plain", b"prompt=x"),
        Bad::raw(
            "multipart to generations",
            "multipart/form-data; boundary=b",
            b"--b\r\ncontent-disposition: form-data; name=\"prompt\"\r\n\r\nx\r\n--b--\r\n",
        ),
        Bad::raw("broken JSON", "application/json", b"{\"prompt\": \"x\""),
        Bad::json("bad size", with("size", json!("big")), "size"),
        Bad::json("unknown model", with("model", json!("dall-e-9")), "model"),
        Bad::json(
            "transparent",
            with("background", json!("transparent")),
            "background",
        ),
        Bad::json("n 5", with("n", json!(5)), "n"),
    ]
}

/// Bad edits: each wrong in one way only.
fn bad_edits() -> Vec<Bad> {
    let photo = png(20, 20);
    let fine = || {
        Form::new()
            .text("prompt", "x")
            .file("image", "a.png", &photo)
    };
    let mut huge = b"\x89PNG\r\n\x1a\n".to_vec();
    huge.resize(20 * 1024 * 1024, 0);
    let mut seventeen = Form::new().text("prompt", "x");
    for i in 0..17 {
        seventeen = seventeen.file("image[]", &format!("{i}.png"), &photo);
    }
    vec![
        Bad::raw("wrong content type", "text/plain", b"prompt=x"),
        Bad::raw(
            "broken multipart",
            "multipart/form-data; boundary=b",
            b"--b\r\ncontent-disposition: form-data; name=\"prompt\"\r\n\r\nx",
        ),
        Bad::raw(
            "multipart without a boundary",
            "multipart/form-data",
            b"--b\r\n",
        ),
        Bad {
            status: 413,
            ..Bad::form(
                "a 20 MB file",
                Form::new()
                    .text("prompt", "x")
                    .file("image", "huge.png", &huge),
                None,
            )
        },
        Bad::form("17 files", seventeen, Some("image")),
        Bad::form("bad size", fine().text("size", "1024"), Some("size")),
        Bad::form(
            "unknown model",
            fine().text("model", "dall-e-9"),
            Some("model"),
        ),
        Bad::form(
            "transparent",
            fine().text("background", "transparent"),
            Some("background"),
        ),
        Bad::form("n 5", fine().text("n", "5"), Some("n")),
        Bad::form(
            "a file that is not an image",
            Form::new()
                .text("prompt", "x")
                .file("image", "notes.png", b"just some text"),
            Some("image[0]"),
        ),
    ]
}

async fn send_bad(app: &TestApp, path: &str, token: &str, bad: &Bad) -> Answer {
    send(
        post(app, path, token)
            .header("content-type", bad.content_type.clone())
            .body(bad.body.clone()),
    )
    .await
}

#[tokio::test]
async fn bad_input_on_v1_is_refused_in_openai_s_shape_and_makes_no_task() {
    let app = spawn_admin_app(|_| {}).await;
    let (id, token) = application(&app, 10, json!({})).await;
    for (path, cases) in [
        ("/v1/images/generations", bad_generations()),
        ("/v1/images/edits", bad_edits()),
    ] {
        for bad in &cases {
            let answer = send_bad(&app, path, &token, bad).await;
            let code = (bad.status == 413).then_some("request_too_large");
            println!("{path}: {}: {}", bad.what, answer.body);
            assert_openai_error(
                &answer,
                bad.status,
                "invalid_request_error",
                code,
                bad.param,
            );
        }
    }
    assert_untouched(&app, &id, 10, 0).await;
}

#[tokio::test]
async fn bad_input_on_openai_routes_is_refused_in_the_contract_s_shape_and_makes_no_task() {
    let app = spawn_admin_app(|_| {}).await;
    let (id, token) = application(&app, 10, json!({})).await;
    for (path, cases) in [
        ("/openai/images/generations", bad_generations()),
        ("/openai/images/edits", bad_edits()),
    ] {
        for bad in &cases {
            let answer = send_bad(&app, path, &token, bad).await;
            println!("{path}: {}: {}", bad.what, answer.body);
            let code = match bad.status {
                413 => "request_too_large",
                _ => "bad_request",
            };
            assert_error(&answer, bad.status, code);
            assert!(answer.body.get("task_id").is_none(), "{}", answer.body);
        }
    }
    assert_untouched(&app, &id, 10, 0).await;
}
