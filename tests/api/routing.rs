//! One model, several upstreams: calls go to the best healthy priority; a route that fails with
//! a retryable error cools down (as long as it asked) and the call moves to the next route at
//! once; a call that may have reached an upstream is never sent elsewhere.

use std::time::{Duration, Instant};

use nano_banana::{
    config::{ProviderConfig, RouteConfig, RouteEntry},
    fake::gemini::{FakeGemini, FakeGeminiOptions, Scenario},
};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app_with};

const ADMIN_KEY: &str = "routes-admin";

struct TwoRoutes {
    app: TestApp,
    primary: FakeGemini,
    secondary: FakeGemini,
}

/// `nano-banana` on two Gemini upstreams: `primary` (priority 1) before `secondary` (2).
async fn two_routes() -> TwoRoutes {
    let primary = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    let secondary = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    let (first, second) = (primary.base_url(), secondary.base_url());
    let app = spawn_app_with(move |c| {
        c.admin_key = Some(ADMIN_KEY.into());
        c.upstream_timeout = Duration::from_millis(700);
        c.max_attempts = 3;
        for (name, base_url) in [("primary", first), ("secondary", second)] {
            c.providers.insert(
                name.into(),
                ProviderConfig {
                    kind: "gemini".into(),
                    base_url: Some(base_url),
                    api_key: Some(format!("{name}-key")),
                    ..Default::default()
                },
            );
        }
        c.models.insert(
            "nano-banana".into(),
            RouteConfig {
                routes: Some(vec![
                    RouteEntry {
                        provider: "primary".into(),
                        upstream_model: None,
                        priority: 1,
                        weight: 1,
                    },
                    RouteEntry {
                        provider: "secondary".into(),
                        upstream_model: None,
                        priority: 2,
                        weight: 1,
                    },
                ]),
                ..Default::default()
            },
        );
    })
    .await;
    TwoRoutes {
        app,
        primary,
        secondary,
    }
}

async fn routes_of(app: &TestApp, model: &str) -> Vec<Value> {
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
        .find(|m| m["model"] == model)
        .map(|m| m["routes"].as_array().unwrap().clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_503_from_the_primary_is_made_good_by_the_secondary_within_one_request() {
    let routes = two_routes().await;
    routes.primary.push_scenario(Scenario::Unavailable);
    let started = Instant::now();
    let answer = routes.app.post_images(json!({"prompt": "a lemon"})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    println!(
        "failover took {:?}: primary {} call(s), secondary {}",
        started.elapsed(),
        routes.primary.request_count(),
        routes.secondary.request_count()
    );
    assert_eq!(routes.primary.request_count(), 1);
    assert_eq!(routes.secondary.request_count(), 1);

    let shown = routes_of(&routes.app, "nano-banana").await;
    assert_eq!(shown.len(), 2);
    assert_eq!(shown[0]["provider"], "primary");
    assert_eq!(shown[0]["kind"], "gemini");
    assert_eq!(shown[0]["priority"], 1);
    assert_eq!(shown[0]["failures"], 1);
    assert!(
        shown[0]["recent_errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{shown:?}"
    );
    assert_eq!(shown[1]["provider"], "secondary");
    assert_eq!(shown[1]["calls"], 1);
    assert_eq!(shown[1]["failures"], 0);
}

#[tokio::test]
async fn a_429_with_a_retry_time_keeps_every_call_off_the_primary_that_long() {
    let routes = two_routes().await;
    routes.primary.push_scenario(Scenario::RateLimited {
        retry_delay: "30s".into(),
    });
    let first = routes.app.post_images(json!({"prompt": "one"})).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(routes.primary.request_count(), 1);
    // The next requests, within the 30 s, all go to the secondary.
    for i in 0..4 {
        let answer = routes
            .app
            .post_images(json!({"prompt": format!("after {i}")}))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    println!(
        "primary {} call(s), secondary {}",
        routes.primary.request_count(),
        routes.secondary.request_count()
    );
    assert_eq!(routes.primary.request_count(), 1, "no call while it cools");
    assert_eq!(routes.secondary.request_count(), 5);
    let shown = routes_of(&routes.app, "nano-banana").await;
    assert_eq!(shown[0]["state"], "cooling");
    let until = shown[0]["cooling_until"].as_f64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(until - now > 25.0 && until - now <= 30.5, "{until} - {now}");
    assert_eq!(shown[1]["state"], "healthy");
}

#[tokio::test]
async fn a_timeout_after_sending_fails_the_task_and_never_reaches_the_secondary() {
    let routes = two_routes().await;
    routes.primary.push_scenario(Scenario::Hang);
    let answer = routes.app.post_images(json!({"prompt": "slow"})).await;
    assert_error(&answer, 500, "api_error");
    assert_eq!(routes.primary.request_count(), 1);
    assert_eq!(
        routes.secondary.request_count(),
        0,
        "it may have been billed"
    );
}

#[tokio::test]
async fn weights_share_calls_within_a_priority_and_the_admin_api_needs_its_key() {
    let first = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    let second = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    let (a, b) = (first.base_url(), second.base_url());
    let app = spawn_app_with(move |c| {
        c.admin_key = Some(ADMIN_KEY.into());
        for (name, base_url) in [("a", a), ("b", b)] {
            c.providers.insert(
                name.into(),
                ProviderConfig {
                    kind: "gemini".into(),
                    base_url: Some(base_url),
                    api_key: Some("k".into()),
                    ..Default::default()
                },
            );
        }
        let entry = |provider: &str| RouteEntry {
            provider: provider.into(),
            upstream_model: Some("gemini-3-pro-image".into()),
            priority: 1,
            weight: 1,
        };
        c.models.insert(
            "nano-banana-pro".into(),
            RouteConfig {
                routes: Some(vec![entry("a"), entry("b")]),
                ..Default::default()
            },
        );
    })
    .await;
    for i in 0..24 {
        let answer = app
            .post_images(json!({"prompt": format!("p{i}"), "model": "nano-banana-pro"}))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let (a, b) = (first.request_count(), second.request_count());
    println!("a {a}, b {b}");
    assert_eq!(a + b, 24);
    // Even weights: each gets some (the chance of 0 of 24 is 2 × 2^-24).
    assert!(a > 0 && b > 0, "a {a}, b {b}");
    assert!(
        first.requests()[0]
            .path
            .contains("gemini-3-pro-image:generateContent"),
        "{}",
        first.requests()[0].path
    );

    let refused = app
        .client
        .get(format!("{}/admin/routes", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400, "no admin key: no_token");
}
