//! Per-application request rate limits: GCRA (the generic cell rate algorithm), the token-bucket
//! equivalent that needs one timestamp per key. A rate of `r` per minute with burst `b` admits
//! `b` requests at once, then one every `60/r` seconds.
//!
//! Two backends, chosen at startup: process memory (the default; each node limits on its own)
//! and Redis (`--redis-url`; the limit holds for all nodes together). Both run the same step,
//! [`Gcra::step`], in integer microseconds: the Lua script in `gcra.lua` is a line-by-line copy,
//! and the tests run one table of cases against both. What happens when Redis is unreachable is
//! the `--redis-failure-mode`; see `redis.rs`. Imports `api` (the throttle a refusal carries) and
//! `telemetry`, nothing else.

use std::{collections::HashMap, sync::Mutex, time::Duration, time::Instant};

use crate::api::Throttle;

mod redis;

pub use self::redis::{
    DEFAULT_REDIS_PREFIX, DEFAULT_REDIS_TIMEOUT, FailureMode, RedisLimiter, RedisSettings,
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

impl Decision {
    /// The refusal as the contract's throttle: whole seconds rounded up, so that a client that
    /// waits exactly that long is admitted.
    pub fn throttle(&self) -> Throttle {
        Throttle::Rate {
            limit: self.limit,
            remaining: self.remaining,
            retry_after: whole_seconds(self.retry_after).max(1),
            reset: self.reset_secs(),
        }
    }

    /// Seconds until the full burst is available again, rounded up (`X-RateLimit-Reset`).
    pub fn reset_secs(&self) -> u64 {
        whole_seconds(self.reset_after)
    }
}

fn whole_seconds(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

/// What the limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The limiter answered (admitted or refused).
    Checked(Decision),
    /// The shared store is unreachable and the failure mode is `open`: admit, unchecked.
    Unchecked,
    /// The shared store is unreachable and the failure mode is `closed`: refuse.
    Unavailable,
}

/// The limiter could not be asked (readiness check).
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    #[error("the rate-limit store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the rate-limit store failed: {0}")]
    Store(#[from] ::redis::RedisError),
}

/// The limiter of this process, one of two backends.
pub enum RateLimiter {
    InProcess(InProcessLimiter),
    Redis(RedisLimiter),
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::InProcess(InProcessLimiter::default())
    }
}

impl RateLimiter {
    /// Counts one request of `application_id` against `per_minute` with `burst`.
    pub async fn admit(&self, application_id: &str, per_minute: u64, burst: u64) -> Verdict {
        match self {
            RateLimiter::InProcess(limiter) => {
                Verdict::Checked(limiter.admit(application_id, per_minute, burst))
            }
            RateLimiter::Redis(limiter) => limiter.admit(application_id, per_minute, burst).await,
        }
    }

    /// Whether the limiter can answer (for readiness): always for process memory, a PING for
    /// Redis.
    /// Whether the limits live in a shared service (Redis) that readiness should check.
    pub fn is_shared(&self) -> bool {
        matches!(self, RateLimiter::Redis(_))
    }

    pub async fn check(&self) -> Result<(), LimiterError> {
        match self {
            RateLimiter::InProcess(_) => Ok(()),
            RateLimiter::Redis(limiter) => limiter.check().await,
        }
    }

    /// `in-process` or `redis`, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            RateLimiter::InProcess(_) => "in-process",
            RateLimiter::Redis(_) => "redis",
        }
    }
}

/// The largest burst honoured; more is treated as this (keeps the microsecond arithmetic far
/// from overflow, here and in Lua's doubles).
const MAX_BURST: u64 = 1_000_000;

/// One application's limit, in the microseconds both backends compute with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    per_minute: u64,
    burst: u64,
    /// Time between two requests at the steady rate.
    interval_us: u64,
    /// How far ahead of now the schedule may run: the burst beyond the first request.
    tolerance_us: u64,
}

impl Gcra {
    pub(crate) fn new(per_minute: u64, burst: u64) -> Gcra {
        let per_minute = per_minute.max(1);
        let burst = burst.clamp(1, MAX_BURST);
        let interval_us = (60_000_000 / per_minute).max(1);
        Gcra {
            per_minute,
            burst,
            interval_us,
            tolerance_us: interval_us * (burst - 1),
        }
    }

    /// One request at `now`, given the stored theoretical arrival time of the next request:
    /// the decision and, when admitted, the new arrival time to store.
    pub(crate) fn step(&self, tat: Option<u64>, now: u64) -> (Decision, Option<u64>) {
        let tat = tat.unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > self.tolerance_us {
            let refused = self.decision(false, 0, ahead - self.tolerance_us, ahead);
            return (refused, None);
        }
        let new_tat = tat + self.interval_us;
        let ahead = new_tat - now;
        // ahead - interval = tat - now <= tolerance, so this never underflows.
        let remaining = (self.tolerance_us - (ahead - self.interval_us)) / self.interval_us;
        let admitted = self.decision(true, remaining.min(self.burst - 1), 0, ahead);
        (admitted, Some(new_tat))
    }

    fn decision(&self, allowed: bool, remaining: u64, retry_us: u64, reset_us: u64) -> Decision {
        Decision {
            allowed,
            limit: self.per_minute,
            remaining,
            retry_after: Duration::from_micros(retry_us),
            reset_after: Duration::from_micros(reset_us),
        }
    }
}

/// Limits kept in this process's memory.
#[derive(Debug)]
pub struct InProcessLimiter {
    /// The zero of the stored microsecond times.
    epoch: Instant,
    /// Theoretical arrival time of the next request, per application.
    tat: Mutex<HashMap<String, u64>>,
}

impl Default for InProcessLimiter {
    fn default() -> Self {
        InProcessLimiter {
            epoch: Instant::now(),
            tat: Mutex::default(),
        }
    }
}

impl InProcessLimiter {
    pub fn admit(&self, key: &str, per_minute: u64, burst: u64) -> Decision {
        let now = self.epoch.elapsed().as_micros() as u64;
        self.admit_at(key, per_minute, burst, now)
    }

    fn admit_at(&self, key: &str, per_minute: u64, burst: u64, now_us: u64) -> Decision {
        let gcra = Gcra::new(per_minute, burst);
        // A panic elsewhere cannot leave a half-updated entry, so a poisoned lock is usable.
        let mut map = self
            .tat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > 100_000 {
            // Entries older than now carry no state (a full bucket): forget them.
            map.retain(|_, tat| *tat > now_us);
        }
        let (decision, new_tat) = gcra.step(map.get(key).copied(), now_us);
        if let Some(new_tat) = new_tat {
            map.insert(key.to_owned(), new_tat);
        }
        decision
    }
}

#[cfg(test)]
mod tests;
