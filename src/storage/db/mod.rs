//! All SQL lives here: applications and tokens, tasks (which are also the queue), and the callback
//! outbox. Callers get plain row structs and never see a query. Times are Unix milliseconds.
//!
//! The queue is a lease: a claim sets `lease_owner`/`lease_until`; the owner renews it while it
//! works; every later write is fenced on `lease_owner`, so a worker whose lease expired and was
//! taken over cannot overwrite the new owner's result. A claim is one `UPDATE … WHERE id IN
//! (SELECT … LIMIT n) RETURNING`, which is atomic on SQLite (single writer); on PostgreSQL the
//! inner SELECT gains `FOR UPDATE SKIP LOCKED` and nothing else changes.
//!
//! Two databases, one set of queries: SQLite (the default, one machine) and PostgreSQL (several
//! nodes). The SQL is written once with `$N` placeholders, which both drivers accept, and each
//! method body is expanded for both pools by `on_pool!`; the few places where the dialects differ
//! choose between two literal statements. Each database has its own migrations folder with the
//! same tables and columns.
//!
//! Write transactions: SQLite's `BEGIN IMMEDIATE` takes the database's write lock up front;
//! PostgreSQL locks the rows a check depends on (`SELECT … FOR UPDATE` on the application), so
//! checks and writes cannot interleave with another node's either way.
//!
//! Files: this one holds `Db` and its pools (connecting, migrating, `ping`, `close`), the
//! notifications between nodes (`listen`) and the macros the others share. `accounts.rs`
//! (applications, tokens, credits, usage), `tasks.rs` (admission and the queue), `callbacks.rs`
//! (the outbox) and `copy.rs` (`admin migrate-db`) each add their own `impl Db` block. Row types
//! live beside their queries and are re-exported here, so callers name them `storage::db::…`.

use std::{str::FromStr, time::Duration};

use sqlx::{
    postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

/// Channel of `NOTIFY` when a task is queued: idle workers on every node wake up.
const QUEUED_CHANNEL: &str = "nano_banana_task_queued";
/// Channel of `NOTIFY` when a task finishes (payload: its id): a sync request waiting on another
/// node answers at once.
const DONE_CHANNEL: &str = "nano_banana_task_done";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// `copy_into` writes only into an empty database; nothing was written.
    #[error(
        "the target database is not empty ({0}); migrate-db copies only into an empty \
         database: point it at a new database or schema"
    )]
    TargetNotEmpty(String),
    /// `copy_into` found the copy (or the source) inconsistent; nothing was written.
    #[error("the copy was not verified, nothing was written: {0}")]
    CopyMismatch(String),
    /// `backup_to` could not write its copy (the reason says why); the database is untouched.
    #[error("backup: {0}")]
    Backup(String),
    /// The database could not be reached at all: nothing listens, the connection was refused,
    /// or it did not answer in time. Says where, so a start-up failure is plain.
    #[error("cannot connect to PostgreSQL at {address}: {cause}")]
    Unreachable { address: String, cause: String },
    /// The database was migrated by a newer binary: running on would risk its data.
    #[error(
        "the database's schema is at migration {found}, newer than this binary knows (it knows \
         up to {known}): a newer nano-banana upgraded it. Run that version (or a newer one), or \
         restore the backup taken before the upgrade"
    )]
    SchemaTooNew { found: i64, known: i64 },
}

/// How to open the database (`--database-pool-size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbOptions {
    /// PostgreSQL connections per process (SQLite: readers; it always has one writer).
    pub pool_size: u32,
    /// How long the first connection (and each later one) may take before the start fails.
    pub connect_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> DbOptions {
        DbOptions {
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl DbError {
    /// Whether the database could not be reached or could not write for a reason of its own that
    /// passes (PostgreSQL down or failing over, a connection cut, the pool exhausted, a full
    /// disk under SQLite, a serialization conflict), as opposed to a query it will never accept.
    /// Work whose result is kept in memory waits and tries again on these (`tasks::worker`);
    /// a client gets `api_error` saying the database is unavailable.
    pub fn is_unavailable(&self) -> bool {
        let DbError::Sql(error) = self else {
            return false;
        };
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(e) => {
                let code = e.code().unwrap_or_default();
                match e.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                    // SQLite's primary result code is the low byte of the extended one:
                    // BUSY 5, LOCKED 6, NOMEM 7, IOERR 10, FULL 13, CANTOPEN 14.
                    Some(_) => code
                        .parse::<i32>()
                        .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 7 | 10 | 13 | 14)),
                    // PostgreSQL's SQLSTATE: connection exceptions (08), insufficient resources
                    // such as a full disk (53), operator intervention: shutting down, starting
                    // up (57P), serialization failures and deadlocks (40001, 40P01).
                    None => {
                        code.starts_with("08")
                            || code.starts_with("53")
                            || code.starts_with("57P")
                            || code == "40001"
                            || code == "40P01"
                    }
                }
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Db {
    pool: Pool,
    /// Names this process's notifications (PostgreSQL), so its listener can skip its own.
    node: String,
}

#[derive(Debug, Clone)]
enum Pool {
    /// SQLite has one writer at a time. Writes go through a pool of one connection, so they
    /// queue in the pool (in order, without blocking a thread) instead of in SQLite's busy
    /// handler, which sleeps 1 to 100 ms between lock attempts, and that connection's page cache
    /// stays valid. Reads use the other pool and, in WAL mode, never wait for the writer.
    Sqlite {
        readers: SqlitePool,
        writer: SqlitePool,
    },
    Postgres(PgPool),
}

/// Expands `$body` once per database, with `$pool` bound to the concrete pool and `$pg` telling
/// whether it is PostgreSQL (for the few statements whose dialects differ). `on_pool!` is for
/// reads; `on_writer!` for anything that writes (on SQLite, the single writer connection).
macro_rules! on_pool {
    ($db:expr, |$pool:ident, $pg:ident| $body:expr) => {
        on_pool!(@readers $db, |$pool, $pg| $body)
    };
    (@$which:ident $db:expr, |$pool:ident, $pg:ident| $body:expr) => {
        match &$db.pool {
            Pool::Sqlite { $which: $pool, .. } => {
                let $pg = false;
                let _ = $pg;
                $body
            }
            Pool::Postgres($pool) => {
                let $pg = true;
                let _ = $pg;
                $body
            }
        }
    };
}

macro_rules! on_writer {
    ($db:expr, |$pool:ident, $pg:ident| $body:expr) => {
        on_pool!(@writer $db, |$pool, $pg| $body)
    };
}

/// Appends a balance change to the ledger inside the transaction `$tx`.
macro_rules! ledger {
    ($tx:expr, $application_id:expr, $task_id:expr, $amount:expr, $reason:expr, $now:expr $(,)?) => {
        sqlx::query(
            "INSERT INTO ledger (application_id, task_id, amount, reason, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind($application_id)
        .bind($task_id)
        .bind($amount)
        .bind($reason)
        .bind($now)
        .execute(&mut *$tx)
        .await
    };
}

// The parts of `Db`, one file each. Declared after the macros above because a `macro_rules!`
// macro is visible only in the code that follows its definition (child modules included).
mod accounts;
mod callbacks;
mod copy;
mod retention;
mod tasks;

pub use accounts::{ApplicationRow, Limits, TokenInfo, TokenRow, UsageRow};
pub use callbacks::{CallbackAttempt, CallbackOutcome, CallbackRow, DeliveryAttempt};
pub use copy::TableCount;
pub use retention::{ExpiredTask, Expiring};
pub use tasks::{
    Admission, Claim, ClaimedTask, Completion, NewTask, Pace, QueueStats, TaskFilter, TaskRow,
    TaskSummary,
};

/// A transaction that will write after it has read: see the module documentation.
trait BeginWrite {
    type Database: sqlx::Database;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Self::Database>, sqlx::Error>;
}

impl BeginWrite for SqlitePool {
    type Database = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        // IMMEDIATE: take the write lock before the first read, so checks cannot be invalidated
        // by another writer before our writes (and no lock upgrade can deadlock).
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Database = sqlx::Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// The cause of a failed first connection, without the driver's wrapping ("error communicating
/// with database: …") where there is a plainer one.
fn connect_cause(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Tls(tls) => format!("TLS: {tls}"),
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

/// The newest migration applied to the database behind `$pool`, if it has the migrator's table
/// (`_sqlx_migrations`; on PostgreSQL in the connection's search path, as the server's tables).
macro_rules! newest_migration {
    ($pool:expr) => {
        sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one($pool)
            .await
    };
}

/// Refuses a database whose newest applied migration is one this binary does not have: it was
/// upgraded by a newer release, and this one's queries may not fit it any more. A database
/// without the migrations table is new and is migrated next. Returns the newest version applied.
fn refuse_newer_schema(
    newest: Result<Option<i64>, sqlx::Error>,
    migrator: &sqlx::migrate::Migrator,
) -> Result<Option<i64>, DbError> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match newest {
        Ok(Some(found)) if found > known => Err(DbError::SchemaTooNew { found, known }),
        Ok(newest) => Ok(newest),
        Err(sqlx::Error::Database(e)) if is_missing_table(&*e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Runs the migrations on SQLite, where sqlx takes no lock (PostgreSQL's migrator holds an
/// advisory lock): processes starting together on one file each find a migration missing and
/// apply it. Each migration commits in one transaction with its `_sqlx_migrations` row, so the
/// second application fails ("table … already exists", or the version's primary key) and
/// changes nothing. The process that lost then runs the migrator again, which skips what the
/// other applied, as long as the other is making progress (the newest applied version moved
/// since `newest_before`); a migration that fails on its own fails the start the second time.
async fn migrate_sqlite(
    writer: &SqlitePool,
    migrator: &sqlx::migrate::Migrator,
    mut newest_before: Option<i64>,
) -> Result<(), DbError> {
    loop {
        let Err(error) = migrator.run(writer).await else {
            return Ok(());
        };
        let newest = newest_migration!(writer).ok().flatten();
        if newest <= newest_before {
            return Err(error.into());
        }
        tracing::info!(
            applied_elsewhere = newest,
            "another process is migrating the database; running the migrator again"
        );
        newest_before = newest;
    }
}

/// Whether a database error says the table does not exist (SQLite: "no such table",
/// PostgreSQL: SQLSTATE 42P01).
fn is_missing_table(error: &dyn sqlx::error::DatabaseError) -> bool {
    error.code().as_deref() == Some("42P01") || error.message().contains("no such table")
}

/// What a PostgreSQL `LISTEN` connection heard from any node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    TaskQueued,
    TaskDone(String),
}

/// Notifications from other nodes (PostgreSQL only).
pub struct Listener {
    inner: PgListener,
    /// This `Db`'s identity: its own "queued" notifications are skipped (it woke its workers
    /// already), so each admission costs one claim round, not two.
    node: String,
}

impl Listener {
    /// The next notification. After an error the connection is re-established by the next call;
    /// notifications sent meanwhile are lost, so callers keep their polling fallback.
    pub async fn recv(&mut self) -> Result<Event, DbError> {
        loop {
            let note = self.inner.recv().await?;
            if note.channel() == DONE_CHANNEL {
                return Ok(Event::TaskDone(note.payload().to_owned()));
            }
            if note.payload() != self.node {
                return Ok(Event::TaskQueued);
            }
        }
    }
}

impl Db {
    /// Opens (creating if needed) the database at `url` and runs the migrations.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        Db::open(url, true, DbOptions::default()).await
    }

    /// Like `connect`, with the pool's size and connection timeout of `options`.
    pub async fn connect_with(url: &str, options: DbOptions) -> Result<Db, DbError> {
        Db::open(url, true, options).await
    }

    /// Opens the database at `url` and runs the migrations, but never creates a SQLite file: a
    /// mistyped source path must be an error, not an empty database.
    pub async fn connect_existing(url: &str) -> Result<Db, DbError> {
        Db::open(url, false, DbOptions::default()).await
    }

    async fn open(url: &str, create_sqlite_file: bool, opts: DbOptions) -> Result<Db, DbError> {
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            return Db::connect_postgres(url, opts).await;
        }
        if !url.starts_with("sqlite:") {
            return Err(DbError::UnsupportedUrl(url.to_owned()));
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(create_sqlite_file)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a crash may lose the last commits of the OS's buffer, never corrupt.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // A connection to a local file cannot go stale; the default ping on every acquire only
        // added a round trip to the connection's thread per query (BENCHMARKS.md, S1).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let migrator = sqlx::migrate!("migrations/sqlite");
        let newest = refuse_newer_schema(newest_migration!(&writer), &migrator)?;
        migrate_sqlite(&writer, &migrator, newest).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(opts.pool_size.clamp(1, 8))
            .test_before_acquire(false)
            .connect_with(options.create_if_missing(false))
            .await?;
        Ok(Db {
            pool: Pool::Sqlite { readers, writer },
            node: uuid::Uuid::new_v4().to_string(),
        })
    }

    async fn connect_postgres(url: &str, opts: DbOptions) -> Result<Db, DbError> {
        use sqlx::Connection as _;
        let options = PgConnectOptions::from_str(url)?;
        // One connection first, on its own clock: a pool that cannot connect only says "pool
        // timed out" after its acquire timeout, without the address or the cause.
        let address = format!("{}:{}", options.get_host(), options.get_port());
        let unreachable = |cause: String| DbError::Unreachable {
            address: address.clone(),
            cause,
        };
        match tokio::time::timeout(
            opts.connect_timeout,
            sqlx::PgConnection::connect_with(&options),
        )
        .await
        {
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
            }
            Ok(Err(e)) => return Err(unreachable(connect_cause(&e))),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {} s",
                    opts.connect_timeout.as_secs_f64()
                )));
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(opts.pool_size.max(1))
            .acquire_timeout(opts.connect_timeout.max(Duration::from_secs(10)))
            .connect_with(options)
            .await?;
        let migrator = sqlx::migrate!("migrations/postgres");
        refuse_newer_schema(newest_migration!(&pool), &migrator)?;
        // The migrator holds an advisory lock, so nodes starting together migrate once.
        migrator.run(&pool).await?;
        Ok(Db {
            pool: Pool::Postgres(pool),
            node: uuid::Uuid::new_v4().to_string(),
        })
    }

    /// `"sqlite"` or `"postgres"`, for logs and `/readyz`.
    pub fn kind(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite { .. } => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        on_pool!(self, |pool, _pg| {
            sqlx::query("SELECT 1").execute(pool).await?;
            Ok(())
        })
    }

    /// How many bytes the database's tables and indexes take: SQLite's pages (those still in
    /// the write-ahead log included), or PostgreSQL's `pg_total_relation_size` (TOAST and
    /// indexes included) of every table in the current schema. For `/metrics`
    /// (`nano_banana_database_bytes`), the growth checks of tests/api/inputs.rs and the
    /// benchmark's S5.
    pub async fn size_bytes(&self) -> Result<i64, DbError> {
        on_pool!(self, |pool, pg| {
            let row = sqlx::query(if pg {
                "SELECT CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT) AS n \
                 FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace \
                 WHERE s.nspname = current_schema() AND c.relkind = 'r'"
            } else {
                "SELECT p.page_count * s.page_size AS n FROM pragma_page_count() p, pragma_page_size() s"
            })
            .fetch_one(pool)
            .await?;
            Ok(sqlx::Row::try_get(&row, "n")?)
        })
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite { readers, writer } => {
                readers.close().await;
                writer.close().await;
            }
            Pool::Postgres(pool) => pool.close().await,
        }
    }

    /// A connection that hears other nodes' task notifications; `None` on SQLite, where every
    /// writer is in this process or polls.
    pub async fn listen(&self) -> Result<Option<Listener>, DbError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(None);
        };
        let mut inner = PgListener::connect_with(pool).await?;
        inner.listen_all([QUEUED_CHANNEL, DONE_CHANNEL]).await?;
        Ok(Some(Listener {
            inner,
            node: self.node.clone(),
        }))
    }
}
