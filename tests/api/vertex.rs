//! A model routed to Vertex AI (`[providers.NAME] kind = "vertex"`): the server signs a JWT with
//! the service account's key, exchanges it at the (fake) token endpoint, which verifies its
//! signature and claims, and calls the fake Gemini's Vertex path with the bearer token. The token
//! is cached and refreshed once when it expires, however many requests need it at that moment;
//! a refused token is replaced once; no token at all is an `api_error` that cools the route.

use std::time::Duration;

use nano_banana::{
    app::Application,
    config::{ProviderConfig, RouteConfig, RouteEntry},
    fake::{
        gemini::{FakeGemini, FakeGeminiOptions},
        oauth::{FakeTokenEndpoint, FakeTokenOptions},
    },
};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_error, data_uri, download_image, png, spawn_app_with, test_config,
};

const ADMIN_KEY: &str = "vertex-admin";
const EMAIL: &str = "nano-banana-test@test-project.iam.gserviceaccount.com";
/// Test-only keys (src/providers/vertex/testdata/README.md).
const TEST_KEY: &str = include_str!("../../src/providers/vertex/testdata/test-key.pem");
const TEST_PUBLIC_KEY: &str = include_str!("../../src/providers/vertex/testdata/test-key.pub.pem");
const VERTEX_PATH: &str = "/v1/projects/test-project/locations/global/publishers/google/models/gemini-3-pro-image:generateContent";

struct Vertex {
    app: TestApp,
    gemini: FakeGemini,
    tokens: FakeTokenEndpoint,
    _key_dir: tempfile::TempDir,
}

/// A service-account key file whose `token_uri` is the fake endpoint.
fn key_file(dir: &tempfile::TempDir, token_uri: &str) -> String {
    let path = dir.path().join("vertex-key.json");
    let key = json!({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "0123456789abcdef",
        "private_key": TEST_KEY,
        "client_email": EMAIL,
        "token_uri": token_uri,
    });
    std::fs::write(&path, key.to_string()).unwrap();
    path.display().to_string()
}

fn vertex_provider(base_url: String, credentials_file: String) -> ProviderConfig {
    ProviderConfig {
        kind: "vertex".into(),
        project: Some("test-project".into()),
        location: Some("global".into()),
        credentials_file: Some(credentials_file),
        base_url: Some(base_url),
        ..Default::default()
    }
}

/// `nano-banana-pro` on one route, `vertex` (the fake Gemini's Vertex paths, tokens from the
/// fake endpoint, which issues them for `expires_in`).
async fn vertex(expires_in: Duration) -> Vertex {
    let tokens = FakeTokenEndpoint::start(FakeTokenOptions {
        expires_in,
        ..FakeTokenOptions::new(TEST_PUBLIC_KEY, EMAIL)
    })
    .await
    .unwrap();
    let gemini = FakeGemini::start(FakeGeminiOptions {
        vertex_tokens: Some(tokens.issued()),
        ..Default::default()
    })
    .await
    .unwrap();
    let key_dir = tempfile::tempdir().unwrap();
    let credentials = key_file(&key_dir, &tokens.token_url());
    let base_url = gemini.base_url();
    let app = spawn_app_with(move |c| {
        c.admin_key = Some(ADMIN_KEY.into());
        c.upstream_timeout = Duration::from_secs(5);
        c.max_attempts = 1;
        c.providers
            .insert("vertex".into(), vertex_provider(base_url, credentials));
        c.models.insert(
            "nano-banana-pro".into(),
            RouteConfig {
                routes: Some(vec![RouteEntry {
                    provider: "vertex".into(),
                    upstream_model: Some("gemini-3-pro-image".into()),
                    priority: 1,
                    weight: 1,
                }]),
                ..Default::default()
            },
        );
    })
    .await;
    Vertex {
        app,
        gemini,
        tokens,
        _key_dir: key_dir,
    }
}

async fn generate(app: &TestApp, prompt: &str) -> crate::helpers::Answer {
    app.post_images(json!({"prompt": prompt, "model": "nano-banana-pro"}))
        .await
}

/// `nano_banana_route_cooldowns_total` of the Vertex route, from `/metrics` (0 before any).
async fn route_cooldowns(app: &TestApp) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find(|line| {
            line.starts_with("nano_banana_route_cooldowns_total{")
                && line.contains("route=\"vertex/gemini-3-pro-image\"")
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

async fn vertex_route(app: &TestApp) -> Value {
    let answer = app
        .client
        .get(format!("{}/admin/routes", app.address))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    body["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "nano-banana-pro")
        .map(|m| m["routes"][0].clone())
        .unwrap()
}

#[tokio::test]
async fn generate_and_edit_reach_the_vertex_path_with_a_signed_for_token() {
    let v = vertex(Duration::from_secs(3600)).await;
    let answer = generate(&v.app, "a pear").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (_, image) = download_image(
        &v.app,
        answer.body["data"][0]["image_url"].as_str().unwrap(),
    )
    .await;
    assert_eq!((image.width(), image.height()), (1024, 1024));

    // The token endpoint verified the assertion's signature and claims, and issued one token.
    assert!(v.tokens.refusals().is_empty(), "{:?}", v.tokens.refusals());
    assert_eq!(v.tokens.request_count(), 1);
    let request = &v.gemini.requests()[0];
    assert_eq!(request.path, VERTEX_PATH);
    let bearer = request.bearer.clone().expect("a bearer token");
    assert!(v.tokens.issued().accepts(&bearer));
    assert_eq!(request.api_key, None);
    assert_eq!(request.body["contents"][0]["parts"][0]["text"], "a pear");

    let input = png(40, 30);
    let answer = v
        .app
        .post_images(json!({
            "action": "edit", "prompt": "make it blue", "model": "nano-banana-pro",
            "image_urls": [data_uri(&input)],
        }))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let request = v.gemini.requests().pop().unwrap();
    assert_eq!(request.path, VERTEX_PATH);
    assert_eq!(request.bearer.as_deref(), Some(bearer.as_str()), "cached");
    let parts = request.body["contents"][0]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1]["inline_data"]["mime_type"], "image/png");
    assert_eq!(v.tokens.request_count(), 1, "one token for both");

    let route = vertex_route(&v.app).await;
    assert_eq!(route["kind"], "vertex");
    assert_eq!(route["calls"], 2);
}

#[tokio::test]
async fn a_token_that_expires_is_refreshed_once_for_eight_requests_at_once() {
    // 2 s tokens are refreshed after 1 s (a real one, 5 minutes before its hour ends).
    let v = vertex(Duration::from_secs(2)).await;
    for i in 0..3 {
        let answer = generate(&v.app, &format!("before {i}")).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(
        v.tokens.request_count(),
        1,
        "one token, not one per request"
    );
    let first = v.gemini.requests()[0].bearer.clone().unwrap();

    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The next token lives long enough for the rest of the test, and its exchange takes a
    // while, so that all eight requests find the old token stale during it.
    v.tokens.set_expires_in(Duration::from_secs(3600));
    v.tokens.set_latency(Duration::from_millis(300));
    let app = &v.app;
    let answers = futures_util::future::join_all(
        (0..8).map(|i| async move { generate(app, &format!("after {i}")).await }),
    )
    .await;
    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    println!(
        "token requests: {}, upstream calls: {}",
        v.tokens.request_count(),
        v.gemini.request_count()
    );
    assert_eq!(v.tokens.request_count(), 2, "one refresh for the eight");
    assert!(v.tokens.refusals().is_empty(), "{:?}", v.tokens.refusals());
    let requests = v.gemini.requests();
    assert_eq!(requests.len(), 11, "no call was refused and made again");
    let second = requests[3].bearer.clone().unwrap();
    assert_ne!(first, second);
    assert!(
        requests[3..]
            .iter()
            .all(|r| r.bearer.as_ref() == Some(&second))
    );
}

#[tokio::test]
async fn a_refused_token_is_replaced_once_and_the_request_succeeds() {
    let v = vertex(Duration::from_secs(3600)).await;
    let answer = generate(&v.app, "first").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // Revoked upstream while our cache still holds it for an hour.
    v.tokens.issued().revoke_all();
    let answer = generate(&v.app, "after revocation").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(v.tokens.request_count(), 2, "one refresh");
    let requests = v.gemini.requests();
    assert_eq!(requests.len(), 3, "the refused call and its one retry");
    assert_eq!(requests[1].bearer, requests[0].bearer);
    assert_ne!(requests[2].bearer, requests[1].bearer);
    let route = vertex_route(&v.app).await;
    assert_eq!(route["failures"], 0, "the retry is inside the one call");
}

#[tokio::test]
async fn without_a_token_the_request_is_an_api_error_and_the_route_cools_down() {
    let v = vertex(Duration::from_secs(3600)).await;
    v.tokens.fail_with(Some(503));
    let cooled_before = route_cooldowns(&v.app).await;
    let answer = generate(&v.app, "x").await;
    assert_error(&answer, 500, "api_error");
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("could not be reached"), "{message}");
    assert_eq!(v.gemini.request_count(), 0, "nothing was sent upstream");
    assert_eq!(v.tokens.request_count(), 1);

    // Cooled down: the first backoff is about half a second, which a loaded machine may have
    // let pass before this look; the counter of cooldowns keeps it. (Only this test makes the
    // Vertex route fail, so the process-wide counter's change is this test's.)
    let route = vertex_route(&v.app).await;
    assert_eq!(route["failures"], 1, "{route}");
    assert!(
        route_cooldowns(&v.app).await > cooled_before,
        "the route cooled down: {route}"
    );
    let error = route["recent_errors"][0]["error"].as_str().unwrap();
    assert!(error.contains("no Vertex AI access token"), "{error}");
    assert!(error.contains("answered HTTP 503"), "{error}");
    assert!(!error.contains("ya29"), "{error}");
}

#[tokio::test]
async fn a_missing_or_malformed_key_file_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad-key.json");
    std::fs::write(
        &bad,
        r#"{"type": "service_account", "client_email": "a@b"}"#,
    )
    .unwrap();
    for (path, expected) in [
        (bad.display().to_string(), "has no private_key"),
        (
            dir.path().join("absent.json").display().to_string(),
            "could not be read",
        ),
    ] {
        let mut config = test_config(dir.path());
        config.providers.insert(
            "vertex-eu".into(),
            vertex_provider("http://127.0.0.1:9".into(), path.clone()),
        );
        let error = match Application::build(config).await {
            Ok(_) => panic!("{path}: the server started"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.contains("[providers.vertex-eu]"), "{error}");
        assert!(error.contains(&path), "{error}");
        assert!(error.contains(expected), "{error}");
    }
}
