//! SQLite group commit: the admissions and settlements that many requests queue at the same
//! time are written together, in one transaction and one trip to the writer connection's thread,
//! instead of one trip each (BENCHMARKS.md, S1).
//!
//! One task owns the queue. It takes what is waiting (at most [`MAX_BATCH`] of a kind) and
//! writes it as one batch of statements: `BEGIN IMMEDIATE`, each job's statements in the order
//! the jobs arrived, `COMMIT`. Within the transaction the jobs run one after another exactly as
//! they would alone — each admission's credit and concurrency check sees the ones before it — so
//! batching changes how many commits there are, never what is written. While a batch is being
//! written the next one gathers; a lone request makes a batch of one, with one trip as before.
//!
//! Parameters are positional (`?`): with numbered ones (`$14`), SQLite gives each statement as
//! many slots as the highest number, and sqlx binds every one of them.
//!
//! If a batch fails, nothing of it was written; each job is then written alone, so one job's
//! error is its own.

use sqlx::{Row, Sqlite, SqlitePool, pool::PoolConnection, sqlite::SqliteArguments};
use tokio::sync::{mpsc, oneshot};

use super::db::{DbError, NewTask};

/// The most jobs of one kind in one batch. Each batch size is its own SQL text, prepared once
/// and cached by the connection: this bounds that cache (8 admission texts, 8 settlement texts).
const MAX_BATCH: usize = 8;

/// The most jobs written in one turn at the writer connection, in batches of [`MAX_BATCH`].
const ROUND: usize = 64;

/// Jobs waiting for the writer; senders wait when it is full.
const QUEUE: usize = 1024;

/// One admission's statements. Reserve the credits if the balance and the concurrency limit
/// allow; then write the task, its request and the ledger entry only if that happened
/// (`changes()`). Admitted tasks come back as `admitted` rows. Binds: [`bind_admission`].
const ADMISSION: &str = "UPDATE applications SET credits = credits - ? \
     WHERE id = ? AND credits >= ? AND (max_concurrent IS NULL OR max_concurrent > \
         (SELECT COUNT(*) FROM tasks \
          WHERE application_id = ? AND state IN ('pending', 'processing'))); \
     INSERT INTO tasks (id, trace_id, application_id, user_id, api_id, credential_id, state, \
         callback_url, created_at, run_at, model, reserved, attempts, started_at, lease_owner, \
         lease_until) \
     SELECT ?, ?, ?, ?, ?, ?, CASE WHEN ? IS NULL THEN 'pending' ELSE 'processing' END, \
         ?, ?, ?, ?, ?, CASE WHEN ? IS NULL THEN 0 ELSE 1 END, \
         CASE WHEN ? IS NULL THEN NULL ELSE ? END, ?, ? \
     WHERE changes() = 1 RETURNING id AS admitted; \
     INSERT INTO task_requests (task_id, request) SELECT ?, ? WHERE changes() = 1; \
     INSERT INTO ledger (application_id, task_id, amount, reason, created_at) \
     SELECT ?, ?, -?, 'reserve', ? WHERE changes() = 1 AND ? > 0; ";

/// One settlement: the result recorded, fenced on the lease, the images made charged. Settled
/// tasks come back as `settled` rows. Binds: [`bind_settlement`].
const SETTLEMENT: &str = "UPDATE tasks SET state = ?, http_status = ?, response = ?, \
         finished_at = ?, lease_owner = NULL, lease_until = NULL, images = ?, \
         failed_images = ?, \
         charged = CASE WHEN ? + ? > 0 THEN reserved * ? / (? + ?) ELSE 0 END \
     WHERE id = ? AND lease_owner = ? AND state = 'processing' RETURNING id AS settled; ";

/// A task to admit, owned: the writer's task outlives the request's borrow.
#[derive(Debug)]
pub(super) struct Admission {
    id: String,
    trace_id: String,
    application_id: String,
    user_id: String,
    api_id: String,
    credential_id: String,
    request: String,
    callback_url: Option<String>,
    model: String,
    reserved: i64,
    now: i64,
    claim_owner: Option<String>,
    claim_until: Option<i64>,
}

impl Admission {
    pub(super) fn new(task: &NewTask<'_>) -> Admission {
        Admission {
            id: task.id.to_owned(),
            trace_id: task.trace_id.to_owned(),
            application_id: task.application_id.to_owned(),
            user_id: task.user_id.to_owned(),
            api_id: task.api_id.to_owned(),
            credential_id: task.credential_id.to_owned(),
            request: task.request.to_owned(),
            callback_url: task.callback_url.map(str::to_owned),
            model: task.model.to_owned(),
            reserved: task.reserved,
            now: task.now,
            claim_owner: task.claim.map(|c| c.owner.to_owned()),
            claim_until: task.claim.map(|c| c.until),
        }
    }
}

/// A finished task's result, when there is nothing to refund and no callback to queue.
#[derive(Debug)]
pub(super) struct Settlement {
    pub id: String,
    pub owner: String,
    pub state: &'static str,
    pub http_status: i64,
    pub response: String,
    pub now: i64,
    pub images: i64,
    pub failed_images: i64,
}

type Reply = oneshot::Sender<Result<bool, DbError>>;

#[derive(Debug)]
enum Job {
    Admit(Admission, Reply),
    Settle(Settlement, Reply),
}

/// The queue in front of SQLite's writer connection. Cloning shares it.
#[derive(Debug, Clone)]
pub(super) struct GroupCommit {
    jobs: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Starts the task that writes the batches; it ends when every clone is dropped.
    pub(super) fn start(writer: SqlitePool) -> GroupCommit {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(writer, queue));
        GroupCommit { jobs }
    }

    /// Admits a task if its application's credits and concurrency limit allow. `false`:
    /// refused, nothing written.
    pub(super) async fn admit(&self, admission: Admission) -> Result<bool, DbError> {
        self.submit(|reply| Job::Admit(admission, reply)).await
    }

    /// Records a result. `false`: the lease was lost, nothing written.
    pub(super) async fn settle(&self, settlement: Settlement) -> Result<bool, DbError> {
        self.submit(|reply| Job::Settle(settlement, reply)).await
    }

    async fn submit(&self, job: impl FnOnce(Reply) -> Job) -> Result<bool, DbError> {
        let (reply, answer) = oneshot::channel();
        // Either fails only when the writer's task has ended (the runtime is shutting down).
        self.jobs
            .send(job(reply))
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

async fn run(writer: SqlitePool, mut queue: mpsc::Receiver<Job>) {
    let mut waiting = Vec::with_capacity(ROUND);
    let mut admissions = Vec::with_capacity(MAX_BATCH);
    let mut settlements = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut waiting, ROUND).await > 0 {
        // One turn at the writer connection for everything waiting: the workers' own writes
        // queue for it too, and the jobs here are many requests' worth.
        let mut connection = match writer.acquire().await {
            Ok(connection) => connection,
            Err(e) => {
                for job in waiting.drain(..) {
                    let (Job::Admit(_, reply) | Job::Settle(_, reply)) = job;
                    let _ = reply.send(Err(copy_error(&e).into()));
                }
                continue;
            }
        };
        for job in waiting.drain(..) {
            match job {
                Job::Admit(admission, reply) => admissions.push((admission, reply)),
                Job::Settle(settlement, reply) => settlements.push((settlement, reply)),
            }
            if admissions.len() == MAX_BATCH {
                write(&mut connection, &mut admissions).await;
            }
            if settlements.len() == MAX_BATCH {
                write(&mut connection, &mut settlements).await;
            }
        }
        write(&mut connection, &mut admissions).await;
        write(&mut connection, &mut settlements).await;
    }
}

/// The same failure again, for each job it failed (`sqlx::Error` is not `Clone`).
fn copy_error(e: &sqlx::Error) -> sqlx::Error {
    match e {
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

/// A kind of job that can be written in a batch.
trait Batched {
    /// Its statements, each ending in `; `.
    const STATEMENTS: &'static str;
    /// The name of the column its statements return when the job took effect.
    const RETURNED: &'static str;
    fn id(&self) -> &str;
    fn bind(&self, arguments: &mut SqliteArguments) -> Result<(), sqlx::error::BoxDynError>;
}

impl Batched for Admission {
    const STATEMENTS: &'static str = ADMISSION;
    const RETURNED: &'static str = "admitted";
    fn id(&self) -> &str {
        &self.id
    }
    fn bind(&self, arguments: &mut SqliteArguments) -> Result<(), sqlx::error::BoxDynError> {
        bind_admission(self, arguments)
    }
}

impl Batched for Settlement {
    const STATEMENTS: &'static str = SETTLEMENT;
    const RETURNED: &'static str = "settled";
    fn id(&self) -> &str {
        &self.id
    }
    fn bind(&self, arguments: &mut SqliteArguments) -> Result<(), sqlx::error::BoxDynError> {
        bind_settlement(self, arguments)
    }
}

/// The values of [`ADMISSION`]'s placeholders, in order.
fn bind_admission(
    a: &Admission,
    args: &mut SqliteArguments,
) -> Result<(), sqlx::error::BoxDynError> {
    use sqlx::Arguments;
    let owner = a.claim_owner.as_deref();
    // The reservation.
    args.add(a.reserved)?;
    args.add(a.application_id.as_str())?;
    args.add(a.reserved)?;
    args.add(a.application_id.as_str())?;
    // The task.
    args.add(a.id.as_str())?;
    args.add(a.trace_id.as_str())?;
    args.add(a.application_id.as_str())?;
    args.add(a.user_id.as_str())?;
    args.add(a.api_id.as_str())?;
    args.add(a.credential_id.as_str())?;
    args.add(owner)?;
    args.add(a.callback_url.as_deref())?;
    args.add(a.now)?;
    args.add(a.now)?;
    args.add(a.model.as_str())?;
    args.add(a.reserved)?;
    args.add(owner)?;
    args.add(owner)?;
    args.add(a.now)?;
    args.add(owner)?;
    args.add(a.claim_until)?;
    // Its request.
    args.add(a.id.as_str())?;
    args.add(a.request.as_str())?;
    // The ledger entry.
    args.add(a.application_id.as_str())?;
    args.add(a.id.as_str())?;
    args.add(a.reserved)?;
    args.add(a.now)?;
    args.add(a.reserved)?;
    Ok(())
}

/// The values of [`SETTLEMENT`]'s placeholders, in order.
fn bind_settlement(
    s: &Settlement,
    args: &mut SqliteArguments,
) -> Result<(), sqlx::error::BoxDynError> {
    use sqlx::Arguments;
    args.add(s.state)?;
    args.add(s.http_status)?;
    args.add(s.response.as_str())?;
    args.add(s.now)?;
    args.add(s.images)?;
    args.add(s.failed_images)?;
    // charged = reserved * images / (images + failed_images), 0 without either.
    args.add(s.images)?;
    args.add(s.failed_images)?;
    args.add(s.images)?;
    args.add(s.images)?;
    args.add(s.failed_images)?;
    args.add(s.id.as_str())?;
    args.add(s.owner.as_str())?;
    Ok(())
}

/// Writes `jobs` (drained) as one batch and answers each; if the batch fails, writes each alone.
async fn write<J: Batched>(connection: &mut PoolConnection<Sqlite>, jobs: &mut Vec<(J, Reply)>) {
    if jobs.is_empty() {
        return;
    }
    let batch: Vec<&J> = jobs.iter().map(|(job, _)| job).collect();
    let written = write_batch(connection, &batch).await;
    match written {
        Ok(done) => {
            for (job, reply) in jobs.drain(..) {
                let _ = reply.send(Ok(done.iter().any(|id| id == job.id())));
            }
        }
        Err(e) if jobs.len() == 1 => {
            if let Some((_, reply)) = jobs.pop() {
                let _ = reply.send(Err(e));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, jobs = jobs.len(), "a batch of writes failed; writing each alone");
            for (job, reply) in jobs.drain(..) {
                let alone = write_batch(connection, &[&job])
                    .await
                    .map(|done| done.iter().any(|id| id == job.id()));
                let _ = reply.send(alone);
            }
        }
    }
}

/// One transaction holding every job's statements; the ids of the jobs that took effect.
async fn write_batch<J: Batched>(
    connection: &mut PoolConnection<Sqlite>,
    jobs: &[&J],
) -> Result<Vec<String>, DbError> {
    let mut sql = String::with_capacity(32 + jobs.len() * J::STATEMENTS.len());
    sql.push_str("BEGIN IMMEDIATE; ");
    let mut arguments = SqliteArguments::default();
    for job in jobs {
        sql.push_str(J::STATEMENTS);
        job.bind(&mut arguments).map_err(sqlx::Error::Encode)?;
    }
    sql.push_str("COMMIT;");
    match sqlx::query_with(sqlx::AssertSqlSafe(sql), arguments)
        .fetch_all(&mut **connection)
        .await
    {
        Ok(rows) => rows
            .iter()
            .map(|row| row.try_get::<String, _>(J::RETURNED).map_err(DbError::from))
            .collect(),
        Err(e) => {
            // The batch stopped inside its transaction: end it before the connection is used
            // again, or close the connection if even that fails.
            if let Err(rollback) = sqlx::query("ROLLBACK").execute(&mut **connection).await {
                tracing::warn!(error = %rollback, "closing a connection after a failed batch");
                connection.close_on_drop();
            }
            Err(e.into())
        }
    }
}
