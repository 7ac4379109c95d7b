//! Rate limits through Redis (`--redis-url`): two nodes on one database and one Redis hold one
//! limit together, with the same headers as the in-process limiter; an unreachable Redis fails
//! open or closed as configured, and says so in `/metrics`. Needs the test Redis (see
//! `helpers::test_redis`); fails, never skips, without it.

use std::time::{Duration, Instant};

use nano_banana::limits::{FailureMode, RedisSettings};
use serde_json::{Value, json};

use crate::helpers::{
    Answer, TestApp, answer, assert_error, share_state, spawn_app_with, test_redis,
};

pub(crate) const ADMIN_KEY: &str = "admin-test-key";

/// A new application with a rate limit, created through `app`'s admin API; returns its token.
pub(crate) async fn limited_application(app: &TestApp, per_minute: u64, burst: u64) -> String {
    let admin = |path: &str, body: Value| {
        app.client
            .post(format!("{}{path}", app.address))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
    };
    let created = answer(
        admin(
            "/admin/apps",
            json!({"name": "limited", "credits": 1_000_000,
                   "rate_per_minute": per_minute, "burst": burst}),
        )
        .await
        .expect("admin API answers"),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let id = created.body["id"].as_str().expect("an application id");
    let token = answer(
        admin(&format!("/admin/apps/{id}/tokens"), json!({}))
            .await
            .expect("admin API answers"),
    )
    .await;
    assert_eq!(token.status, 200, "{}", token.body);
    token.body["token"]
        .as_str()
        .expect("a token in clear")
        .to_owned()
}

async fn generate(app: &TestApp, token: &str) -> Answer {
    app.post(
        "/nano-banana/images",
        Some(token),
        json!({"prompt": "x", "async": true}).to_string(),
    )
    .await
}

fn header_u64(answer: &Answer, name: &str) -> u64 {
    answer.headers[name]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name}: {:?}", answer.headers[name]))
}

/// Two nodes: one database (SQLite here unless the suite runs on PostgreSQL), one Redis prefix.
async fn two_nodes(redis: &RedisSettings) -> (TestApp, TestApp) {
    let first = spawn_app_with(|c| {
        c.admin_key = Some(ADMIN_KEY.into());
        c.redis = Some(redis.clone());
    })
    .await;
    let second = spawn_app_with(|c| {
        c.admin_key = Some(ADMIN_KEY.into());
        share_state(c, &first);
        c.redis = Some(redis.clone());
    })
    .await;
    (first, second)
}

#[tokio::test]
async fn two_nodes_sharing_redis_admit_rate_plus_burst_together() {
    let (first, second) = two_nodes(&test_redis()).await;
    // 120 per minute = one every half second, burst 3.
    let token = limited_application(&first, 120, 3).await;
    let started = Instant::now();
    let window = Duration::from_millis(2000);
    let mut admitted = [0u32; 2];
    let mut refused = None;
    // Both nodes offered far more than the limit, alternately.
    while started.elapsed() < window {
        for (i, node) in [&first, &second].into_iter().enumerate() {
            let answer = generate(node, &token).await;
            if answer.status == 200 {
                admitted[i] += 1;
            } else {
                assert_error(&answer, 429, "too_many_requests");
                assert!(header_u64(&answer, "retry-after") >= 1);
                refused = Some(answer);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = admitted[0] + admitted[1];
    // burst + rate × window; one node alone would admit this much, two in-process limiters
    // about twice as much.
    let most = 3 + (2.0 * elapsed).floor() as u32 + 1;
    let least = 3 + (2.0 * window.as_secs_f64()).floor() as u32 - 1;
    assert!(
        (least..=most).contains(&total),
        "admitted {admitted:?} = {total} in {elapsed:.2}s, expected {least}..={most}"
    );
    assert!(admitted.iter().all(|&n| n > 0), "both nodes admitted some");

    // The same headers as the in-process limiter.
    let refused = refused.expect("some requests were refused");
    assert_eq!(header_u64(&refused, "x-ratelimit-limit"), 120);
    assert_eq!(header_u64(&refused, "x-ratelimit-remaining"), 0);
    assert!(header_u64(&refused, "x-ratelimit-reset") >= 1);

    // Refused by one node, then after exactly Retry-After admitted by the other.
    let last = loop {
        let answer = generate(&first, &token).await;
        if answer.status == 429 {
            break answer;
        }
    };
    let wait = header_u64(&last, "retry-after");
    assert_eq!(wait, 1, "half a second at most, rounded up");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let again = generate(&second, &token).await;
    assert_eq!(again.status, 200, "Retry-After was honest: {}", again.body);
    assert_eq!(header_u64(&again, "x-ratelimit-limit"), 120);
}

/// A node whose Redis URL points where nothing listens.
async fn node_without_redis(mode: FailureMode) -> TestApp {
    let mut redis = RedisSettings::new("redis://127.0.0.1:1");
    redis.failure_mode = mode;
    redis.timeout = Duration::from_millis(200);
    spawn_app_with(|c| {
        c.admin_key = Some(ADMIN_KEY.into());
        c.redis = Some(redis);
    })
    .await
}

#[tokio::test]
async fn an_unreachable_redis_fails_closed_with_api_error() {
    let app = node_without_redis(FailureMode::Closed).await;
    let token = limited_application(&app, 60, 3).await;
    let started = Instant::now();
    let answer = generate(&app, &token).await;
    assert!(started.elapsed() < Duration::from_secs(2), "did not stall");
    assert_error(&answer, 500, "api_error");
    assert!(answer.headers.get("x-ratelimit-limit").is_none());
    // Applications without a rate limit never ask Redis.
    assert_eq!(generate(&app, &app.token).await.status, 200);

    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.lines().any(|l| {
            l.starts_with("nano_banana_rate_limit_backend_errors_total{")
                && l.contains(r#"failure_mode="closed""#)
        }),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_unreachable_redis_fails_open_without_rate_limit_headers() {
    let app = node_without_redis(FailureMode::Open).await;
    let token = limited_application(&app, 60, 1).await;
    // Burst 1: a working limiter would refuse the second request.
    for _ in 0..3 {
        let answer = generate(&app, &token).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.headers.get("x-ratelimit-limit").is_none());
    }
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.lines().any(|l| {
            l.starts_with("nano_banana_rate_limit_backend_errors_total{")
                && l.contains(r#"failure_mode="open""#)
        }),
        "{metrics}"
    );
    assert!(
        metrics.contains("nano_banana_rate_limit_backend_up"),
        "{metrics}"
    );
}

#[tokio::test]
async fn one_redis_node_answers_exactly_like_the_in_process_limiter() {
    let in_redis = spawn_app_with(|c| {
        c.admin_key = Some(ADMIN_KEY.into());
        crate::helpers::use_redis(c);
    })
    .await;
    let in_process = spawn_app_with(|c| {
        c.admin_key = Some(ADMIN_KEY.into());
        c.redis = None;
    })
    .await;
    let mut answers = Vec::new();
    for app in [&in_redis, &in_process] {
        // 60 per minute, burst 2: two admitted, the third refused for a second.
        let token = limited_application(app, 60, 2).await;
        let mut seen = Vec::new();
        for _ in 0..3 {
            let answer = generate(app, &token).await;
            let retry_after = answer
                .headers
                .get("retry-after")
                .map(|_| header_u64(&answer, "retry-after"));
            seen.push((
                answer.status.as_u16(),
                header_u64(&answer, "x-ratelimit-limit"),
                header_u64(&answer, "x-ratelimit-remaining"),
                header_u64(&answer, "x-ratelimit-reset"),
                retry_after,
            ));
        }
        answers.push(seen);
    }
    assert_eq!(
        answers[0],
        [
            (200, 60, 1, 1, None),
            (200, 60, 0, 2, None),
            (429, 60, 0, 2, Some(1))
        ]
    );
    assert_eq!(answers[0], answers[1], "Redis, then in-process");
}
