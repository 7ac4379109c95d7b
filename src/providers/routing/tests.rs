use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;

use super::*;
use crate::providers::{GeneratedImage, ImageJob};

struct Named(&'static str);

#[async_trait]
impl ImageProvider for Named {
    fn name(&self) -> &'static str {
        self.0
    }

    async fn generate(&self, _job: &ImageJob) -> Result<GeneratedImage, ProviderError> {
        Err(ProviderError::NoImage("test".into()))
    }
}

fn route(name: &'static str, priority: u32, weight: u32) -> Route {
    Route::new(name, Arc::new(Named(name)), "m", priority, weight)
}

fn unavailable(retry_after: Option<Duration>) -> ProviderError {
    ProviderError::Upstream {
        status: 503,
        message: "down".into(),
        retry_after,
    }
}

fn picked(routes: &ModelRoutes, tried: &[usize]) -> Option<String> {
    match routes.pick(tried, Instant::now()) {
        Pick::Call(_, route) => Some(route.provider_name.clone()),
        Pick::Wait(_) => None,
    }
}

#[test]
fn the_best_priority_gets_every_call_while_it_is_healthy() {
    let routes = ModelRoutes::new(vec![route("backup", 2, 1), route("main", 1, 1)]).unwrap();
    assert_eq!(routes.primary().provider_name, "main");
    for _ in 0..50 {
        assert_eq!(picked(&routes, &[]).as_deref(), Some("main"));
    }
    // Tried already for this image: the next priority.
    assert_eq!(picked(&routes, &[0]).as_deref(), Some("backup"));
    assert!(picked(&routes, &[0, 1]).is_none());
}

#[test]
fn calls_spread_by_weight_within_a_priority() {
    let routes = ModelRoutes::new(vec![route("a", 1, 3), route("b", 1, 1)]).unwrap();
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..4000 {
        *counts.entry(picked(&routes, &[]).unwrap()).or_default() += 1;
    }
    let a = counts["a"];
    // 3:1 of 4000 is 3000; binomial sd ~27.
    assert!((2800..=3200).contains(&a), "{counts:?}");
}

#[test]
fn a_retryable_failure_cools_a_route_for_what_the_upstream_asked() {
    let routes = ModelRoutes::new(vec![route("main", 1, 1), route("backup", 2, 1)]).unwrap();
    let main = &routes.all()[0];
    let cooldown = main.failed(&unavailable(Some(Duration::from_secs(30))), |_| {
        Duration::from_millis(1)
    });
    assert_eq!(cooldown, Some(Duration::from_secs(30)));
    for _ in 0..20 {
        assert_eq!(picked(&routes, &[]).as_deref(), Some("backup"));
    }
    let status = main.status();
    assert_eq!(status.state, "cooling");
    assert!(status.cooling_until.is_some());
    assert_eq!((status.calls, status.failures), (1, 1));
    assert!(status.recent_errors[0].error.contains("HTTP 503"));
    // With the backup tried too, the wait ends when the main route's cooldown does.
    match routes.pick(&[1], Instant::now()) {
        Pick::Wait(until) => {
            let left = until.saturating_duration_since(Instant::now());
            assert!(left > Duration::from_secs(29), "{left:?}");
        }
        Pick::Call(..) => panic!("every route is tried or cooling"),
    }
}

#[test]
fn without_a_retry_time_the_cooldown_grows_with_consecutive_failures() {
    let routes = ModelRoutes::new(vec![route("main", 1, 1)]).unwrap();
    let main = &routes.all()[0];
    let mut asked = Vec::new();
    for _ in 0..3 {
        main.failed(&unavailable(None), |failures| {
            asked.push(failures);
            Duration::ZERO
        });
    }
    assert_eq!(asked, [1, 2, 3]);
    main.succeeded();
    main.failed(&unavailable(None), |failures| {
        asked.push(failures);
        Duration::ZERO
    });
    assert_eq!(asked.last(), Some(&1), "a success resets the count");
}

#[test]
fn a_final_failure_is_recorded_but_cools_nothing() {
    let routes = ModelRoutes::new(vec![route("main", 1, 1)]).unwrap();
    let main = &routes.all()[0];
    let refused = ProviderError::Refused("safety".into());
    assert_eq!(main.failed(&refused, |_| Duration::from_secs(9)), None);
    assert_eq!(main.status().state, "healthy");
    assert_eq!(main.status().failures, 1);
    let sent = ProviderError::Transport {
        message: "timed out".into(),
        sent: true,
    };
    assert_eq!(main.failed(&sent, |_| Duration::from_secs(9)), None);
    assert_eq!(picked(&routes, &[]).as_deref(), Some("main"));
}

#[test]
fn recent_errors_keep_the_last_ten() {
    let main = route("main", 1, 1);
    for i in 0..15 {
        main.failed(&ProviderError::NoImage(format!("n{i}")), |_| Duration::ZERO);
    }
    let errors = main.status().recent_errors;
    assert_eq!(errors.len(), 10);
    assert!(errors[9].error.contains("n14"));
}
