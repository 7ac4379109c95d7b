//! Callback delivery from the outbox: each finished task with a `callback_url` has a row written
//! in the same transaction as its result. The deliverer POSTs the final body as JSON; any 2xx
//! ends it, anything else is retried with exponential backoff until the retry window closes.
//! Every attempt is recorded. A callback URL that is unreachable or refused never fails a task.

use std::{sync::Arc, time::Instant};

use tokio::sync::watch;

use super::{Tasks, worker::backoff};
use crate::{
    domain::now_ms,
    fetch::FetchError,
    storage::db::{CallbackAttempt, CallbackOutcome, CallbackRow},
};

/// At most this many deliveries in flight per process: a slow receiver holds one slot for at
/// most the callback timeout, so it cannot hold up the others.
const CONCURRENT_DELIVERIES: usize = 32;

pub(super) async fn run(
    tasks: Arc<Tasks>,
    mut shutdown: watch::Receiver<bool>,
    grace: std::time::Duration,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_DELIVERIES));
    let mut running = tokio::task::JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let free = slots.available_permits();
        let mut claimed_all = false;
        if free > 0 {
            // The lease covers one attempt; an attempt never outlives the callback timeout.
            let lease = tasks.settings.callback_timeout + tasks.settings.lease;
            match tasks
                .db
                .claim_callbacks(&tasks.owner, lease, free, now_ms())
                .await
            {
                Ok(claimed) => {
                    claimed_all = claimed.len() == free;
                    for callback in claimed {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            break;
                        };
                        let tasks = tasks.clone();
                        running.spawn(async move {
                            let _permit = permit;
                            deliver(&tasks, callback).await;
                        });
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not claim callbacks"),
            }
        }
        while running.try_join_next().is_some() {}
        if claimed_all {
            continue;
        }
        tokio::select! {
            _ = tasks.callback_queued.notified() => {}
            // With every slot busy, a finished delivery is what makes room: without this the
            // backlog drained at one claim per poll interval (BENCHMARKS.md, S4).
            _ = slot_freed(&slots), if free == 0 => {}
            _ = tokio::time::sleep(tasks.settings.poll_interval) => {}
            _ = shutdown.changed() => {}
        }
    }
    // In-flight deliveries are short (bounded by the timeout, and by the shutdown's grace); an
    // interrupted one is attempted again by another node or the next start, which is what
    // at-least-once allows.
    let _ = tokio::time::timeout(tasks.settings.callback_timeout.min(grace), async {
        while running.join_next().await.is_some() {}
    })
    .await;
}

async fn slot_freed(slots: &tokio::sync::Semaphore) {
    // A permit being returned is observed by acquiring and dropping one.
    if let Ok(permit) = slots.acquire().await {
        drop(permit);
    }
}

#[tracing::instrument(skip_all, fields(task_id = %callback.task_id, attempt = callback.attempts + 1))]
async fn deliver(tasks: &Tasks, callback: CallbackRow) {
    let attempt = callback.attempts + 1;
    let started = Instant::now();
    let at = now_ms();
    let (status, error, refused) = match post(tasks, &callback).await {
        Ok(status) => (Some(status), None, false),
        Err(PostFailure::Refused(error)) => (None, Some(error), true),
        Err(PostFailure::Failed(error)) => (None, Some(error), false),
    };
    let delivered = status.is_some_and(|s| (200..300).contains(&s));
    let error = match (delivered, status, error) {
        (true, _, _) => None,
        (false, Some(status), _) => Some(format!("the receiver answered HTTP {status}")),
        (false, None, error) => error,
    };
    let outcome = if delivered {
        CallbackOutcome::Delivered
    } else {
        let retry_until =
            callback.created_at + tasks.settings.callback_retry_for.as_millis() as i64;
        let delay = backoff(
            tasks.settings.callback_retry_base,
            attempt.clamp(1, 32) as u32,
            None,
        );
        let next = now_ms() + delay.as_millis() as i64;
        // A URL our policy refuses will be refused every time: it is never called.
        if refused || next > retry_until {
            CallbackOutcome::GaveUp
        } else {
            CallbackOutcome::RetryAt(next)
        }
    };
    let latency_ms = started.elapsed().as_millis() as i64;
    let label = match outcome {
        CallbackOutcome::Delivered => "delivered",
        CallbackOutcome::RetryAt(_) => "retry",
        CallbackOutcome::GaveUp => "gave_up",
    };
    metrics::counter!("nano_banana_callback_deliveries_total", "outcome" => label).increment(1);
    match outcome {
        CallbackOutcome::Delivered => tracing::info!(latency_ms, "callback delivered"),
        CallbackOutcome::RetryAt(_) => {
            tracing::warn!(
                latency_ms,
                error = error.as_deref().unwrap_or(""),
                "callback failed; will retry"
            )
        }
        CallbackOutcome::GaveUp => {
            tracing::warn!(
                latency_ms,
                error = error.as_deref().unwrap_or(""),
                "callback given up"
            )
        }
    }
    let record = CallbackAttempt {
        callback_id: &callback.id,
        attempt,
        at,
        status,
        latency_ms,
        error: error.as_deref(),
    };
    let recorded = super::until_written("a callback attempt", || {
        tasks.db.record_callback_attempt(&record, outcome)
    })
    .await;
    if let Err(e) = recorded {
        // The lease expires and the attempt is made again: a duplicate, never a loss.
        tracing::error!(error = %e, "could not record a callback attempt");
    }
}

/// Why a POST got no HTTP answer.
enum PostFailure {
    /// The outbound policy refuses this URL; it will refuse it every time.
    Refused(String),
    /// Anything that may work later: connection refused, timeout, reset.
    Failed(String),
}

/// One POST of the final body. `Ok(status)` for any HTTP answer.
async fn post(tasks: &Tasks, callback: &CallbackRow) -> Result<u16, PostFailure> {
    let mut request = tasks
        .fetcher
        .request(reqwest::Method::POST, &callback.url)
        .map_err(|e| PostFailure::Refused(format!("refused by the outbound policy: {e}")))?;
    if let Some(key) = &tasks.settings.callback_signing_key {
        // The id is the callback's, the same on every retry, so receivers can de-duplicate.
        let id = format!("msg_{}", callback.id);
        let timestamp = (now_ms() / 1000).to_string();
        let signature = sign(key, &id, &timestamp, &callback.body);
        request = request
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp)
            .header("webhook-signature", signature);
    }
    let response = request
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("nano-banana/", env!("CARGO_PKG_VERSION")),
        )
        .timeout(tasks.settings.callback_timeout)
        .body(callback.body.clone())
        .send()
        .await
        .map_err(|e| match FetchError::from(e) {
            FetchError::Refused(reason) => {
                PostFailure::Refused(format!("refused by the outbound policy: {reason}"))
            }
            FetchError::Timeout => {
                PostFailure::Failed("the receiver did not answer in time".into())
            }
            other => PostFailure::Failed(other.to_string()),
        })?;
    Ok(response.status().as_u16())
}

/// Standard Webhooks: `v1,` + base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`.
pub fn sign(key: &[u8], id: &str, timestamp: &str, body: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}
