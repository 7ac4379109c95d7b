//! `nano-banana admin migrate-db`: a server's state made on SQLite through the API, copied by
//! the real binary into PostgreSQL, and served from there as if nothing had happened; a
//! non-empty target refused untouched; bad URLs refused with a clear message.
//!
//! These tests choose their databases themselves (SQLite, then PostgreSQL), whatever
//! `NANO_BANANA_TEST_STACK` says; images stay in a local folder both servers share.

use std::path::Path;

use nano_banana::{config::Config, storage::images::StorageConfig};
use serde_json::{Value, json};

use crate::helpers::{
    TOKEN, TestApp, answer, callback_receiver, fresh_postgres_schema, spawn_app_with,
};

const ADMIN_KEY: &str = "migrate-admin-key";

/// A server on `database_url` whose images live in `dir`, with the admin API on.
async fn app_on(database_url: &str, dir: &Path) -> TestApp {
    let database_url = database_url.to_owned();
    let dir = dir.to_path_buf();
    spawn_app_with(move |c: &mut Config| {
        c.database_url = database_url;
        c.storage = StorageConfig::Local(dir.join("images"));
        c.admin_key = Some(ADMIN_KEY.into());
    })
    .await
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("nano-banana.db").display())
}

async fn retrieve(app: &TestApp, token: &str, id: &str) -> Value {
    let answer = app
        .post(
            "/nano-banana/tasks",
            Some(token),
            json!({"action": "retrieve", "id": id}).to_string(),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

/// What `admin migrate-db` printed: success, the JSON summary (or `Null`), stderr.
struct Migration {
    success: bool,
    summary: Value,
    stderr: String,
}

async fn migrate_db(from: &str, to: &str) -> Migration {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_nano-banana"))
        .args(["admin", "migrate-db", "--from", from, "--to", to])
        // The admin CLI reads these; they must not change what migrate-db does.
        .env_remove("NANO_BANANA_DATABASE_URL")
        .env_remove("NANO_BANANA_ADMIN_SERVER")
        .output()
        .await
        .expect("the binary runs");
    Migration {
        success: output.status.success(),
        summary: serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `nano-banana admin --database-url URL …` (direct mode), as JSON.
async fn admin_cli(database_url: &str, args: &[&str]) -> Value {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_nano-banana"))
        .args(["admin", "--database-url", database_url])
        .args(args)
        .env_remove("NANO_BANANA_ADMIN_SERVER")
        .output()
        .await
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "admin {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON from the admin CLI")
}

fn assert_counts(summary: &Value, expected: &[(&str, i64)]) {
    assert_eq!(summary["verified"], true, "{summary}");
    for (table, rows) in expected {
        assert_eq!(summary["tables"][table], *rows, "{table}: {summary}");
    }
    assert_eq!(
        summary["tables"].as_object().map(|t| t.len()),
        Some(9),
        "every table: {summary}"
    );
}

#[tokio::test]
async fn a_sqlite_server_moves_to_postgresql_with_its_tokens_tasks_and_balances() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = sqlite_url(dir.path());
    let receiver = callback_receiver(0, false).await;

    // ---- state made through the API, on SQLite ----
    let old = app_on(&sqlite, dir.path()).await;
    let created = old
        .admin(
            reqwest::Method::POST,
            "/admin/apps",
            Some(json!({"name": "customer", "credits": 25, "max_concurrent": 3})),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let customer = created.body["id"].as_str().expect("an id").to_owned();
    let token = old
        .admin(
            reqwest::Method::POST,
            &format!("/admin/apps/{customer}/tokens"),
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(token.status, 200, "{}", token.body);
    let customer_token = token.body["token"].as_str().expect("a token").to_owned();
    let topup = old
        .admin(
            reqwest::Method::POST,
            &format!("/admin/apps/{customer}/topup"),
            Some(json!({"credits": 5})),
        )
        .await;
    assert_eq!(topup.status, 200, "{}", topup.body);

    // A synchronous task of the bootstrap application, with an idempotency key.
    let sync = old
        .client
        .post(format!("{}/nano-banana/images", old.address))
        .bearer_auth(TOKEN)
        .header("idempotency-key", "migrate-key-1")
        .json(&json!({"prompt": "a plum", "count": 2}))
        .send()
        .await
        .expect("request sent");
    let sync = answer(sync).await;
    assert_eq!(sync.status, 200, "{}", sync.body);
    let sync_id = sync.body["task_id"].as_str().expect("a task id").to_owned();
    // An asynchronous task of the customer with a callback, waited for until it is delivered.
    let with_callback = old
        .post(
            "/nano-banana/images",
            Some(&customer_token),
            json!({"prompt": "a pear", "async": true, "callback_url": receiver.url()}).to_string(),
        )
        .await;
    assert_eq!(with_callback.status, 200, "{}", with_callback.body);
    let callback_id = with_callback.body["task_id"]
        .as_str()
        .expect("a task id")
        .to_owned();
    receiver.wait_for(1).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while old.db.callback_status(&callback_id).await.ok() != Some(Some((1, "delivered".to_owned())))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the callback was not recorded as delivered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A failed task (an image URL nobody serves): refunded, so ledger rows of both signs.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let failed = old
        .post(
            "/nano-banana/images",
            Some(&customer_token),
            json!({"action": "edit", "prompt": "x", "async": true,
                   "image_urls": [format!("http://127.0.0.1:{closed}/gone.png")]})
            .to_string(),
        )
        .await;
    let failed_id = failed.body["task_id"]
        .as_str()
        .expect("a task id")
        .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let record = retrieve(&old, &customer_token, &failed_id).await;
        if record["state"] == "failed" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the task did not fail: {record}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let tasks = [
        (TOKEN.to_owned(), sync_id.clone()),
        (customer_token.clone(), callback_id.clone()),
        (customer_token.clone(), failed_id.clone()),
    ];
    let mut records = Vec::new();
    for (token, id) in &tasks {
        records.push(retrieve(&old, token, id).await);
    }
    let apps_before = old.admin(reqwest::Method::GET, "/admin/apps", None).await;
    let usage_before = old.admin(reqwest::Method::GET, "/admin/usage", None).await;
    let image_url = sync.body["data"][0]["image_url"]
        .as_str()
        .expect("an image URL")
        .to_owned();
    let image_path = image_url
        .strip_prefix(&old.address)
        .expect("an image served by the server")
        .to_owned();
    let image_before = old.get(&image_path).await.bytes().await.expect("image");
    old.stop().await;

    // ---- the copy ----
    let postgres = fresh_postgres_schema().await;
    let migration = migrate_db(&sqlite, &postgres).await;
    assert!(migration.success, "migrate-db failed: {}", migration.stderr);
    assert_counts(
        &migration.summary,
        &[
            ("applications", 2),
            ("tokens", 2),
            ("tasks", 3),
            ("task_requests", 3),
            ("callbacks", 1),
            ("callback_attempts", 1),
            ("idempotency_keys", 1),
        ],
    );
    assert!(
        migration.summary["tables"]["ledger"].as_i64() >= Some(6),
        "two openings, a top-up, three reservations and a refund: {}",
        migration.summary
    );

    // ---- the same state, served from PostgreSQL ----
    let new = app_on(&postgres, dir.path()).await;
    for ((token, id), before) in tasks.iter().zip(&records) {
        assert_eq!(&retrieve(&new, token, id).await, before, "task {id}");
    }
    let apps_after = new.admin(reqwest::Method::GET, "/admin/apps", None).await;
    assert_eq!(
        apps_after.body, apps_before.body,
        "balances and ledger sums"
    );
    for app in apps_after.body["applications"]
        .as_array()
        .expect("applications")
    {
        assert_eq!(app["credits"], app["ledger_sum"], "{app}");
    }
    let usage_after = new.admin(reqwest::Method::GET, "/admin/usage", None).await;
    assert_eq!(usage_after.body, usage_before.body);
    // The image folder stayed where it was; the route serves the same bytes.
    let image_after = new.get(&image_path).await;
    assert_eq!(image_after.status(), 200);
    assert_eq!(image_after.bytes().await.expect("image"), image_before);
    // The idempotency key still answers with the original task.
    let repeated = new
        .client
        .post(format!("{}/nano-banana/images", new.address))
        .bearer_auth(TOKEN)
        .header("idempotency-key", "migrate-key-1")
        .json(&json!({"prompt": "a plum", "count": 2}))
        .send()
        .await
        .expect("request sent");
    let repeated = answer(repeated).await;
    assert_eq!(repeated.status, 200, "{}", repeated.body);
    assert_eq!(repeated.body["task_id"], sync_id.as_str());
    // The old token works and new work is billed on the copied balance.
    let credits_before = apps_after.body["applications"]
        .as_array()
        .and_then(|apps| apps.iter().find(|a| a["id"] == customer.as_str()))
        .and_then(|a| a["credits"].as_i64())
        .expect("the customer's balance");
    let fresh = new
        .post(
            "/nano-banana/images",
            Some(&customer_token),
            json!({"prompt": "a fig"}).to_string(),
        )
        .await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    let shown = new
        .admin(
            reqwest::Method::GET,
            &format!("/admin/apps/{customer}"),
            None,
        )
        .await;
    assert_eq!(shown.body["credits"], credits_before - 1, "{}", shown.body);
    assert_eq!(shown.body["ledger_sum"], shown.body["credits"]);
    // The new task's ledger row took an id after the copied ones (or PostgreSQL would have
    // refused a duplicate key), and it is copied back out like the rest: PostgreSQL → SQLite.
    let ledger_rows = migration.summary["tables"]["ledger"]
        .as_i64()
        .expect("a count");
    new.stop().await;
    let copy_again = tempfile::tempdir().expect("temp dir");
    let again = migrate_db(&postgres, &sqlite_url(copy_again.path())).await;
    assert!(again.success, "PostgreSQL → SQLite: {}", again.stderr);
    assert_eq!(
        again.summary["tables"]["ledger"],
        ledger_rows + 1,
        "{}",
        again.summary
    );
}

#[tokio::test]
async fn a_target_with_data_is_refused_and_left_as_it_was() {
    let first = tempfile::tempdir().expect("temp dir");
    let second = tempfile::tempdir().expect("temp dir");
    for (dir, credits) in [(first.path(), "10"), (second.path(), "20")] {
        admin_cli(
            &sqlite_url(dir),
            &["apps", "create", "--name", "shop", "--credits", credits],
        )
        .await;
    }
    let target = fresh_postgres_schema().await;
    let copied = migrate_db(&sqlite_url(first.path()), &target).await;
    assert!(copied.success, "{}", copied.stderr);
    assert_counts(&copied.summary, &[("applications", 1), ("ledger", 1)]);
    let before = admin_cli(&target, &["apps", "list"]).await;

    let refused = migrate_db(&sqlite_url(second.path()), &target).await;
    assert!(!refused.success, "a second copy into the same target");
    assert!(
        refused
            .stderr
            .contains("the target database is not empty (applications: 1 row, ledger: 1 row)"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("panicked"), "{}", refused.stderr);
    assert_eq!(refused.summary, Value::Null, "no summary on failure");
    assert_eq!(admin_cli(&target, &["apps", "list"]).await, before);

    // PostgreSQL → PostgreSQL and SQLite → SQLite copy the same rows.
    let other = fresh_postgres_schema().await;
    let pg_to_pg = migrate_db(&target, &other).await;
    assert!(pg_to_pg.success, "{}", pg_to_pg.stderr);
    assert_eq!(pg_to_pg.summary["tables"], copied.summary["tables"]);
    assert_eq!(admin_cli(&other, &["apps", "list"]).await, before);
    let third = tempfile::tempdir().expect("temp dir");
    let sqlite_to_sqlite = migrate_db(&sqlite_url(second.path()), &sqlite_url(third.path())).await;
    assert!(sqlite_to_sqlite.success, "{}", sqlite_to_sqlite.stderr);
    assert_counts(
        &sqlite_to_sqlite.summary,
        &[("applications", 1), ("ledger", 1)],
    );
}

/// Runs `statement` on a SQLite file behind the server's back, foreign keys off: the damage a
/// copy must refuse to carry over.
async fn tamper(dir: &Path, statement: &str) {
    use sqlx::{ConnectOptions, Connection};
    let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("nano-banana.db"))
        .foreign_keys(false)
        .connect()
        .await
        .expect("the SQLite file opens");
    sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut connection)
        .await
        .expect("the statement runs");
    let _ = connection.close().await;
}

#[tokio::test]
async fn a_copy_that_fails_halfway_leaves_the_target_empty() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = sqlite_url(dir.path());
    admin_cli(
        &source,
        &["apps", "create", "--name", "shop", "--credits", "10"],
    )
    .await;
    // A token of an application that does not exist: applications are copied, then PostgreSQL
    // rejects the token's foreign key.
    tamper(
        dir.path(),
        "INSERT INTO tokens (id, application_id, hash, prefix, created_at) \
         VALUES ('t1', 'ghost', 'h1', 'nb-x', 0)",
    )
    .await;
    let target = fresh_postgres_schema().await;
    let failed = migrate_db(&source, &target).await;
    assert!(!failed.success, "a dangling token was copied");
    assert!(
        failed.stderr.starts_with("error: copying "),
        "{}",
        failed.stderr
    );
    assert!(!failed.stderr.contains("panicked"), "{}", failed.stderr);
    assert_eq!(
        admin_cli(&target, &["apps", "list"]).await,
        json!({"applications": []}),
        "the application copied before the failure was rolled back"
    );

    // A balance that disagrees with its ledger is not carried over either.
    tamper(dir.path(), "DELETE FROM tokens WHERE id = 't1'").await;
    tamper(dir.path(), "UPDATE applications SET credits = credits + 1").await;
    let refused = migrate_db(&source, &target).await;
    assert!(!refused.success, "an unbalanced application was copied");
    assert!(
        refused
            .stderr
            .contains("in the source, credits differ from the ledger sum"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        admin_cli(&target, &["apps", "list"]).await,
        json!({"applications": []})
    );
}

#[tokio::test]
async fn bad_urls_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = sqlite_url(&dir.path().join("nowhere"));
    let target = sqlite_url(dir.path());
    let source_dir = tempfile::tempdir().expect("temp dir");
    let source = sqlite_url(source_dir.path());
    admin_cli(&source, &["apps", "list"]).await;
    let cases = [
        (missing.as_str(), target.as_str(), "no source database"),
        (
            "mysql://root@127.0.0.1/db",
            target.as_str(),
            "unsupported database URL",
        ),
        (
            source.as_str(),
            "redis://127.0.0.1:6379",
            "unsupported database URL",
        ),
        (source.as_str(), source.as_str(), "are the same database"),
    ];
    for (from, to, message) in cases {
        let migration = migrate_db(from, to).await;
        assert!(!migration.success, "{from} → {to}");
        assert!(
            migration.stderr.starts_with("error: ") && migration.stderr.contains(message),
            "{from} → {to}: {}",
            migration.stderr
        );
        assert!(
            !migration.stderr.contains("panicked"),
            "{}",
            migration.stderr
        );
    }
    assert!(
        !dir.path().join("nowhere").exists() && !dir.path().join("nano-banana.db").exists(),
        "no database file was created by a refused copy"
    );
}

/// A task as a version before `task_requests` wrote it: its request in the `tasks` row.
const OLD_TASK: &str = "\
    INSERT INTO applications (id, name, user_id, credits, created_at) VALUES ('app', 'old', 'u', 0, 0);
    INSERT INTO tasks (id, trace_id, application_id, user_id, api_id, credential_id, request, state,
        created_at, run_at)
    VALUES ('task', 'trace', 'app', 'u', 'api', 'token', '{\"prompt\":\"kept\"}', 'pending', 0, 0);";

/// The migrations of `folder` before the one that moved requests out of `tasks`.
async fn migrations_before_task_requests(
    folder: &str,
) -> (tempfile::TempDir, sqlx::migrate::Migrator) {
    let old = tempfile::tempdir().expect("a temporary folder");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    for entry in std::fs::read_dir(&source).expect("the migrations folder") {
        let path = entry.expect("a migration").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if !name.contains("task_requests") && !name.contains("input_objects") {
            std::fs::copy(&path, old.path().join(name)).expect("copy a migration");
        }
    }
    let migrator = sqlx::migrate::Migrator::new(old.path())
        .await
        .expect("the old migrations");
    (old, migrator)
}

/// Makes `$pool`'s database what the earlier version left: its schema and `OLD_TASK`.
macro_rules! old_database {
    ($pool:expr, $folder:expr) => {{
        let (_old, migrator) = migrations_before_task_requests($folder).await;
        migrator.run(&$pool).await.expect("the old schema");
        sqlx::raw_sql(OLD_TASK)
            .execute(&$pool)
            .await
            .expect("an old task");
        $pool.close().await;
    }};
}

/// Opening a database of the earlier version with this one keeps every task's request.
async fn assert_upgrade_keeps_the_request(url: &str) {
    let db = nano_banana::storage::Db::connect(url)
        .await
        .expect("the upgraded database");
    let task = db
        .get_task("task", "app")
        .await
        .expect("a query")
        .expect("the task");
    assert_eq!(task.request, "{\"prompt\":\"kept\"}");
    assert_eq!(task.state, "pending");
    db.close().await;
}

#[tokio::test]
async fn upgrading_a_sqlite_database_keeps_every_tasks_request() {
    use std::str::FromStr;
    let dir = tempfile::tempdir().expect("a temporary folder");
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
        .expect("a SQLite URL")
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("SQLite");
    old_database!(pool, "migrations/sqlite");
    assert_upgrade_keeps_the_request(&url).await;
}

#[tokio::test]
async fn upgrading_a_postgresql_database_keeps_every_tasks_request() {
    let url = fresh_postgres_schema().await;
    let pool = sqlx::PgPool::connect(&url).await.expect("PostgreSQL");
    old_database!(pool, "migrations/postgres");
    assert_upgrade_keeps_the_request(&url).await;
}
