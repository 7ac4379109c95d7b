//! Faults of what the server depends on, each while tasks run: PostgreSQL, the S3 store and Redis
//! going away and coming back (through a proxy of the test's own, `FaultProxy`), the disk under
//! SQLite filling up (a small tmpfs), callback receivers that never answer or answer a byte a
//! second, and SIGTERM on one of two nodes. Each ends with every accepted task finished exactly
//! once, every credit accounted for, every callback delivered, and the server answering again
//! by itself; each prints its counts (`faults: NAME accepted=… finished=… …`).
//!
//! The dependency under fault is always the real one (these tests build that part of their stack
//! themselves, whichever pass runs them); the rest is the pass's stack.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nano_banana::{
    config::Config,
    fake::gemini::{FakeGemini, FakeGeminiOptions, Latency},
    storage::images::StorageConfig,
};
use nano_banana_testkit::{
    CallbackReceiver, FaultProxy, HTTP_503, Stall, StallingReceiver, free_port,
};
use serde_json::{Value, json};

use crate::{
    helpers::{
        ADMIN_KEY, TestApp, application, assert_error, callback_receiver, fresh_postgres_schema,
        scaled_stack_env, spawn_admin_app, test_redis, test_redis_url, test_s3, use_gemini,
    },
    procs::{assert_callbacks_match, start_server, wait_until_ended_as},
};

/// Credits each test's application starts with; every task here costs one (`nano-banana`, 1K).
const CREDITS: i64 = 10_000;

/// What a fault test counts, printed as one line for the CI log.
#[derive(Debug, Default)]
struct Counts {
    accepted: usize,
    finished: usize,
    /// Upstream calls beyond one per task: a task run again after its run was lost.
    rerun: usize,
    callbacks_owed: usize,
    delivered: usize,
    credits_reserved: i64,
    /// Reserved credits whose reservation was settled (charged or refunded).
    settled: i64,
}

impl Counts {
    fn print(&self, fault: &str) {
        say(&format!(
            "faults: {fault} accepted={} finished={} rerun={} callbacks_owed={} delivered={} \
             credits_reserved={} settled={}",
            self.accepted,
            self.finished,
            self.rerun,
            self.callbacks_owed,
            self.delivered,
            self.credits_reserved,
            self.settled
        ));
    }
}

/// One line on the test binary's real stdout, for the CI log (`.ci/run` checks these lines):
/// the test harness captures what the print macros write in a passing test.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The tasks a test submitted: every id, and those that owe a callback.
#[derive(Debug, Default)]
struct Submitted {
    ids: Vec<String>,
    with_callback: HashSet<String>,
}

/// A fake Gemini that takes a while, so that a fault finds tasks in every state.
async fn slow_fake() -> FakeGemini {
    FakeGemini::start(FakeGeminiOptions {
        latency: Latency::Uniform(Duration::from_millis(300), Duration::from_millis(1200)),
        ..FakeGeminiOptions::default()
    })
    .await
    .expect("the fake upstream starts")
}

/// What the fault tests of one server stand on: a slow fake Gemini, a callback receiver, and a
/// server with 8 workers calling that fake (and whatever the test configures on top) that holds
/// an application with [`CREDITS`]; the tasks submitted so far.
struct Stage {
    fake: FakeGemini,
    receiver: CallbackReceiver,
    app: TestApp,
    app_id: String,
    token: String,
    client: reqwest::Client,
    /// The server's address.
    base: String,
    submitted: Submitted,
}

impl Stage {
    async fn start(configure: impl FnOnce(&mut Config)) -> Stage {
        let fake = slow_fake().await;
        let receiver = callback_receiver(0, false).await;
        let upstream = fake.base_url();
        let app = spawn_admin_app(move |c| {
            configure(c);
            use_gemini(c, &upstream, "k");
            c.workers = 8;
        })
        .await;
        let (app_id, token) = application(&app, CREDITS, json!({})).await;
        let base = app.address.clone();
        Stage {
            fake,
            receiver,
            app,
            app_id,
            token,
            client: reqwest::Client::new(),
            base,
            submitted: Submitted::default(),
        }
    }

    /// `n` more async tasks, every other one with a callback to the receiver.
    async fn submit(&mut self, n: usize) {
        let callback_url = self.receiver.url();
        submit(
            &self.client,
            &self.base,
            &self.token,
            n,
            &callback_url,
            &mut self.submitted,
        )
        .await;
    }

    /// Once the fault has passed: every task finished, once, every credit settled (see
    /// [`settle`]); prints the counts as `fault`'s.
    async fn settle_once(&self, fault: &str) {
        let counts = settle(
            &self.client,
            &self.base,
            &self.token,
            &self.app_id,
            &self.submitted,
            &self.receiver,
            &self.fake,
        )
        .await;
        counts.print(fault);
        assert_eq!(counts.rerun, 0, "results were kept, not made again");
        assert_eq!(counts.settled, counts.credits_reserved);
    }
}

/// A sync request for an image through `base`, sent in a task of its own: its status and answer.
fn sync_request(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    i: usize,
) -> tokio::task::JoinHandle<reqwest::Result<(u16, Value)>> {
    let (client, url, token) = (
        client.clone(),
        format!("{base}/nano-banana/images"),
        token.to_owned(),
    );
    tokio::spawn(async move {
        let body = json!({"prompt": format!("sync {i}"), "model": "nano-banana"});
        post(&client, &url, &token, &body).await
    })
}

/// `host:port` of a service URL (`postgres://…`, `redis://…`, `http://…`).
fn address_of(url: &str, default_port: u16) -> SocketAddr {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.socket_addrs(|| Some(default_port)).ok())
        .and_then(|addrs| addrs.into_iter().next())
        .unwrap_or_else(|| panic!("{url:?} names no address"))
}

/// `url` pointed at `proxy` instead of its service.
fn through(url: &str, proxy: &FaultProxy) -> String {
    let mut parsed = url::Url::parse(url).expect("a service URL");
    parsed.set_host(Some("127.0.0.1")).expect("a host");
    parsed
        .set_port(Some(proxy.address().port()))
        .expect("a port");
    parsed.to_string()
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> reqwest::Result<(u16, Value)> {
    let response = client
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// `n` async tasks through `base`, every other one with a callback to `callback_url`.
async fn submit(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    n: usize,
    callback_url: &str,
    into: &mut Submitted,
) {
    for i in 0..n {
        let mut body = json!({"prompt": format!("fault task {i}"), "model": "nano-banana"});
        if i % 2 == 0 {
            body["callback_url"] = json!(callback_url);
        } else {
            body["async"] = json!(true);
        }
        let (status, accepted) = post(client, &format!("{base}/nano-banana/images"), token, &body)
            .await
            .expect("request sent");
        assert_eq!(status, 200, "{accepted}");
        let id = accepted["task_id"].as_str().expect("a task id").to_owned();
        if i % 2 == 0 {
            into.with_callback.insert(id.clone());
        }
        into.ids.push(id);
    }
}

/// Reads the tasks back until every one has ended (90 s at most); their records by id.
async fn all_ended(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    ids: &[String],
) -> HashMap<String, Value> {
    wait_until_ended_as(client, base, token, ids, Duration::from_secs(90)).await
}

/// Checks the books of application `id` through the admin API at `base`: its balance equals its
/// ledger, and no reservation is still held (what left the balance is exactly what was charged).
/// Returns the credits whose reservation was settled.
async fn check_credits(client: &reqwest::Client, base: &str, id: &str, reserved: i64) -> i64 {
    let get = |path: String| {
        let request = client.get(format!("{base}{path}")).bearer_auth(ADMIN_KEY);
        async move {
            let response = request.send().await.expect("admin API answers");
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.expect("JSON")
        }
    };
    let shown = get(format!("/admin/apps/{id}")).await;
    let balance = shown["credits"].as_i64().expect("credits");
    let ledger = shown["ledger_sum"].as_i64().expect("ledger_sum");
    assert_eq!(balance, ledger, "the balance is its ledger: {shown}");
    let usage = get("/admin/usage".to_owned()).await;
    let charged: i64 = usage["usage"]
        .as_array()
        .expect("usage rows")
        .iter()
        .filter(|row| row["application_id"] == id)
        .map(|row| row["credits"].as_i64().unwrap_or(0))
        .sum();
    let held = CREDITS - balance - charged;
    assert_eq!(held, 0, "credits still reserved for finished tasks");
    reserved - held
}

/// Every task succeeded with images that exist, every callback arrived intact, the books
/// balance: the counts of a fault test once the dust has settled.
#[allow(clippy::too_many_arguments)]
async fn settle(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    app_id: &str,
    submitted: &Submitted,
    receiver: &nano_banana_testkit::CallbackReceiver,
    upstream: &FakeGemini,
) -> Counts {
    let records = all_ended(client, base, token, &submitted.ids).await;
    for record in records.values() {
        assert_eq!(record["state"], "succeeded", "{record}");
        // No image URL names an object that does not exist.
        for entry in record["response"]["data"].as_array().expect("data") {
            let url = entry["image_url"].as_str().expect("an image URL");
            // Through `base`, whichever node named it (that node may be gone).
            let path = &url[url.find("/images/").expect("our image route")..];
            let image = client
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("request sent");
            assert_eq!(image.status(), 200, "{url}");
            let bytes = image.bytes().await.expect("image bytes");
            image::load_from_memory(&bytes).expect("a decodable image");
        }
    }
    assert_callbacks_match(receiver, &submitted.with_callback, &records).await;
    let delivered: HashSet<String> = receiver
        .received()
        .iter()
        .filter_map(|(_, body)| body["task_id"].as_str().map(str::to_owned))
        .collect();
    let reserved = submitted.ids.len() as i64;
    Counts {
        accepted: submitted.ids.len(),
        finished: records.len(),
        // Read once every task has ended: a lost result shows as a run made again.
        rerun: upstream.request_count().saturating_sub(submitted.ids.len()),
        callbacks_owed: submitted.with_callback.len(),
        delivered: delivered.len(),
        credits_reserved: reserved,
        settled: check_credits(client, base, app_id, reserved).await,
    }
}

/// Waits until `/readyz` at `base` has `status` and, when `dependency` is given, names it as
/// failing (or, for 200, everything ok).
async fn wait_readiness(client: &reqwest::Client, base: &str, status: u16, dependency: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await {
            let got = response.status().as_u16();
            last = response.json().await.unwrap_or(Value::Null);
            let named = status == 200 || last["checks"][dependency]["status"] == "error";
            if got == status && named {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz did not answer {status} naming {dependency}: {last}");
}

/// PostgreSQL goes away for 15 s while tasks run (the proxy cuts every connection and refuses
/// new ones), then comes back: longer than the pool's 10 s wait for a connection, so writes fail
/// rather than only wait. Requests meanwhile get `api_error` saying so, within that bound;
/// `/readyz` names the database; workers keep their results and write them when it is back;
/// sync requests in flight are answered then. Nothing runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_outage() {
    let database = fresh_postgres_schema().await;
    let proxy = FaultProxy::start(address_of(&database, 5432))
        .await
        .expect("the proxy starts");
    let url = through(&database, &proxy);
    let mut stage = Stage::start(move |c| c.database_url = url).await;
    let (client, base, token) = (
        stage.client.clone(),
        stage.base.clone(),
        stage.token.clone(),
    );
    stage.submit(30).await;
    // Sync requests in flight across the outage.
    let waiting: Vec<_> = (0..4)
        .map(|i| sync_request(&client, &base, &token, i))
        .collect();
    stage.receiver.wait_for(3).await;

    proxy.cut();
    let cut_at = Instant::now();
    wait_readiness(&client, &base, 503, "database").await;
    // New work and reads: a clear api_error, within the documented bound.
    let started = Instant::now();
    let images = format!("{base}/nano-banana/images");
    let tasks = format!("{base}/nano-banana/tasks");
    let new_task = json!({"prompt": "during the outage", "async": true});
    let read = json!({"action": "retrieve", "id": stage.submitted.ids[0]});
    let (refused, unread) = tokio::join!(
        post(&client, &images, &token, &new_task),
        post(&client, &tasks, &token, &read),
    );
    for (status, body) in [refused.expect("answered"), unread.expect("answered")] {
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["error"]["code"], "api_error", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("database is unavailable"), "{body}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "answered within the pool's bound: {:?}",
        started.elapsed()
    );
    tokio::time::sleep_until((cut_at + Duration::from_secs(15)).into()).await;
    proxy.restore();

    // Back by itself.
    wait_readiness(&client, &base, 200, "").await;
    stage.submit(2).await;
    for request in waiting {
        let (status, body) = request.await.expect("joined").expect("answered");
        assert_eq!(status, 200, "{body}");
        stage
            .submitted
            .ids
            .push(body["task_id"].as_str().expect("a task id").to_owned());
    }
    stage.settle_once("pg_outage").await;
}

/// A small file system of the test's own (tmpfs; the suite runs as root, in CI too), which
/// the test fills up and frees again. Unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
    ballast: PathBuf,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> SmallDisk {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "this test needs a small file system to fill: `mount -t tmpfs` failed ({status:?}); \
             run the suite as root (as CI does), or in a container allowed to mount"
        );
        let ballast = dir.path().join("ballast");
        SmallDisk { dir, ballast }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(&self.ballast).expect("ballast file");
        for chunk in [1 << 20, 4096, 1] {
            let bytes = vec![0xa5u8; chunk];
            while file.write_all(&bytes).is_ok() {}
        }
        let _ = file.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(&self.ballast).expect("the ballast goes");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The disk under SQLite (and the image folder) fills up while tasks run. New work gets a clear
/// `api_error`; reads still answer; running tasks keep their images and results and write them
/// once space returns; the database is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full() {
    let disk = SmallDisk::mount(24);
    let dir = disk.path().to_owned();
    let database = format!("sqlite://{}", dir.join("nano-banana.db").display());
    let url = database.clone();
    let mut stage = Stage::start(move |c| {
        c.database_url = url;
        c.storage = StorageConfig::Local(dir.join("images"));
    })
    .await;
    let (client, base, token) = (
        stage.client.clone(),
        stage.base.clone(),
        stage.token.clone(),
    );
    stage.submit(24).await;
    stage.receiver.wait_for(2).await;

    disk.fill();
    let during = stage
        .app
        .post_images_as(&token, json!({"prompt": "no room", "async": true}))
        .await;
    assert_error(&during, 500, "api_error");
    let message = during.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("database is unavailable"),
        "{}",
        during.body
    );
    // Reads do not need room.
    let read = stage
        .app
        .post_tasks_as(&token, json!({"id": stage.submitted.ids[0]}))
        .await;
    assert_eq!(read.status, 200, "{}", read.body);
    tokio::time::sleep(Duration::from_secs(3)).await;
    disk.free();

    // Back by itself: new work is accepted again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let again = post(
            &client,
            &format!("{base}/nano-banana/images"),
            &token,
            &json!({"prompt": "room again", "async": true}),
        )
        .await
        .expect("answered");
        if again.0 == 200 {
            stage
                .submitted
                .ids
                .push(again.1["task_id"].as_str().expect("a task id").to_owned());
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {}", again.1);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stage.settle_once("sqlite_disk_full").await;
    drop(stage);
    // Not corrupt.
    use sqlx::Connection;
    let mut connection = sqlx::SqliteConnection::connect(&database)
        .await
        .expect("the database opens");
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut connection)
        .await
        .expect("integrity_check runs");
    assert_eq!(check, "ok");
}

/// The S3 store answers 503 for 15 s, then refuses connections for 15 s, while tasks run and
/// new ones arrive. Made images are kept and stored when it is back; no image URL ever names
/// an object that does not exist; `/readyz` names the store meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage() {
    let s3 = test_s3();
    let proxy = FaultProxy::start(address_of(&s3.endpoint, 80))
        .await
        .expect("the proxy starts");
    let mut settings = s3.fresh_settings();
    settings.endpoint = Some(format!("http://{}", proxy.address()));
    let mut stage = Stage::start(move |c| c.storage = StorageConfig::S3(settings)).await;
    let (client, base) = (stage.client.clone(), stage.base.clone());
    stage.submit(20).await;
    stage.receiver.wait_for(2).await;

    proxy.answer_with(HTTP_503);
    let outage = Instant::now();
    wait_readiness(&client, &base, 503, "storage").await;
    // Work is still accepted: the database is fine, and the images wait for the store.
    stage.submit(6).await;
    tokio::time::sleep_until((outage + Duration::from_secs(15)).into()).await;
    proxy.cut();
    wait_readiness(&client, &base, 503, "storage").await;
    tokio::time::sleep_until((outage + Duration::from_secs(30)).into()).await;
    proxy.restore();

    wait_readiness(&client, &base, 200, "").await;
    stage.settle_once("s3_outage").await;
}

/// Deletes every key under `prefix` in the test Redis: a Redis that restarted empty, as far as
/// this test can tell (other tests share the Redis).
async fn forget_keys(prefix: &str) {
    let client = redis::Client::open(test_redis_url()).expect("a Redis URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut connection)
            .await
            .expect("DEL");
    }
}

/// Redis goes away for 10 s, then comes back empty. A node failing closed answers `api_error`
/// at once meanwhile; a node failing open admits unchecked; both name Redis in `/readyz`.
/// Afterwards both limit again by themselves, from full buckets (a restart forgets them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage() {
    let redis = test_redis();
    let proxy = FaultProxy::start(address_of(&redis.url, 6379))
        .await
        .expect("the proxy starts");
    let mut closed = redis.clone();
    closed.url = through(&redis.url, &proxy);
    closed.timeout = Duration::from_millis(500);
    let mut open = closed.clone();
    open.failure_mode = nano_banana::limits::FailureMode::Open;
    let receiver = callback_receiver(0, false).await;
    let strict = spawn_admin_app(move |c| c.redis = Some(closed)).await;
    let lenient = spawn_admin_app(move |c| c.redis = Some(open)).await;
    let limits = json!({"rate_per_minute": 6, "burst": 3});
    let (strict_id, strict_token) = application(&strict, CREDITS, limits.clone()).await;
    let (lenient_id, lenient_token) = application(&lenient, CREDITS, limits).await;
    let client = reqwest::Client::new();
    let mut submitted = [Submitted::default(), Submitted::default()];
    let nodes = [
        (&strict, strict_token.as_str()),
        (&lenient, lenient_token.as_str()),
    ];

    // The burst, then a refusal, on both. Returns the statuses.
    let burst = |base: String, token: String, into: usize| {
        let client = client.clone();
        let url = receiver.url();
        async move {
            let mut statuses = Vec::new();
            let mut ids = Vec::new();
            for i in 0..4 {
                let body = json!({"prompt": format!("limited {i}"), "callback_url": url});
                let (status, answer) = post(
                    &client,
                    &format!("{base}/nano-banana/images"),
                    &token,
                    &body,
                )
                .await
                .expect("answered");
                if status == 200 {
                    ids.push(answer["task_id"].as_str().expect("a task id").to_owned());
                }
                statuses.push(status);
            }
            (statuses, ids, into)
        }
    };
    for (i, (node, token)) in nodes.iter().enumerate() {
        let (statuses, ids, _) = burst(node.address.clone(), token.to_string(), i).await;
        assert_eq!(statuses, [200, 200, 200, 429]);
        submitted[i].with_callback.extend(ids.iter().cloned());
        submitted[i].ids.extend(ids);
    }

    proxy.cut();
    let cut_at = Instant::now();
    for (node, _) in &nodes {
        wait_readiness(&client, &node.address, 503, "redis").await;
    }
    // Failing closed: a clear api_error, within the Redis timeout.
    let started = Instant::now();
    let refused = strict
        .post_images_as(&strict_token, json!({"prompt": "closed", "async": true}))
        .await;
    assert_error(&refused, 500, "api_error");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("rate limiter is unavailable")),
        "{}",
        refused.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Failing open: admitted, unchecked (no rate-limit headers), past the limit.
    for i in 0..4 {
        let admitted = lenient
            .post_images_as(
                &lenient_token,
                json!({"prompt": format!("open {i}"), "async": true}),
            )
            .await;
        assert_eq!(admitted.status, 200, "{}", admitted.body);
        assert!(admitted.headers.get("x-ratelimit-limit").is_none());
        let id = admitted.body["task_id"].as_str().expect("a task id");
        submitted[1].ids.push(id.to_owned());
    }
    tokio::time::sleep_until((cut_at + Duration::from_secs(10)).into()).await;
    proxy.restore();
    for (node, _) in &nodes {
        wait_readiness(&client, &node.address, 200, "").await;
    }
    forget_keys(&redis.prefix).await;

    // Limits resume by themselves, from full buckets.
    for (i, (node, token)) in nodes.iter().enumerate() {
        let (statuses, ids, _) = burst(node.address.clone(), token.to_string(), i).await;
        assert_eq!(statuses, [200, 200, 200, 429], "node {i}");
        submitted[i].with_callback.extend(ids.iter().cloned());
        submitted[i].ids.extend(ids);
    }
    let mut counts = Counts::default();
    for (i, (node, token)) in nodes.iter().enumerate() {
        let app_id = if i == 0 { &strict_id } else { &lenient_id };
        let records = all_ended(&client, &node.address, token, &submitted[i].ids).await;
        assert!(records.values().all(|r| r["state"] == "succeeded"));
        let reserved = submitted[i].ids.len() as i64;
        counts.accepted += submitted[i].ids.len();
        counts.finished += records.len();
        counts.callbacks_owed += submitted[i].with_callback.len();
        counts.credits_reserved += reserved;
        counts.settled += check_credits(&client, &node.address, app_id, reserved).await;
    }
    let all_owed: HashSet<String> = submitted
        .iter()
        .flat_map(|s| s.with_callback.iter().cloned())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let delivered: HashSet<String> = receiver
            .received()
            .iter()
            .filter_map(|(_, b)| b["task_id"].as_str().map(str::to_owned))
            .collect();
        if all_owed.is_subset(&delivered) {
            counts.delivered = delivered.len();
            break;
        }
        assert!(Instant::now() < deadline, "callbacks missing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    counts.print("redis_outage");
    assert_eq!(counts.settled, counts.credits_reserved);
}

/// Callback receivers that accept and never answer, or answer a byte a second: the other
/// callbacks arrive without waiting for them, and the stalled ones are cut off at the callback
/// timeout and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_callback_receivers() {
    let silent = StallingReceiver::start(Stall::Silent)
        .await
        .expect("receiver");
    let trickle = StallingReceiver::start(Stall::Trickle(Duration::from_secs(1)))
        .await
        .expect("receiver");
    let receiver = callback_receiver(0, false).await;
    let timeout = Duration::from_secs(2);
    let app = spawn_admin_app(move |c| c.callback_timeout = timeout).await;
    let (app_id, token) = application(&app, CREDITS, json!({})).await;
    let client = reqwest::Client::new();
    let base = app.address.clone();
    let mut stalled = Vec::new();
    let mut submitted = Submitted::default();
    // The stalled ones first, so they are claimed first.
    for stall in [&silent, &trickle] {
        let mut ids = Submitted::default();
        submit(&client, &base, &token, 8, &stall.url(), &mut ids).await;
        stalled.extend(ids.with_callback.iter().cloned());
        submitted.ids.extend(ids.ids);
    }
    submit(&client, &base, &token, 40, &receiver.url(), &mut submitted).await;
    let owed = submitted.with_callback.len();
    receiver.wait_for(owed).await;
    // Each callback came within the timeout of its task's end (tasks themselves may queue on a
    // busy machine; the delivery is what must not wait for the stalled receivers).
    let records = all_ended(&client, &base, &token, &submitted.ids).await;
    let (now, wall_now) = (Instant::now(), std::time::SystemTime::now());
    let mut slowest = Duration::ZERO;
    for (task_id, arrived) in receiver.deliveries().first {
        let arrived = wall_now - now.duration_since(arrived);
        let arrived = arrived
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        let finished = records[&task_id]["finished_at"]
            .as_f64()
            .expect("finished_at");
        slowest = slowest.max(Duration::from_secs_f64((arrived - finished).max(0.0)));
    }
    assert!(
        slowest < timeout,
        "a callback waited for the stalled receivers: {slowest:?}"
    );
    // Cut off at the timeout and tried again: two attempts each at least.
    let deadline = Instant::now() + Duration::from_secs(30);
    let each = stalled.len() / 2;
    while silent.requests() < 2 * each || trickle.requests() < 2 * each {
        assert!(
            Instant::now() < deadline,
            "stalled receivers not retried: {} and {}",
            silent.requests(),
            trickle.requests()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &stalled {
        let status = app.db.callback_status(id).await.expect("callback status");
        let (attempts, state) = status.expect("a callback row");
        assert!(
            attempts >= 1 && state == "pending",
            "{id}: {attempts} {state}"
        );
    }
    let records = all_ended(&client, &base, &token, &submitted.ids).await;
    assert_callbacks_match(&receiver, &submitted.with_callback, &{ records.clone() }).await;
    let reserved = submitted.ids.len() as i64;
    let counts = Counts {
        accepted: submitted.ids.len(),
        finished: records.len(),
        rerun: 0,
        callbacks_owed: owed,
        delivered: receiver.delivered(),
        credits_reserved: reserved,
        settled: check_credits(&client, &base, &app_id, reserved).await,
    };
    counts.print("stalled_callback_receivers");
    say(&format!(
        "faults: stalled_callback_receivers stalled_callbacks={} silent_attempts={} \
         trickle_attempts={} slowest_other={slowest:?}",
        stalled.len(),
        silent.requests(),
        trickle.requests()
    ));
    assert_eq!(counts.settled, counts.credits_reserved);
}

/// SIGTERM with 200 tasks in flight on one of two nodes (PostgreSQL, S3, Redis): the node stops
/// within `--shutdown-grace`; every sync request it held gets an answer (its result, or an error
/// naming its task); its unfinished tasks are finished by the other node; no task has two
/// results, and every callback arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_one_of_two_nodes() {
    const GRACE: u64 = 4;
    // Some tasks outlast the grace: they are put back and finished by the other node.
    let fake = FakeGemini::start(FakeGeminiOptions {
        latency: Latency::Uniform(Duration::from_millis(200), Duration::from_millis(5000)),
        ..FakeGeminiOptions::default()
    })
    .await
    .expect("the fake upstream starts");
    let receiver = callback_receiver(0, false).await;
    let stack = scaled_stack_env().await;
    let mut env = vec![
        ("NANO_BANANA_ADMIN_KEY".to_owned(), ADMIN_KEY.to_owned()),
        ("NANO_BANANA_WORKERS".to_owned(), "16".to_owned()),
        ("NANO_BANANA_SHUTDOWN_GRACE".to_owned(), GRACE.to_string()),
    ];
    env.extend(stack);
    let dirs = [
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    ];
    // One at a time: the first creates the bootstrap token, the second finds it.
    let mut stopping = start_server(dirs[0].path(), free_port(), &fake.base_url(), &env).await;
    let survivor = start_server(dirs[1].path(), free_port(), &fake.base_url(), &env).await;
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/admin/apps", survivor.base_url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "sigterm", "credits": CREDITS}))
        .send()
        .await
        .expect("admin API answers")
        .json::<Value>()
        .await
        .expect("JSON");
    let app_id = created["id"].as_str().expect("an id").to_owned();
    let token = client
        .post(format!("{}/admin/apps/{app_id}/tokens", survivor.base_url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({}))
        .send()
        .await
        .expect("admin API answers")
        .json::<Value>()
        .await
        .expect("JSON")["token"]
        .as_str()
        .expect("a token")
        .to_owned();

    // 200 tasks on the node about to stop: 100 sync, then 100 async (half with callbacks).
    let base = stopping.base_url.clone();
    let mut submitted = Submitted::default();
    let mut sync = Vec::new();
    for i in 0..100 {
        sync.push(sync_request(&client, &base, &token, i));
        submit(&client, &base, &token, 1, &receiver.url(), &mut submitted).await;
    }
    // Mid-flight: some done, most queued or running.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.request_count() < 48 {
        assert!(Instant::now() < deadline, "the tasks did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls_at_signal = fake.request_count();
    // SAFETY: kill(2) on our own child's pid.
    let sent = unsafe { libc::kill(stopping.pid() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0, "SIGTERM sent");
    let signalled = Instant::now();
    let exit = loop {
        if let Some(status) = stopping.child.try_wait().expect("waitable") {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(GRACE + 5),
            "the node did not stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stopped_in = signalled.elapsed();
    assert!(exit.success(), "a clean exit: {exit}");
    assert!(
        stopped_in <= Duration::from_millis(GRACE * 1000 + 1000),
        "stopped within the grace ({GRACE} s): {stopped_in:?}"
    );
    assert!(
        calls_at_signal < 200,
        "signalled too late to prove anything"
    );

    // Every sync request was answered: its result, or an error naming its task.
    let (mut answered_ok, mut answered_error) = (0, 0);
    for request in sync {
        let (status, body) = request
            .await
            .expect("joined")
            .expect("an answer, not a reset");
        let id = body["task_id"].as_str().expect("a task id").to_owned();
        match status {
            200 => answered_ok += 1,
            500 => {
                assert_eq!(body["error"]["code"], "api_error", "{body}");
                answered_error += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
        submitted.ids.push(id);
    }
    let counts = settle(
        &client,
        &survivor.base_url,
        &token,
        &app_id,
        &submitted,
        &receiver,
        &fake,
    )
    .await;
    counts.print("sigterm_one_of_two_nodes");
    say(&format!(
        "faults: sigterm_one_of_two_nodes stopped_in={stopped_in:?} sync_answered_ok={answered_ok} \
         sync_answered_error={answered_error}"
    ));
    assert_eq!(counts.accepted, 200);
    assert_eq!(counts.settled, counts.credits_reserved);
}
