//! Applications, their tokens and credits: creating and listing them, the first start's
//! bootstrap application, the token lookup behind every authenticated request, top-ups (each
//! recorded in the ledger in the same transaction), and the usage report.
//!
//! It does not own what a task does to a balance: the reservation at admission and the refund
//! at completion are written with the task, in `tasks.rs` (both use the shared `ledger!` macro of
//! `mod.rs`). Nor does it hash or cache tokens: `src/http/auth.rs` does.

use sqlx::Row;

use super::{BeginWrite, Db, DbError, Pool};

/// The aggregate columns of the usage report, shared by both dialects (PostgreSQL's SUM of a
/// BIGINT is NUMERIC, hence the casts).
macro_rules! usage_sums {
    () => {
        "COUNT(*) AS tasks, CAST(SUM(images) AS BIGINT) AS images, \
         CAST(SUM(COALESCE(charged, 0)) AS BIGINT) AS credits, \
         CAST(SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS failed_tasks, \
         CAST(SUM(failed_images) AS BIGINT) AS failed_images \
         FROM tasks GROUP BY application_id, model, day ORDER BY day, application_id, model"
    };
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub token_id: String,
    pub application_id: String,
    pub user_id: String,
    pub application_disabled: bool,
    pub apis: String,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub rate_per_minute: Option<i64>,
    pub burst: Option<i64>,
}

impl Db {
    pub async fn count_tokens(&self) -> Result<i64, DbError> {
        on_pool!(self, |pool, pg| {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM tokens")
                .fetch_one(pool)
                .await?;
            Ok(row.try_get("n")?)
        })
    }

    pub async fn create_application(
        &self,
        id: &str,
        name: &str,
        user_id: &str,
        credits: i64,
        now: i64,
    ) -> Result<(), DbError> {
        on_writer!(self, |pool, pg| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO applications (id, name, user_id, credits, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(name)
            .bind(user_id)
            .bind(credits)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if credits != 0 {
                ledger!(tx, id, None::<&str>, credits, "initial credit", now)?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Creates the first application and its token, unless the database has a token already
    /// (`false`). Atomic, so nodes starting together on one empty database make one.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_first_application(
        &self,
        application_id: &str,
        user_id: &str,
        credits: i64,
        token_id: &str,
        hash: &str,
        prefix: &str,
        now: i64,
    ) -> Result<bool, DbError> {
        on_writer!(self, |pool, pg| {
            let mut tx = pool.begin_write().await?;
            if pg {
                // Any fixed key: serializes the bootstrap of concurrent first starts.
                sqlx::query("SELECT pg_advisory_xact_lock(7243000001)")
                    .execute(&mut *tx)
                    .await?;
            }
            let tokens: i64 = sqlx::query("SELECT COUNT(*) AS n FROM tokens")
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
            if tokens > 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO applications (id, name, user_id, credits, created_at) \
                 VALUES ($1, 'default', $2, $3, $4)",
            )
            .bind(application_id)
            .bind(user_id)
            .bind(credits)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if credits != 0 {
                ledger!(
                    tx,
                    application_id,
                    None::<&str>,
                    credits,
                    "initial credit",
                    now
                )?;
            }
            sqlx::query(
                "INSERT INTO tokens (id, application_id, hash, prefix, name, created_at) \
                 VALUES ($1, $2, $3, $4, 'bootstrap', $5)",
            )
            .bind(token_id)
            .bind(application_id)
            .bind(hash)
            .bind(prefix)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn create_token(
        &self,
        id: &str,
        application_id: &str,
        hash: &str,
        prefix: &str,
        name: &str,
        now: i64,
    ) -> Result<(), DbError> {
        on_writer!(self, |pool, pg| {
            sqlx::query(
                "INSERT INTO tokens (id, application_id, hash, prefix, name, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(application_id)
            .bind(hash)
            .bind(prefix)
            .bind(name)
            .bind(now)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    pub async fn find_token(&self, hash: &str) -> Result<Option<TokenRow>, DbError> {
        on_pool!(self, |pool, pg| {
            let row = sqlx::query(
                "SELECT t.id, t.application_id, a.user_id, a.disabled, t.apis, t.expires_at, t.revoked, \
                     a.rate_per_minute, a.burst \
                 FROM tokens t JOIN applications a ON a.id = t.application_id WHERE t.hash = $1",
            )
            .bind(hash)
            .fetch_optional(pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            Ok(Some(TokenRow {
                token_id: row.try_get("id")?,
                application_id: row.try_get("application_id")?,
                user_id: row.try_get("user_id")?,
                application_disabled: row.try_get::<i64, _>("disabled")? != 0,
                apis: row.try_get("apis")?,
                expires_at: row.try_get("expires_at")?,
                revoked: row.try_get::<i64, _>("revoked")? != 0,
                rate_per_minute: row.try_get("rate_per_minute")?,
                burst: row.try_get("burst")?,
            }))
        })
    }

    pub async fn get_application(&self, id: &str) -> Result<Option<ApplicationRow>, DbError> {
        on_pool!(self, |pool, pg| {
            let row = sqlx::query(
                "SELECT a.id, a.name, a.user_id, a.credits, a.disabled, a.rate_per_minute, a.burst, \
                     a.max_concurrent, a.retention_seconds, a.created_at, \
                     (SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger l WHERE l.application_id = a.id) AS ledger_sum \
                 FROM applications a WHERE a.id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?;
            row.as_ref()
                .map(application_row)
                .transpose()
                .map_err(Into::into)
        })
    }

    pub async fn list_applications(&self) -> Result<Vec<ApplicationRow>, DbError> {
        on_pool!(self, |pool, pg| {
            let rows = sqlx::query(
                "SELECT a.id, a.name, a.user_id, a.credits, a.disabled, a.rate_per_minute, a.burst, \
                     a.max_concurrent, a.retention_seconds, a.created_at, \
                     (SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger l WHERE l.application_id = a.id) AS ledger_sum \
                 FROM applications a ORDER BY a.created_at, a.id",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(application_row)
                .collect::<Result<_, _>>()
                .map_err(Into::into)
        })
    }

    /// Adds credits (a top-up, positive and at most `max_balance`) and records it in the ledger,
    /// keeping the balance at most `max_balance`. `false`: no such application, or the balance
    /// would pass that.
    pub async fn add_credits(
        &self,
        id: &str,
        credits: i64,
        max_balance: i64,
        reason: &str,
        now: i64,
    ) -> Result<bool, DbError> {
        on_writer!(self, |pool, pg| {
            let mut tx = pool.begin_write().await?;
            // The cap is checked without computing a sum that could overflow.
            let done = sqlx::query(
                "UPDATE applications SET credits = credits + $2 WHERE id = $1 AND credits <= $3 - $2",
            )
            .bind(id)
            .bind(credits)
            .bind(max_balance)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            ledger!(tx, id, None::<&str>, credits, reason, now)?;
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn set_application_disabled(
        &self,
        id: &str,
        disabled: bool,
    ) -> Result<bool, DbError> {
        on_writer!(self, |pool, pg| {
            let done = sqlx::query("UPDATE applications SET disabled = $2 WHERE id = $1")
                .bind(id)
                .bind(i64::from(disabled))
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Sets the limits: `None` means unlimited, and for retention the server's default.
    pub async fn set_application_limits(&self, id: &str, limits: Limits) -> Result<bool, DbError> {
        on_writer!(self, |pool, pg| {
            let done = sqlx::query(
                "UPDATE applications SET rate_per_minute = $2, burst = $3, max_concurrent = $4, \
                     retention_seconds = $5 WHERE id = $1",
            )
            .bind(id)
            .bind(limits.rate_per_minute)
            .bind(limits.burst)
            .bind(limits.max_concurrent)
            .bind(limits.retention_seconds)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    pub async fn set_token_details(
        &self,
        id: &str,
        expires_at: Option<i64>,
        apis: &str,
    ) -> Result<bool, DbError> {
        on_writer!(self, |pool, pg| {
            let done = sqlx::query("UPDATE tokens SET expires_at = $2, apis = $3 WHERE id = $1")
                .bind(id)
                .bind(expires_at)
                .bind(apis)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    pub async fn list_tokens(
        &self,
        application_id: Option<&str>,
    ) -> Result<Vec<TokenInfo>, DbError> {
        on_pool!(self, |pool, pg| {
            let rows = sqlx::query(
                "SELECT id, application_id, prefix, name, apis, expires_at, revoked, created_at \
                 FROM tokens WHERE ($1 IS NULL OR application_id = $1) ORDER BY created_at, id",
            )
            .bind(application_id)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(TokenInfo {
                        id: row.try_get("id")?,
                        application_id: row.try_get("application_id")?,
                        prefix: row.try_get("prefix")?,
                        name: row.try_get("name")?,
                        apis: row.try_get("apis")?,
                        expires_at: row.try_get("expires_at")?,
                        revoked: row.try_get::<i64, _>("revoked")? != 0,
                        created_at: row.try_get("created_at")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(Into::into)
        })
    }

    pub async fn revoke_token(&self, id: &str) -> Result<bool, DbError> {
        on_writer!(self, |pool, pg| {
            let done = sqlx::query("UPDATE tokens SET revoked = 1 WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Images, credits and failures per application, model and UTC day.
    pub async fn usage(&self) -> Result<Vec<UsageRow>, DbError> {
        on_pool!(self, |pool, pg| {
            let rows = sqlx::query(
                if pg {
                    concat!(
                        "SELECT application_id, model, ",
                        "to_char(to_timestamp(created_at / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, ",
                        usage_sums!()
                    )
                } else {
                    concat!(
                        "SELECT application_id, model, date(created_at / 1000, 'unixepoch') AS day, ",
                        usage_sums!()
                    )
                },
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(UsageRow {
                        application_id: row.try_get("application_id")?,
                        model: row.try_get("model")?,
                        day: row.try_get("day")?,
                        tasks: row.try_get("tasks")?,
                        images: row.try_get("images")?,
                        credits: row.try_get("credits")?,
                        failed_tasks: row.try_get("failed_tasks")?,
                        failed_images: row.try_get("failed_images")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(Into::into)
        })
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ApplicationRow {
    pub id: String,
    pub name: String,
    pub user_id: String,
    pub credits: i64,
    pub disabled: bool,
    pub rate_per_minute: Option<i64>,
    pub burst: Option<i64>,
    pub max_concurrent: Option<i64>,
    /// How long its finished tasks are kept, in seconds: `None` the server's `--retention`,
    /// 0 forever.
    pub retention_seconds: Option<i64>,
    pub created_at: i64,
    /// The sum of the application's ledger; always equal to `credits`.
    pub ledger_sum: i64,
}

/// An application's limits, as stored; `None` is unlimited (for retention: the server's
/// `--retention`). The admin API's `limits` object and `nano-banana admin limits` set them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Requests per minute (GCRA).
    pub rate_per_minute: Option<i64>,
    /// Requests allowed at once above the steady rate (1 when omitted).
    pub burst: Option<i64>,
    /// Unfinished tasks allowed at once.
    pub max_concurrent: Option<i64>,
    /// How long the application's finished tasks and their images are kept, in seconds; 0
    /// keeps them forever (`tasks::retention`).
    pub retention_seconds: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub application_id: String,
    pub prefix: String,
    pub name: String,
    pub apis: String,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct UsageRow {
    pub application_id: String,
    pub model: String,
    pub day: String,
    pub tasks: i64,
    pub images: i64,
    pub credits: i64,
    pub failed_tasks: i64,
    pub failed_images: i64,
}

fn application_row<R>(row: &R) -> Result<ApplicationRow, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ApplicationRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        user_id: row.try_get("user_id")?,
        credits: row.try_get("credits")?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        rate_per_minute: row.try_get("rate_per_minute")?,
        burst: row.try_get("burst")?,
        max_concurrent: row.try_get("max_concurrent")?,
        retention_seconds: row.try_get("retention_seconds")?,
        created_at: row.try_get("created_at")?,
        ledger_sum: row.try_get("ledger_sum")?,
    })
}
