//! `nano-banana admin …`: the admin commands of the command line. Each becomes an
//! `accounts::AdminRequest`, sent to a running server's `/admin/` API (`--server`) or run by the
//! admin service directly on a stopped server's database — the same requests either way.
//!
//! Two commands exist only here, since they work on database files rather than through a server:
//! `migrate-db` copies a stopped server's database into a new one (SQLite → PostgreSQL), and
//! `backup` takes a consistent copy of a running server's SQLite database.

use anyhow::Context;
use serde_json::{Value, json};

use crate::{
    accounts::{Admin, AdminRequest, Limits, NewApplication, NewToken},
    config::{DEFAULT_DATA_DIR, default_database_url},
    storage::Db,
    telemetry::redact_url,
};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum AdminCommand {
    /// Applications: create, list, show, top up, disable, enable, set limits
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Tokens: create, list, revoke
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Images, credits and failures per application, model and day
    Usage,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum AppsCommand {
    /// Create an application
    Create {
        #[arg(long)]
        name: String,
        /// Opening balance
        #[arg(long, default_value_t = 0)]
        credits: i64,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// List applications with their balances
    List,
    /// Show one application
    Show { id: String },
    /// Add credits to an application's balance
    Topup { id: String, credits: i64 },
    /// Refuse every request of an application (`disabled`)
    Disable { id: String },
    /// Accept requests of a disabled application again
    Enable { id: String },
    /// Set an application's limits (omitted ones become unlimited)
    Limits {
        id: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct LimitArgs {
    /// Requests per minute (GCRA); unlimited when omitted
    #[arg(long)]
    pub rate_per_minute: Option<i64>,
    /// Requests allowed at once above the steady rate [default: 1]
    #[arg(long)]
    pub burst: Option<i64>,
    /// Unfinished tasks allowed at once; unlimited when omitted
    #[arg(long)]
    pub max_concurrent: Option<i64>,
    /// Keep the application's finished tasks and images this many seconds (0: forever); the
    /// server's --retention when omitted
    #[arg(long)]
    pub retention_seconds: Option<i64>,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum TokensCommand {
    /// Create a token for an application (shown once)
    Create {
        application_id: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Expiry as Unix seconds; never when omitted
        #[arg(long)]
        expires_at: Option<i64>,
        /// API ids the token may call (comma-separated); all when omitted
        #[arg(long)]
        apis: Option<String>,
    },
    /// List tokens (prefixes only; tokens are stored hashed)
    List {
        #[arg(long)]
        application_id: Option<String>,
    },
    /// Revoke a token
    Revoke { id: String },
}

impl From<LimitArgs> for Limits {
    fn from(args: LimitArgs) -> Limits {
        Limits {
            rate_per_minute: args.rate_per_minute,
            burst: args.burst,
            max_concurrent: args.max_concurrent,
            retention_seconds: args.retention_seconds,
        }
    }
}

impl From<AdminCommand> for AdminRequest {
    fn from(command: AdminCommand) -> AdminRequest {
        match command {
            AdminCommand::Apps(AppsCommand::Create {
                name,
                credits,
                limits,
            }) => AdminRequest::CreateApplication(NewApplication {
                name,
                credits,
                limits: limits.into(),
            }),
            AdminCommand::Apps(AppsCommand::List) => AdminRequest::ListApplications,
            AdminCommand::Apps(AppsCommand::Show { id }) => AdminRequest::ShowApplication { id },
            AdminCommand::Apps(AppsCommand::Topup { id, credits }) => {
                AdminRequest::TopUp { id, credits }
            }
            AdminCommand::Apps(AppsCommand::Disable { id }) => {
                AdminRequest::SetDisabled { id, disabled: true }
            }
            AdminCommand::Apps(AppsCommand::Enable { id }) => AdminRequest::SetDisabled {
                id,
                disabled: false,
            },
            AdminCommand::Apps(AppsCommand::Limits { id, limits }) => AdminRequest::SetLimits {
                id,
                limits: limits.into(),
            },
            AdminCommand::Tokens(TokensCommand::Create {
                application_id,
                name,
                expires_at,
                apis,
            }) => AdminRequest::CreateToken(NewToken {
                application_id,
                name,
                expires_at,
                apis,
            }),
            AdminCommand::Tokens(TokensCommand::List { application_id }) => {
                AdminRequest::ListTokens { application_id }
            }
            AdminCommand::Tokens(TokensCommand::Revoke { id }) => AdminRequest::RevokeToken { id },
            AdminCommand::Usage => AdminRequest::Usage,
        }
    }
}

/// The `/admin/` API call that runs `request` on a server: method, path, JSON body.
pub fn http_call(request: &AdminRequest) -> (reqwest::Method, String, Option<Value>) {
    use reqwest::Method;
    let limits_json = |l: &Limits| serde_json::to_value(l).unwrap_or_else(|_| json!({}));
    match request {
        AdminRequest::CreateApplication(new) => {
            let mut body = limits_json(&new.limits);
            body["name"] = json!(new.name);
            body["credits"] = json!(new.credits);
            (Method::POST, "/admin/apps".into(), Some(body))
        }
        AdminRequest::ListApplications => (Method::GET, "/admin/apps".into(), None),
        AdminRequest::ShowApplication { id } => (Method::GET, format!("/admin/apps/{id}"), None),
        AdminRequest::TopUp { id, credits } => (
            Method::POST,
            format!("/admin/apps/{id}/topup"),
            Some(json!({"credits": credits})),
        ),
        AdminRequest::SetDisabled { id, disabled } => {
            let verb = if *disabled { "disable" } else { "enable" };
            (Method::POST, format!("/admin/apps/{id}/{verb}"), None)
        }
        AdminRequest::SetLimits { id, limits } => (
            Method::PUT,
            format!("/admin/apps/{id}/limits"),
            Some(limits_json(limits)),
        ),
        AdminRequest::CreateToken(new) => (
            Method::POST,
            format!("/admin/apps/{}/tokens", new.application_id),
            Some(json!({"name": new.name, "expires_at": new.expires_at, "apis": new.apis})),
        ),
        AdminRequest::ListTokens { application_id } => {
            let query = application_id
                .as_ref()
                .map(|id| format!("?application_id={id}"))
                .unwrap_or_default();
            (Method::GET, format!("/admin/tokens{query}"), None)
        }
        AdminRequest::RevokeToken { id } => {
            (Method::POST, format!("/admin/tokens/{id}/revoke"), None)
        }
        AdminRequest::Usage => (Method::GET, "/admin/usage".into(), None),
    }
}

/// `nano-banana admin …`: against a running server (`--server`) or directly on the database.
#[derive(clap::Args)]
pub struct AdminArgs {
    /// A running server's base URL; without it, the database is changed directly
    #[arg(long, env = "NANO_BANANA_ADMIN_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The server's admin key (with --server)
    #[arg(
        long,
        env = "NANO_BANANA_ADMIN_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub admin_key: Option<String>,
    /// Data folder of a stopped server (direct mode) [default: ./data]
    #[arg(long, env = "NANO_BANANA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Database URL (direct mode) [default: sqlite://DATA_DIR/nano-banana.db]
    #[arg(long, env = "NANO_BANANA_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: AdminCliCommand,
}

/// The admin commands of the command line: those of the admin API, and `migrate-db`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum AdminCliCommand {
    #[command(flatten)]
    Api(AdminCommand),
    /// Copy a stopped server's whole database into a new, empty one (e.g. SQLite → PostgreSQL)
    #[command(long_about = MIGRATE_DB_ABOUT)]
    MigrateDb(MigrateDbArgs),
    /// Copy a SQLite database, while its server runs, into a new file (a consistent snapshot)
    #[command(long_about = BACKUP_ABOUT)]
    Backup(BackupArgs),
}

const BACKUP_ABOUT: &str = "Copy the SQLite database of --data-dir (or --database-url) into a \
    new file, while its server runs: one consistent snapshot (SQLite's VACUUM INTO, a read \
    transaction, so the server's writes go on). The copy is checked before it gets its name \
    (it opens; every balance equals its ledger) and is compacted, ready to be a database again: \
    stop the server, put the file in place of DATA_DIR/nano-banana.db (removing the old \
    nano-banana.db-wal and -shm files), start it.\n\n\
    Images are not in the database: back up the image folder (or bucket) too, after the \
    database, so every image a backed-up task names is in it.\n\n\
    PostgreSQL: use pg_dump or the service's snapshots (README: Backups).\n\n\
    Prints a JSON summary: the file and the rows per table.";

#[derive(clap::Args, Debug, Clone)]
pub struct BackupArgs {
    /// The file to write; must not exist
    #[arg(long, value_name = "FILE")]
    pub to: std::path::PathBuf,
}

const MIGRATE_DB_ABOUT: &str = "Copy a stopped server's whole database into a new, empty one: \
    typically from SQLite to PostgreSQL, to run several nodes (SQLite → SQLite and PostgreSQL → \
    PostgreSQL work too).\n\n\
    Stop the server first: rows written during the copy would be missed. Both databases are \
    brought to the current schema (the target's tables are created); the target must hold no \
    rows, otherwise nothing is written. Every table is copied in one transaction, and checked \
    before it commits (rows per table, every balance equal to its ledger), so a failed copy \
    leaves the target empty. Applications, tokens (they keep working), tasks, callbacks, \
    idempotency keys and the ledger (with its ids) are copied as they are; a task that was \
    being processed is taken up again once its lease expires.\n\n\
    Images are not in the database: keep the image folder where it is, or copy it into the \
    bucket (e.g. `aws s3 sync DATA_DIR/images s3://BUCKET/PREFIX`).\n\n\
    Prints a JSON summary: the rows copied per table.\n\n\
    --server, --data-dir and --database-url do not apply: the databases are --from and --to.";

#[derive(clap::Args, Debug, Clone)]
pub struct MigrateDbArgs {
    /// The database to copy from: sqlite://PATH (must exist) or postgres://…
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// The database to copy into, e.g. postgres://USER:PASSWORD@HOST/DB; must be empty
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Rows per INSERT
    #[arg(long, default_value_t = 500, value_name = "ROWS",
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch: u16,
}

/// The file of a `sqlite:` URL (`sqlite://PATH`, `sqlite:PATH`, options after `?`).
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| path.into())
}

/// `nano-banana admin migrate-db`: see `MIGRATE_DB_ABOUT`.
async fn migrate_db(args: &MigrateDbArgs) -> anyhow::Result<Value> {
    let (from, to) = (redact_url(&args.from), redact_url(&args.to));
    if args.from == args.to {
        anyhow::bail!("--from and --to are the same database ({from})");
    }
    if let Some(path) = sqlite_path(&args.from)
        && !path.exists()
    {
        anyhow::bail!("no source database: {} does not exist", path.display());
    }
    let source = Db::connect_existing(&args.from)
        .await
        .with_context(|| format!("opening the source database {from}"))?;
    let target = Db::connect(&args.to)
        .await
        .with_context(|| format!("opening the target database {to}"))?;
    let copied = source
        .copy_into(&target, usize::from(args.batch))
        .await
        .with_context(|| format!("copying {from} into {to} (nothing was written to it)"));
    source.close().await;
    target.close().await;
    let copied = copied?;
    let tables: serde_json::Map<String, Value> = copied
        .iter()
        .map(|count| (count.table.to_owned(), json!(count.rows)))
        .collect();
    Ok(json!({
        "from": from,
        "to": to,
        "tables": tables,
        "verified": true,
        "note": "Row counts match and every balance equals its ledger. Start the nodes with \
                 --database-url set to the target.",
    }))
}

/// `nano-banana admin backup`: see `BACKUP_ABOUT`.
async fn backup(url: &str, args: &BackupArgs) -> anyhow::Result<Value> {
    let shown = redact_url(url);
    let db = Db::connect_existing(url)
        .await
        .with_context(|| format!("opening {shown}"))?;
    let copied = db.backup_to(&args.to).await;
    db.close().await;
    let copied = copied.with_context(|| format!("backing up {shown}"))?;
    let tables: serde_json::Map<String, Value> = copied
        .iter()
        .map(|count| (count.table.to_owned(), json!(count.rows)))
        .collect();
    Ok(json!({
        "from": shown,
        "backup": args.to.display().to_string(),
        "tables": tables,
        "verified": true,
        "note": "A consistent snapshot; every balance equals its ledger. Back up the images \
                 too (after the database).",
    }))
}

/// The database of direct mode: `--database-url`, else the SQLite file of `--data-dir`, which
/// must exist.
fn direct_database_url(args: &AdminArgs) -> anyhow::Result<String> {
    if let Some(url) = &args.database_url {
        return Ok(url.clone());
    }
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    let url = default_database_url(&dir);
    if let Some(file) = sqlite_path(&url)
        && !file.exists()
    {
        anyhow::bail!(
            "no database at {} (use --data-dir or --server)",
            file.display()
        );
    }
    Ok(url)
}

/// Runs an admin command and prints its JSON result.
pub async fn cli(args: AdminArgs) -> anyhow::Result<()> {
    let command = match &args.command {
        AdminCliCommand::MigrateDb(migrate) => {
            let summary = migrate_db(migrate).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).unwrap_or_default()
            );
            return Ok(());
        }
        AdminCliCommand::Backup(backup_args) => {
            if args.server.is_some() {
                anyhow::bail!(
                    "backup reads the database file itself: give --data-dir or --database-url, \
                     not --server"
                );
            }
            let summary = backup(&direct_database_url(&args)?, backup_args).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).unwrap_or_default()
            );
            return Ok(());
        }
        AdminCliCommand::Api(command) => AdminRequest::from(command.clone()),
    };
    let result = match &args.server {
        Some(server) => {
            let key = args
                .admin_key
                .as_deref()
                .context("--server needs the admin key (--admin-key or NANO_BANANA_ADMIN_KEY)")?;
            let (method, path, body) = http_call(&command);
            let url = format!("{}{path}", server.trim_end_matches('/'));
            let mut request = reqwest::Client::new()
                .request(method, &url)
                .bearer_auth(key);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("calling {url}"))?;
            let status = response.status();
            let value: Value = response.json().await.context("reading the answer")?;
            if !status.is_success() {
                anyhow::bail!(
                    "{}: {}",
                    value["error"]["code"].as_str().unwrap_or("error"),
                    value["error"]["message"]
                        .as_str()
                        .unwrap_or("unexpected answer")
                );
            }
            value
        }
        None => {
            let url = direct_database_url(&args)?;
            let db = Db::connect(&url)
                .await
                .with_context(|| format!("opening {url}"))?;
            let value = Admin { db: &db }.run(&command).await?;
            db.close().await;
            value
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&result).unwrap_or_default()
    );
    Ok(())
}
