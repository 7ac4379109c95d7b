//! The fake's own tests: latency and prompt-tag parsing, the model tables, PNG weights, and a
//! running fake's routing, key checks, recording and shutdown.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::images::{SOLID_RGB, encode_png};
use super::models::ModelFamily;
use super::*;

async fn post(fake: &FakeGemini, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", fake.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn decoded_png(body: &Value) -> image::DynamicImage {
    let parts = body["candidates"][0]["content"]["parts"]
        .as_array()
        .unwrap();
    let data = parts.last().unwrap()["inlineData"]["data"]
        .as_str()
        .unwrap();
    image::load_from_memory(&BASE64.decode(data).unwrap()).unwrap()
}

#[test]
fn latency_parses_all_forms() {
    assert_eq!("none".parse::<Latency>().unwrap(), Latency::None);
    assert_eq!(
        "250ms".parse::<Latency>().unwrap(),
        Latency::Fixed(Duration::from_millis(250))
    );
    assert_eq!(
        "1s..1.5s".parse::<Latency>().unwrap(),
        Latency::Uniform(Duration::from_secs(1), Duration::from_millis(1500))
    );
    assert_eq!(
        "lognormal:6s,12s".parse::<Latency>().unwrap(),
        Latency::LogNormal {
            median: Duration::from_secs(6),
            p95: Duration::from_secs(12)
        }
    );
    assert!("soon".parse::<Latency>().is_err());
    let uniform = Latency::Uniform(Duration::from_millis(10), Duration::from_millis(20));
    for _ in 0..100 {
        let d = uniform.sample();
        assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
    }
    let lognormal = Latency::LogNormal {
        median: Duration::from_secs(6),
        p95: Duration::from_secs(12),
    };
    let mut samples: Vec<_> = (0..2001).map(|_| lognormal.sample()).collect();
    samples.sort();
    let median = samples[1000].as_secs_f64();
    assert!((4.5..8.0).contains(&median), "median {median}");
}

#[test]
fn prompt_tags_pick_an_outcome_and_add_delay() {
    assert_eq!(
        scenario_from_prompt("a cat"),
        (Scenario::Success, Duration::ZERO)
    );
    assert_eq!(
        scenario_from_prompt("x [fake:slow=20ms] [fake:503] [fake:500]"),
        (Scenario::Unavailable, Duration::from_millis(20))
    );
    assert_eq!(
        scenario_from_prompt("[fake:429=2s]").0,
        Scenario::RateLimited {
            retry_delay: "2s".into()
        }
    );
    assert_eq!(
        scenario_from_prompt("[fake:status=418]").0,
        Scenario::Status(418)
    );
}

#[test]
fn dimensions_follow_the_tables() {
    let d =
        |m: &str, r: Option<&str>, s: Option<&str>| ModelFamily::of(m).unwrap().dimensions(r, s);
    assert_eq!(d("gemini-2.5-flash-image", Some("16:9"), None), (1344, 768));
    assert_eq!(d("gemini-3-pro-image", None, None), (1024, 1024));
    assert_eq!(
        d("gemini-3-pro-image", Some("16:9"), Some("2K")),
        (2752, 1536)
    );
    assert_eq!(
        d("gemini-3.1-flash-image", Some("21:9"), Some("512")),
        (792, 336)
    );
    assert_eq!(
        d("gemini-3.1-flash-image", Some("1:8"), Some("4K")),
        (1536, 12288)
    );
    assert_eq!(
        d("gemini-3.1-flash-image", Some("3:4"), Some("512")),
        (448, 600)
    );
}

#[tokio::test]
async fn png_size_follows_image_bytes() {
    for target in [50_000, 300_000, 2_000_000, 5_000_000] {
        let png = BASE64
            .decode(encode_png(1024, 1024, target, SOLID_RGB).unwrap().base64)
            .unwrap();
        let ratio = png.len() as f64 / target as f64;
        assert!((0.9..1.1).contains(&ratio), "{target}: got {}", png.len());
        image::load_from_memory(&png).unwrap();
    }
}

#[tokio::test]
async fn serves_v1_with_query_key_and_response_format() {
    let fake = FakeGemini::start(FakeGeminiOptions {
        api_key: Some("k".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let body = json!({
        "contents": [{"parts": [{"text": "hi"}]}],
        "generation_config": {"responseFormat": {"image": {"aspectRatio": "3:2", "imageSize": "1K"}}},
    });
    let (status, answer) = post(
        &fake,
        "/v1/models/gemini-3.1-flash-image:generateContent?key=k",
        body.clone(),
    )
    .await;
    assert_eq!(status, 200);
    let image = decoded_png(&answer);
    assert_eq!((image.width(), image.height()), (1264, 848));
    assert_eq!(answer["modelVersion"], "gemini-3.1-flash-image");

    let (status, answer) = post(
        &fake,
        "/v1/models/gemini-3.1-flash-image:generateContent?key=nope",
        body,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["details"][0]["reason"], "API_KEY_INVALID");
}

#[tokio::test]
async fn rejects_unknown_paths_models_and_parameters() {
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    let body = json!({"contents": [{"parts": [{"text": "hi"}]}]});
    let (status, _) = post(
        &fake,
        "/v2/models/gemini-3-pro-image:generateContent",
        body.clone(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, answer) = post(&fake, "/v1beta/models/imagen-9:generateContent", body).await;
    assert_eq!(status, 404);
    assert_eq!(answer["error"]["status"], "NOT_FOUND");
    let sized = json!({
        "contents": [{"parts": [{"text": "hi"}]}],
        "generationConfig": {"imageConfig": {"imageSize": "2K"}},
    });
    let (status, answer) = post(
        &fake,
        "/v1beta/models/gemini-2.5-flash-image:generateContent",
        sized,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test]
async fn recording_is_bounded_and_bodies_optional() {
    let fake = FakeGemini::start(FakeGeminiOptions {
        record_bodies: false,
        record_limit: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..3 {
        let body = json!({"contents": [{"parts": [{"text": format!("p{i}")}]}]});
        let (status, _) = post(
            &fake,
            "/v1beta/models/gemini-3-pro-image:generateContent",
            body,
        )
        .await;
        assert_eq!(status, 200);
    }
    let recorded = fake.requests();
    assert_eq!(fake.request_count(), 3);
    assert_eq!(recorded.len(), 2);
    assert!(recorded.iter().all(|r| r.body.is_null() && r.body_len > 0));
    assert_eq!(recorded[1].model.as_deref(), Some("gemini-3-pro-image"));
}

#[tokio::test]
async fn shutdown_releases_hanging_requests() {
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    fake.push_scenario(Scenario::Hang);
    let url = format!(
        "{}/v1beta/models/gemini-3-pro-image:generateContent",
        fake.base_url()
    );
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .json(&json!({"contents": [{"parts": [{"text": "wait"}]}]}))
            .send()
            .await
    });
    // Shut down only once the request has arrived, so it really is hanging.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.request_count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fake.shutdown();
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn vertex_paths_take_only_the_token_endpoints_tokens() {
    let issued = crate::fake::oauth::IssuedTokens::default();
    let fake = FakeGemini::start(FakeGeminiOptions {
        api_key: Some("studio-key".into()),
        vertex_tokens: Some(issued.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let path = "/v1/projects/p/locations/global/publishers/google/models/\
                gemini-3-pro-image:generateContent";
    let body = json!({"contents": [{"parts": [{"text": "hi"}]}]});
    let call = |token: Option<&'static str>| {
        let request = reqwest::Client::new()
            .post(format!("{}{path}", fake.base_url()))
            .json(&body);
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(call(None).await, 401);
    assert_eq!(call(Some("made-up")).await, 401);
    let (status, answer) = post(&fake, path, body.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"]["status"], "UNAUTHENTICATED");
    // What the token endpoint would have issued passes, without an API key.
    issued.issue("ya29.ok", Duration::from_secs(60));
    assert_eq!(call(Some("ya29.ok")).await, 200);
    let recorded = fake.requests().pop().unwrap();
    assert_eq!(recorded.bearer.as_deref(), Some("ya29.ok"));
    assert_eq!(recorded.model.as_deref(), Some("gemini-3-pro-image"));
    // v1beta1 too; no other shape.
    let (status, _) = post(
        &fake,
        "/v1beta1/projects/p/locations/us-central1/publishers/google/models/x:generateContent",
        body.clone(),
    )
    .await;
    assert_eq!(status, 401, "routed (and refused for its token), not a 404");
    let (status, _) = post(
        &fake,
        "/v1/projects/p/locations/global/publishers/openai/models/x:generateContent",
        body,
    )
    .await;
    assert_eq!(status, 404);
}
