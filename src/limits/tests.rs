//! The same cases against both backends. The Redis ones need a real Redis at
//! `NANO_BANANA_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`) and fail, not skip, without it.

use std::time::{Duration, Instant};

use super::*;
use crate::telemetry::redact_url;

fn redis_url() -> String {
    std::env::var("NANO_BANANA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A limiter on the test Redis with a fresh key prefix; panics if Redis does not answer.
async fn redis_limiter(prefix: &str) -> RedisLimiter {
    let url = redis_url();
    let mut settings = RedisSettings::new(url.clone());
    settings.prefix = prefix.to_owned();
    // Generous: a loaded CI machine must not turn into spurious failures here.
    settings.timeout = Duration::from_secs(2);
    let limiter = RedisLimiter::new(settings).expect("a valid Redis URL");
    if let Err(e) = limiter.check().await {
        panic!(
            "Redis at {url} does not answer ({e}). These tests need a real Redis: start one or \
             set NANO_BANANA_TEST_REDIS_URL; they do not skip."
        );
    }
    limiter
}

fn fresh_prefix() -> String {
    let prefix = format!("nb-test:{}:", uuid::Uuid::new_v4());
    // The test kit is the root package's dependency (the benchmark's); only tests use it here.
    nano_banana_testkit::leftovers::record("redis-prefix", &prefix);
    prefix
}

/// Either backend, driven with an explicit clock (Redis's TIME replaced by the script's test
/// argument).
enum Backend {
    Memory(InProcessLimiter),
    Redis(RedisLimiter),
}

impl Backend {
    async fn all() -> Vec<Backend> {
        vec![
            Backend::Memory(InProcessLimiter::default()),
            Backend::Redis(redis_limiter(&fresh_prefix()).await),
        ]
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "in-process",
            Backend::Redis(_) => "redis",
        }
    }

    async fn at(&self, key: &str, per_minute: u64, burst: u64, now_us: u64) -> Decision {
        match self {
            Backend::Memory(l) => l.admit_at(key, per_minute, burst, now_us),
            Backend::Redis(l) => l
                .step(key, Gcra::new(per_minute, burst), Some(now_us))
                .await
                .expect("Redis answers"),
        }
    }
}

/// An arbitrary "now" for the explicit clock: Redis keys still expire on Redis's real clock, but
/// only after the modelled delay, which is longer than these tests run.
const T0: u64 = 1_700_000_000_000_000;
const SECOND: u64 = 1_000_000;

#[tokio::test]
async fn a_burst_then_the_steady_rate() {
    for backend in Backend::all().await {
        let name = backend.name();
        // 60 per minute = one a second, burst 3.
        for i in 0..3 {
            let d = backend.at("app", 60, 3, T0).await;
            assert!(d.allowed, "{name}: request {i} of the burst");
            assert_eq!(d.remaining, 2 - i, "{name}");
            assert_eq!(d.limit, 60, "{name}");
        }
        let refused = backend.at("app", 60, 3, T0).await;
        assert!(!refused.allowed, "{name}");
        assert_eq!(refused.retry_after, Duration::from_secs(1), "{name}");
        assert_eq!(refused.reset_after, Duration::from_secs(3), "{name}");
        // Exactly when Retry-After said, it is admitted; a moment later, not again.
        assert!(
            backend.at("app", 60, 3, T0 + SECOND).await.allowed,
            "{name}"
        );
        assert!(
            !backend.at("app", 60, 3, T0 + SECOND).await.allowed,
            "{name}"
        );
        // Other keys are independent.
        assert!(backend.at("other", 60, 3, T0).await.allowed, "{name}");
    }
}

#[tokio::test]
async fn admitted_requests_over_a_window_match_rate_and_burst() {
    for backend in Backend::all().await {
        let mut admitted = 0;
        // 120 per minute, burst 5, offered 50 per second for 10 seconds.
        for step in 0..500u64 {
            if backend.at("app", 120, 5, T0 + step * 20_000).await.allowed {
                admitted += 1;
            }
        }
        // burst + rate × window = 5 + 2/s × 10 s (the last interval may or may not fit).
        assert!(
            (24..=25).contains(&admitted),
            "{}: admitted {admitted}",
            backend.name()
        );
    }
}

#[tokio::test]
async fn both_backends_decide_identically() {
    let [memory, redis] = <[Backend; 2]>::try_from(Backend::all().await)
        .unwrap_or_else(|_| unreachable!("two backends"));
    // Rates that do not divide a minute evenly, bursts from 1 up, irregular arrivals. Intervals
    // stay long (>= 300 ms): Redis expires keys on its real clock after the modelled delay.
    let limits = [(7, 1), (7, 4), (60, 3), (120, 5), (200, 2), (59, 10)];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for (per_minute, burst) in limits {
        let key = format!("{per_minute}/{burst}");
        let mut now = T0;
        for i in 0..200 {
            // xorshift: arrivals 0 to ~3 intervals apart, often the same instant.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let interval = 60 * SECOND / per_minute;
            now += match seed % 4 {
                0 => 0,
                _ => seed % (3 * interval),
            };
            let a = memory.at(&key, per_minute, burst, now).await;
            let b = redis.at(&key, per_minute, burst, now).await;
            assert_eq!(a, b, "{key}: request {i} at +{}µs", now - T0);
        }
    }
}

#[tokio::test]
async fn retry_after_on_redis_is_honest() {
    let limiter = redis_limiter(&fresh_prefix()).await;
    // 600 per minute = one every 100 ms, burst 2; Redis's own clock.
    let refused = loop {
        match limiter.admit("app", 600, 2).await {
            Verdict::Checked(d) if !d.allowed => break d,
            Verdict::Checked(_) => {}
            other => panic!("Redis is up, got {other:?}"),
        }
    };
    assert!(refused.retry_after > Duration::ZERO);
    assert!(refused.retry_after <= Duration::from_millis(100));
    tokio::time::sleep(refused.retry_after).await;
    let again = limiter.admit("app", 600, 2).await;
    assert!(
        matches!(again, Verdict::Checked(d) if d.allowed),
        "waited {:?}, got {again:?}",
        refused.retry_after
    );
}

#[tokio::test]
async fn two_nodes_sharing_redis_admit_rate_plus_burst_together() {
    let prefix = fresh_prefix();
    let nodes = [
        std::sync::Arc::new(redis_limiter(&prefix).await),
        std::sync::Arc::new(redis_limiter(&prefix).await),
    ];
    // 600 per minute = 10 a second, burst 5; each node offered ~200 a second for 1.5 s.
    let started = Instant::now();
    let window = Duration::from_millis(1500);
    let mut workers = Vec::new();
    for node in &nodes {
        let node = node.clone();
        workers.push(tokio::spawn(async move {
            let mut admitted = 0u32;
            while started.elapsed() < window {
                if let Verdict::Checked(d) = node.admit("shared-app", 600, 5).await {
                    admitted += u32::from(d.allowed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            admitted
        }));
    }
    let mut admitted = Vec::new();
    for worker in workers {
        admitted.push(worker.await.expect("the worker ran"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total: u32 = admitted.iter().sum();
    // burst + rate × elapsed, counting the last request that may have started before the end.
    let most = 5 + (10.0 * elapsed).floor() as u32 + 1;
    let least = 5 + (10.0 * window.as_secs_f64()).floor() as u32 - 2;
    assert!(
        (least..=most).contains(&total),
        "the two nodes admitted {admitted:?} = {total} in {elapsed:.2}s; expected {least}..={most}"
    );
    assert!(
        admitted.iter().all(|&n| n > 0),
        "both nodes were served: {admitted:?}"
    );
    // Another prefix (another deployment on the same Redis) has its own limits.
    let other = redis_limiter(&fresh_prefix()).await;
    assert!(matches!(other.admit("shared-app", 600, 5).await, Verdict::Checked(d) if d.allowed));
}

#[tokio::test]
async fn keys_expire_once_the_bucket_is_full_again() {
    let prefix = fresh_prefix();
    let limiter = redis_limiter(&prefix).await;
    // 60 per minute, burst 3: after one request the bucket is full again in 1 s.
    assert!(matches!(limiter.admit("app", 60, 3).await, Verdict::Checked(d) if d.allowed));
    let client = ::redis::Client::open(redis_url()).expect("a valid Redis URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(format!("{prefix}rl:app"))
        .query_async(&mut connection)
        .await
        .expect("PTTL answers");
    assert!((1..=1000).contains(&ttl), "PTTL {ttl}");
}

/// A TCP server that accepts connections and never answers: a hung Redis.
async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (format!("redis://127.0.0.1:{port}"), task)
}

#[tokio::test]
async fn unreachable_redis_fails_open_or_closed_as_configured_and_quickly() {
    let (hung_url, _server) = silent_server().await;
    // Nothing listens on port 1; the silent server accepts and never answers.
    for url in ["redis://127.0.0.1:1".to_owned(), hung_url] {
        for (mode, expected) in [
            (FailureMode::Open, Verdict::Unchecked),
            (FailureMode::Closed, Verdict::Unavailable),
        ] {
            let mut settings = RedisSettings::new(url.clone());
            settings.failure_mode = mode;
            settings.timeout = Duration::from_millis(200);
            let limiter = RateLimiter::Redis(RedisLimiter::new(settings).expect("valid URL"));
            for _ in 0..3 {
                let started = Instant::now();
                let verdict = limiter.admit("app", 60, 3).await;
                let took = started.elapsed();
                assert_eq!(verdict, expected, "{url} {mode}");
                assert!(
                    took < Duration::from_millis(600),
                    "{url} {mode}: took {took:?}"
                );
            }
            assert!(limiter.check().await.is_err(), "{url}: readiness fails");
        }
    }
}

#[tokio::test]
async fn a_malformed_url_is_refused_at_startup() {
    for url in ["http://127.0.0.1", "not a url"] {
        assert!(
            RedisLimiter::new(RedisSettings::new(url)).is_err(),
            "{url} was accepted"
        );
    }
}

#[test]
fn the_url_password_never_reaches_the_logs() {
    let settings = RedisSettings::new("redis://user:s3cret-pw@redis.internal:6379/2");
    let shown = format!("{settings:?} {}", settings.redacted_url());
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    assert!(shown.contains("redis.internal"), "{shown}");
    assert!(!redact_url("redis://:s3cret-pw@h").contains("s3cret-pw"));
    assert!(!redact_url("::s3cret-pw::").contains("s3cret-pw"));
}

/// Not a benchmark, a sanity bound; run with `--nocapture` to see the numbers.
#[tokio::test]
async fn a_redis_check_is_fast_against_a_local_redis() {
    let limiter = redis_limiter(&fresh_prefix()).await;
    let mut took = Vec::new();
    for i in 0..2000 {
        let started = Instant::now();
        let verdict = limiter.admit(&format!("app{}", i % 50), 600, 10).await;
        took.push(started.elapsed());
        assert!(matches!(verdict, Verdict::Checked(_)));
    }
    took.sort();
    let mean = took.iter().sum::<Duration>() / took.len() as u32;
    let p99 = took[took.len() * 99 / 100];
    eprintln!("Redis GCRA check, sequential: mean {mean:?}, p99 {p99:?}");
    assert!(mean < Duration::from_millis(20), "mean {mean:?}");
}
