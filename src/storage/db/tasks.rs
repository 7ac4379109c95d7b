//! Tasks, which are also the queue: admission (the concurrency limit, the credit reservation,
//! idempotency keys, and a claim at once when this process has a free worker), the lease queue
//! (claim, renew, release, complete, fenced on `lease_owner`: see the module documentation in
//! `mod.rs`), reading tasks and results back, `pace` for the concurrency limit's `Retry-After`,
//! and the queue's counts for `/metrics`.
//!
//! It does not own the notifications between nodes (`Listener`, `Event` and their channels stay
//! with `Db::listen` in `mod.rs`; this file only sends them), nor the delivery of a finished
//! task's callback (`callbacks.rs`), nor when to claim or retry (`src/tasks/`).

use std::time::Duration;

use sqlx::{Row, sqlite::SqlitePool};

use super::{BeginWrite, DONE_CHANNEL, Db, DbError, Pool, QUEUED_CHANNEL};

/// Binds a `NewTask` as `$1`…`$14` of a task insert (id, trace_id, application_id, user_id,
/// api_id, credential_id, request, callback_url, now, model, reserved, lease owner, lease end,
/// the input digests as a JSON array).
macro_rules! bind_new_task {
    ($query:expr, $task:expr) => {
        $query
            .bind($task.id)
            .bind($task.trace_id)
            .bind($task.application_id)
            .bind($task.user_id)
            .bind($task.api_id)
            .bind($task.credential_id)
            .bind($task.request)
            .bind($task.callback_url)
            .bind($task.now)
            .bind($task.model)
            .bind($task.reserved)
            .bind($task.claim.map(|c| c.owner))
            .bind($task.claim.map(|c| c.until))
            .bind($task.inputs)
    };
}

/// The columns of a task row written at admission, and (`new_task_values!`) their values from
/// `bind_new_task!`'s parameters: queued (`pending`), or already claimed by `$12` until `$13`
/// when the admitting process runs it at once.
macro_rules! new_task_columns {
    () => {
        "(id, trace_id, application_id, user_id, api_id, credential_id, state, callback_url, \
          created_at, run_at, model, reserved, attempts, started_at, lease_owner, lease_until)"
    };
}

macro_rules! new_task_values {
    () => {
        "$1, $2, $3, $4, $5, $6, CASE WHEN $12 IS NULL THEN 'pending' ELSE 'processing' END, \
         $8, $9, $9, $10, $11, CASE WHEN $12 IS NULL THEN 0 ELSE 1 END, \
         CASE WHEN $12 IS NULL THEN NULL ELSE $9 END, $12, $13"
    };
}

#[derive(Debug, Clone)]
pub struct NewTask<'a> {
    pub id: &'a str,
    pub trace_id: &'a str,
    pub application_id: &'a str,
    pub user_id: &'a str,
    pub api_id: &'a str,
    pub credential_id: &'a str,
    pub request: &'a str,
    /// The SHA-256 digests of the input images the request names (stored in the image store
    /// already), as a JSON array of strings without repeats: `[]` for none.
    pub inputs: &'a str,
    pub callback_url: Option<&'a str>,
    pub model: &'a str,
    /// Credits reserved for the worst case (every image succeeds).
    pub reserved: i64,
    pub now: i64,
    /// Written already claimed (`processing`, leased, first attempt): the admitting process has
    /// a free worker and runs the task at once, without a trip through the queue.
    pub claim: Option<Claim<'a>>,
}

/// The lease of a task claimed at admission.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub owner: &'a str,
    pub until: i64,
}

/// What happened to a task offered to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Inserted,
    /// The balance cannot cover the reservation; nothing was written.
    UsedUp,
    /// The application already has this many unfinished tasks; nothing was written.
    TooManyConcurrent {
        limit: i64,
    },
    /// The idempotency key was used before: nothing was written.
    Existing {
        task_id: String,
        request_hash: String,
    },
}

/// When an application's longest-running task started, and its recent task durations
/// (milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pace {
    /// When the longest-running `processing` task started; `None` when none is running.
    pub oldest_started: Option<i64>,
    /// How long recently finished tasks took, newest first.
    pub durations: Vec<i64>,
}

#[derive(Debug, Clone)]
pub struct TaskRow {
    pub id: String,
    pub trace_id: String,
    pub application_id: String,
    pub user_id: String,
    pub api_id: String,
    pub credential_id: String,
    pub request: String,
    pub state: String,
    pub http_status: Option<i64>,
    pub response: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A task this process now holds the lease of.
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    pub id: String,
    pub trace_id: String,
    pub request: String,
    pub callback_url: Option<String>,
    pub attempts: i64,
    pub created_at: i64,
}

/// The final result of a task, written together with its callback (if any) in one transaction.
#[derive(Debug, Clone)]
pub struct Completion<'a> {
    pub succeeded: bool,
    /// Images made and images that failed; only the made ones are charged.
    pub images: i64,
    pub failed_images: i64,
    pub http_status: u16,
    pub response: &'a str,
    pub callback_url: Option<&'a str>,
    pub callback_id: &'a str,
    pub now: i64,
}

/// SQLite's usual admission (no idempotency key) as one batch of statements, transaction
/// included: reserve the credits if the balance and the concurrency limit allow, then write the
/// task and the ledger entry only if that reservation happened (`changes()`). One trip to the
/// connection's thread instead of six (BENCHMARKS.md, S1 and S4). `false`: refused, nothing
/// written; `admit_task`'s step-by-step path then finds out why.
async fn admit_at_once(writer: &SqlitePool, task: &NewTask<'_>) -> Result<bool, DbError> {
    let mut connection = writer.acquire().await?;
    let batch = sqlx::query(concat!(
        "BEGIN IMMEDIATE; \
         UPDATE applications SET credits = credits - $11 \
         WHERE id = $3 AND credits >= $11 AND (max_concurrent IS NULL OR max_concurrent > \
             (SELECT COUNT(*) FROM tasks \
              WHERE application_id = $3 AND state IN ('pending', 'processing'))); \
         INSERT INTO tasks ",
        new_task_columns!(),
        " SELECT ",
        new_task_values!(),
        " WHERE changes() = 1 RETURNING id; \
         INSERT INTO task_requests (task_id, request) SELECT $1, $7 WHERE changes() = 1; \
         INSERT INTO ledger (application_id, task_id, amount, reason, created_at) \
         SELECT $3, $1, -$11, 'reserve', $9 WHERE changes() = 1 AND $11 > 0; \
         INSERT INTO input_objects (digest, tasks) SELECT value, 1 FROM json_each($14) \
         WHERE EXISTS (SELECT 1 FROM tasks WHERE id = $1) \
         ON CONFLICT (digest) DO UPDATE SET tasks = tasks + 1; \
         COMMIT;",
    ));
    match bind_new_task!(batch, task)
        .fetch_all(&mut *connection)
        .await
    {
        Ok(inserted) => Ok(!inserted.is_empty()),
        Err(e) => {
            // The batch stopped inside its transaction: end it before the connection is used
            // again, or close the connection if even that fails.
            if let Err(rollback) = sqlx::query("ROLLBACK").execute(&mut *connection).await {
                tracing::warn!(error = %rollback, "closing a connection after a failed admission");
                drop(connection.detach());
            }
            Err(e.into())
        }
    }
}

impl Db {
    /// Admits a task: checks the application's concurrency limit, reserves its credits and
    /// writes it, all in one write transaction (so concurrent requests cannot both take the last
    /// credit or the last slot). With an idempotency key used by the same application since
    /// `not_before`, nothing is written and the earlier task is named instead.
    pub async fn admit_task(
        &self,
        task: &NewTask<'_>,
        idempotency: Option<(&str, &str, i64)>,
    ) -> Result<Admission, DbError> {
        if let (None, Pool::Sqlite { writer, .. }) = (idempotency, &self.pool)
            && admit_at_once(writer, task).await?
        {
            return Ok(Admission::Inserted);
        }
        // Refused by the short path (or not taken): the checks one by one, which also say why.
        on_writer!(self, |pool, pg| {
            let mut tx = pool.begin_write().await?;
            // On PostgreSQL, locking the application's row serializes its admissions across
            // nodes, so the checks below hold until commit (SQLite's write lock already does).
            let limit: Option<i64> = sqlx::query(if pg {
                "SELECT max_concurrent FROM applications WHERE id = $1 FOR UPDATE"
            } else {
                "SELECT max_concurrent FROM applications WHERE id = $1"
            })
            .bind(task.application_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("max_concurrent")?;
            if let Some((key, request_hash, not_before)) = idempotency {
                // An expired key is forgotten, so it can be used again.
                sqlx::query(
                    "DELETE FROM idempotency_keys \
                     WHERE application_id = $1 AND key = $2 AND created_at < $3",
                )
                .bind(task.application_id)
                .bind(key)
                .bind(not_before)
                .execute(&mut *tx)
                .await?;
                let earlier = sqlx::query(
                    "SELECT task_id, request_hash FROM idempotency_keys \
                     WHERE application_id = $1 AND key = $2",
                )
                .bind(task.application_id)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(row) = earlier {
                    tx.rollback().await?;
                    return Ok(Admission::Existing {
                        task_id: row.try_get("task_id")?,
                        request_hash: row.try_get("request_hash")?,
                    });
                }
                sqlx::query(
                    "INSERT INTO idempotency_keys (application_id, key, task_id, request_hash, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(task.application_id)
                .bind(key)
                .bind(task.id)
                .bind(request_hash)
                .bind(task.now)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(limit) = limit {
                let running: i64 = sqlx::query(
                    "SELECT COUNT(*) AS n FROM tasks \
                     WHERE application_id = $1 AND state IN ('pending', 'processing')",
                )
                .bind(task.application_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
                if running >= limit {
                    tx.rollback().await?;
                    return Ok(Admission::TooManyConcurrent { limit });
                }
            }
            if task.reserved > 0 {
                let reserved = sqlx::query(
                    "UPDATE applications SET credits = credits - $2 WHERE id = $1 AND credits >= $2",
                )
                .bind(task.application_id)
                .bind(task.reserved)
                .execute(&mut *tx)
                .await?;
                if reserved.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(Admission::UsedUp);
                }
                ledger!(
                    tx,
                    task.application_id,
                    Some(task.id),
                    -task.reserved,
                    "reserve",
                    task.now,
                )?;
            }
            // The task, its request (`$7`) and its inputs' counts (`$14`) in one statement:
            // PostgreSQL wants every bound parameter used, and SQLite runs the statements in one
            // trip.
            let insert = sqlx::query(if pg {
                concat!(
                    "WITH task AS (INSERT INTO tasks ",
                    new_task_columns!(),
                    " VALUES (",
                    new_task_values!(),
                    ") RETURNING id), \
                     request AS (INSERT INTO task_requests (task_id, request) \
                         SELECT id, $7 FROM task) \
                     INSERT INTO input_objects (digest, tasks) \
                     SELECT input.digest, 1 FROM task \
                     CROSS JOIN json_array_elements_text(CAST($14 AS json)) AS input(digest) \
                     ON CONFLICT (digest) DO UPDATE SET tasks = input_objects.tasks + 1"
                )
            } else {
                concat!(
                    "INSERT INTO tasks ",
                    new_task_columns!(),
                    " VALUES (",
                    new_task_values!(),
                    "); INSERT INTO task_requests (task_id, request) VALUES ($1, $7); \
                     INSERT INTO input_objects (digest, tasks) \
                     SELECT value, 1 FROM json_each($14) WHERE true \
                     ON CONFLICT (digest) DO UPDATE SET tasks = tasks + 1"
                )
            });
            bind_new_task!(insert, task).execute(&mut *tx).await?;
            // A task claimed at admission is not for the queue.
            if pg && task.claim.is_none() {
                // Delivered at commit: idle workers on every node look for work.
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(QUEUED_CHANNEL)
                    .bind(&self.node)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(Admission::Inserted)
        })
    }

    /// The current state of a task, whoever owns it.
    pub async fn task_state(&self, id: &str) -> Result<Option<String>, DbError> {
        on_pool!(self, |pool, pg| {
            let row = sqlx::query("SELECT state FROM tasks WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
            row.map(|r| r.try_get("state"))
                .transpose()
                .map_err(Into::into)
        })
    }

    /// Claims up to `limit` runnable tasks: pending ones whose time has come, and processing ones
    /// whose lease expired (their owner died). Oldest first.
    pub async fn claim_tasks(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
        now: i64,
    ) -> Result<Vec<ClaimedTask>, DbError> {
        on_writer!(self, |pool, pg| {
            macro_rules! claim {
                ($lock:literal) => {
                    concat!(
                        "UPDATE tasks SET state = 'processing', lease_owner = $1, lease_until = $2, \
                             attempts = attempts + 1, started_at = COALESCE(started_at, $3) \
                         WHERE id IN (SELECT id FROM tasks \
                             WHERE (state = 'pending' AND run_at <= $3) \
                                OR (state = 'processing' AND lease_until < $3) \
                             ORDER BY run_at LIMIT $4",
                        $lock,
                        ") RETURNING id, trace_id, callback_url, attempts, created_at, \
                             (SELECT request FROM task_requests WHERE task_id = tasks.id) AS request"
                    )
                };
            }
            // Nodes claiming at once skip each other's rows instead of waiting for them.
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
            let mut claimed = rows
                .iter()
                .map(|row| {
                    Ok(ClaimedTask {
                        id: row.try_get("id")?,
                        trace_id: row.try_get("trace_id")?,
                        request: row.try_get("request")?,
                        callback_url: row.try_get("callback_url")?,
                        attempts: row.try_get("attempts")?,
                        created_at: row.try_get("created_at")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            // RETURNING gives no order guarantee; run the oldest first.
            claimed.sort_by_key(|t| t.created_at);
            Ok(claimed)
        })
    }

    /// Extends a lease this process holds. `false`: the lease was lost (expired and taken over).
    pub async fn renew_task_lease(
        &self,
        id: &str,
        owner: &str,
        until: i64,
    ) -> Result<bool, DbError> {
        on_writer!(self, |pool, pg| {
            let done = sqlx::query(
                "UPDATE tasks SET lease_until = $3 \
                 WHERE id = $1 AND lease_owner = $2 AND state = 'processing'",
            )
            .bind(id)
            .bind(owner)
            .bind(until)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Puts every task this process holds back in the queue (shutdown after the grace period).
    pub async fn release_tasks_of(&self, owner: &str, now: i64) -> Result<(), DbError> {
        on_writer!(self, |pool, pg| {
            sqlx::query(
                "UPDATE tasks SET state = 'pending', lease_owner = NULL, lease_until = NULL, run_at = $2 \
                 WHERE lease_owner = $1 AND state = 'processing'",
            )
            .bind(owner)
            .bind(now)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Records a task's result and queues its callback, atomically and fenced on the lease.
    /// `false`: this process no longer holds the task, and nothing was written.
    pub async fn complete_task(
        &self,
        id: &str,
        owner: &str,
        done: &Completion<'_>,
    ) -> Result<bool, DbError> {
        let state = if done.succeeded {
            "succeeded"
        } else {
            "failed"
        };
        // Charge only the images made: each cost reserved / requested images.
        macro_rules! settle {
            () => {
                sqlx::query(
                    "UPDATE tasks SET state = $3, http_status = $4, response = $5, \
                         finished_at = $6, lease_owner = NULL, lease_until = NULL, images = $7, \
                         failed_images = $8, \
                         charged = CASE WHEN $7 + $8 > 0 THEN reserved * $7 / ($7 + $8) ELSE 0 END \
                     WHERE id = $1 AND lease_owner = $2 AND state = 'processing' \
                     RETURNING application_id, reserved, charged",
                )
                .bind(id)
                .bind(owner)
                .bind(state)
                .bind(i64::from(done.http_status))
                .bind(done.response)
                .bind(done.now)
                .bind(done.images)
                .bind(done.failed_images)
            };
        }
        // Every image made (nothing to refund) and no callback to queue: on SQLite the fenced
        // UPDATE is the whole write, one trip instead of three.
        if let Pool::Sqlite { writer, .. } = &self.pool
            && done.callback_url.is_none()
            && done.images > 0
            && done.failed_images == 0
        {
            return Ok(settle!().fetch_optional(writer).await?.is_some());
        }
        on_writer!(self, |pool, pg| {
            let mut tx = pool.begin_write().await?;
            let updated = settle!().fetch_optional(&mut *tx).await?;
            let Some(settled) = updated else {
                tx.rollback().await?;
                return Ok(false);
            };
            let application_id: String = settled.try_get("application_id")?;
            let refund =
                settled.try_get::<i64, _>("reserved")? - settled.try_get::<i64, _>("charged")?;
            if refund > 0 {
                sqlx::query("UPDATE applications SET credits = credits + $2 WHERE id = $1")
                    .bind(&application_id)
                    .bind(refund)
                    .execute(&mut *tx)
                    .await?;
                ledger!(tx, &application_id, Some(id), refund, "refund", done.now,)?;
            }
            if let Some(url) = done.callback_url {
                sqlx::query(
                    "INSERT INTO callbacks (id, task_id, url, body, state, next_attempt_at, created_at) \
                     VALUES ($1, $2, $3, $4, 'pending', $5, $5)",
                )
                .bind(done.callback_id)
                .bind(id)
                .bind(url)
                .bind(done.response)
                .bind(done.now)
                .execute(&mut *tx)
                .await?;
            }
            if pg {
                // Delivered at commit: a sync request waiting on another node answers now.
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(DONE_CHANNEL)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn get_task(
        &self,
        id: &str,
        application_id: &str,
    ) -> Result<Option<TaskRow>, DbError> {
        on_pool!(self, |pool, pg| {
            let row = sqlx::query(
                "SELECT t.id, t.trace_id, t.application_id, t.user_id, t.api_id, t.credential_id, \
                     r.request, t.state, t.http_status, t.response, t.created_at, t.started_at, \
                     t.finished_at \
                 FROM tasks t JOIN task_requests r ON r.task_id = t.id \
                 WHERE t.id = $1 AND t.application_id = $2",
            )
            .bind(id)
            .bind(application_id)
            .fetch_optional(pool)
            .await?;
            row.as_ref().map(task_row).transpose().map_err(Into::into)
        })
    }

    /// The tasks among `ids` that belong to `application_id`, in the order of `ids`.
    pub async fn get_tasks(
        &self,
        ids: &[String],
        application_id: &str,
    ) -> Result<Vec<TaskRow>, DbError> {
        let mut found = Vec::with_capacity(ids.len());
        // At most 50 ids (the contract's cap): one indexed lookup each is simpler than building
        // an IN list, and costs microseconds on SQLite.
        for id in ids {
            if let Some(row) = self.get_task(id, application_id).await? {
                found.push(row);
            }
        }
        Ok(found)
    }

    /// A task's final response, whoever finished it (for a sync request whose task another
    /// worker or process completed). `None` while it is not finished.
    pub async fn task_result(&self, id: &str) -> Result<Option<(u16, String)>, DbError> {
        on_pool!(self, |pool, pg| {
            let row = sqlx::query(
                "SELECT http_status, response FROM tasks \
                 WHERE id = $1 AND state IN ('succeeded', 'failed')",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let status: Option<i64> = row.try_get("http_status")?;
            let response: Option<String> = row.try_get("response")?;
            Ok(response.map(|r| (status.unwrap_or(200) as u16, r)))
        })
    }

    /// What the concurrency limit's `Retry-After` is estimated from: when the application's
    /// longest-running task started, and how long its most
    /// recently created finished tasks took (the newest first, at most `recent`).
    pub async fn pace(&self, application_id: &str, recent: i64) -> Result<Pace, DbError> {
        on_pool!(self, |pool, pg| {
            let row = sqlx::query(
                "SELECT MIN(started_at) AS oldest FROM tasks \
                 WHERE application_id = $1 AND state = 'processing'",
            )
            .bind(application_id)
            .fetch_one(pool)
            .await?;
            let oldest_started: Option<i64> = row.try_get("oldest")?;
            // Newest first along the (application_id, created_at) index; unfinished ones skipped.
            let durations = sqlx::query(
                "SELECT finished_at - COALESCE(started_at, created_at) AS took FROM tasks \
                 WHERE application_id = $1 AND state IN ('succeeded', 'failed') \
                     AND finished_at IS NOT NULL \
                 ORDER BY created_at DESC LIMIT $2",
            )
            .bind(application_id)
            .bind(recent)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| row.try_get::<i64, _>("took"))
            .collect::<Result<Vec<_>, _>>()?;
            Ok(Pace {
                oldest_started,
                durations,
            })
        })
    }

    /// Which of `digests` some task's record still uses (the input sweeper keeps those).
    pub async fn referenced_inputs(
        &self,
        digests: &[String],
    ) -> Result<std::collections::HashSet<String>, DbError> {
        let mut used = std::collections::HashSet::new();
        // A JSON array as one parameter: one query per batch on both databases.
        for batch in digests.chunks(500) {
            let list = serde_json::to_string(batch).unwrap_or_else(|_| "[]".to_owned());
            on_pool!(self, |pool, pg| {
                let rows = sqlx::query(if pg {
                    "SELECT digest FROM input_objects WHERE tasks > 0 \
                     AND digest IN (SELECT json_array_elements_text(CAST($1 AS json)))"
                } else {
                    "SELECT digest FROM input_objects WHERE tasks > 0 \
                     AND digest IN (SELECT value FROM json_each($1))"
                })
                .bind(&list)
                .fetch_all(pool)
                .await?;
                for row in rows {
                    used.insert(row.try_get::<String, _>("digest")?);
                }
            });
        }
        Ok(used)
    }

    /// Deletes a finished task's record: the task, its request, its callbacks and idempotency
    /// key, and its uses of input images (`inputs`: the digests its request names, as a JSON
    /// array without repeats, as `NewTask::inputs` had them): each image's count goes down by
    /// one, and an image no task uses any more loses its row, so that the input sweeper deletes
    /// the object once its grace period has passed. The ledger keeps its rows. `false`: no such
    /// finished task, or its callback is still being delivered; nothing was deleted. The
    /// retention sweeper (`tasks::retention`) deletes expired records through this.
    ///
    /// `claimed_by`: the retention sweeper's claim (`claim_expired_tasks`); the record is deleted
    /// only while that claim holds it, so that two sweepers never both delete one task.
    pub async fn delete_task_record(
        &self,
        id: &str,
        inputs: &str,
        claimed_by: Option<&str>,
    ) -> Result<bool, DbError> {
        on_writer!(self, |pool, pg| {
            let mut tx = pool.begin_write().await?;
            let deletable = sqlx::query(
                "SELECT 1 AS one FROM tasks WHERE id = $1 AND state IN ('succeeded', 'failed') \
                 AND ($2 IS NULL OR lease_owner = $2) \
                 AND NOT EXISTS (SELECT 1 FROM callbacks \
                     WHERE task_id = $1 AND state = 'pending')",
            )
            .bind(id)
            .bind(claimed_by)
            .fetch_optional(&mut *tx)
            .await?;
            if deletable.is_none() {
                tx.rollback().await?;
                return Ok(false);
            }
            // The rows that reference the task first (foreign keys), the task last.
            for statement in [
                "DELETE FROM task_requests WHERE task_id = $1",
                "DELETE FROM callback_attempts WHERE callback_id IN \
                     (SELECT id FROM callbacks WHERE task_id = $1)",
                "DELETE FROM callbacks WHERE task_id = $1",
                "DELETE FROM idempotency_keys WHERE task_id = $1",
                "DELETE FROM tasks WHERE id = $1",
            ] {
                sqlx::query(statement).bind(id).execute(&mut *tx).await?;
            }
            for statement in if pg {
                [
                    "UPDATE input_objects SET tasks = tasks - 1 \
                     WHERE digest IN (SELECT json_array_elements_text(CAST($1 AS json)))",
                    "DELETE FROM input_objects WHERE tasks <= 0 \
                     AND digest IN (SELECT json_array_elements_text(CAST($1 AS json)))",
                ]
            } else {
                [
                    "UPDATE input_objects SET tasks = tasks - 1 \
                     WHERE digest IN (SELECT value FROM json_each($1))",
                    "DELETE FROM input_objects WHERE tasks <= 0 \
                     AND digest IN (SELECT value FROM json_each($1))",
                ]
            } {
                sqlx::query(statement)
                    .bind(inputs)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// One page of an application's tasks, newest first, filtered (the console's gallery). The
    /// request bodies stay in their own table: a page never reads the input images.
    pub async fn list_tasks(
        &self,
        application_id: &str,
        filter: &TaskFilter,
    ) -> Result<Vec<TaskSummary>, DbError> {
        on_pool!(self, |pool, pg| {
            let rows = sqlx::query(
                "SELECT id, state, model, created_at, started_at, finished_at, response, reserved, \
                     charged, images \
                 FROM tasks WHERE application_id = $1 \
                     AND ($2 IS NULL OR model = $2) AND ($3 IS NULL OR state = $3) \
                     AND ($4 IS NULL OR created_at >= $4) AND ($5 IS NULL OR created_at < $5) \
                 ORDER BY created_at DESC, id DESC LIMIT $6 OFFSET $7",
            )
            .bind(application_id)
            .bind(filter.model.as_deref())
            .bind(filter.state.as_deref())
            .bind(filter.from)
            .bind(filter.until)
            .bind(filter.limit)
            .bind(filter.offset)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(task_summary)
                .collect::<Result<_, sqlx::Error>>()
                .map_err(Into::into)
        })
    }

    /// One task's summary (billing included), if it belongs to `application_id`.
    pub async fn task_summary(
        &self,
        id: &str,
        application_id: &str,
    ) -> Result<Option<TaskSummary>, DbError> {
        on_pool!(self, |pool, pg| {
            let row = sqlx::query(
                "SELECT id, state, model, created_at, started_at, finished_at, response, reserved, \
                     charged, images \
                 FROM tasks WHERE id = $1 AND application_id = $2",
            )
            .bind(id)
            .bind(application_id)
            .fetch_optional(pool)
            .await?;
            row.as_ref()
                .map(task_summary)
                .transpose()
                .map_err(Into::into)
        })
    }

    /// Tasks per state, and callbacks still waiting for delivery (for `/metrics`).
    pub async fn queue_stats(&self) -> Result<QueueStats, DbError> {
        on_pool!(self, |pool, pg| {
            let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM tasks GROUP BY state")
                .fetch_all(pool)
                .await?;
            let mut stats = QueueStats::default();
            for row in rows {
                let state: String = row.try_get("state")?;
                stats.tasks_by_state.push((state, row.try_get("n")?));
            }
            let row = sqlx::query("SELECT COUNT(*) AS n FROM callbacks WHERE state = 'pending'")
                .fetch_one(pool)
                .await?;
            stats.callback_backlog = row.try_get("n")?;
            Ok(stats)
        })
    }
}

/// Which of an application's tasks a page lists (`None`: any), and which page.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub model: Option<String>,
    pub state: Option<String>,
    /// Created at or after (Unix milliseconds).
    pub from: Option<i64>,
    /// Created before (Unix milliseconds).
    pub until: Option<i64>,
    pub limit: i64,
    pub offset: i64,
}

/// A task without its request: what a listing shows.
#[derive(Debug, Clone)]
pub struct TaskSummary {
    pub id: String,
    pub state: String,
    pub model: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub response: Option<String>,
    pub reserved: i64,
    pub charged: Option<i64>,
    pub images: i64,
}

fn task_summary<R>(row: &R) -> Result<TaskSummary, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(TaskSummary {
        id: row.try_get("id")?,
        state: row.try_get("state")?,
        model: row.try_get("model")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        response: row.try_get("response")?,
        reserved: row.try_get("reserved")?,
        charged: row.try_get("charged")?,
        images: row.try_get("images")?,
    })
}

#[derive(Debug, Clone, Default)]
pub struct QueueStats {
    pub tasks_by_state: Vec<(String, i64)>,
    pub callback_backlog: i64,
}

fn task_row<R>(row: &R) -> Result<TaskRow, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(TaskRow {
        id: row.try_get("id")?,
        trace_id: row.try_get("trace_id")?,
        application_id: row.try_get("application_id")?,
        user_id: row.try_get("user_id")?,
        api_id: row.try_get("api_id")?,
        credential_id: row.try_get("credential_id")?,
        request: row.try_get("request")?,
        state: row.try_get("state")?,
        http_status: row.try_get("http_status")?,
        response: row.try_get("response")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}
