//! The load generator: a fixed number of concurrent loops, each sending one request after another
//! until a request count or a time is reached, timing every answer. Latency percentiles come from
//! the sorted list of all latencies (the runs are small enough to keep every sample).

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// When a run stops sending.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this many requests in all.
    Requests(usize),
    /// After this long (requests in flight then still finish and count).
    After(Duration),
}

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub concurrency: usize,
    pub stop: Stop,
    /// Start the loops evenly over this long rather than all at once (10,000 connects at once
    /// overflow the listen backlog and wait for SYN retransmits).
    pub ramp: Duration,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub ok: usize,
    pub errors: usize,
    /// The first error seen, to say what went wrong.
    pub first_error: Option<String>,
    /// Latencies of the successful requests, sorted.
    pub latencies: Vec<Duration>,
    /// From the first request sent to the last answer.
    pub elapsed: Duration,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// The `p`-quantile (0 < p ≤ 1) of the latencies: the smallest sample with at least that
    /// share of samples at or below it.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        percentile(&self.latencies, p)
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Runs `call` under `plan`. `call` returns `Err(what)` for an answer that does not count as a
/// success (transport error, unexpected status or body).
pub async fn drive<F, Fut>(plan: Plan, call: F) -> Outcome
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let Plan {
        concurrency,
        stop,
        ramp,
    } = plan;
    let call = Arc::new(call);
    let concurrency = concurrency.max(1);
    let issued = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut loops = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let call = call.clone();
        let issued = issued.clone();
        let delay = ramp.mul_f64(i as f64 / concurrency as f64);
        loops.spawn(async move {
            tokio::time::sleep(delay).await;
            let mut mine = Outcome::default();
            loop {
                let more = match stop {
                    Stop::Requests(n) => issued.fetch_add(1, Ordering::Relaxed) < n,
                    Stop::After(d) => started.elapsed() < d,
                };
                if !more {
                    break;
                }
                let sent = Instant::now();
                match call().await {
                    Ok(()) => {
                        mine.ok += 1;
                        mine.latencies.push(sent.elapsed());
                    }
                    Err(e) => {
                        mine.errors += 1;
                        mine.first_error.get_or_insert(e);
                    }
                }
            }
            mine
        });
    }
    let mut all = Outcome::default();
    while let Some(joined) = loops.join_next().await {
        match joined {
            Ok(mine) => {
                all.ok += mine.ok;
                all.errors += mine.errors;
                if all.first_error.is_none() {
                    all.first_error = mine.first_error;
                }
                all.latencies.extend(mine.latencies);
            }
            Err(e) => {
                all.errors += 1;
                all.first_error
                    .get_or_insert(format!("a load loop failed: {e}"));
            }
        }
    }
    all.elapsed = started.elapsed();
    all.latencies.sort_unstable();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms = |n: u64| Duration::from_millis(n);
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&sorted, 0.5), Some(ms(50)));
        assert_eq!(percentile(&sorted, 0.99), Some(ms(99)));
        assert_eq!(percentile(&sorted, 1.0), Some(ms(100)));
        assert_eq!(percentile(&[ms(7)], 0.5), Some(ms(7)));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[tokio::test]
    async fn a_request_count_is_met_exactly_and_errors_are_counted() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let plan = Plan {
            concurrency: 4,
            stop: Stop::Requests(10),
            ramp: Duration::ZERO,
        };
        let outcome = drive(plan, move || {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            async move {
                if n.is_multiple_of(5) {
                    Err(format!("call {n} failed"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(calls.load(Ordering::Relaxed), 10);
        assert_eq!((outcome.ok, outcome.errors), (8, 2));
        assert_eq!(outcome.latencies.len(), 8);
        assert!(outcome.first_error.is_some());
    }
}
