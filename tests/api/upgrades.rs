//! Upgrades: a database left by the oldest release (each folder's `0001_init.sql` only), with
//! an application, a token, finished and pending tasks, a callback still owed and (on
//! PostgreSQL) the ledger, all written in that schema's own shape, then served by this
//! binary, which applies every later migration at start (likewise from every later release's
//! schema); and nodes starting together on one database, which migrate it exactly once.
//!
//! A database newer than the binary is refused in tests/api/database.rs. These tests choose
//! their databases themselves, whatever `NANO_BANANA_TEST_STACK` says; images stay in a local
//! folder, where the old release left them.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use nano_banana::{
    accounts::token_hash, api::IMAGES_API_ID, config::Config, storage::images::StorageConfig,
};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, answer, callback_receiver, fresh_postgres_schema, png, spawn_app_with,
};

const ADMIN_KEY: &str = "upgrade-admin-key";

/// The old release's token, known in clear to its client only; the database keeps its hash.
const OLD_TOKEN: &str = "nb-OldReleaseToken0123456789abcdefghijklmn";

/// A server on `database_url` whose images live in `images`, with the admin API on.
async fn server_on(database_url: &str, images: &Path) -> TestApp {
    let database_url = database_url.to_owned();
    let images = images.to_path_buf();
    spawn_app_with(move |c: &mut Config| {
        c.database_url = database_url;
        c.storage = StorageConfig::Local(images);
        c.admin_key = Some(ADMIN_KEY.into());
    })
    .await
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("nano-banana.db").display())
}

/// A migrator of the first `count` migrations of `folder` (sorted by version), from a copy of
/// them: what a release that had only those left in `_sqlx_migrations`, checksums included.
async fn first_migrations(
    folder: &str,
    count: usize,
) -> (tempfile::TempDir, sqlx::migrate::Migrator) {
    let copy = tempfile::tempdir().expect("a temporary folder");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut names: Vec<String> = std::fs::read_dir(&source)
        .expect("the migrations folder")
        .map(|entry| {
            entry
                .expect("a migration")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".sql"))
        .collect();
    names.sort();
    for name in names.iter().take(count) {
        std::fs::copy(source.join(name), copy.path().join(name)).expect("copy a migration");
    }
    let migrator = sqlx::migrate::Migrator::new(copy.path())
        .await
        .expect("the old migrations");
    (copy, migrator)
}

/// Leaves in `$pool`'s database what a release with the first `$count` migrations of `$folder`
/// left: its schema, `$rows` in it.
macro_rules! old_release {
    ($pool:expr, $folder:expr, $count:expr, $rows:expr) => {{
        let (_copy, old) = first_migrations($folder, $count).await;
        old.run(&$pool).await.expect("the old schema");
        sqlx::raw_sql(sqlx::AssertSqlSafe($rows))
            .execute(&$pool)
            .await
            .expect("the old release's rows");
    }};
}

/// How many migrations this binary knows for `folder`.
fn migration_count(folder: &str) -> usize {
    std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(folder))
        .expect("the migrations folder")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".sql"))
        })
        .count()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the old release left: the ids and times the checks compare with.
struct OldState {
    image_key: String,
    image: Vec<u8>,
    succeeded: Value,
    failed: Value,
    /// The body of the callback still owed for the failed task.
    callback_body: Value,
    pending_id: &'static str,
}

/// The rows of the old release, in the columns `0001_init.sql` has on both databases (the
/// PostgreSQL one has billing's too, which keep their defaults here and are set by
/// `OLD_BILLING`). A month-old succeeded task, a failed one whose callback is still owed, and a
/// task accepted a minute before the old server stopped, never started.
/// `requests_apart`: the release kept requests in `task_requests` (`0004_task_requests` on).
fn old_rows(receiver_url: &str, requests_apart: bool) -> (String, OldState) {
    let now = now_ms();
    let month_ago = now - 30 * 24 * 3600 * 1000;
    let minute_ago = now - 60_000;
    let image_key = format!("{}.png", uuid::Uuid::new_v4());
    let succeeded_request = json!({"prompt": "an old plum", "model": "nano-banana"});
    let succeeded_response = json!({
        "success": true, "task_id": "task-succeeded", "trace_id": "trace-succeeded",
        "data": [{"prompt": "an old plum",
                  "image_url": format!("http://gateway.example:8080/images/{image_key}")}],
    });
    let failed_request = json!({"prompt": "an old pear", "action": "edit", "async": true,
        "image_urls": ["http://127.0.0.1:9/gone.png"], "callback_url": receiver_url});
    let failed_response = json!({
        "success": false, "task_id": "task-failed", "trace_id": "trace-failed",
        "error": {"code": "bad_request",
                  "message": "image_urls[0] cannot be fetched: connection refused."},
    });
    let pending_request = json!({"prompt": "a pending fig", "async": true});
    // The request's value in the `tasks` row, when the release kept it there.
    let inline = |request: &Value| {
        if requests_apart {
            String::new()
        } else {
            format!("'{request}',")
        }
    };
    let (s_created, s_started, s_finished) = (month_ago, month_ago + 250, month_ago + 4_250);
    let (f_created, f_started, f_finished) =
        (month_ago + 10_000, month_ago + 10_100, month_ago + 10_600);
    let sql = format!(
        "INSERT INTO applications (id, name, user_id, credits, disabled, created_at) \
             VALUES ('app-old', 'shop', 'user-old', 8, 0, {month_ago});
         INSERT INTO tokens (id, application_id, hash, prefix, name, apis, created_at) \
             VALUES ('token-old', 'app-old', '{hash}', '{prefix}', 'ci', '*', {month_ago});
         INSERT INTO tasks (id, trace_id, application_id, user_id, api_id, credential_id, \
             {request_column} state, http_status, response, callback_url, created_at, started_at, finished_at, \
             run_at, attempts) VALUES \
           ('task-succeeded', 'trace-succeeded', 'app-old', 'user-old', '{IMAGES_API_ID}', \
             'token-old', {succeeded_value} 'succeeded', 200, '{succeeded_response}', NULL, \
             {s_created}, {s_started}, {s_finished}, {s_created}, 1), \
           ('task-failed', 'trace-failed', 'app-old', 'user-old', '{IMAGES_API_ID}', \
             'token-old', {failed_value} 'failed', 400, '{failed_response}', \
             '{receiver_url}', {f_created}, {f_started}, {f_finished}, {f_created}, 1), \
           ('task-pending', 'trace-pending', 'app-old', 'user-old', '{IMAGES_API_ID}', \
             'token-old', {pending_value} 'pending', NULL, NULL, NULL, \
             {minute_ago}, NULL, NULL, {minute_ago}, 0);
         INSERT INTO callbacks (id, task_id, url, body, state, attempts, next_attempt_at, \
             last_error, created_at) VALUES ('callback-old', 'task-failed', '{receiver_url}', \
             '{failed_response}', 'pending', 1, {minute_ago}, 'HTTP 503', {f_finished});
         INSERT INTO callback_attempts (callback_id, attempt, at, status, latency_ms, error) \
             VALUES ('callback-old', 1, {f_finished}, 503, 12, 'HTTP 503');
         {task_requests}",
        hash = token_hash(OLD_TOKEN),
        prefix = OLD_TOKEN.chars().take(8).collect::<String>(),
        request_column = if requests_apart { "" } else { "request," },
        succeeded_value = inline(&succeeded_request),
        failed_value = inline(&failed_request),
        pending_value = inline(&pending_request),
        task_requests = if requests_apart {
            format!(
                "INSERT INTO task_requests (task_id, request) VALUES \
                 ('task-succeeded', '{succeeded_request}'), ('task-failed', '{failed_request}'), \
                 ('task-pending', '{pending_request}');"
            )
        } else {
            String::new()
        },
    );
    let record =
        |id: &str, trace: &str, request: &Value, response: &Value, times: (i64, i64, i64)| {
            let seconds = |ms: i64| ms as f64 / 1000.0;
            json!({
                "api_id": IMAGES_API_ID, "application_id": "app-old",
                "created_at": seconds(times.0), "credential_id": "token-old",
                "elapsed": seconds(times.2 - times.1), "finished_at": seconds(times.2),
                "id": id, "request": request, "response": response,
                "started_at": seconds(times.1), "state": response["success"]
                    .as_bool()
                    .map(|ok| if ok { "succeeded" } else { "failed" }),
                "trace_id": trace, "type": "images", "user_id": "user-old",
            })
        };
    let state = OldState {
        image: png(16, 16),
        succeeded: record(
            "task-succeeded",
            "trace-succeeded",
            &succeeded_request,
            &succeeded_response,
            (s_created, s_started, s_finished),
        ),
        failed: record(
            "task-failed",
            "trace-failed",
            &failed_request,
            &failed_response,
            (f_created, f_started, f_finished),
        ),
        callback_body: failed_response,
        pending_id: "task-pending",
        image_key,
    };
    (sql, state)
}

/// The first PostgreSQL release billed: each task reserved its price (1 credit) and the failed
/// one was refunded, so its application's 8 credits are the sum of these rows. (SQLite's
/// `0003_billing` writes the opening balance itself.)
const OLD_BILLING: &str = "\
    UPDATE tasks SET model = 'nano-banana', reserved = 1;
    UPDATE tasks SET charged = 1, images = 1 WHERE id = 'task-succeeded';
    UPDATE tasks SET charged = 0, failed_images = 1 WHERE id = 'task-failed';
    INSERT INTO ledger (application_id, task_id, amount, reason, created_at) VALUES
        ('app-old', NULL, 10, 'opening balance', 0),
        ('app-old', 'task-succeeded', -1, 'reserve', 1),
        ('app-old', 'task-failed', -1, 'reserve', 2),
        ('app-old', 'task-failed', 1, 'refund', 3),
        ('app-old', 'task-pending', -1, 'reserve', 4);";

/// The image the old release stored for its succeeded task, where its local store put it.
fn write_old_image(images: &Path, state: &OldState) {
    std::fs::create_dir_all(images).expect("the image folder");
    std::fs::write(images.join(&state.image_key), &state.image).expect("the old image");
}

async fn retrieve(app: &TestApp, id: &str) -> Value {
    let answer = app
        .post(
            "/nano-banana/tasks",
            Some(OLD_TOKEN),
            json!({"action": "retrieve", "id": id}).to_string(),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

/// The application's balance and the sum of its ledger, through the admin API.
async fn balance(app: &TestApp) -> (i64, i64) {
    let shown = app
        .admin(reqwest::Method::GET, "/admin/apps/app-old", None)
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    (
        shown.body["credits"].as_i64().expect("credits"),
        shown.body["ledger_sum"].as_i64().expect("a ledger sum"),
    )
}

/// Everything the old release left, checked over HTTP with its token on the upgraded server;
/// then the pending task worked and a new generation billed. `credits` is the balance the old
/// release left.
async fn assert_the_old_state_is_served(
    app: &TestApp,
    state: &OldState,
    receiver: &nano_banana_testkit::CallbackReceiver,
    credits: i64,
) {
    assert_eq!(retrieve(app, "task-succeeded").await, state.succeeded);
    assert_eq!(retrieve(app, "task-failed").await, state.failed);
    let batch = app
        .post(
            "/nano-banana/tasks",
            Some(OLD_TOKEN),
            json!({"action": "retrieve_batch", "ids": ["task-failed", "task-succeeded"]})
                .to_string(),
        )
        .await;
    assert_eq!(batch.status, 200, "{}", batch.body);
    assert_eq!(batch.body["count"], 2, "{}", batch.body);
    assert_eq!(batch.body["items"][1], state.succeeded);

    // The old image, by the path of the URL the old release answered with.
    let image = app.get(&format!("/images/{}", state.image_key)).await;
    assert_eq!(image.status(), 200);
    assert_eq!(image.bytes().await.expect("image bytes"), state.image);

    // The callback the old release still owed is delivered, with the body it stored.
    let delivered = receiver.wait_for(1).await;
    assert_eq!(delivered[0].1, state.callback_body);

    // The task accepted just before the old release stopped is worked (placeholder mode).
    let pending = crate::helpers::wait_for_task_of(app, OLD_TOKEN, state.pending_id).await;
    assert_eq!(pending["state"], "succeeded", "{pending}");
    assert_eq!(
        pending["request"],
        json!({"prompt": "a pending fig", "async": true})
    );
    let url = pending["response"]["data"][0]["image_url"]
        .as_str()
        .expect("an image URL");
    assert_eq!(app.get(url).await.status(), 200);

    let (balance_now, ledger_sum) = balance(app).await;
    assert_eq!(balance_now, ledger_sum, "balance == the sum of the ledger");
    assert!(balance_now <= credits, "{balance_now} > {credits}");

    // New work with the old token, billed on the old balance.
    let fresh = app
        .client
        .post(format!("{}/nano-banana/images", app.address))
        .bearer_auth(OLD_TOKEN)
        .json(&json!({"prompt": "a new quince"}))
        .send()
        .await
        .expect("request sent");
    let fresh = answer(fresh).await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    let url = fresh.body["data"][0]["image_url"]
        .as_str()
        .expect("an image URL");
    assert_eq!(app.get(url).await.status(), 200);
    let (after, ledger_sum) = balance(app).await;
    assert_eq!(after, ledger_sum, "balance == the sum of the ledger");
    assert_eq!(after, balance_now - 1, "the new image was billed");
}

/// `_sqlx_migrations` after the server started: every version this binary knows, once each.
macro_rules! assert_migrated_once {
    ($pool:expr, $folder:expr) => {{
        let versions: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT version, COUNT(*) FROM _sqlx_migrations GROUP BY version ORDER BY version",
        )
        .fetch_all(&$pool)
        .await
        .expect("the migrations table");
        assert_eq!(versions.len(), migration_count($folder), "{versions:?}");
        assert!(versions.iter().all(|(_, n)| *n == 1), "{versions:?}");
        let failed: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE NOT success")
                .fetch_one(&$pool)
                .await
                .expect("the migrations table");
        assert_eq!(failed, 0);
    }};
}

async fn sqlite_pool(url: &str) -> sqlx::SqlitePool {
    use std::str::FromStr;
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
        .expect("a SQLite URL")
        .create_if_missing(true);
    sqlx::SqlitePool::connect_with(options)
        .await
        .expect("SQLite")
}

#[tokio::test]
async fn a_sqlite_database_of_the_oldest_release_is_upgraded_and_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = sqlite_url(dir.path());
    let receiver = callback_receiver(0, false).await;
    let (rows, state) = old_rows(&receiver.url(), false);

    let pool = sqlite_pool(&url).await;
    old_release!(pool, "migrations/sqlite", 1, rows);
    pool.close().await;
    write_old_image(&dir.path().join("images"), &state);

    let app = server_on(&url, &dir.path().join("images")).await;
    assert_the_old_state_is_served(&app, &state, &receiver, 8).await;
    app.stop().await;
    let pool = sqlite_pool(&url).await;
    assert_migrated_once!(pool, "migrations/sqlite");
    pool.close().await;
}

#[tokio::test]
async fn a_postgresql_database_of_the_oldest_release_is_upgraded_and_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = fresh_postgres_schema().await;
    let receiver = callback_receiver(0, false).await;
    let (rows, state) = old_rows(&receiver.url(), false);

    let pool = sqlx::PgPool::connect(&url).await.expect("PostgreSQL");
    old_release!(pool, "migrations/postgres", 1, rows + OLD_BILLING);
    pool.close().await;
    write_old_image(&dir.path().join("images"), &state);

    let app = server_on(&url, &dir.path().join("images")).await;
    assert_the_old_state_is_served(&app, &state, &receiver, 8).await;
    app.stop().await;
    let pool = sqlx::PgPool::connect(&url).await.expect("PostgreSQL");
    assert_migrated_once!(pool, "migrations/postgres");
    pool.close().await;
}

/// The old rows of the release `count`, served by this binary: the succeeded task as it was,
/// the pending one worked, the balance still the sum of the ledger.
async fn assert_release_upgrades(url: &str, images: &Path, state: &OldState, count: usize) {
    write_old_image(images, state);
    let app = server_on(url, images).await;
    assert_eq!(
        retrieve(&app, "task-succeeded").await,
        state.succeeded,
        "release {count}"
    );
    let pending = crate::helpers::wait_for_task_of(&app, OLD_TOKEN, state.pending_id).await;
    assert_eq!(pending["state"], "succeeded", "release {count}: {pending}");
    let (credits, ledger_sum) = balance(&app).await;
    assert_eq!(credits, ledger_sum, "release {count}");
    app.stop().await;
}

/// A SQLite database left by each release in turn (the first 1, 2, … migrations), with the old
/// release's rows in it, is upgraded by this binary and serves them.
#[tokio::test]
async fn a_sqlite_database_of_every_release_is_upgraded() {
    for count in 1..migration_count("migrations/sqlite") {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = sqlite_url(dir.path());
        let pool = sqlite_pool(&url).await;
        // The columns every release has; from `0004_task_requests` on, requests live apart.
        let (rows, state) = old_rows("http://127.0.0.1:9/callback", count >= 4);
        // From `0003_billing` on, a release billed what it accepted.
        let rows = if count >= 3 { rows + OLD_BILLING } else { rows };
        old_release!(pool, "migrations/sqlite", count, rows);
        pool.close().await;
        assert_release_upgrades(&url, &dir.path().join("images"), &state, count).await;
    }
}

/// The same for each PostgreSQL release (billing from the first; requests apart from
/// `0002_task_requests` on).
#[tokio::test]
async fn a_postgresql_database_of_every_release_is_upgraded() {
    for count in 1..migration_count("migrations/postgres") {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = fresh_postgres_schema().await;
        let pool = sqlx::PgPool::connect(&url).await.expect("PostgreSQL");
        let (rows, state) = old_rows("http://127.0.0.1:9/callback", count >= 2);
        old_release!(pool, "migrations/postgres", count, rows + OLD_BILLING);
        pool.close().await;
        assert_release_upgrades(&url, &dir.path().join("images"), &state, count).await;
    }
}

/// Three nodes started at the same moment on one new database: all come up, the migrations
/// ran once, and each serves.
async fn nodes_starting_together(url: &str, images: &Path) {
    let nodes = futures_util::future::join_all((0..3).map(|_| server_on(url, images))).await;
    for node in &nodes {
        let ready = node.get("/readyz").await;
        assert_eq!(
            ready.status(),
            200,
            "{}",
            ready.text().await.unwrap_or_default()
        );
        let made = node.post_images(json!({"prompt": "a node's plum"})).await;
        assert_eq!(made.status, 200, "{}", made.body);
        let url = made.body["data"][0]["image_url"]
            .as_str()
            .expect("an image URL");
        // Any node serves what another made: one database, one image folder.
        assert_eq!(
            nodes[0]
                .get(url.trim_start_matches(&node.address))
                .await
                .status(),
            200
        );
    }
    let tokens = nodes[0]
        .admin(reqwest::Method::GET, "/admin/apps", None)
        .await;
    assert_eq!(
        tokens.body["applications"].as_array().map(Vec::len),
        Some(1),
        "one bootstrap application: {}",
        tokens.body
    );
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_together_on_one_postgresql_schema_migrate_it_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = fresh_postgres_schema().await;
    nodes_starting_together(&url, &dir.path().join("images")).await;
    let pool = sqlx::PgPool::connect(&url).await.expect("PostgreSQL");
    assert_migrated_once!(pool, "migrations/postgres");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_together_on_one_sqlite_file_migrate_it_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = sqlite_url(dir.path());
    nodes_starting_together(&url, &dir.path().join("images")).await;
    let pool = sqlite_pool(&url).await;
    assert_migrated_once!(pool, "migrations/sqlite");
    pool.close().await;
}

/// Nodes upgrading one old database together: the later migrations still run once, and the old
/// rows survive them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_upgrading_one_old_postgresql_schema_together_migrate_it_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = fresh_postgres_schema().await;
    let (rows, state) = old_rows("http://127.0.0.1:9/callback", false);
    let pool = sqlx::PgPool::connect(&url).await.expect("PostgreSQL");
    old_release!(pool, "migrations/postgres", 1, rows + OLD_BILLING);
    let images = dir.path().join("images");
    write_old_image(&images, &state);
    let nodes = futures_util::future::join_all((0..3).map(|_| server_on(&url, &images))).await;
    for node in &nodes {
        assert_eq!(retrieve(node, "task-succeeded").await, state.succeeded);
    }
    assert_migrated_once!(pool, "migrations/postgres");
    pool.close().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while retrieve(&nodes[0], state.pending_id).await["state"] != "succeeded" {
        assert!(Instant::now() < deadline, "the pending task was not worked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for node in nodes {
        node.stop().await;
    }
}
