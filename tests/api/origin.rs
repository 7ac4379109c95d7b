//! The original service as an upstream (`kind = "nano-banana"`): another server of this contract
//! — here a second instance of ours — makes the images; we submit each as an async task there,
//! poll it, download its image and store it as ours, billing our own credits.

use std::time::Duration;

use nano_banana::{
    config::{ProviderConfig, RouteConfig},
    fake::gemini::{FakeGemini, FakeGeminiOptions},
};
use serde_json::json;

use crate::helpers::{
    TestApp, application, assert_error, balance, data_uri, download_image, png, spawn_admin_app,
    task_count,
};

/// Our server, with `nano-banana` routed to the service at `origin` under `token`.
async fn fronting(origin: &TestApp, token: &str) -> TestApp {
    let (base_url, token) = (origin.address.clone(), token.to_owned());
    spawn_admin_app(move |c| {
        c.providers.insert(
            "hosted".into(),
            ProviderConfig {
                kind: "nano-banana".into(),
                base_url: Some(base_url),
                api_key: Some(token),
                poll_interval_ms: Some(20),
                ..Default::default()
            },
        );
        c.models.insert(
            "nano-banana".into(),
            RouteConfig {
                provider: Some("hosted".into()),
                upstream_model: Some("nano-banana-pro".into()),
                ..Default::default()
            },
        );
    })
    .await
}

#[tokio::test]
async fn generate_and_edit_are_made_by_the_service_and_stored_here() {
    let origin = spawn_admin_app(|_| {}).await;
    let (origin_app, origin_token) = application(&origin, 100, json!({})).await;
    let app = fronting(&origin, &origin_token).await;
    let (ours, token) = application(&app, 10, json!({})).await;

    let made = app
        .post(
            "/nano-banana/images",
            Some(&token),
            json!({"prompt": "a lemon", "aspect_ratio": "16:9", "resolution": "2K",
                   "model": "nano-banana"})
            .to_string(),
        )
        .await;
    // nano-banana takes only 1K here: the contract refuses 2K before anything is sent.
    assert_error(&made, 400, "bad_request");
    let made = app
        .post(
            "/nano-banana/images",
            Some(&token),
            json!({"prompt": "a lemon", "aspect_ratio": "16:9"}).to_string(),
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.body);
    let url = made.body["data"][0]["image_url"].as_str().unwrap();
    assert!(url.starts_with(&app.address), "stored here: {url}");
    let (_, image) = download_image(&app, url).await;
    // The service made it as nano-banana-pro at 16:9, 1K.
    assert_eq!((image.width(), image.height()), (1376, 768));
    assert_eq!(task_count(&origin, &origin_app).await, 1);
    assert_eq!(
        balance(&origin, &origin_app).await.0,
        100 - 4,
        "billed there at pro's price"
    );
    assert_eq!(balance(&app, &ours).await.0, 10 - 1, "billed here at ours");

    let photo = data_uri(&png(300, 200));
    let edited = app
        .post(
            "/nano-banana/images",
            Some(&token),
            json!({"action": "edit", "prompt": "night", "image_urls": [photo]}).to_string(),
        )
        .await;
    assert_eq!(edited.status, 200, "{}", edited.body);
    let (_, image) =
        download_image(&app, edited.body["data"][0]["image_url"].as_str().unwrap()).await;
    // An edit without a ratio follows the first image (3:2) there too.
    assert_eq!((image.width(), image.height()), (1264, 848));
    assert_eq!(task_count(&origin, &origin_app).await, 2);
}

#[tokio::test]
async fn the_service_s_refusals_and_errors_map_to_ours_and_cost_nothing_here() {
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    let fake_url = fake.base_url();
    let origin = spawn_admin_app(move |c| {
        crate::helpers::use_gemini(c, &fake_url, "k");
        c.max_attempts = 1;
    })
    .await;
    let (_, origin_token) = application(&origin, 4, json!({})).await;
    let app = fronting(&origin, &origin_token).await;
    let (ours, token) = application(&app, 10, json!({})).await;
    let send = |prompt: &str| {
        app.post(
            "/nano-banana/images",
            Some(&token),
            json!({"prompt": prompt}).to_string(),
        )
    };

    // A safety refusal there is a refusal here: 403 forbidden, not billed.
    let refused = send("[fake:image_safety] a lemon").await;
    assert_error(&refused, 403, "forbidden");
    assert_eq!(balance(&app, &ours).await, (10, 10));

    // The service's own failure (the upstream there answered 500): api_error, not billed.
    let failed = send("[fake:500] a lemon").await;
    assert_error(&failed, 500, "api_error");
    assert_eq!(balance(&app, &ours).await, (10, 10));

    // One image spends the 4 credits there; the next is used_up there, an api_error here.
    assert_eq!(send("a lemon").await.status, 200);
    let used_up = send("another lemon").await;
    assert_error(&used_up, 500, "api_error");
    assert!(
        used_up.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HTTP 403"),
        "{}",
        used_up.body
    );
    assert_eq!(balance(&app, &ours).await, (9, 9));
}

#[tokio::test]
async fn a_service_that_does_not_answer_fails_the_task_clearly() {
    // Nothing listens there: the submission never left, so it may be tried again, and then fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let app = spawn_admin_app(move |c| {
        c.upstream_timeout = Duration::from_secs(2);
        c.providers.insert(
            "hosted".into(),
            ProviderConfig {
                kind: "nano-banana".into(),
                base_url: Some(address),
                api_key: Some("nb-remote".into()),
                ..Default::default()
            },
        );
        c.models.insert(
            "nano-banana".into(),
            RouteConfig {
                provider: Some("hosted".into()),
                ..Default::default()
            },
        );
    })
    .await;
    let answer = app.post_images(json!({"prompt": "x"})).await;
    assert_error(&answer, 500, "api_error");
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be reached"),
        "{}",
        answer.body
    );
}
