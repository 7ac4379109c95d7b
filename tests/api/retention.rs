//! Retention (`--retention`): finished tasks go, with their images, once they are that old; a
//! task still running and one whose callback is still owed stay; two nodes sweeping one
//! database together delete each task once.

use std::time::{Duration, Instant};

use nano_banana::{
    config::Config,
    fake::gemini::{FakeGemini, FakeGeminiOptions, Scenario},
    storage::images::ImageStore,
};
use serde_json::{Value, json};

use crate::helpers::{TestApp, callback_receiver, share_state, spawn_app_with, use_gemini};

fn keep_for_two_seconds(config: &mut Config) {
    config.retention = Some(Duration::from_secs(2));
    config.retention_sweep_interval = Duration::from_secs(1);
}

async fn retrieve(app: &TestApp, id: &str) -> Value {
    let answer = app
        .post_tasks(json!({"action": "retrieve", "id": id}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

/// Waits until every task of `ids` retrieves as unknown (`{}`), at most `within`.
async fn wait_until_gone(app: &TestApp, ids: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut left = 0;
        for id in ids {
            if retrieve(app, id).await != json!({}) {
                left += 1;
            }
        }
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} of {} tasks are still there",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn expired_tasks_go_with_their_images_and_running_or_owing_ones_stay() {
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .expect("the fake upstream");
    let base_url = fake.base_url();
    let app = spawn_app_with(move |c| {
        use_gemini(c, &base_url, "k");
        keep_for_two_seconds(c);
    })
    .await;

    // Three finished tasks with their images.
    let mut finished = Vec::new();
    let mut image_urls = Vec::new();
    for i in 0..3 {
        let answer = app
            .post_images(json!({"prompt": format!("kept for two seconds {i}")}))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        finished.push(
            answer.body["task_id"]
                .as_str()
                .expect("a task id")
                .to_owned(),
        );
        let url = answer.body["data"][0]["image_url"]
            .as_str()
            .expect("an image URL");
        assert_eq!(app.get(url).await.status(), 200);
        image_urls.push(url.to_owned());
    }
    // A finished task whose callback is still owed: its receiver refuses every delivery.
    let refusing = callback_receiver(usize::MAX, false).await;
    let owed = app
        .post_images(json!({"prompt": "owed a callback", "callback_url": refusing.url()}))
        .await;
    assert_eq!(owed.status, 200, "{}", owed.body);
    let owed = owed.body["task_id"].as_str().expect("a task id").to_owned();
    // A task still running when its neighbours expire.
    fake.push_scenario(Scenario::Slow(Duration::from_secs(30)));
    let running = app
        .post_images(json!({"prompt": "still running", "async": true}))
        .await;
    assert_eq!(running.status, 200, "{}", running.body);
    let running = running.body["task_id"]
        .as_str()
        .expect("a task id")
        .to_owned();

    wait_until_gone(&app, &finished, Duration::from_secs(30)).await;
    for url in &image_urls {
        let gone = app.get(url).await;
        assert_eq!(gone.status(), 404, "{url}");
        let key = ImageStore::key_in_url(url).expect("one of our keys");
        assert!(
            app.store.get(&key).await.is_err(),
            "the object {key} is gone from the store"
        );
    }
    // Another pass or two later, the other two are still there.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let owed_record = retrieve(&app, &owed).await;
    assert_eq!(owed_record["state"], "succeeded", "{owed_record}");
    let owed_url = owed_record["response"]["data"][0]["image_url"]
        .as_str()
        .expect("its image");
    assert_eq!(app.get(owed_url).await.status(), 200, "its image stays too");
    assert_eq!(retrieve(&app, &running).await["state"], "processing");
}

#[tokio::test]
async fn two_nodes_sweeping_together_delete_each_task_once() {
    // Retention off while the tasks are made, so that neither node sweeps yet.
    let first = spawn_app_with(|_| {}).await;
    let second = spawn_app_with(|c| share_state(c, &first)).await;
    let mut ids = Vec::new();
    for i in 0..24 {
        let answer = first
            .post_images(json!({"prompt": format!("one of many {i}")}))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        ids.push(
            answer.body["task_id"]
                .as_str()
                .expect("a task id")
                .to_owned(),
        );
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Both nodes' sweepers at once, claiming small batches from the same rows.
    let cutoff = nano_banana::domain::now_ms() - 1000;
    let sweep = |app: &TestApp, owner: &'static str| {
        let db = app.db.clone();
        async move {
            let mut deleted = Vec::new();
            loop {
                let now = nano_banana::domain::now_ms();
                let batch = db
                    .claim_expired_tasks(owner, cutoff, now, now + 60_000, 5)
                    .await
                    .expect("a claim");
                if batch.is_empty() {
                    return deleted;
                }
                for task in batch {
                    if db
                        .delete_task_record(&task.id, "[]", Some(owner))
                        .await
                        .expect("a delete")
                    {
                        deleted.push(task.id);
                    }
                }
            }
        }
    };
    let (a, b) = tokio::join!(sweep(&first, "node-a"), sweep(&second, "node-b"));
    println!(
        "retention: node a deleted {}, node b {} of {}",
        a.len(),
        b.len(),
        ids.len()
    );
    let mut all: Vec<String> = a.iter().chain(&b).cloned().collect();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "no task deleted twice");
    ids.sort();
    assert_eq!(all, ids, "every task deleted once");
    // A claim held by one node keeps the other's delete out.
    let leftover = first.post_images(json!({"prompt": "held"})).await;
    let held = leftover.body["task_id"]
        .as_str()
        .expect("a task id")
        .to_owned();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let now = nano_banana::domain::now_ms();
    let claimed = first
        .db
        .claim_expired_tasks("node-a", now + 1, now, now + 60_000, 10)
        .await
        .expect("a claim");
    assert_eq!(claimed.len(), 1);
    assert!(
        second
            .db
            .claim_expired_tasks("node-b", now + 1, now, now + 60_000, 10)
            .await
            .expect("a claim")
            .is_empty(),
        "the other node skips a claimed task"
    );
    assert!(
        !second
            .db
            .delete_task_record(&held, "[]", Some("node-b"))
            .await
            .expect("a delete"),
        "and cannot delete it"
    );
    assert!(
        first
            .db
            .delete_task_record(&held, "[]", Some("node-a"))
            .await
            .expect("a delete")
    );
    assert_eq!(retrieve(&first, &held).await, json!({}));
}
