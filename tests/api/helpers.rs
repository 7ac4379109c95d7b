//! `spawn_app()` starts the real server in-process on a random port with a fresh database and
//! image folder; `TestApp` has typed helpers for the contract's routes.

use std::time::{Duration, Instant};

use nano_banana::{
    app::Application,
    config::Config,
    fetch::AllowRule,
    limits::{FailureMode, RedisSettings},
    storage::images::{S3Settings, StorageConfig},
    tasks::TaskSettings,
};
use nano_banana_testkit::{Behaviour, CallbackReceiver};
use reqwest::{StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const TOKEN: &str = "nb-test-token-0123456789";

pub struct TestApp {
    pub address: String,
    pub token: String,
    pub client: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    /// The server's database and image store, for tests that look inside them.
    pub db: nano_banana::storage::Db,
    pub store: nano_banana::storage::ImageStore,
    config: Config,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The server in placeholder mode (no upstream key).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The server with a config adjusted by the test (e.g. pointed at a fake Gemini).
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(data_dir.path());
    if scaled() {
        use_scaled_stack(&mut config).await;
    }
    adjust(&mut config);
    start(config, data_dir).await
}

/// Which services the suite runs on. `NANO_BANANA_TEST_STACK=scaled` runs every test on
/// PostgreSQL + S3 + Redis, each test on a fresh schema, prefix and key space; the default is
/// SQLite + a local folder. One suite, run twice (see scripts/test.sh).
pub fn scaled() -> bool {
    std::env::var("NANO_BANANA_TEST_STACK").is_ok_and(|stack| stack == "scaled")
}

/// Points the config at the shared services of a scaled-out deployment.
pub async fn use_scaled_stack(config: &mut Config) {
    config.database_url = fresh_postgres_schema().await;
    use_s3(config);
    use_redis(config);
}

/// Makes `config` another node of `other`'s deployment: the same database and image store.
pub fn share_state(config: &mut Config, other: &TestApp) {
    config.database_url = other.config.database_url.clone();
    config.data_dir = other.config.data_dir.clone();
    config.storage = other.config.storage.clone();
    config.redis = other.config.redis.clone();
}

/// The environment that points a `nano-banana serve` child process at the same services as
/// `use_scaled_stack` (one fresh schema, prefix and key space, shared by every process given it).
pub async fn scaled_stack_env() -> Vec<(String, String)> {
    let redis = test_redis();
    let s3 = test_s3();
    let store = s3.fresh_settings();
    let prefix = store.prefix.clone().unwrap_or_default();
    vec![
        (
            "NANO_BANANA_STORAGE".to_owned(),
            format!("s3://{}/{prefix}", s3.bucket),
        ),
        ("NANO_BANANA_S3_ENDPOINT".to_owned(), s3.endpoint.clone()),
        ("NANO_BANANA_S3_PATH_STYLE".to_owned(), "true".to_owned()),
        (
            "NANO_BANANA_S3_ACCESS_KEY_ID".to_owned(),
            s3.access_key_id.clone(),
        ),
        (
            "NANO_BANANA_S3_SECRET_ACCESS_KEY".to_owned(),
            s3.secret_access_key.clone(),
        ),
        (
            "NANO_BANANA_DATABASE_URL".to_owned(),
            fresh_postgres_schema().await,
        ),
        ("NANO_BANANA_REDIS_URL".to_owned(), redis.url.clone()),
        ("NANO_BANANA_REDIS_PREFIX".to_owned(), redis.prefix.clone()),
        (
            "NANO_BANANA_REDIS_FAILURE_MODE".to_owned(),
            "closed".to_owned(),
        ),
    ]
}

/// A new, empty schema in the test database (`NANO_BANANA_TEST_DATABASE_URL`, default
/// `postgres://root@127.0.0.1:5432/test`), as a URL whose connections use it.
pub async fn fresh_postgres_schema() -> String {
    use sqlx::Connection;
    let base = std::env::var("NANO_BANANA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned());
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut connection = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {base} is required by this test: {e}. \
             Start it, or set NANO_BANANA_TEST_DATABASE_URL (README: Scaling out)."
            )
        });
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut connection)
        .await
        .expect("a fresh schema");
    nano_banana_testkit::leftovers::record("schema", &schema);
    let _ = connection.close().await;
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-c%20search_path%3D{schema}")
}

/// The test Redis: `NANO_BANANA_TEST_REDIS_URL`, default `redis://127.0.0.1:6379` (as in CI).
pub fn test_redis_url() -> String {
    std::env::var("NANO_BANANA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Settings for the test Redis under a fresh key prefix (parallel tests must not share limits).
/// Fails closed, so a Redis that stops answering shows up as `api_error`s instead of quietly
/// unlimited requests; panics at once if nothing listens there: Redis tests never skip.
pub fn test_redis() -> RedisSettings {
    let url = test_redis_url();
    let address = url::Url::parse(&url)
        .ok()
        .and_then(|u| u.socket_addrs(|| Some(6379)).ok())
        .and_then(|addrs| addrs.into_iter().next())
        .unwrap_or_else(|| panic!("NANO_BANANA_TEST_REDIS_URL {url:?} is not a redis:// URL"));
    if let Err(e) = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
        panic!(
            "Redis at {url} does not answer ({e}). The Redis tests need a real Redis: start \
             one or set NANO_BANANA_TEST_REDIS_URL; they do not skip."
        );
    }
    let mut settings = RedisSettings::new(url);
    settings.prefix = format!("nb-test:{}:", uuid::Uuid::new_v4());
    nano_banana_testkit::leftovers::record("redis-prefix", &settings.prefix);
    settings.failure_mode = FailureMode::Closed;
    // A loaded CI machine must not turn into spurious failures.
    settings.timeout = Duration::from_secs(2);
    settings
}

/// Rate limits through the test Redis (see `test_redis`).
pub fn use_redis(config: &mut Config) {
    config.redis = Some(test_redis());
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(TOKEN.to_owned());
    // Test receivers and image hosts live on loopback; the policy must let exactly those in.
    config.fetch.allow = vec!["127.0.0.1/32".parse::<AllowRule>().unwrap()];
    config.poll_interval = Duration::from_millis(50);
    config.shutdown_grace = Duration::from_secs(2);
    config
}

pub async fn start(config: Config, data_dir: tempfile::TempDir) -> TestApp {
    if std::env::var_os("RUST_LOG").is_some() {
        nano_banana::telemetry::init();
    }
    let app = Application::build_with(config.clone(), fast_retries)
        .await
        .expect("the app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let (db, store) = (app.db().clone(), app.store().clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        token: TOKEN.to_owned(),
        client: reqwest::Client::new(),
        data_dir,
        db,
        store,
        config,
        stop: Some(stop),
        server: Some(server),
    }
}

fn fast_retries(settings: &mut TaskSettings) {
    settings.retry_base = Duration::from_millis(10);
    settings.callback_retry_base = Duration::from_millis(20);
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestApp {
    /// A call to the admin API with this server's admin key.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
        let key = self.config.admin_key.as_deref().unwrap_or_default();
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.expect("request sent")).await
    }

    /// The database this server uses, for tools pointed at the same state (the admin CLI).
    pub fn database_url(&self) -> &str {
        &self.config.database_url
    }

    pub async fn post_images(&self, body: Value) -> Answer {
        self.post_images_as(&self.token, body).await
    }

    pub async fn post_tasks(&self, body: Value) -> Answer {
        self.post_tasks_as(&self.token, body).await
    }

    /// `POST /nano-banana/images` with `token` (another application's, or one made by a test).
    pub async fn post_images_as(&self, token: &str, body: Value) -> Answer {
        self.post("/nano-banana/images", Some(token), body.to_string())
            .await
    }

    /// `POST /nano-banana/tasks` with `token`.
    pub async fn post_tasks_as(&self, token: &str, body: Value) -> Answer {
        self.post("/nano-banana/tasks", Some(token), body.to_string())
            .await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: String) -> Answer {
        let mut request = self
            .client
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        answer(request.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path_or_url: &str) -> reqwest::Response {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.address)
        };
        self.client.get(url).send().await.expect("request sent")
    }

    /// Polls `retrieve` until the task is finished (or the deadline passes).
    pub async fn wait_for_task(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let record = self
                .post_tasks(json!({"action": "retrieve", "id": id}))
                .await
                .body;
            let state = record["state"].as_str().unwrap_or_default().to_owned();
            if state == "succeeded" || state == "failed" {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} did not finish: {record}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The S3 bucket and prefix the app stores images in, when it uses S3 (`use_s3`).
    pub fn s3_settings(&self) -> Option<&S3Settings> {
        match &self.config.storage {
            StorageConfig::S3(settings) => Some(settings),
            StorageConfig::Local(_) => None,
        }
    }

    /// Stops the server (graceful shutdown) and waits until it has stopped.
    pub async fn stop(mut self) {
        self.shut_down().await;
    }

    async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("clean shutdown");
        }
    }

    /// Stops the server (graceful shutdown), waits for it, and starts a new one on the same
    /// database and image folder.
    pub async fn restart(mut self) -> TestApp {
        self.shut_down().await;
        let data_dir = tempfile::tempdir().expect("temp dir");
        let kept = std::mem::replace(&mut self.data_dir, data_dir);
        start(self.config.clone(), kept).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body read");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer {
        status,
        headers,
        body,
    }
}

/// Asserts a contract error: status, code, the body's shape, and the trace id echoed in the
/// `x-trace-id` header.
pub fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status.as_u16(), status, "body: {}", answer.body);
    assert_eq!(answer.body["success"], false, "body: {}", answer.body);
    assert_eq!(answer.body["error"]["code"], code, "body: {}", answer.body);
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "a message: {}",
        answer.body
    );
    assert_trace_id(answer);
}

pub fn assert_trace_id(answer: &Answer) {
    let header = answer
        .headers
        .get("x-trace-id")
        .and_then(|v| v.to_str().ok())
        .expect("an x-trace-id header");
    assert!(uuid::Uuid::parse_str(header).is_ok(), "a UUID: {header}");
    if answer.body.get("trace_id").is_some() {
        assert_eq!(answer.body["trace_id"], header);
    }
}

/// The admin key of `spawn_admin_app`.
pub const ADMIN_KEY: &str = "admin-test-key";

/// The server with the admin API on (`ADMIN_KEY`), its config further adjusted by the test.
pub async fn spawn_admin_app(adjust: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with(|c| {
        c.admin_key = Some(ADMIN_KEY.into());
        adjust(c);
    })
    .await
}

/// A new application holding `credits`, with `limits` (e.g. `{"rate_per_minute": 1, "burst":
/// 1}`), and a token of it: `(application id, token)`. Needs the admin API.
pub async fn application(app: &TestApp, credits: i64, limits: Value) -> (String, String) {
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

/// An application's balance and the sum of its ledger, through the admin API.
pub async fn balance(app: &TestApp, id: &str) -> (i64, i64) {
    let shown = app
        .admin(reqwest::Method::GET, &format!("/admin/apps/{id}"), None)
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    (
        shown.body["credits"].as_i64().unwrap(),
        shown.body["ledger_sum"].as_i64().unwrap(),
    )
}

/// How many tasks an application has, in any state, through the admin API's usage report.
pub async fn task_count(app: &TestApp, id: &str) -> i64 {
    let usage = app.admin(reqwest::Method::GET, "/admin/usage", None).await;
    assert_eq!(usage.status, 200, "{}", usage.body);
    usage.body["usage"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["application_id"] == id)
        .map(|row| row["tasks"].as_i64().unwrap())
        .sum()
}

/// Retrieves a task with `token` (tasks are visible to their own application only) until it
/// has finished, or the deadline passes.
pub async fn wait_for_task_of(app: &TestApp, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let record = app
            .post(
                "/nano-banana/tasks",
                Some(token),
                json!({"id": id}).to_string(),
            )
            .await
            .body;
        if matches!(record["state"].as_str(), Some("succeeded" | "failed")) {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} did not finish: {record}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A small real PNG of the given size.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("png encodes");
    out.into_inner()
}

pub fn data_uri(bytes: &[u8]) -> String {
    use base64::Engine;
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// How a task's record names a `data:` input with these bytes (docs/contract.md).
pub fn stored_input(bytes: &[u8]) -> String {
    format!(
        "{}{}",
        nano_banana::tasks::inputs::STORED_INPUT,
        nano_banana::domain::sha256_hex(bytes)
    )
}

/// Downloads an image URL and decodes it.
pub async fn download_image(app: &TestApp, url: &str) -> (String, image::DynamicImage) {
    let response = app.get(url).await;
    assert_eq!(response.status(), 200, "{url}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = response.bytes().await.expect("image bytes");
    let image = image::load_from_memory(&bytes).expect("a decodable image");
    (content_type, image)
}

/// A loopback HTTP server that answers every GET with the same image bytes.
pub struct ImageHost {
    pub port: u16,
    /// How many requests it has answered.
    pub hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl ImageHost {
    pub async fn start(bytes: Vec<u8>) -> ImageHost {
        let bytes = bytes::Bytes::from(bytes);
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let bytes = bytes.clone();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { ([("content-type", "image/png")], bytes) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ImageHost { port, hits, server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for ImageHost {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A loopback receiver for callbacks, the one the benchmark uses too: records every POST; fails
/// the first `fail_first` with 500; with `hang`, never answers.
pub async fn callback_receiver(fail_first: usize, hang: bool) -> CallbackReceiver {
    CallbackReceiver::start(Behaviour {
        fail_first,
        hang,
        ..Behaviour::default()
    })
    .await
    .expect("the callback receiver starts")
}

/// Points the server's upstreams (plain and `:official`) at a Gemini endpoint, e.g. a fake.
pub fn use_gemini(config: &mut Config, base_url: &str, api_key: &str) {
    config.gemini = Some(nano_banana::config::UpstreamConfig {
        base_url: base_url.to_owned(),
        api_version: "v1beta".into(),
        api_key: api_key.to_owned(),
    });
    config.official = config.gemini.clone();
}

/// The S3-compatible server of the tests (SeaweedFS, started by `scripts/dev-services.sh`), from
/// `NANO_BANANA_TEST_S3_*` with the script's defaults.
#[derive(Debug, Clone)]
pub struct TestS3 {
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

pub fn test_s3() -> TestS3 {
    let var = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    let s3 = TestS3 {
        endpoint: var("NANO_BANANA_TEST_S3_ENDPOINT", "http://127.0.0.1:8333"),
        bucket: var("NANO_BANANA_TEST_S3_BUCKET", "nano-banana-test"),
        access_key_id: var("NANO_BANANA_TEST_S3_ACCESS_KEY_ID", "nbtestkey"),
        secret_access_key: var("NANO_BANANA_TEST_S3_SECRET_ACCESS_KEY", "nbtestsecret"),
    };
    // Fail (never skip) with the way out when the server is not there.
    let reachable = url::Url::parse(&s3.endpoint)
        .ok()
        .and_then(|u| u.socket_addrs(|| None).ok())
        .and_then(|addrs| addrs.into_iter().next())
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
        });
    assert!(
        reachable,
        "no S3 test server at {} (NANO_BANANA_TEST_S3_ENDPOINT): start one with \
         `scripts/dev-services.sh start` (SeaweedFS on 127.0.0.1:8333)",
        s3.endpoint
    );
    s3
}

impl TestS3 {
    /// Settings for the test bucket under a fresh prefix, so tests never see each other's
    /// objects.
    pub fn fresh_settings(&self) -> S3Settings {
        S3Settings {
            bucket: self.bucket.clone(),
            prefix: Some(format!("test-{}", uuid::Uuid::new_v4())),
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".to_owned(),
            path_style: true,
            access_key_id: Some(self.access_key_id.clone()),
            secret_access_key: Some(self.secret_access_key.clone()),
        }
    }
}

/// Points the app's image store at the test bucket under a fresh prefix:
/// `spawn_app_with(use_s3)`. `TestApp::s3_settings` tells where objects went.
pub fn use_s3(config: &mut Config) {
    config.storage = StorageConfig::S3(test_s3().fresh_settings());
}
