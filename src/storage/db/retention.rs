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

impl Db {
    /// Claims up to `limit` tasks that finished before `cutoff` (Unix ms) and owe no callback,
    /// for `owner` until `claim_until`; oldest first. Rows another sweeper holds (its claim not
    /// yet run out at `now`) are skipped.
    pub async fn claim_expired_tasks(
        &self,
        owner: &str,
        cutoff: i64,
        now: i64,
        claim_until: i64,
        limit: usize,
    ) -> Result<Vec<ExpiredTask>, DbError> {
        on_writer!(self, |pool, pg| {
            macro_rules! claim {
                ($lock:literal) => {
                    concat!(
                        "UPDATE tasks SET lease_owner = $1, lease_until = $2 \
                         WHERE id IN (SELECT id FROM tasks \
                             WHERE state IN ('succeeded', 'failed') AND finished_at < $3 \
                               AND (lease_until IS NULL OR lease_until < $4) \
                               AND NOT EXISTS (SELECT 1 FROM callbacks c \
                                   WHERE c.task_id = tasks.id AND c.state = 'pending') \
                             ORDER BY finished_at LIMIT $5",
                        $lock,
                        ") RETURNING id, response, \
                             (SELECT request FROM task_requests WHERE task_id = tasks.id) AS request"
                    )
                };
            }
            let rows = sqlx::query(if pg {
                claim!(" FOR UPDATE SKIP LOCKED")
            } else {
                claim!("")
            })
            .bind(owner)
            .bind(claim_until)
            .bind(cutoff)
            .bind(now)
            .bind(limit as i64)
            .fetch_all(pool)
            .await?;
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
