//! Retention: finished task records whose time is up. A sweeper claims a batch (the lease
//! columns of a finished task are free, so they carry the claim: other nodes skip the rows until
//! it runs out), deletes the images the records name, then each record — fenced on the claim,
//! so two nodes sweeping together delete each thing once. A task that is still running, or
//! whose callback is still owed, is never claimed.

use sqlx::Row;

use super::{Db, DbError, Pool};

/// A finished task whose retention has passed, claimed for deletion by one sweeper.
#[derive(Debug, Clone)]
pub struct ExpiredTask {
    pub id: String,
    /// The stored answer, which names the task's images.
    pub response: Option<String>,
    /// The stored request, which names its input images.
    pub request: Option<String>,
}

/// Whose tasks a claim looks at: retention is the server's `--retention` unless an application
/// has its own (`applications.retention_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiring<'a> {
    /// The tasks of every application without a retention of its own.
    ByDefault,
    /// The tasks of this application, which has its own.
    Application(&'a str),
}

impl Db {
    /// The applications with a retention of their own: id and seconds (0: forever).
    pub async fn retention_overrides(&self) -> Result<Vec<(String, i64)>, DbError> {
        on_pool!(self, |pool, pg| {
            let rows = sqlx::query(
                "SELECT id, retention_seconds FROM applications \
                 WHERE retention_seconds IS NOT NULL ORDER BY id",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| Ok((row.try_get("id")?, row.try_get("retention_seconds")?)))
                .collect()
        })
    }

    /// Claims up to `limit` of `whose` tasks that finished before `cutoff` (Unix ms) and owe no
    /// callback, for `owner` until `claim_until`; oldest first. Rows another sweeper holds (its
    /// claim not yet run out at `now`) are skipped.
    pub async fn claim_expired_tasks(
        &self,
        owner: &str,
        whose: Expiring<'_>,
        cutoff: i64,
        now: i64,
        claim_until: i64,
        limit: usize,
    ) -> Result<Vec<ExpiredTask>, DbError> {
        // One application's tasks are found through its (application_id, created_at) index: a
        // task finished before the cutoff was created before it too.
        let (scope, application) = match whose {
            Expiring::ByDefault => (
                "AND application_id NOT IN \
                     (SELECT id FROM applications WHERE retention_seconds IS NOT NULL)",
                None,
            ),
            Expiring::Application(id) => ("AND application_id = $6 AND created_at < $3", Some(id)),
        };
        on_writer!(self, |pool, pg| {
            let sql = format!(
                "UPDATE tasks SET lease_owner = $1, lease_until = $2 \
                 WHERE id IN (SELECT id FROM tasks \
                     WHERE state IN ('succeeded', 'failed') AND finished_at < $3 {scope} \
                       AND (lease_until IS NULL OR lease_until < $4) \
                       AND NOT EXISTS (SELECT 1 FROM callbacks c \
                           WHERE c.task_id = tasks.id AND c.state = 'pending') \
                     ORDER BY finished_at LIMIT $5{lock}) \
                 RETURNING id, response, \
                     (SELECT request FROM task_requests WHERE task_id = tasks.id) AS request",
                lock = if pg { " FOR UPDATE SKIP LOCKED" } else { "" },
            );
            // Only the literals above go into the statement; the values are bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(owner)
                .bind(claim_until)
                .bind(cutoff)
                .bind(now)
                .bind(limit as i64);
            if let Some(id) = application {
                query = query.bind(id);
            }
            let rows = query.fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    Ok(ExpiredTask {
                        id: row.try_get("id")?,
                        response: row.try_get("response")?,
                        request: row.try_get("request")?,
                    })
                })
                .collect()
        })
    }
}
