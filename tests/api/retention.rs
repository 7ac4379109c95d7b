//! Retention (`--retention`): finished tasks go, with their images, once they are that old; a
//! task still running and one whose callback is still owed stay; two nodes sweeping one
//! database together delete each task once.

use std::time::{Duration, Instant};

use nano_banana::{
    config::Config,
    fake::gemini::{FakeGemini, FakeGeminiOptions, Scenario},
    storage::{db::Expiring, images::ImageStore},
};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, application, callback_receiver, share_state, spawn_admin_app, spawn_app_with,
    use_gemini,
};

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
                    .claim_expired_tasks(owner, Expiring::ByDefault, cutoff, now, now + 60_000, 5)
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
        .claim_expired_tasks(
            "node-a",
            Expiring::ByDefault,
            now + 1,
            now,
            now + 60_000,
            10,
        )
        .await
        .expect("a claim");
    assert_eq!(claimed.len(), 1);
    assert!(
        second
            .db
            .claim_expired_tasks(
                "node-b",
                Expiring::ByDefault,
                now + 1,
                now,
                now + 60_000,
                10
            )
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

/// `(task id, image URL)` of a generation made with `token`.
async fn generation(app: &TestApp, token: &str, prompt: &str) -> (String, String) {
    let answer = app
        .post(
            "/nano-banana/images",
            Some(token),
            json!({ "prompt": prompt }).to_string(),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let id = answer.body["task_id"].as_str().expect("a task id");
    let url = answer.body["data"][0]["image_url"]
        .as_str()
        .expect("an image URL");
    (id.to_owned(), url.to_owned())
}

/// Whether `token`'s application still has the task `id`, and its image is still served.
async fn still_there(app: &TestApp, token: &str, (id, url): &(String, String)) -> bool {
    let record = app
        .post(
            "/nano-banana/tasks",
            Some(token),
            json!({ "id": id }).to_string(),
        )
        .await;
    assert_eq!(record.status, 200, "{}", record.body);
    let image = app.get(url).await.status();
    match (record.body == json!({}), image.as_u16()) {
        (false, 200) => true,
        (true, 404) => false,
        (gone, status) => panic!("task {id}: record gone {gone}, image {status}"),
    }
}

/// Polls until none of `tasks` of `token`'s application is there, at most 30 s.
async fn wait_until_expired(app: &TestApp, token: &str, tasks: &[(String, String)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut left = 0;
        for task in tasks {
            left += usize::from(still_there(app, token, task).await);
        }
        if left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{left} tasks are still there");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn an_application_with_its_own_retention_loses_its_tasks_when_the_server_keeps_everything() {
    // The server keeps everything; one application keeps its tasks for 2 seconds.
    let app = spawn_admin_app(|c| {
        c.retention = None;
        c.retention_sweep_interval = Duration::from_secs(1);
    })
    .await;
    let (short, short_token) = application(&app, 100, json!({"retention_seconds": 2})).await;
    let (_, other_token) = application(&app, 100, json!({})).await;
    let shown = app
        .admin(reqwest::Method::GET, &format!("/admin/apps/{short}"), None)
        .await;
    assert_eq!(shown.body["retention_seconds"], 2, "{}", shown.body);

    let mut short_tasks = Vec::new();
    for i in 0..2 {
        short_tasks.push(generation(&app, &short_token, &format!("brief {i}")).await);
    }
    let others = generation(&app, &other_token, "kept by the server's default").await;
    let default_app = generation(&app, &app.token, "also kept").await;

    wait_until_expired(&app, &short_token, &short_tasks).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(still_there(&app, &other_token, &others).await);
    assert!(still_there(&app, &app.token, &default_app).await);

    // Back to the server's default (omitted): its next task is kept like everyone's.
    let reset = app
        .admin(
            reqwest::Method::PUT,
            &format!("/admin/apps/{short}/limits"),
            Some(json!({})),
        )
        .await;
    assert_eq!(reset.status, 200, "{}", reset.body);
    assert_eq!(reset.body["retention_seconds"], Value::Null);
    let later = generation(&app, &short_token, "kept now").await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(still_there(&app, &short_token, &later).await);
}

#[tokio::test]
async fn an_application_can_keep_its_tasks_longer_than_the_server_or_forever() {
    let app = spawn_admin_app(keep_for_two_seconds).await;
    let (_, forever_token) = application(&app, 100, json!({"retention_seconds": 0})).await;
    let (_, hour_token) = application(&app, 100, json!({"retention_seconds": 3600})).await;
    let forever = generation(&app, &forever_token, "kept forever").await;
    let hour = generation(&app, &hour_token, "kept an hour").await;
    let by_default = generation(&app, &app.token, "kept two seconds").await;

    wait_until_expired(&app, &app.token, std::slice::from_ref(&by_default)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(still_there(&app, &forever_token, &forever).await);
    assert!(still_there(&app, &hour_token, &hour).await);
}

#[tokio::test]
async fn a_negative_retention_is_refused_by_name() {
    let app = spawn_admin_app(|_| {}).await;
    let refused = app
        .admin(
            reqwest::Method::POST,
            "/admin/apps",
            Some(json!({"name": "n", "retention_seconds": -1})),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    let message = refused.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("retention_seconds"), "{}", refused.body);
}

#[tokio::test]
async fn the_store_and_the_database_are_counted_for_metrics() {
    let app = spawn_app_with(|c| c.storage_usage_interval = Some(Duration::from_secs(1))).await;
    let empty = app.store.usage().await.expect("a count");
    assert_eq!(empty.images.objects + empty.inputs.objects, 0, "{empty:?}");

    // Two images from a generation, one from an edit with two different uploads.
    let (a, b) = (crate::helpers::png(60, 40), crate::helpers::png(30, 30));
    let generated = app
        .post_images(json!({"prompt": "two of them", "count": 2}))
        .await;
    assert_eq!(generated.status, 200, "{}", generated.body);
    let edited = app
        .post_images(json!({"action": "edit", "prompt": "merge",
            "image_urls": [crate::helpers::data_uri(&a), crate::helpers::data_uri(&b)]}))
        .await;
    assert_eq!(edited.status, 200, "{}", edited.body);

    let usage = app.store.usage().await.expect("a count");
    assert_eq!(usage.images.objects, 3, "{usage:?}");
    assert_eq!(usage.inputs.objects, 2, "{usage:?}");
    assert_eq!(usage.inputs.bytes, (a.len() + b.len()) as u64, "{usage:?}");
    let mut image_bytes = 0;
    for image in generated.body["data"]
        .as_array()
        .into_iter()
        .chain(edited.body["data"].as_array())
        .flatten()
    {
        let url = image["image_url"].as_str().expect("an image URL");
        image_bytes += app.get(url).await.bytes().await.expect("its bytes").len() as u64;
    }
    assert_eq!(usage.images.bytes, image_bytes, "{usage:?}");
    assert_eq!(usage.thumbnails.objects, 0);

    // The gauges (process-wide, so other tests' servers set them too: only their presence and
    // sanity are checked here; the counts above are this server's own).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = app.get("/metrics").await.text().await.expect("metrics");
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        let found = [
            value("nano_banana_store_objects{kind=\"images\"}"),
            value("nano_banana_store_bytes{kind=\"inputs\"}"),
            value("nano_banana_database_bytes"),
        ];
        if found.iter().all(|v| v.is_some_and(|v| v > 0.0)) {
            break;
        }
        assert!(Instant::now() < deadline, "no storage gauges: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
