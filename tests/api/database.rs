//! The server against its database at start-up, through the real binary: an unreachable, silent
//! or refusing PostgreSQL stops the start with the address and the cause; a database migrated by
//! a newer release is refused on both databases; `--database-pool-size` bounds the connections a
//! node holds.
//!
//! These tests choose their databases themselves, whatever `NANO_BANANA_TEST_STACK` says.

use std::{process::Stdio, time::Duration};

use sqlx::Connection;

use crate::helpers::{TOKEN, fresh_postgres_schema, spawn_app_with};

/// Runs `nano-banana serve` with `args` until it exits (at most 60 s: a start that hangs fails
/// the test); its exit success and its standard error.
async fn serve_until_exit(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_nano-banana"));
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("NANO_BANANA_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("the server binary starts");
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the server gave up within 60 s instead of hanging")
        .expect("the server's output");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

#[tokio::test]
async fn an_unreachable_postgresql_stops_the_start_with_its_address_and_the_cause() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = closed_port();
    let url = format!("postgres://root@127.0.0.1:{port}/test");
    let (ok, stderr) = serve_until_exit(dir.path(), &["--database-url", &url]).await;
    assert!(!ok, "the start must fail: {stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to PostgreSQL at 127.0.0.1:{port}"))
            && stderr.to_lowercase().contains("refused"),
        "{stderr}"
    );
    assert!(!stderr.contains("pool timed out"), "{stderr}");
}

#[tokio::test]
async fn a_postgresql_that_never_answers_stops_the_start_after_the_connect_timeout() {
    // Accepts connections and says nothing, as a firewalled or hung server does.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a listener");
    let port = silent.local_addr().expect("its address").port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("postgres://root@127.0.0.1:{port}/test");
    let (ok, stderr) = serve_until_exit(dir.path(), &["--database-url", &url]).await;
    held.abort();
    assert!(!ok, "the start must fail: {stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port}: no answer within 5 s"
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_postgresql_that_refuses_the_login_stops_the_start_with_its_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = std::env::var("NANO_BANANA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned());
    let mut url = url::Url::parse(&base).expect("the test database URL");
    url.set_username("no_such_role_nano_banana")
        .expect("a URL with a user");
    let (ok, stderr) = serve_until_exit(dir.path(), &["--database-url", url.as_str()]).await;
    assert!(!ok, "the start must fail: {stderr}");
    assert!(
        stderr.contains("cannot connect to PostgreSQL at")
            && stderr.contains("no_such_role_nano_banana"),
        "{stderr}"
    );
}

/// Marks the database at `url` (already migrated) as migrated by a newer release.
async fn pretend_a_newer_release_migrated(url: &str) {
    let db = nano_banana::storage::Db::connect(url)
        .await
        .expect("the database migrates");
    db.close().await;
    if url.starts_with("sqlite:") {
        let mut connection = sqlx::SqliteConnection::connect(url)
            .await
            .expect("the SQLite file");
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES (99990001, 'from the future', TRUE, X'00', 0)",
        )
        .execute(&mut connection)
        .await
        .expect("the marker row");
    } else {
        let mut connection = sqlx::PgConnection::connect(url).await.expect("the schema");
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES (99990001, 'from the future', TRUE, '\\x00'::bytea, 0)",
        )
        .execute(&mut connection)
        .await
        .expect("the marker row");
    }
}

async fn assert_refused_as_too_new(url: &str) {
    pretend_a_newer_release_migrated(url).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (ok, stderr) = serve_until_exit(dir.path(), &["--database-url", url]).await;
    assert!(!ok, "the start must fail: {stderr}");
    assert!(
        stderr.contains(
            "the database's schema is at migration 99990001, newer than this binary knows"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_sqlite_database_from_a_newer_release_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("newer.db").display());
    assert_refused_as_too_new(&url).await;
}

#[tokio::test]
async fn a_postgresql_database_from_a_newer_release_is_refused() {
    assert_refused_as_too_new(&fresh_postgres_schema().await).await;
}

#[tokio::test]
async fn a_pool_size_of_zero_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ok, stderr) = serve_until_exit(dir.path(), &["--database-pool-size", "0"]).await;
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("--database-pool-size must be at least 1"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_pool_size_bounds_a_nodes_postgresql_connections() {
    let name = format!("nb_pool_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}&application_name={name}", fresh_postgres_schema().await);
    let app = spawn_app_with({
        let url = url.clone();
        move |c| {
            c.database_url = url;
            c.database_pool_size = 2;
        }
    })
    .await;
    // Enough concurrent requests to want more connections than the pool has.
    let requests = (0..24).map(|_| {
        app.client
            .post(format!("{}/nano-banana/images", app.address))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"prompt": "a pool of connections", "async": true}))
            .send()
    });
    for answer in futures_util::future::join_all(requests).await {
        assert_eq!(answer.expect("an answer").status(), 200);
    }
    let mut observer = sqlx::PgConnection::connect(&url).await.expect("observer");
    let held: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&name)
            .fetch_one(&mut observer)
            .await
            .expect("pg_stat_activity");
    // The pool's two, the LISTEN connection and this observer, which shares the name.
    assert!((2..=4).contains(&held), "{held} connections held");
}
