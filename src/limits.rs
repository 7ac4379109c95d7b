//! Per-application request rate limits: GCRA (the generic cell rate algorithm), the token-bucket
//! equivalent that needs one timestamp per key. A rate of `r` per minute with burst `b` admits
//! `b` requests at once, then one every `60/r` seconds. Kept in process memory; limits that must
//! hold across several nodes need a shared store.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The configured requests per minute.
    pub limit: u64,
    /// Requests that could be made right now after this one.
    pub remaining: u64,
    /// When a refused request may be retried.
    pub retry_after: Duration,
    /// Until the bucket is full again.
    pub reset_after: Duration,
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    /// Theoretical arrival time of the next request, per application.
    tat: Mutex<HashMap<String, Instant>>,
}

impl RateLimiter {
    pub fn check(&self, key: &str, per_minute: u64, burst: u64) -> Decision {
        self.check_at(key, per_minute, burst, Instant::now())
    }

    fn check_at(&self, key: &str, per_minute: u64, burst: u64, now: Instant) -> Decision {
        let per_minute = per_minute.max(1);
        let burst = burst.max(1);
        let interval = Duration::from_secs(60) / per_minute as u32;
        // How far ahead of now the schedule may run: the burst beyond the first request.
        let tolerance = interval * (burst - 1) as u32;
        // A panic elsewhere cannot leave a half-updated entry, so a poisoned lock is usable.
        let mut map = self
            .tat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > 100_000 {
            // Entries older than now carry no state (a full bucket): forget them.
            map.retain(|_, tat| *tat > now);
        }
        let tat = map.get(key).copied().unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > tolerance {
            return Decision {
                allowed: false,
                limit: per_minute,
                remaining: 0,
                retry_after: ahead - tolerance,
                reset_after: ahead,
            };
        }
        let new_tat = tat + interval;
        map.insert(key.to_owned(), new_tat);
        let ahead = new_tat - now;
        let remaining = tolerance
            .saturating_sub(ahead.saturating_sub(interval))
            .as_nanos()
            / interval.as_nanos().max(1);
        Decision {
            allowed: true,
            limit: per_minute,
            remaining: (remaining as u64).min(burst - 1),
            retry_after: Duration::ZERO,
            reset_after: ahead,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        // 60 per minute = one a second, burst 3.
        for i in 0..3 {
            let d = limiter.check_at("app", 60, 3, start);
            assert!(d.allowed, "request {i} of the burst");
            assert_eq!(d.remaining, 2 - i);
        }
        let refused = limiter.check_at("app", 60, 3, start);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        // Exactly when Retry-After said, it is admitted.
        assert!(
            limiter
                .check_at("app", 60, 3, start + Duration::from_secs(1))
                .allowed
        );
        assert!(
            !limiter
                .check_at("app", 60, 3, start + Duration::from_secs(1))
                .allowed
        );
        // Other keys are independent.
        assert!(limiter.check_at("other", 60, 3, start).allowed);
    }

    #[test]
    fn admitted_requests_over_a_window_match_rate_and_burst() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        let mut admitted = 0;
        // 120 per minute, burst 5, offered 50 per second for 10 seconds.
        for step in 0..500u64 {
            let now = start + Duration::from_millis(step * 20);
            if limiter.check_at("app", 120, 5, now).allowed {
                admitted += 1;
            }
        }
        // burst + rate × window = 5 + 2/s × 10 s (the last interval may or may not fit).
        assert!((24..=25).contains(&admitted), "admitted {admitted}");
    }
}
