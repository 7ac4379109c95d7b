//! `POST /nano-banana/images` in placeholder mode: the three modes, defaults, validation, limits.

use serde_json::json;

use crate::helpers::{
    assert_error, assert_trace_id, data_uri, download_image, png, spawn_app, spawn_app_with,
};

const SEED_PROMPT: &str = "A photorealistic close-up portrait of an elderly Japanese ceramicist with deep, sun-etched wrinkles and a warm, knowing smile. He is carefully inspecting a freshly glazed tea bowl. The setting is his rustic, sun-drenched workshop. The scene is illuminated by soft, golden hour light streaming through a window, highlighting the fine texture of the clay. Captured with an 85mm portrait lens, resulting in a soft, blurred background (bokeh). The overall mood is serene and masterful. Vertical portrait orientation.";

#[tokio::test]
async fn the_seed_generate_example_returns_a_1024_png() {
    let app = spawn_app().await;
    let answer = app
        .post_images(json!({"action": "generate", "prompt": SEED_PROMPT}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_trace_id(&answer);
    let body = &answer.body;
    assert_eq!(body["success"], true);
    assert!(uuid::Uuid::parse_str(body["task_id"].as_str().unwrap()).is_ok());
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["prompt"], SEED_PROMPT);
    let url = data[0]["image_url"].as_str().unwrap();
    assert!(
        url.starts_with(&app.address),
        "absolute under the base URL: {url}"
    );
    let (content_type, image) = download_image(&app, url).await;
    assert_eq!(content_type, "image/png");
    assert_eq!((image.width(), image.height()), (1024, 1024));
}

#[tokio::test]
async fn aliases_and_the_action_default_work() {
    let app = spawn_app().await;
    for path in ["/gemini/images", "/nanobanana/images"] {
        let answer = app
            .post(
                path,
                Some(&app.token),
                json!({"prompt": "a lemon"}).to_string(),
            )
            .await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_eq!(answer.body["data"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn ratio_resolution_and_count_shape_the_images() {
    let app = spawn_app().await;
    let answer = app
        .post_images(json!({
            "prompt": "a tall tower", "model": "nano-banana-pro", "aspect_ratio": "9:16",
            "resolution": "2K", "count": 2
        }))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let data = answer.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_ne!(data[0]["image_url"], data[1]["image_url"]);
    for entry in data {
        let (_, image) = download_image(&app, entry["image_url"].as_str().unwrap()).await;
        assert_eq!((image.width(), image.height()), (1536, 2752));
    }
}

#[tokio::test]
async fn an_edit_with_a_data_uri_follows_the_first_images_ratio() {
    let app = spawn_app().await;
    let wide = data_uri(&png(320, 180));
    let square = data_uri(&png(64, 64));
    let answer = app
        .post_images(json!({
            "action": "edit", "prompt": "let this man wear on this T-shirt",
            "image_urls": [wide, square]
        }))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let url = answer.body["data"][0]["image_url"].as_str().unwrap();
    let (_, image) = download_image(&app, url).await;
    // nano-banana (Gemini 2.5 Flash Image) at 16:9.
    assert_eq!((image.width(), image.height()), (1344, 768));
}

#[tokio::test]
async fn an_edit_fetches_http_inputs() {
    let image_host = crate::helpers::ImageHost::start(png(90, 120)).await;
    let app = spawn_app().await;
    let answer = app
        .post_images(json!({
            "action": "edit", "prompt": "make it blue", "image_urls": [image_host.url("/in.png")],
            "model": "nano-banana-2"
        }))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (_, image) =
        download_image(&app, answer.body["data"][0]["image_url"].as_str().unwrap()).await;
    // 90x120 is 3:4; nano-banana-2 at 1K.
    assert_eq!((image.width(), image.height()), (896, 1200));
}

#[tokio::test]
async fn unreadable_inputs_are_bad_requests_naming_the_input() {
    let app = spawn_app().await;
    let good = data_uri(&png(8, 8));
    let cases = [
        json!([good, "data:image/png;base64,!!!notbase64"]),
        json!([good, "data:image/png;base64,aGVsbG8gd29ybGQ="]),
        json!(["file:///etc/passwd"]),
        json!(["http://169.254.169.254/latest/meta-data/"]),
        json!(["not a url"]),
    ];
    for (case, index) in cases.into_iter().zip([1, 1, 0, 0, 0]) {
        let answer = app
            .post_images(json!({"action": "edit", "prompt": "x", "image_urls": case}))
            .await;
        assert_error(&answer, 400, "bad_request");
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("image_urls[{index}]")),
            "{message}"
        );
        assert!(answer.body.get("task_id").is_none(), "no task was created");
    }
}

#[tokio::test]
async fn an_input_that_fails_to_download_fails_the_task_naming_it() {
    let app = spawn_app().await;
    // Allowed by the test policy (127.0.0.1) but nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let answer = app
        .post_images(json!({
            "action": "edit", "prompt": "x",
            "image_urls": [data_uri(&png(8, 8)), format!("http://127.0.0.1:{closed}/a.png")]
        }))
        .await;
    assert_error(&answer, 400, "bad_request");
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("image_urls[1]")
    );
    assert!(
        answer.body["task_id"].is_string(),
        "the task exists and failed"
    );
}

#[tokio::test]
async fn an_input_over_the_size_cap_is_request_too_large() {
    let app = spawn_app_with(|c| c.fetch.max_image_bytes = 1000).await;
    let big = data_uri(&png(200, 200));
    let answer = app
        .post_images(json!({"action": "edit", "prompt": "x", "image_urls": [big]}))
        .await;
    assert_error(&answer, 413, "request_too_large");
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("image_urls[0]")
    );
}

#[tokio::test]
async fn invalid_bodies_are_bad_requests_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({}), "prompt is required."),
        (
            json!({"prompt": "x", "model": "dall-e-3"}),
            "model is invalid.",
        ),
        (
            json!({"prompt": "x", "count": 9}),
            "count must be an integer from 1 to 4.",
        ),
        (
            json!({"prompt": "x", "resolution": "4K"}),
            "resolution 4K is not available for model nano-banana: it accepts only 1K.",
        ),
        (
            json!({"action": "edit", "prompt": "x"}),
            "image_urls is required for action edit.",
        ),
        (
            json!({"prompt": "x", "action": "upscale"}),
            "action must be one of: generate, edit.",
        ),
        (json!([1]), "the request body must be a JSON object."),
    ];
    for (body, message) in cases {
        let answer = app.post_images(body).await;
        assert_error(&answer, 400, "bad_request");
        assert_eq!(answer.body["error"]["message"], message);
    }
    for raw in ["{not json", "", "null", "\"text\"", "[]"] {
        let answer = app
            .post("/nano-banana/images", Some(&app.token), raw.to_owned())
            .await;
        assert_error(&answer, 400, "bad_request");
    }
    let invalid_utf8 = app
        .client
        .post(format!("{}/nano-banana/images", app.address))
        .header("authorization", format!("Bearer {}", app.token))
        .body(vec![b'{', b'"', 0xff, 0xfe, b'"', b'}'])
        .send()
        .await
        .unwrap();
    assert_error(
        &crate::helpers::answer(invalid_utf8).await,
        400,
        "bad_request",
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_request_too_large() {
    let app = spawn_app_with(|c| c.max_body_bytes = 1024).await;
    let answer = app.post_images(json!({"prompt": "x".repeat(5000)})).await;
    assert_error(&answer, 413, "request_too_large");
}

#[tokio::test]
async fn async_mode_answers_at_once_and_the_task_completes() {
    let app = spawn_app().await;
    let answer = app
        .post_images(json!({"prompt": "a pear", "async": true}))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["success"], true);
    assert!(
        answer.body.get("data").is_none(),
        "no data key: {}",
        answer.body
    );
    assert_eq!(
        answer.body["trace_id"],
        answer.headers["x-trace-id"].to_str().unwrap()
    );
    let id = answer.body["task_id"].as_str().unwrap();
    let record = app.wait_for_task(id).await;
    assert_eq!(record["state"], "succeeded");
    assert_eq!(record["response"]["success"], true);
    assert_eq!(record["response"]["task_id"], id);
    assert_eq!(record["response"]["trace_id"], answer.body["trace_id"]);
}

#[tokio::test]
async fn a_model_the_operator_disabled_is_api_not_implemented() {
    let app = spawn_app_with(|c| {
        c.models.insert(
            "nano-banana-2.1".into(),
            nano_banana::config::RouteConfig {
                provider: Some("disabled".into()),
                ..Default::default()
            },
        );
    })
    .await;
    let answer = app
        .post_images(json!({"prompt": "x", "model": "nano-banana-2.1"}))
        .await;
    assert_error(&answer, 400, "api_not_implemented");
    assert!(answer.body.get("task_id").is_none(), "no task was created");
    let other = app
        .post_images(json!({"prompt": "x", "model": "nano-banana-2"}))
        .await;
    assert_eq!(other.status, 200);
}
