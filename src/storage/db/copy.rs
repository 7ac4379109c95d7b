//! Copying a whole database into another, empty one (`admin migrate-db`, SQLite to PostgreSQL
//! or back): the tables and columns the copy knows (`TABLES`), the rows read as a stream and
//! written in multi-row `INSERT`s, and the checks around the one transaction on the target
//! (empty before; the same rows per table and every balance equal to its ledger after).
//!
//! It does not own the schema (the `migrations` folders, which `TABLES` must follow), nor the
//! command line around it (`admin.rs`), nor the pools (`mod.rs`).

use sqlx::Row;

use super::{BeginWrite, Db, DbError, Pool};

/// The columns of `$table` (a name) that `TABLES` does not list, read through `$executor`.
macro_rules! unknown_columns {
    ($executor:expr, $pg:expr, $table:expr) => {{
        let query = if $pg {
            "SELECT CAST(column_name AS TEXT) AS name FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1"
        } else {
            "SELECT name FROM pragma_table_info($1)"
        };
        let rows = sqlx::query(query)
            .bind($table.name)
            .fetch_all($executor)
            .await?;
        let mut unknown = Vec::new();
        for row in &rows {
            let name: String = row.try_get("name")?;
            if !$table.columns.iter().any(|(known, _)| *known == name) {
                unknown.push(format!("{}.{name}", $table.name));
            }
        }
        unknown
    }};
}

/// Rows per table of `TABLES`, counted through `$executor` (a pool or `&mut *tx`).
macro_rules! table_counts {
    ($executor:expr) => {{
        let mut counts = Vec::with_capacity(TABLES.len());
        for table in &TABLES {
            let count = format!("SELECT COUNT(*) AS n FROM {}", table.name);
            let row = sqlx::query(sqlx::AssertSqlSafe(count))
                .fetch_one($executor)
                .await?;
            counts.push(TableCount {
                table: table.name,
                rows: row.try_get("n")?,
            });
        }
        counts
    }};
}

/// The applications whose `credits` differ from the sum of their ledger, described.
macro_rules! unbalanced {
    ($executor:expr) => {{
        let rows = sqlx::query(
            "SELECT a.id, a.credits, \
                 (SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger l \
                  WHERE l.application_id = a.id) AS ledger_sum \
             FROM applications a ORDER BY a.id",
        )
        .fetch_all($executor)
        .await?;
        let mut unbalanced = Vec::new();
        for row in &rows {
            let (id, credits, sum): (String, i64, i64) = (
                row.try_get("id")?,
                row.try_get("credits")?,
                row.try_get("ledger_sum")?,
            );
            if credits != sum {
                unbalanced.push(format!(
                    "application {id} (credits {credits}, ledger {sum})"
                ));
            }
        }
        unbalanced
    }};
}

/// Writes `$rows` (drained) into `$table` with one multi-row `INSERT` inside the transaction
/// `$tx`; the number of rows written. PostgreSQL must be told to take the ledger's ids as given.
macro_rules! insert_rows {
    ($tx:expr, $pg:expr, $table:expr, $columns:expr, $rows:expr) => {{
        let overriding = if $pg && $table.identity {
            " OVERRIDING SYSTEM VALUE "
        } else {
            " "
        };
        let n = $rows.len() as i64;
        let mut insert = sqlx::QueryBuilder::new(format!(
            "INSERT INTO {} ({}){overriding}",
            $table.name, $columns
        ));
        insert.push_values($rows.drain(..), |mut values, cells| {
            for cell in cells {
                match cell {
                    Cell::Text(v) => values.push_bind(v),
                    Cell::Int(v) => values.push_bind(v),
                };
            }
        });
        insert.build().execute(&mut *$tx).await.map(|_| n)
    }};
}

impl Db {
    /// The applications whose credits differ from the sum of their ledger, described; empty
    /// when the books balance.
    pub async fn unbalanced_applications(&self) -> Result<Vec<String>, DbError> {
        on_pool!(self, |pool, pg| Ok(unbalanced!(pool)))
    }

    /// A consistent copy of this SQLite database, taken while it is in use, written to `path`
    /// (which must not exist): SQLite's `VACUUM INTO` reads one snapshot, as any reader does in
    /// WAL mode, so the server's writers go on meanwhile. The copy is written beside `path`
    /// under a `.partial` name, checked (it opens, every balance equals its ledger) and only then
    /// renamed to `path`; the rows per table of the copy are returned. PostgreSQL has its own
    /// tools (README: Backups), so there this is an error.
    pub async fn backup_to(&self, path: &std::path::Path) -> Result<Vec<TableCount>, DbError> {
        use sqlx::{Connection as _, sqlite::SqliteConnectOptions};
        let Pool::Sqlite { readers, .. } = &self.pool else {
            return Err(DbError::Backup(
                "backup copies a SQLite database; for PostgreSQL use pg_dump or the managed \
                 service's snapshots (README: Backups)"
                    .into(),
            ));
        };
        if path.exists() {
            return Err(DbError::Backup(format!(
                "{} exists already: back up into a new file",
                path.display()
            )));
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = std::path::PathBuf::from(partial);
        let Some(target) = partial.to_str() else {
            return Err(DbError::Backup(format!(
                "{} is not a UTF-8 path",
                path.display()
            )));
        };
        // A leftover of an interrupted backup is ours to replace: VACUUM INTO needs a new file.
        match std::fs::remove_file(&partial) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DbError::Backup(format!("removing {target}: {e}"))),
        }
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(readers)
            .await?;
        let options = SqliteConnectOptions::new()
            .filename(&partial)
            .read_only(true);
        let mut copy = sqlx::SqliteConnection::connect_with(&options).await?;
        let counts = table_counts!(&mut copy);
        let unbalanced = unbalanced!(&mut copy);
        copy.close().await?;
        if !unbalanced.is_empty() {
            return Err(DbError::CopyMismatch(format!(
                "in the backup, credits differ from the ledger sum for {}",
                unbalanced.join("; ")
            )));
        }
        std::fs::rename(&partial, path)
            .map_err(|e| DbError::Backup(format!("renaming {target}: {e}")))?;
        Ok(counts)
    }

    /// Rows per table, in `TABLES` order.
    pub async fn table_counts(&self) -> Result<Vec<TableCount>, DbError> {
        on_pool!(self, |pool, pg| Ok(table_counts!(pool)))
    }

    /// Copies every row of this database into `target`, which must be empty, and returns the
    /// rows per table. Everything happens in one transaction on `target`, verified before it
    /// commits (rows per table, and every balance equal to its ledger), so a failure leaves
    /// `target` as empty as it was. This database must not change meanwhile (stop its server).
    ///
    /// Rows are read as a stream and written `batch` rows per `INSERT`; keys, ledger ids and
    /// lease columns are kept as they are (a `processing` task is re-claimed once its lease
    /// expires).
    pub async fn copy_into(&self, target: &Db, batch: usize) -> Result<Vec<TableCount>, DbError> {
        use futures_util::TryStreamExt as _;
        // Bound the binds of one INSERT: SQLite allows 32766, PostgreSQL 65535 (tasks: 23 columns).
        let batch = batch.clamp(1, 1000);
        let mut unknown = Vec::new();
        for table in &TABLES {
            unknown.extend(on_pool!(self, |pool, pg| unknown_columns!(pool, pg, table)));
            unknown.extend(on_pool!(target, |pool, pg| unknown_columns!(
                pool, pg, table
            )));
        }
        if !unknown.is_empty() {
            return Err(DbError::CopyMismatch(format!(
                "columns this version does not know how to copy: {}",
                unknown.join(", ")
            )));
        }
        let unbalanced = on_pool!(self, |pool, pg| unbalanced!(pool));
        if !unbalanced.is_empty() {
            return Err(DbError::CopyMismatch(format!(
                "in the source, credits differ from the ledger sum for {}",
                unbalanced.join("; ")
            )));
        }
        let source_counts = self.table_counts().await?;
        on_writer!(target, |pool, pg| {
            let mut tx = pool.begin_write().await?;
            let existing = table_counts!(&mut *tx);
            let filled: Vec<String> = existing
                .iter()
                .filter(|c| c.rows > 0)
                .map(|c| {
                    let rows = if c.rows == 1 { "row" } else { "rows" };
                    format!("{}: {} {rows}", c.table, c.rows)
                })
                .collect();
            if !filled.is_empty() {
                tx.rollback().await?;
                return Err(DbError::TargetNotEmpty(filled.join(", ")));
            }
            let mut copied = Vec::with_capacity(TABLES.len());
            for table in &TABLES {
                let columns: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
                let columns = columns.join(", ");
                let mut rows: Vec<Vec<Cell>> = Vec::with_capacity(batch);
                let mut count = 0_i64;
                on_pool!(self, |source, source_pg| {
                    let select = format!(
                        "SELECT {columns} FROM {} ORDER BY {}",
                        table.name, table.key
                    );
                    let mut stream = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(source);
                    while let Some(row) = stream.try_next().await? {
                        rows.push(read_cells(&row, table)?);
                        if rows.len() >= batch {
                            count += insert_rows!(tx, pg, table, &columns, rows)?;
                        }
                    }
                });
                if !rows.is_empty() {
                    count += insert_rows!(tx, pg, table, &columns, rows)?;
                }
                copied.push(TableCount {
                    table: table.name,
                    rows: count,
                });
            }
            if pg {
                // The identity would otherwise hand out ids the copy already used. `is_called`
                // false on an empty ledger: the next id is then 1, as on a new database.
                sqlx::query(
                    "SELECT setval(pg_get_serial_sequence('ledger', 'id'), \
                         COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM ledger",
                )
                .execute(&mut *tx)
                .await?;
            }
            let written = table_counts!(&mut *tx);
            for ((source, copied), written) in source_counts.iter().zip(&copied).zip(&written) {
                if source.rows != copied.rows || copied.rows != written.rows {
                    tx.rollback().await?;
                    return Err(DbError::CopyMismatch(format!(
                        "{}: the source has {} rows, {} were read and the target holds {}",
                        source.table, source.rows, copied.rows, written.rows
                    )));
                }
            }
            let unbalanced = unbalanced!(&mut *tx);
            if !unbalanced.is_empty() {
                tx.rollback().await?;
                return Err(DbError::CopyMismatch(format!(
                    "in the target, credits differ from the ledger sum for {}",
                    unbalanced.join("; ")
                )));
            }
            tx.commit().await?;
            Ok(written)
        })
    }
}

/// Rows in one table (`Db::table_counts`, `Db::copy_into`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableCount {
    pub table: &'static str,
    pub rows: i64,
}

/// A column's type, as far as copying needs to know: every column is TEXT or a 64-bit integer
/// on both databases, each possibly NULL.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Int,
}

/// One value of a row being copied.
enum Cell {
    Text(Option<String>),
    Int(Option<i64>),
}

/// A table as `copy_into` sees it: every column of both schemas, and the key to read it in.
struct Table {
    name: &'static str,
    key: &'static str,
    /// Its id is `GENERATED ALWAYS AS IDENTITY` on PostgreSQL.
    identity: bool,
    columns: &'static [(&'static str, Kind)],
}

/// Every table, parents before children (the order foreign keys need). A column added by a
/// migration must be added here too; `copy_into` refuses to run while the schema of either
/// database has a column this list lacks, so a forgotten one cannot be dropped silently.
const TABLES: [Table; 9] = {
    use Kind::{Int, Text};
    [
        Table {
            name: "applications",
            key: "id",
            identity: false,
            columns: &[
                ("id", Text),
                ("name", Text),
                ("user_id", Text),
                ("credits", Int),
                ("disabled", Int),
                ("created_at", Int),
                ("rate_per_minute", Int),
                ("burst", Int),
                ("max_concurrent", Int),
                ("retention_seconds", Int),
            ],
        },
        Table {
            name: "tokens",
            key: "id",
            identity: false,
            columns: &[
                ("id", Text),
                ("application_id", Text),
                ("hash", Text),
                ("prefix", Text),
                ("name", Text),
                ("apis", Text),
                ("expires_at", Int),
                ("revoked", Int),
                ("created_at", Int),
            ],
        },
        Table {
            name: "tasks",
            key: "id",
            identity: false,
            columns: &[
                ("id", Text),
                ("trace_id", Text),
                ("application_id", Text),
                ("user_id", Text),
                ("api_id", Text),
                ("credential_id", Text),
                ("state", Text),
                ("http_status", Int),
                ("response", Text),
                ("callback_url", Text),
                ("created_at", Int),
                ("started_at", Int),
                ("finished_at", Int),
                ("run_at", Int),
                ("attempts", Int),
                ("lease_owner", Text),
                ("lease_until", Int),
                ("model", Text),
                ("reserved", Int),
                ("charged", Int),
                ("images", Int),
                ("failed_images", Int),
            ],
        },
        Table {
            name: "task_requests",
            key: "task_id",
            identity: false,
            columns: &[("task_id", Text), ("request", Text)],
        },
        Table {
            name: "input_objects",
            key: "digest",
            identity: false,
            columns: &[("digest", Text), ("tasks", Int)],
        },
        Table {
            name: "callbacks",
            key: "id",
            identity: false,
            columns: &[
                ("id", Text),
                ("task_id", Text),
                ("url", Text),
                ("body", Text),
                ("state", Text),
                ("attempts", Int),
                ("next_attempt_at", Int),
                ("lease_owner", Text),
                ("lease_until", Int),
                ("last_error", Text),
                ("created_at", Int),
                ("delivered_at", Int),
            ],
        },
        Table {
            name: "callback_attempts",
            key: "callback_id, attempt",
            identity: false,
            columns: &[
                ("callback_id", Text),
                ("attempt", Int),
                ("at", Int),
                ("status", Int),
                ("latency_ms", Int),
                ("error", Text),
            ],
        },
        Table {
            name: "idempotency_keys",
            key: "application_id, key",
            identity: false,
            columns: &[
                ("application_id", Text),
                ("key", Text),
                ("task_id", Text),
                ("request_hash", Text),
                ("created_at", Int),
            ],
        },
        Table {
            name: "ledger",
            key: "id",
            identity: true,
            columns: &[
                ("id", Int),
                ("application_id", Text),
                ("task_id", Text),
                ("amount", Int),
                ("reason", Text),
                ("created_at", Int),
            ],
        },
    ]
};

fn read_cells<R>(row: &R, table: &Table) -> Result<Vec<Cell>, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    table
        .columns
        .iter()
        .map(|(name, kind)| {
            Ok(match kind {
                Kind::Text => Cell::Text(row.try_get(*name)?),
                Kind::Int => Cell::Int(row.try_get(*name)?),
            })
        })
        .collect()
}
