//! Applications, tokens, credits and rate limits: the admin API, exact credits under
//! concurrency, refunds, every token error, and honest rate limiting.

use std::time::{Duration, Instant};

use nano_banana::fake::gemini::{FakeGemini, FakeGeminiOptions, Scenario};
use serde_json::{Value, json};

use crate::helpers::{Answer, TestApp, assert_error, spawn_app, spawn_app_with};

const ADMIN_KEY: &str = "admin-test-key";

async fn admin_app() -> TestApp {
    spawn_app_with(|c| c.admin_key = Some(ADMIN_KEY.into())).await
}

/// A new application with `credits` and its token.
async fn application(app: &TestApp, credits: i64, limits: Value) -> (String, String) {
    let mut body = limits;
    body["name"] = json!("customer");
    body["credits"] = json!(credits);
    let created = app
        .admin(reqwest::Method::POST, "/admin/apps", Some(body))
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let token = app
        .admin(
            reqwest::Method::POST,
            &format!("/admin/apps/{id}/tokens"),
            Some(json!({})),
        )
        .await;
    assert_eq!(token.status, 200, "{}", token.body);
    (id, token.body["token"].as_str().unwrap().to_owned())
}

async fn balance(app: &TestApp, id: &str) -> (i64, i64) {
    let shown = app
        .admin(reqwest::Method::GET, &format!("/admin/apps/{id}"), None)
        .await;
    (
        shown.body["credits"].as_i64().unwrap(),
        shown.body["ledger_sum"].as_i64().unwrap(),
    )
}

async fn generate(app: &TestApp, token: &str, body: Value) -> Answer {
    app.post("/nano-banana/images", Some(token), body.to_string())
        .await
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_key_and_guarded_with_one() {
    let off = spawn_app().await;
    let answer = off.post("/admin/apps", Some(&off.token), "{}".into()).await;
    assert_error(&answer, 404, "no_api");

    let app = admin_app().await;
    let answer = crate::helpers::answer(app.get("/admin/apps").await).await;
    assert_error(&answer, 400, "no_token");
    let answer = app.post("/admin/apps", Some("wrong"), "{}".into()).await;
    assert_error(&answer, 401, "invalid_token");
    let answer = app
        .admin(reqwest::Method::GET, "/admin/apps/nope", None)
        .await;
    assert_error(&answer, 404, "no_api");
    let answer = app
        .admin(
            reqwest::Method::POST,
            "/admin/apps",
            Some(json!({"name": ""})),
        )
        .await;
    assert_error(&answer, 400, "bad_request");
    let answer = app
        .admin(
            reqwest::Method::POST,
            "/admin/apps",
            Some(json!({"name": "x", "burst": 0})),
        )
        .await;
    assert_error(&answer, 400, "bad_request");
}

#[tokio::test]
async fn credits_for_ten_images_make_exactly_ten_under_a_hundred_concurrent_requests() {
    let app = admin_app().await;
    let (id, token) = application(&app, 10, json!({})).await;
    let requests = (0..100).map(|i| {
        let app = &app;
        let token = token.clone();
        async move { generate(app, &token, json!({"prompt": format!("image {i}")})).await }
    });
    let answers = futures_util::future::join_all(requests).await;
    let succeeded = answers.iter().filter(|a| a.status == 200).count();
    let used_up = answers
        .iter()
        .filter(|a| a.status == 403 && a.body["error"]["code"] == "used_up")
        .count();
    assert_eq!(succeeded, 10);
    assert_eq!(used_up, 90);
    for refused in answers.iter().filter(|a| a.status == 403) {
        assert_error(refused, 403, "used_up");
        assert!(
            refused.body.get("task_id").is_none(),
            "no task for a refused request"
        );
    }
    assert_eq!(balance(&app, &id).await, (0, 0));
    let usage = app.admin(reqwest::Method::GET, "/admin/usage", None).await;
    let row = usage.body["usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["application_id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(row["images"], 10);
    assert_eq!(row["credits"], 10);
    assert_eq!(row["model"], "nano-banana");
}

#[tokio::test]
async fn only_images_made_are_charged_and_the_rest_refunded() {
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    let base_url = fake.base_url();
    let app = spawn_app_with(move |c| {
        c.admin_key = Some(ADMIN_KEY.into());
        crate::helpers::use_gemini(c, &base_url, "k");
    })
    .await;
    let (id, token) = application(&app, 10, json!({})).await;
    for scenario in [
        Scenario::Success,
        Scenario::ImageSafety,
        Scenario::Success,
        Scenario::ImageSafety,
    ] {
        fake.push_scenario(scenario);
    }
    let partial = generate(&app, &token, json!({"prompt": "x", "count": 4})).await;
    assert_eq!(partial.status, 200, "{}", partial.body);
    assert_eq!(partial.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(balance(&app, &id).await, (8, 8), "2 charged, 2 refunded");

    for _ in 0..2 {
        fake.push_scenario(Scenario::ImageSafety);
    }
    let refused = generate(&app, &token, json!({"prompt": "x", "count": 2})).await;
    assert_error(&refused, 403, "forbidden");
    assert_eq!(balance(&app, &id).await, (8, 8), "a refusal is not billed");

    // Asking for more than the balance covers is refused whole, before any work.
    let before = fake.request_count();
    let too_much = generate(
        &app,
        &token,
        json!({"prompt": "x", "model": "nano-banana-pro", "count": 3}),
    )
    .await;
    assert_error(&too_much, 403, "used_up");
    assert_eq!(fake.request_count(), before);

    let topped = app
        .admin(
            reqwest::Method::POST,
            &format!("/admin/apps/{id}/topup"),
            Some(json!({"credits": 4})),
        )
        .await;
    assert_eq!(topped.body["credits"], 12);
    let pro = generate(
        &app,
        &token,
        json!({"prompt": "x", "model": "nano-banana-pro", "count": 3}),
    )
    .await;
    assert_eq!(pro.status, 200, "{}", pro.body);
    assert_eq!(balance(&app, &id).await, (0, 0));
    // Polling is free.
    let task_id = pro.body["task_id"].as_str().unwrap();
    app.post(
        "/nano-banana/tasks",
        Some(&token),
        json!({"id": task_id}).to_string(),
    )
    .await;
    assert_eq!(balance(&app, &id).await, (0, 0));
}

#[tokio::test]
async fn every_token_error_has_its_code() {
    let app = admin_app().await;
    let (id, token) = application(&app, 100, json!({})).await;
    let body = json!({"prompt": "x", "async": true});

    let expired = app
        .admin(
            reqwest::Method::POST,
            &format!("/admin/apps/{id}/tokens"),
            Some(json!({"expires_at": 1_000_000})),
        )
        .await;
    let answer = generate(&app, expired.body["token"].as_str().unwrap(), body.clone()).await;
    assert_error(&answer, 401, "token_expired");

    let future = app
        .admin(
            reqwest::Method::POST,
            &format!("/admin/apps/{id}/tokens"),
            Some(json!({"expires_at": 4_000_000_000i64})),
        )
        .await;
    let answer = generate(&app, future.body["token"].as_str().unwrap(), body.clone()).await;
    assert_eq!(answer.status, 200, "not yet expired");

    let other_api = app
        .admin(
            reqwest::Method::POST,
            &format!("/admin/apps/{id}/tokens"),
            Some(json!({"apis": "00000000-0000-0000-0000-000000000000"})),
        )
        .await;
    let answer = generate(
        &app,
        other_api.body["token"].as_str().unwrap(),
        body.clone(),
    )
    .await;
    assert_error(&answer, 401, "token_mismatched");

    app.admin(
        reqwest::Method::POST,
        &format!("/admin/apps/{id}/disable"),
        None,
    )
    .await;
    let answer = generate(&app, &token, body.clone()).await;
    assert_error(&answer, 400, "disabled");
    app.admin(
        reqwest::Method::POST,
        &format!("/admin/apps/{id}/enable"),
        None,
    )
    .await;
    assert_eq!(generate(&app, &token, body.clone()).await.status, 200);

    let tokens = app
        .admin(
            reqwest::Method::GET,
            &format!("/admin/tokens?application_id={id}"),
            None,
        )
        .await;
    let listed = tokens.body["tokens"].as_array().unwrap();
    assert_eq!(listed.len(), 4);
    assert!(
        listed
            .iter()
            .all(|t| t.get("token").is_none() && t.get("hash").is_none())
    );
    // Tokens made within one second have no defined order: find ours by prefix.
    let original = listed
        .iter()
        .find(|t| token.starts_with(t["prefix"].as_str().unwrap()))
        .expect("the application's first token is listed");
    let original = original["id"].as_str().unwrap();
    app.admin(
        reqwest::Method::POST,
        &format!("/admin/tokens/{original}/revoke"),
        None,
    )
    .await;
    let answer = generate(&app, &token, body.clone()).await;
    assert_error(&answer, 401, "invalid_token");
}

#[tokio::test]
async fn the_rate_limit_admits_rate_plus_burst_and_retry_after_is_honest() {
    let app = admin_app().await;
    // 60 per minute = one a second, burst 3.
    let (_, token) = application(&app, 1000, json!({"rate_per_minute": 60, "burst": 3})).await;
    let body = json!({"prompt": "x", "async": true});
    let started = Instant::now();
    let mut admitted = 0;
    let mut refused = None;
    // Offer far more than the limit for 2.5 seconds.
    while started.elapsed() < Duration::from_millis(2500) {
        let answer = generate(&app, &token, body.clone()).await;
        if answer.status == 200 {
            admitted += 1;
            assert_eq!(answer.headers["x-ratelimit-limit"], "60");
        } else {
            assert_error(&answer, 429, "too_many_requests");
            refused = Some(answer);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let window = started.elapsed().as_secs_f64();
    // burst + one a second over the window, within one request.
    let expected = 3.0 + window.floor();
    assert!(
        (admitted as f64 - expected).abs() <= 1.0,
        "admitted {admitted} in {window:.2}s, expected about {expected}"
    );
    let refused = refused.expect("some requests were refused");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "retry-after {retry_after}");

    // Exhaust the bucket, then wait exactly Retry-After: the next request is admitted.
    let last = loop {
        let answer = generate(&app, &token, body.clone()).await;
        if answer.status == 429 {
            break answer;
        }
    };
    let wait: u64 = last.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(
        generate(&app, &token, body).await.status,
        200,
        "Retry-After was honest"
    );
}

#[tokio::test]
async fn the_concurrency_limit_refuses_a_second_unfinished_task_and_says_when_to_come_back() {
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    fake.push_scenario(Scenario::Slow(Duration::from_millis(1500)));
    let base_url = fake.base_url();
    let app = spawn_app_with(move |c| {
        c.admin_key = Some(ADMIN_KEY.into());
        crate::helpers::use_gemini(c, &base_url, "k");
    })
    .await;
    let (id, token) = application(&app, 100, json!({"max_concurrent": 1})).await;
    let first = generate(&app, &token, json!({"prompt": "slow", "async": true})).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = generate(&app, &token, json!({"prompt": "x", "async": true})).await;
    assert_error(&second, 429, "too_many_requests");
    // No history yet: the estimate is a typical task (10 s) less the running one's age.
    let retry_after = header_number(&second, "retry-after");
    assert!((1..=10).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(second.headers["x-concurrency-limit"], "1");
    assert_eq!(second.headers["x-concurrency-remaining"], "0");
    // Not the per-minute limit: none is set, so none of its headers.
    assert!(second.headers.get("x-ratelimit-limit").is_none());
    assert_eq!(
        balance(&app, &id).await,
        (99, 99),
        "the refusal reserved nothing"
    );

    // Once the running task has finished, the next request is admitted.
    let first_id = first.body["task_id"].as_str().unwrap();
    wait_until_finished(&app, &token, first_id).await;
    let third = generate(&app, &token, json!({"prompt": "y", "async": true})).await;
    assert_eq!(third.status, 200, "{}", third.body);
}

#[tokio::test]
async fn a_concurrency_refusal_is_told_apart_from_the_rate_limit() {
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    let base_url = fake.base_url();
    let app = spawn_app_with(move |c| {
        c.admin_key = Some(ADMIN_KEY.into());
        crate::helpers::use_gemini(c, &base_url, "k");
    })
    .await;
    let (_, token) = application(
        &app,
        100,
        json!({"max_concurrent": 1, "rate_per_minute": 600, "burst": 10}),
    )
    .await;
    // A finished task of 1.2 s makes the typical duration; the next one hangs.
    fake.push_scenario(Scenario::Slow(Duration::from_millis(1200)));
    let done = generate(&app, &token, json!({"prompt": "timed"})).await;
    assert_eq!(done.status, 200, "{}", done.body);
    fake.push_scenario(Scenario::Slow(Duration::from_secs(30)));
    let running = generate(&app, &token, json!({"prompt": "slow", "async": true})).await;
    assert_eq!(running.status, 200, "{}", running.body);

    let refused = generate(&app, &token, json!({"prompt": "x", "async": true})).await;
    assert_error(&refused, 429, "too_many_requests");
    // A typical task takes what the finished one took (1.2 s, more on a loaded machine) and
    // the running one has just started: about that, rounded up.
    let typical = app
        .post(
            "/nano-banana/tasks",
            Some(&token),
            json!({"action": "retrieve", "id": done.body["task_id"]}).to_string(),
        )
        .await
        .body["elapsed"]
        .as_f64()
        .expect("the finished task's elapsed time");
    let retry_after = header_number(&refused, "retry-after");
    let most = typical.ceil() as u64 + 1;
    assert!(
        (1..=most).contains(&retry_after),
        "retry-after {retry_after}, typical task {typical} s"
    );
    assert_eq!(refused.headers["x-concurrency-limit"], "1");
    // The rate limit admitted this request: its headers say so, with room left.
    assert_eq!(refused.headers["x-ratelimit-limit"], "600");
    assert!(header_number(&refused, "x-ratelimit-remaining") > 0);

    // A request refused by the rate limit carries its headers, not the concurrency limit's.
    // Sent at once, 40 requests outrun a burst of 10 at 10 a second however slow the machine
    // (one at a time, requests slower than 100 ms would never drain it).
    let requests = (0..40).map(|_| generate(&app, &token, json!({"prompt": "x", "async": true})));
    let limited = futures_util::future::join_all(requests)
        .await
        .into_iter()
        .find(|answer| answer.headers.get("x-concurrency-limit").is_none())
        .expect("the burst of 10 ran out");
    assert_error(&limited, 429, "too_many_requests");
    assert_eq!(limited.headers["x-ratelimit-remaining"], "0");
    assert!(header_number(&limited, "retry-after") >= 1);
}

fn header_number(answer: &Answer, name: &str) -> u64 {
    answer.headers[name]
        .to_str()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Polls `retrieve` with `token` until the task has finished.
async fn wait_until_finished(app: &TestApp, token: &str, task_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let record = app
            .post(
                "/nano-banana/tasks",
                Some(token),
                json!({"id": task_id}).to_string(),
            )
            .await;
        if matches!(record.body["state"].as_str(), Some("succeeded" | "failed")) {
            return;
        }
        assert!(Instant::now() < deadline, "{task_id} did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_admin_cli_works_on_the_database_and_against_the_server() {
    let app = admin_app().await;
    let binary = env!("CARGO_BIN_EXE_nano-banana");
    let direct = tokio::process::Command::new(binary)
        .args(["admin", "--database-url", app.database_url()])
        .args(["apps", "create", "--name", "from-cli", "--credits", "5"])
        .env_remove("NANO_BANANA_ADMIN_SERVER")
        .output()
        .await
        .unwrap();
    assert!(
        direct.status.success(),
        "{}",
        String::from_utf8_lossy(&direct.stderr)
    );
    let created: Value = serde_json::from_slice(&direct.stdout).unwrap();
    assert_eq!(created["name"], "from-cli");
    assert_eq!(created["credits"], 5);

    let remote = tokio::process::Command::new(binary)
        .args([
            "admin",
            "--server",
            &app.address,
            "--admin-key",
            ADMIN_KEY,
            "apps",
            "list",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        remote.status.success(),
        "{}",
        String::from_utf8_lossy(&remote.stderr)
    );
    let listed: Value = serde_json::from_slice(&remote.stdout).unwrap();
    let names: Vec<&str> = listed["applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"from-cli"), "{names:?}");

    let refused = tokio::process::Command::new(binary)
        .args([
            "admin",
            "--server",
            &app.address,
            "--admin-key",
            "wrong",
            "apps",
            "list",
        ])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("invalid_token"));
}

#[tokio::test]
async fn credits_stay_exact_with_concurrent_partial_failures() {
    let fake = FakeGemini::start(FakeGeminiOptions::default())
        .await
        .unwrap();
    let base_url = fake.base_url();
    let app = spawn_app_with(move |c| {
        c.admin_key = Some(ADMIN_KEY.into());
        crate::helpers::use_gemini(c, &base_url, "k");
    })
    .await;
    let (id, token) = application(&app, 10, json!({})).await;
    // Every other request asks for two images, one of which the upstream refuses.
    let requests = (0..100).map(|i| {
        let app = &app;
        let token = token.clone();
        async move {
            let body = if i % 2 == 0 {
                json!({"prompt": format!("image {i}")})
            } else {
                json!({"prompt": format!("image {i}"), "count": 2})
            };
            generate(app, &token, body).await
        }
    });
    // Refusals are decided by the fake per call: queue one refusal for every pair.
    for _ in 0..50 {
        fake.push_scenario(Scenario::Success);
        fake.push_scenario(Scenario::ImageSafety);
    }
    let answers = futures_util::future::join_all(requests).await;
    let images: usize = answers
        .iter()
        .filter(|a| a.status == 200)
        .map(|a| a.body["data"].as_array().unwrap().len())
        .sum();
    for other in answers.iter().filter(|a| a.status != 200) {
        let code = other.body["error"]["code"].as_str().unwrap();
        assert!(code == "used_up" || code == "forbidden", "{}", other.body);
    }
    let (credits, ledger_sum) = balance(&app, &id).await;
    assert_eq!(credits, ledger_sum, "balance = sum of the ledger");
    assert_eq!(
        images as i64 + credits,
        10,
        "every credit is an image made or still there"
    );
    assert!(images > 0);
}

/// A SQLite database in `dir` with one application, `app`, holding `credits`.
async fn database_with_app(dir: &tempfile::TempDir, credits: i64) -> nano_banana::storage::Db {
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let db = nano_banana::storage::Db::connect(&url)
        .await
        .expect("a database");
    let created = db
        .create_first_application("app", "user", credits, "token", "hash", "nb-", 0)
        .await
        .expect("an application");
    assert!(created);
    db
}

/// `app`'s balance and the sum of its ledger (equal when the books balance).
async fn credits(db: &nano_banana::storage::Db) -> (i64, i64) {
    let app = db.get_application("app").await.expect("a query");
    let app = app.expect("the application");
    (app.credits, app.ledger_sum)
}

/// A task of `app` reserving 10 credits, claimed at admission by `owner` if given.
fn ten_credit_task<'a>(
    id: &'a str,
    owner: Option<&'a str>,
) -> nano_banana::storage::db::NewTask<'a> {
    nano_banana::storage::db::NewTask {
        id,
        trace_id: "trace",
        application_id: "app",
        user_id: "user",
        api_id: "api",
        credential_id: "token",
        request: "{}",
        inputs: "[]",
        callback_url: None,
        model: "nano-banana",
        reserved: 10,
        now: 1,
        claim: owner.map(|owner| nano_banana::storage::db::Claim {
            owner,
            until: i64::MAX,
        }),
    }
}

/// An admission that fails halfway (here: a task id used twice) takes nothing: the reservation
/// made before the failure is rolled back, and the database connection works on.
#[tokio::test]
async fn a_failed_admission_reserves_nothing_and_the_next_one_works() {
    use nano_banana::storage::db::Admission;
    let dir = tempfile::tempdir().expect("a temporary folder");
    let db = database_with_app(&dir, 100).await;
    let task = |id| ten_credit_task(id, None);
    assert_eq!(
        db.admit_task(&task("one"), None).await.expect("admitted"),
        Admission::Inserted
    );
    assert_eq!(credits(&db).await, (90, 90));
    assert!(
        db.admit_task(&task("one"), None).await.is_err(),
        "the id is taken"
    );
    assert_eq!(
        credits(&db).await,
        (90, 90),
        "nothing reserved by the failed admission"
    );
    assert_eq!(
        db.admit_task(&task("two"), None).await.expect("admitted"),
        Admission::Inserted
    );
    assert_eq!(credits(&db).await, (80, 80));
    db.close().await;
}

/// Admissions and settlements sent at the same time each get their own answer, in the order
/// they were sent, and one that fails fails alone (the writer connection works on).
#[tokio::test]
async fn admissions_and_settlements_written_together_answer_each_alone() {
    use nano_banana::storage::db::{Admission, Completion, NewTask};
    let dir = tempfile::tempdir().expect("a temporary folder");
    let db = database_with_app(&dir, 55).await;
    let ids = ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"];
    let task = |id| ten_credit_task(id, Some("me"));
    assert_eq!(
        db.admit_task(&task("taken"), None).await.expect("admitted"),
        Admission::Inserted
    );
    // Sent together: a repeated id fails, the other is admitted.
    let again = [task("taken"), task("u1")];
    let admitted =
        futures_util::future::join_all(again.iter().map(|t| db.admit_task(t, None))).await;
    assert!(admitted[0].is_err(), "the id is taken: {:?}", admitted[0]);
    assert_eq!(
        admitted[1].as_ref().expect("an answer"),
        &Admission::Inserted
    );
    assert_eq!(credits(&db).await, (35, 35));
    // In arrival order: the first three take 30 of the 35 credits left, the rest find them used
    // up.
    let tasks: Vec<NewTask> = ids.iter().map(|id| task(id)).collect();
    let admitted =
        futures_util::future::join_all(tasks.iter().map(|t| db.admit_task(t, None))).await;
    let admitted: Vec<Admission> = admitted
        .into_iter()
        .map(|a| a.expect("an answer"))
        .collect();
    assert_eq!(admitted[..3], vec![Admission::Inserted; 3]);
    assert_eq!(admitted[3..], vec![Admission::UsedUp; 6]);
    assert_eq!(credits(&db).await, (5, 5));

    // Settled together: the tasks held under this lease are recorded; one under another owner's
    // name is not, and says so.
    let db = &db;
    let done = |owner: &'static str, id: &'static str| async move {
        let completion = Completion {
            succeeded: true,
            images: 1,
            failed_images: 0,
            http_status: 200,
            response: "{\"ok\":true}",
            callback_url: None,
            callback_id: "cb",
            now: 2,
        };
        db.complete_task(id, owner, &completion).await
    };
    let settled = futures_util::future::join_all([
        done("me", "taken"),
        done("someone else", "t1"),
        done("me", "t2"),
        done("me", "t3"),
    ])
    .await;
    let settled: Vec<bool> = settled.into_iter().map(|s| s.expect("an answer")).collect();
    assert_eq!(settled, [true, false, true, true]);
    for (id, state) in [
        ("taken", "succeeded"),
        ("t1", "processing"),
        ("t2", "succeeded"),
        ("t3", "succeeded"),
        ("u1", "processing"),
        ("t4", ""),
    ] {
        let found = db
            .task_state(id)
            .await
            .expect("a query")
            .unwrap_or_default();
        assert_eq!(found, state, "task {id}");
    }
    db.close().await;
}
