//! Administration of applications, tokens, credits, limits and usage. One set of commands,
//! run three ways: by the `/admin/` HTTP API of a running server, by `nano-banana admin …`
//! against that API (`--server`), and by `nano-banana admin …` directly on the database when the
//! server is stopped. All three call `Admin::run`, so they cannot drift apart.
//!
//! One command exists only on the command line, since it works on two databases and no server:
//! `migrate-db` copies a stopped server's database into a new one (SQLite → PostgreSQL).

use serde_json::{Value, json};

use crate::{
    app::{new_token, token_prefix},
    http::auth::token_hash,
    storage::{Db, db::DbError},
    tasks::now_ms,
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
        limits: Limits,
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
        limits: Limits,
    },
}

#[derive(clap::Args, Debug, Clone, Default, serde::Deserialize)]
pub struct Limits {
    /// Requests per minute (GCRA); unlimited when omitted
    #[arg(long)]
    pub rate_per_minute: Option<i64>,
    /// Requests allowed at once above the steady rate [default: 1]
    #[arg(long)]
    pub burst: Option<i64>,
    /// Unfinished tasks allowed at once; unlimited when omitted
    #[arg(long)]
    pub max_concurrent: Option<i64>,
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

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

pub struct Admin<'a> {
    pub db: &'a Db,
}

impl Admin<'_> {
    pub async fn run(&self, command: &AdminCommand) -> Result<Value, AdminError> {
        match command {
            AdminCommand::Apps(apps) => self.apps(apps).await,
            AdminCommand::Tokens(tokens) => self.tokens(tokens).await,
            AdminCommand::Usage => Ok(json!({"usage": self.db.usage().await?})),
        }
    }

    async fn apps(&self, command: &AppsCommand) -> Result<Value, AdminError> {
        match command {
            AppsCommand::Create {
                name,
                credits,
                limits,
            } => {
                if name.trim().is_empty() {
                    return Err(AdminError::Invalid("name must not be empty.".into()));
                }
                if *credits < 0 {
                    return Err(AdminError::Invalid("credits cannot be negative.".into()));
                }
                check_limits(limits)?;
                let id = uuid::Uuid::new_v4().to_string();
                let user_id = uuid::Uuid::new_v4().to_string();
                self.db
                    .create_application(&id, name.trim(), &user_id, *credits, now_ms())
                    .await?;
                self.set_limits(&id, limits).await?;
                self.show(&id).await
            }
            AppsCommand::List => Ok(json!({"applications": self.db.list_applications().await?})),
            AppsCommand::Show { id } => self.show(id).await,
            AppsCommand::Topup { id, credits } => {
                if *credits <= 0 {
                    return Err(AdminError::Invalid(
                        "credits must be a positive number.".into(),
                    ));
                }
                if !self.db.add_credits(id, *credits, "topup", now_ms()).await? {
                    return Err(no_application(id));
                }
                self.show(id).await
            }
            AppsCommand::Disable { id } | AppsCommand::Enable { id } => {
                let disable = matches!(command, AppsCommand::Disable { .. });
                if !self.db.set_application_disabled(id, disable).await? {
                    return Err(no_application(id));
                }
                self.show(id).await
            }
            AppsCommand::Limits { id, limits } => {
                check_limits(limits)?;
                self.set_limits(id, limits).await?;
                self.show(id).await
            }
        }
    }

    async fn tokens(&self, command: &TokensCommand) -> Result<Value, AdminError> {
        match command {
            TokensCommand::Create {
                application_id,
                name,
                expires_at,
                apis,
            } => {
                if self.db.get_application(application_id).await?.is_none() {
                    return Err(no_application(application_id));
                }
                let token = new_token();
                let id = uuid::Uuid::new_v4().to_string();
                self.db
                    .create_token(
                        &id,
                        application_id,
                        &token_hash(&token),
                        &token_prefix(&token),
                        name,
                        now_ms(),
                    )
                    .await?;
                let apis = apis.as_deref().unwrap_or("*");
                let expires_ms = expires_at.map(|s| s.saturating_mul(1000));
                self.db.set_token_details(&id, expires_ms, apis).await?;
                Ok(json!({
                    "id": id, "application_id": application_id, "token": token,
                    "prefix": token_prefix(&token), "name": name, "apis": apis,
                    "expires_at": expires_at,
                    "note": "The token is shown only this once; only its hash is stored."
                }))
            }
            TokensCommand::List { application_id } => {
                let tokens = self.db.list_tokens(application_id.as_deref()).await?;
                Ok(json!({"tokens": tokens}))
            }
            TokensCommand::Revoke { id } => {
                if !self.db.revoke_token(id).await? {
                    return Err(AdminError::NotFound(format!("no token {id}.")));
                }
                Ok(json!({"id": id, "revoked": true}))
            }
        }
    }

    async fn show(&self, id: &str) -> Result<Value, AdminError> {
        let app = self
            .db
            .get_application(id)
            .await?
            .ok_or_else(|| no_application(id))?;
        Ok(serde_json::to_value(app).unwrap_or(Value::Null))
    }

    async fn set_limits(&self, id: &str, limits: &Limits) -> Result<(), AdminError> {
        let found = self
            .db
            .set_application_limits(
                id,
                limits.rate_per_minute,
                limits.burst,
                limits.max_concurrent,
            )
            .await?;
        if found {
            Ok(())
        } else {
            Err(no_application(id))
        }
    }
}

fn check_limits(limits: &Limits) -> Result<(), AdminError> {
    for (name, value) in [
        ("rate_per_minute", limits.rate_per_minute),
        ("burst", limits.burst),
        ("max_concurrent", limits.max_concurrent),
    ] {
        if value.is_some_and(|v| v < 1) {
            return Err(AdminError::Invalid(format!("{name} must be at least 1.")));
        }
    }
    Ok(())
}

fn no_application(id: &str) -> AdminError {
    AdminError::NotFound(format!("no application {id}."))
}

impl AdminCommand {
    /// The `/admin/` API call that runs this command on a server: method, path, JSON body.
    pub fn http_request(&self) -> (reqwest::Method, String, Option<Value>) {
        use reqwest::Method;
        let limits_json = |l: &Limits| {
            json!({"rate_per_minute": l.rate_per_minute, "burst": l.burst,
                   "max_concurrent": l.max_concurrent})
        };
        match self {
            AdminCommand::Apps(AppsCommand::Create {
                name,
                credits,
                limits,
            }) => {
                let mut body = limits_json(limits);
                body["name"] = json!(name);
                body["credits"] = json!(credits);
                (Method::POST, "/admin/apps".into(), Some(body))
            }
            AdminCommand::Apps(AppsCommand::List) => (Method::GET, "/admin/apps".into(), None),
            AdminCommand::Apps(AppsCommand::Show { id }) => {
                (Method::GET, format!("/admin/apps/{id}"), None)
            }
            AdminCommand::Apps(AppsCommand::Topup { id, credits }) => (
                Method::POST,
                format!("/admin/apps/{id}/topup"),
                Some(json!({"credits": credits})),
            ),
            AdminCommand::Apps(AppsCommand::Disable { id }) => {
                (Method::POST, format!("/admin/apps/{id}/disable"), None)
            }
            AdminCommand::Apps(AppsCommand::Enable { id }) => {
                (Method::POST, format!("/admin/apps/{id}/enable"), None)
            }
            AdminCommand::Apps(AppsCommand::Limits { id, limits }) => (
                Method::PUT,
                format!("/admin/apps/{id}/limits"),
                Some(limits_json(limits)),
            ),
            AdminCommand::Tokens(TokensCommand::Create {
                application_id,
                name,
                expires_at,
                apis,
            }) => (
                Method::POST,
                format!("/admin/apps/{application_id}/tokens"),
                Some(json!({"name": name, "expires_at": expires_at, "apis": apis})),
            ),
            AdminCommand::Tokens(TokensCommand::List { application_id }) => {
                let query = application_id
                    .as_ref()
                    .map(|id| format!("?application_id={id}"))
                    .unwrap_or_default();
                (Method::GET, format!("/admin/tokens{query}"), None)
            }
            AdminCommand::Tokens(TokensCommand::Revoke { id }) => {
                (Method::POST, format!("/admin/tokens/{id}/revoke"), None)
            }
            AdminCommand::Usage => (Method::GET, "/admin/usage".into(), None),
        }
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
    use crate::config::redact_url;
    use anyhow::Context;
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

/// Runs an admin command and prints its JSON result.
pub async fn cli(args: AdminArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let command = match &args.command {
        AdminCliCommand::MigrateDb(migrate) => {
            let summary = migrate_db(migrate).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).unwrap_or_default()
            );
            return Ok(());
        }
        AdminCliCommand::Api(command) => command,
    };
    let result = match &args.server {
        Some(server) => {
            let key = args
                .admin_key
                .as_deref()
                .context("--server needs the admin key (--admin-key or NANO_BANANA_ADMIN_KEY)")?;
            let (method, path, body) = command.http_request();
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
            let url = match (&args.database_url, &args.data_dir) {
                (Some(url), _) => url.clone(),
                (None, dir) => {
                    let dir = dir.clone().unwrap_or_else(|| "./data".into());
                    let file = dir.join("nano-banana.db");
                    if !file.exists() {
                        anyhow::bail!(
                            "no database at {} (use --data-dir or --server)",
                            file.display()
                        );
                    }
                    format!("sqlite://{}", file.display())
                }
            };
            let db = Db::connect(&url)
                .await
                .with_context(|| format!("opening {url}"))?;
            let value = Admin { db: &db }.run(command).await?;
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
