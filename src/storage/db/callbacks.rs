//! The callback outbox. A finished task's callback row is written together with its result
//! (`complete_task`, in `tasks.rs`); here due rows are claimed under a lease, as tasks are, so
//! two nodes do not deliver the same callback at the same time; each delivery attempt is recorded
//! with the callback's next state; and a task's callback status is read back.
//!
//! It does not deliver anything, nor decide when to retry: that is `src/tasks/callbacks.rs`,
//! which hands back the outcome (`CallbackOutcome`) to record.

use std::time::Duration;

use sqlx::Row;

use super::{Db, DbError, Pool};

#[derive(Debug, Clone)]
pub struct CallbackRow {
    pub id: String,
    pub task_id: String,
    pub url: String,
    pub body: String,
    pub attempts: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct CallbackAttempt<'a> {
    pub callback_id: &'a str,
    pub attempt: i64,
    pub at: i64,
    pub status: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<&'a str>,
}

/// One recorded delivery attempt of a task's callback, as the console shows it.
#[derive(Debug, Clone)]
pub struct DeliveryAttempt {
    pub url: String,
    pub attempt: i64,
    pub at: i64,
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackOutcome {
    Delivered,
    RetryAt(i64),
    GaveUp,
}

impl Db {
    /// Every delivery attempt of `task_id`'s callback, oldest first.
    pub async fn delivery_attempts(&self, task_id: &str) -> Result<Vec<DeliveryAttempt>, DbError> {
        on_pool!(self, |pool, pg| {
            let rows = sqlx::query(
                "SELECT c.url, a.attempt, a.at, a.status, a.latency_ms, a.error \
                 FROM callbacks c JOIN callback_attempts a ON a.callback_id = c.id \
                 WHERE c.task_id = $1 ORDER BY a.at, a.attempt",
            )
            .bind(task_id)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(DeliveryAttempt {
                        url: row.try_get("url")?,
                        attempt: row.try_get("attempt")?,
                        at: row.try_get("at")?,
                        status: row.try_get("status")?,
                        latency_ms: row.try_get("latency_ms")?,
                        error: row.try_get("error")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(Into::into)
        })
    }

    pub async fn claim_callbacks(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
        now: i64,
    ) -> Result<Vec<CallbackRow>, DbError> {
        on_writer!(self, |pool, pg| {
            macro_rules! claim {
                ($lock:literal) => {
                    concat!(
                        "UPDATE callbacks SET lease_owner = $1, lease_until = $2 \
                         WHERE id IN (SELECT id FROM callbacks \
                             WHERE state = 'pending' AND next_attempt_at <= $3 \
                               AND (lease_until IS NULL OR lease_until < $3) \
                             ORDER BY next_attempt_at LIMIT $4",
                        $lock,
                        ") RETURNING id, task_id, url, body, attempts, created_at"
                    )
                };
            }
            let rows = sqlx::query(if pg {
                claim!(" FOR UPDATE SKIP LOCKED")
            } else {
                claim!("")
            })
            .bind(owner)
            .bind(now + lease.as_millis() as i64)
            .bind(now)
            .bind(limit as i64)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(CallbackRow {
                        id: row.try_get("id")?,
                        task_id: row.try_get("task_id")?,
                        url: row.try_get("url")?,
                        body: row.try_get("body")?,
                        attempts: row.try_get("attempts")?,
                        created_at: row.try_get("created_at")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(Into::into)
        })
    }

    /// Records one delivery attempt and the callback's next state: delivered, retried at
    /// `next_attempt_at`, or given up (`failed`).
    pub async fn record_callback_attempt(
        &self,
        attempt: &CallbackAttempt<'_>,
        outcome: CallbackOutcome,
    ) -> Result<(), DbError> {
        on_writer!(self, |pool, pg| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO callback_attempts (callback_id, attempt, at, status, latency_ms, error) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(attempt.callback_id)
            .bind(attempt.attempt)
            .bind(attempt.at)
            .bind(attempt.status.map(i64::from))
            .bind(attempt.latency_ms)
            .bind(attempt.error)
            .execute(&mut *tx)
            .await?;
            let (state, next, delivered_at) = match outcome {
                CallbackOutcome::Delivered => ("delivered", attempt.at, Some(attempt.at)),
                CallbackOutcome::RetryAt(at) => ("pending", at, None),
                CallbackOutcome::GaveUp => ("failed", attempt.at, None),
            };
            sqlx::query(
                "UPDATE callbacks SET state = $2, attempts = $3, next_attempt_at = $4, \
                     delivered_at = $5, last_error = $6, lease_owner = NULL, lease_until = NULL \
                 WHERE id = $1",
            )
            .bind(attempt.callback_id)
            .bind(state)
            .bind(attempt.attempt)
            .bind(next)
            .bind(delivered_at)
            .bind(attempt.error)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// `(attempts, state)` of a task's callback, for tests and operators.
    pub async fn callback_status(&self, task_id: &str) -> Result<Option<(i64, String)>, DbError> {
        on_pool!(self, |pool, pg| {
            let row = sqlx::query("SELECT attempts, state FROM callbacks WHERE task_id = $1")
                .bind(task_id)
                .fetch_optional(pool)
                .await?;
            row.map(|r| Ok((r.try_get("attempts")?, r.try_get("state")?)))
                .transpose()
        })
    }
}
