//! `nano-banana admin backup`: a snapshot of a running server's SQLite database, taken by the
//! real binary while tasks are being written, restores into a server whose books balance and
//! which serves every task the snapshot held, images included; refusals are clear.
//!
//! These tests choose their databases themselves (SQLite), whatever `NANO_BANANA_TEST_STACK` says.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use nano_banana::{config::Config, storage::images::StorageConfig};
use serde_json::{Value, json};
use sqlx::{Connection, Row};

use crate::helpers::{TOKEN, TestApp, fresh_postgres_schema, spawn_app_with};

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// A server on the SQLite file `db` whose images live in `images`.
async fn app_on(db: &Path, images: &Path) -> TestApp {
    let (url, images) = (sqlite_url(db), images.to_path_buf());
    spawn_app_with(move |c: &mut Config| {
        c.database_url = url;
        c.storage = StorageConfig::Local(images);
        c.redis = None;
    })
    .await
}

/// `nano-banana admin ARGS…`: success, standard output, standard error.
async fn admin(args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_nano-banana"))
        .arg("admin")
        .args(args)
        .env_remove("NANO_BANANA_DATABASE_URL")
        .env_remove("NANO_BANANA_DATA_DIR")
        .output()
        .await
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_backup_taken_under_load_restores_to_a_balanced_database_that_serves_its_tasks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (live_db, images) = (dir.path().join("live.db"), dir.path().join("images"));
    let app = Arc::new(app_on(&live_db, &images).await);

    // Finished work the snapshot must carry: tasks with stored images.
    for i in 0..3 {
        let done = app
            .post_images(json!({"prompt": format!("before the backup {i}")}))
            .await;
        assert_eq!(done.status, 200, "{}", done.body);
    }

    // Load: sync generations (each a task, a charge and a ledger row) and async ones (queued,
    // run by the workers), from four clients, until the backup is done.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (app, stop, sent) = (app.clone(), stop.clone(), sent.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({"prompt": format!("backup load {i}"), "async": i % 2 == 0});
                    let answer = app.post_images(body).await;
                    assert_eq!(answer.status, 200, "{}", answer.body);
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    while sent.load(Ordering::Relaxed) < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let backup = dir.path().join("backup.db");
    let backup_arg = backup.display().to_string();
    let live_url = sqlite_url(&live_db);
    let (ok, stdout, stderr) =
        admin(&["--database-url", &live_url, "backup", "--to", &backup_arg]).await;
    let during = sent.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a load client");
    }
    assert!(ok, "backup failed: {stderr}");
    let summary: Value = serde_json::from_str(&stdout).expect("a JSON summary");
    assert_eq!(summary["verified"], true, "{summary}");
    let backed_up_tasks = summary["tables"]["tasks"].as_i64().expect("tasks counted");
    assert!(backed_up_tasks > 0, "{summary}");
    assert!(
        !dir.path().join("backup.db.partial").exists(),
        "the partial file is renamed"
    );
    println!(
        "backup: {backed_up_tasks} tasks in the snapshot, {during} requests sent while it ran"
    );

    // The live server goes on; the backup is restored beside it as another server's database,
    // with the same image folder (the images were backed up after the database).
    let ids: Vec<(String, String)> = {
        let mut copy = sqlx::SqliteConnection::connect(&sqlite_url(&backup))
            .await
            .expect("the backup opens");
        let rows = sqlx::query("SELECT id, state FROM tasks")
            .fetch_all(&mut copy)
            .await
            .expect("its tasks");
        rows.iter()
            .map(|r| (r.get::<String, _>("id"), r.get::<String, _>("state")))
            .collect()
    };
    assert_eq!(ids.len() as i64, backed_up_tasks);
    let restored = app_on(&backup, &images).await;
    assert!(
        restored
            .db
            .unbalanced_applications()
            .await
            .expect("the ledger check")
            .is_empty(),
        "every balance equals its ledger"
    );
    let mut served_images = 0;
    for (id, state) in &ids {
        let task = restored
            .post(
                "/nano-banana/tasks",
                Some(TOKEN),
                json!({"action": "retrieve", "id": id}).to_string(),
            )
            .await;
        assert_eq!(task.status, 200, "task {id}: {}", task.body);
        // What the snapshot held, or later: a task running at the snapshot runs again.
        if state == "succeeded" {
            assert_eq!(task.body["state"], "succeeded", "task {id}: {}", task.body);
        }
        for image in task.body["response"]["data"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(url) = image["image_url"].as_str() {
                let fetched = restored.get(url).await;
                assert_eq!(fetched.status(), 200, "image of {id}");
                served_images += 1;
            }
        }
    }
    assert!(
        served_images > 0,
        "the restored server serves the snapshot's images: {:?}",
        ids.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_backup_never_overwrites_a_file_and_postgresql_is_pointed_to_its_own_tools() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (live_db, images) = (dir.path().join("live.db"), dir.path().join("images"));
    let _app = app_on(&live_db, &images).await;
    let existing = dir.path().join("existing.db");
    std::fs::write(&existing, b"keep me").expect("a file");
    let live_url = sqlite_url(&live_db);
    let existing_arg = existing.display().to_string();
    let (ok, _, stderr) =
        admin(&["--database-url", &live_url, "backup", "--to", &existing_arg]).await;
    assert!(!ok);
    assert!(stderr.contains("exists already"), "{stderr}");
    assert_eq!(std::fs::read(&existing).expect("still there"), b"keep me");

    let postgres = fresh_postgres_schema().await;
    let target = dir.path().join("pg.db").display().to_string();
    let (ok, _, stderr) = admin(&["--database-url", &postgres, "backup", "--to", &target]).await;
    assert!(!ok);
    assert!(stderr.contains("pg_dump"), "{stderr}");

    let (ok, _, stderr) =
        admin(&["--server", "http://127.0.0.1:9", "backup", "--to", &target]).await;
    assert!(!ok);
    assert!(stderr.contains("not --server"), "{stderr}");
}
