//! An edit's `data:` inputs live in the image store, not in the database (src/tasks/inputs.rs):
//! stored once however many tasks send them, read back by whichever node runs the task, named
//! in the task's record by their SHA-256, and deleted by the input sweeper once no task's
//! record references them.

use std::time::{Duration, Instant};

use nano_banana::{domain::sha256_hex, tasks::inputs::request_inputs};
use serde_json::json;

use crate::helpers::{
    ImageHost, TestApp, data_uri, png, share_state, spawn_app_with, stored_input, use_gemini,
    wait_for_task_of,
};

/// A PNG of `width`×`height` noise: it does not compress, so its size is about 3 bytes a
/// pixel. `seed` makes each one different.
pub fn noise_png(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let image = image::RgbImage::from_fn(width, height, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let [a, b, c, ..] = state.to_le_bytes();
        image::Rgb([a, b, c])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("png encodes");
    out.into_inner()
}

/// The digests of the input objects in `app`'s image store, sorted.
async fn stored_digests(app: &TestApp) -> Vec<String> {
    let mut digests: Vec<String> = app
        .store
        .list_inputs()
        .await
        .expect("the input objects")
        .into_iter()
        .map(|(digest, _)| digest)
        .collect();
    digests.sort();
    digests
}

fn edit(images: &[&[u8]]) -> serde_json::Value {
    let urls: Vec<String> = images.iter().map(|bytes| data_uri(bytes)).collect();
    json!({"action": "edit", "prompt": "make it night", "model": "nano-banana-pro",
           "image_urls": urls})
}

#[tokio::test]
async fn edits_with_four_2_mb_inputs_leave_them_out_of_the_database() {
    let app = spawn_app_with(|_| {}).await;
    // Four different 2 MB images (~2.8 MB each as base64), sent by every edit.
    let inputs: Vec<Vec<u8>> = (1..=4).map(|seed| noise_png(820, 820, seed)).collect();
    assert!(inputs.iter().all(|png| png.len() > 2_000_000));
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let body = edit(&refs);

    // One edit first, so that the tables' first pages exist before the measurement.
    let first = app.post_images(body.clone()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    // Enough requests that the last, partly filled page of each table and index (a dozen of
    // them, 4 KB each on SQLite) does not decide the result.
    const N: i64 = 40;
    let growth = async |body: &serde_json::Value| {
        let before = app.db.size_bytes().await.expect("the database's size");
        for _ in 0..N {
            let answer = app.post_images(body.clone()).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            assert_eq!(answer.body["success"], true, "{}", answer.body);
        }
        let after = app.db.size_bytes().await.expect("the database's size");
        (after - before) / N
    };
    let per_edit = growth(&body).await;
    let per_generation =
        growth(&json!({"prompt": "make it night", "model": "nano-banana-pro"})).await;
    eprintln!("database growth: {per_edit} bytes per edit, {per_generation} per generation");
    // An edit costs the database what a generation does, plus its images' names (four of 77
    // characters in its request) and, on PostgreSQL, a new version of each image's count row
    // until the next vacuum. PostgreSQL grows its ~dozen tables and indexes by 8 KB pages, so
    // 40 edits measure it only to a couple of KB per edit (BENCHMARKS.md has 1,000 edits:
    // 1,860 B each); either way, megabytes of images in a row could not pass.
    let margin = if crate::helpers::scaled() { 4096 } else { 1024 };
    assert!(
        per_edit < per_generation + margin,
        "{per_edit} bytes per edit, {per_generation} per generation"
    );
    if !crate::helpers::scaled() {
        assert!(
            per_edit < 2048,
            "the database grew by {per_edit} bytes per edit"
        );
    }
    // PostgreSQL keeps every row's earlier versions until a vacuum (a task row is written
    // twice), so its growth between vacuums is larger for every task alike: BENCHMARKS.md
    // measures it over 1,000 edits.

    // Each image was stored once, for all 41 edits, under the SHA-256 of its bytes.
    let mut expected: Vec<String> = inputs.iter().map(|png| sha256_hex(png)).collect();
    expected.sort();
    assert_eq!(stored_digests(&app).await, expected);
    for (png, digest) in inputs.iter().zip(&expected) {
        let stored = app
            .store
            .read_input(&sha256_hex(png))
            .await
            .expect("stored");
        assert_eq!(stored.as_ref(), png.as_slice(), "{digest}");
    }
}

#[tokio::test]
async fn a_repeated_input_is_stored_once_and_the_record_names_it() {
    let app = spawn_app_with(|_| {}).await;
    let (a, b) = (png(60, 40), png(30, 30));
    let answer = app
        .post_images(json!({"action": "edit", "prompt": "merge", "async": true,
                            "image_urls": [data_uri(&a), data_uri(&a), data_uri(&b)]}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let id = answer.body["task_id"].as_str().expect("a task id");
    let record = app.wait_for_task(id).await;
    assert_eq!(record["state"], "succeeded", "{record}");
    // The record names each input by the SHA-256 of its bytes, in the order sent.
    assert_eq!(
        record["request"]["image_urls"],
        json!([stored_input(&a), stored_input(&a), stored_input(&b)])
    );
    let mut expected = vec![sha256_hex(&a), sha256_hex(&b)];
    expected.sort();
    assert_eq!(stored_digests(&app).await, expected, "one object per image");

    // A client cannot name a stored input itself: only the server writes references.
    let answer = app
        .post_images(json!({"action": "edit", "prompt": "steal",
                            "image_urls": [stored_input(&a)]}))
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], "bad_request");
}

#[tokio::test]
async fn another_node_reads_the_inputs_from_the_store_and_a_lost_one_fails_its_task() {
    // An API-only node accepts the edits; a node with workers runs them later, with nothing
    // handed over in memory.
    let api = spawn_app_with(|config| config.workers = 0).await;
    let (kept, lost) = (png(40, 30), png(50, 50));
    let mut ids = Vec::new();
    for photo in [&kept, &lost] {
        let answer = api
            .post_images(json!({"action": "edit", "prompt": "sharpen", "async": true,
                                "image_urls": [data_uri(photo)]}))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        ids.push(answer.body["task_id"].as_str().expect("an id").to_owned());
    }
    api.store
        .delete_input(&sha256_hex(&lost))
        .await
        .expect("deleted");
    let worker = spawn_app_with(|config| share_state(config, &api)).await;

    let record = wait_for_task_of(&worker, &worker.token, &ids[0]).await;
    assert_eq!(record["state"], "succeeded", "{record}");
    let (_, image) = crate::helpers::download_image(
        &worker,
        record["response"]["data"][0]["image_url"]
            .as_str()
            .expect("an image"),
    )
    .await;
    assert_eq!(
        (image.width(), image.height()),
        (1184, 864),
        "4:3 like 40x30: the input was read"
    );

    let record = wait_for_task_of(&worker, &worker.token, &ids[1]).await;
    assert_eq!(record["state"], "failed", "{record}");
    assert_eq!(record["response"]["error"]["code"], "api_error", "{record}");
    assert_eq!(
        record["response"]["error"]["message"],
        "image_urls[0] is no longer stored; send the request again."
    );
}

/// Waits until `check` holds, or panics after `within`.
async fn eventually(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_sweeper_deletes_inputs_no_task_references_once_their_grace_has_passed() {
    let app = spawn_app_with(|config| {
        config.input_grace = Duration::from_secs(2);
        config.input_sweep_interval = Duration::from_millis(200);
    })
    .await;
    // An object no task references (what a crash between the two writes leaves).
    let orphan = png(20, 20);
    app.store
        .put_input(&sha256_hex(&orphan), orphan.clone().into(), Duration::ZERO)
        .await
        .expect("stored");
    // Two tasks use the same image.
    let used = png(30, 20);
    let mut records = Vec::new();
    for _ in 0..2 {
        let answer = app
            .post_images(json!({"action": "edit", "prompt": "x", "image_urls": [data_uri(&used)]}))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let id = answer.body["task_id"].as_str().expect("an id");
        let record = app.wait_for_task(id).await;
        assert_eq!(record["state"], "succeeded", "{record}");
        records.push(record);
    }

    eventually(
        Duration::from_secs(30),
        "the orphan was not deleted",
        async || stored_digests(&app).await == vec![sha256_hex(&used)],
    )
    .await;
    let delete = async |record: &serde_json::Value| {
        let inputs = request_inputs(&record["request"].to_string()).expect("the record's inputs");
        assert_eq!(inputs, json!([sha256_hex(&used)]).to_string());
        let id = record["id"].as_str().expect("an id");
        assert!(
            app.db
                .delete_task_record(id, &inputs, None)
                .await
                .expect("deleted")
        );
        let answer = app
            .post_tasks(json!({"action": "retrieve", "id": id}))
            .await;
        assert_eq!(answer.body, json!({}), "the record is gone");
    };
    // One record deleted: the other still uses the image, which stays past its grace period
    // and several sweeps.
    delete(&records[0]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stored_digests(&app).await, vec![sha256_hex(&used)]);

    // The last one deleted: the image goes too.
    delete(&records[1]).await;
    eventually(
        Duration::from_secs(30),
        "the input was not deleted",
        async || stored_digests(&app).await.is_empty(),
    )
    .await;
}

#[tokio::test]
async fn a_url_input_is_fetched_once_for_every_image_and_every_retry() {
    use nano_banana::fake::gemini::{FakeGemini, FakeGeminiOptions, Scenario};
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .expect("the fake upstream starts");
    // The first upstream call fails with a 503 and is retried.
    fake.push_scenario(Scenario::Unavailable);
    let app = spawn_app_with(|config| use_gemini(config, &fake.base_url(), "key")).await;
    let host = ImageHost::start(png(40, 30)).await;
    let answer = app
        .post_images(json!({"action": "edit", "prompt": "twice", "count": 2,
                            "image_urls": [host.url("/photo.png")]}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(fake.request_count(), 3, "two images, one of them retried");
    assert_eq!(
        host.hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the URL was fetched once for the task"
    );
}
