//! Images in S3-compatible object storage, against a real server (SeaweedFS from
//! `scripts/dev-services.sh`; these tests fail, never skip, without it): the object lands in the
//! bucket under the configured prefix, our route streams it back, `--image-base-url` and
//! `--s3-signed-urls` shape `image_url`, and a broken store fails readiness and requests cleanly.

use std::time::Duration;

use nano_banana::storage::images::{ImageStore, ImageUrls, S3Settings};
use object_store::{Attribute, ObjectStoreExt, aws::AmazonS3Builder, path::Path as ObjectPath};
use serde_json::json;

use crate::helpers::{TestApp, assert_error, spawn_app_with, test_s3, use_s3};

/// Generates one image and returns its `image_url`.
async fn generate_one(app: &TestApp) -> String {
    let answer = app
        .post_images(json!({"action": "generate", "prompt": "a lemon in a bucket"}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["data"][0]["image_url"]
        .as_str()
        .expect("an image_url")
        .to_owned()
}

/// The object behind `key`, read with object_store straight from the bucket (not through the
/// app): its bytes and stored content type.
async fn read_from_bucket(settings: &S3Settings, key: &str) -> (Vec<u8>, Option<String>) {
    let s3 = test_s3();
    let bucket = AmazonS3Builder::new()
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .with_bucket_name(&settings.bucket)
        .with_region("us-east-1")
        .with_access_key_id(&s3.access_key_id)
        .with_secret_access_key(&s3.secret_access_key)
        .build()
        .expect("an S3 client");
    let prefix = settings.prefix.as_deref().expect("a per-test prefix");
    let result = bucket
        .get(&ObjectPath::from(format!("{prefix}/{key}")))
        .await
        .unwrap_or_else(|e| panic!("{prefix}/{key} is in the bucket: {e}"));
    let content_type = result
        .attributes
        .get(&Attribute::ContentType)
        .map(|v| v.to_string());
    let bytes = result.bytes().await.expect("the object's bytes");
    (bytes.to_vec(), content_type)
}

fn key_of(url: &str) -> &str {
    let path = url.split('?').next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
}

#[tokio::test]
async fn generated_images_are_written_to_s3_and_served_by_our_route() {
    let app = spawn_app_with(use_s3).await;
    let settings = app.s3_settings().expect("S3 storage").clone();
    app.store.check().await.expect("the store is ready");

    let url = generate_one(&app).await;
    assert!(
        url.starts_with(&format!("{}/images/", app.address)),
        "our route by default: {url}"
    );
    let key = key_of(&url);
    let (stored, stored_type) = read_from_bucket(&settings, key).await;
    assert!(stored.starts_with(b"\x89PNG"), "a PNG in the bucket");
    assert_eq!(stored_type.as_deref(), Some("image/png"));

    let response = app.get(&url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(
        response.headers()["content-length"],
        stored.len().to_string().as_str()
    );
    let served = response.bytes().await.expect("image bytes");
    assert_eq!(served.as_ref(), stored.as_slice(), "the same bytes");

    // A key that is not in the bucket is the contract's not-found, as for the local folder.
    let missing = app
        .get(&format!("/images/{}", ImageStore::new_key("image/png")))
        .await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn an_image_base_url_shapes_image_urls() {
    let app = spawn_app_with(|config| {
        use_s3(config);
        config.image_urls = ImageUrls::Base("https://cdn.example.com/nb".to_owned());
    })
    .await;
    let settings = app.s3_settings().expect("S3 storage").clone();
    let url = generate_one(&app).await;
    let key = key_of(&url);
    assert_eq!(url, format!("https://cdn.example.com/nb/{key}"));
    let (stored, _) = read_from_bucket(&settings, key).await;
    assert!(stored.starts_with(b"\x89PNG"));
}

#[tokio::test]
async fn signed_urls_fetch_from_the_bucket_and_unsigned_ones_are_refused() {
    let app = spawn_app_with(|config| {
        use_s3(config);
        config.image_urls = ImageUrls::Signed(Duration::from_secs(300));
    })
    .await;
    let settings = app.s3_settings().expect("S3 storage").clone();
    let s3 = test_s3();
    let url = generate_one(&app).await;
    let prefix = settings.prefix.as_deref().unwrap_or_default();
    assert!(
        url.starts_with(&format!("{}/{}/{prefix}/", s3.endpoint, s3.bucket)),
        "straight at the bucket: {url}"
    );
    assert!(url.contains("X-Amz-Signature="), "presigned: {url}");
    assert!(url.contains("X-Amz-Expires=300"), "valid 300 s: {url}");

    // Fetched without our server and without credentials: the signature is the permission.
    let client = reqwest::Client::new();
    let response = client.get(&url).send().await.expect("request sent");
    assert_eq!(response.status(), 200, "{url}");
    assert_eq!(response.headers()["content-type"], "image/png");
    let fetched = response.bytes().await.expect("image bytes");
    let (stored, _) = read_from_bucket(&settings, key_of(&url)).await;
    assert_eq!(fetched.as_ref(), stored.as_slice());

    // The same object without the signature: the bucket is private.
    let unsigned = url.split('?').next().unwrap_or_default();
    let refused = client.get(unsigned).send().await.expect("request sent");
    assert_eq!(refused.status(), 403, "anonymous reads are refused");

    // A tampered signature is refused too.
    let tampered = url.replace("X-Amz-Expires=300", "X-Amz-Expires=301");
    let refused = client.get(&tampered).send().await.expect("request sent");
    assert_eq!(refused.status(), 403, "the signature covers the expiry");
}

#[tokio::test]
async fn a_task_retrieved_after_its_signed_url_expired_gets_a_fresh_one() {
    let app = spawn_app_with(|config| {
        use_s3(config);
        config.image_urls = ImageUrls::Signed(Duration::from_secs(5));
    })
    .await;
    let answer = app
        .post_images(json!({"action": "generate", "prompt": "a lemon, signed"}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let id = answer.body["task_id"]
        .as_str()
        .expect("a task id")
        .to_owned();
    let first = answer.body["data"][0]["image_url"]
        .as_str()
        .expect("an image_url")
        .to_owned();
    assert!(first.contains("X-Amz-Expires=5"), "{first}");

    // Fresh enough: retrieved as it was answered.
    let record = app
        .post_tasks(json!({"action": "retrieve", "id": id}))
        .await;
    assert_eq!(
        record.body["response"]["data"][0]["image_url"],
        first.as_str()
    );

    tokio::time::sleep(Duration::from_secs(6)).await;
    let client = reqwest::Client::new();
    let stale = client.get(&first).send().await.expect("request sent");
    assert_eq!(
        stale.status(),
        403,
        "the bucket refuses an expired signature"
    );

    for retrieved in [
        app.post_tasks(json!({"action": "retrieve", "id": id}))
            .await
            .body,
        app.post_tasks(json!({"action": "retrieve_batch", "ids": [id]}))
            .await
            .body["items"][0]
            .clone(),
    ] {
        let fresh = retrieved["response"]["data"][0]["image_url"]
            .as_str()
            .expect("an image_url")
            .to_owned();
        assert_ne!(fresh, first, "signed again");
        assert_eq!(key_of(&fresh), key_of(&first), "the same object");
        let fetched = client.get(&fresh).send().await.expect("request sent");
        assert_eq!(fetched.status(), 200, "{fresh}");
    }
}

#[tokio::test]
async fn a_wrong_secret_endpoint_or_bucket_fails_the_check_with_a_clear_error() {
    let good = test_s3().fresh_settings();
    let error_of = |settings: S3Settings| async move {
        let store = ImageStore::s3(&settings).expect("a store (not contacted yet)");
        store
            .check()
            .await
            .expect_err("the check fails")
            .to_string()
    };

    let wrong_secret = error_of(S3Settings {
        secret_access_key: Some("not-the-secret".to_owned()),
        ..good.clone()
    })
    .await;
    assert!(
        wrong_secret.contains("403") || wrong_secret.contains("SignatureDoesNotMatch"),
        "{wrong_secret}"
    );

    // Port 9 (discard) on loopback: nothing listens, the connection is refused.
    let started = std::time::Instant::now();
    let nowhere = error_of(S3Settings {
        endpoint: Some("http://127.0.0.1:9".to_owned()),
        ..good.clone()
    })
    .await;
    assert!(nowhere.contains("127.0.0.1:9"), "{nowhere}");
    assert!(
        nowhere.to_lowercase().contains("connection refused"),
        "the cause, not just \"error sending request\": {nowhere}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "bounded retries, not minutes: {:?}",
        started.elapsed()
    );

    let no_bucket = error_of(S3Settings {
        bucket: format!("missing-{}", uuid::Uuid::new_v4().simple()),
        ..good.clone()
    })
    .await;
    assert!(
        no_bucket.contains("404") || no_bucket.contains("NoSuchBucket"),
        "{no_bucket}"
    );
}

#[tokio::test]
async fn a_generate_request_with_a_broken_store_gets_the_contracts_error() {
    let app = spawn_app_with(|config| {
        use_s3(config);
        if let nano_banana::storage::images::StorageConfig::S3(settings) = &mut config.storage {
            settings.secret_access_key = Some("not-the-secret".to_owned());
        }
    })
    .await;
    assert!(app.store.check().await.is_err());
    let answer = app
        .post_images(json!({"action": "generate", "prompt": "a lemon"}))
        .await;
    assert_error(&answer, 500, "api_error");
    let message = answer.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("could not be stored"), "{}", answer.body);
    assert!(
        !message.contains("not-the-secret") && !message.contains("8333"),
        "no internals: {message}"
    );

    // The server is still up and answers other requests, but is not ready, and says why.
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("JSON");
    assert_eq!(body["checks"]["storage"]["status"], "error", "{body}");
    let error = body["checks"]["storage"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        !error.is_empty() && !error.contains("not-the-secret"),
        "{body}"
    );
}
