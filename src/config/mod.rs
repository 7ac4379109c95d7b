//! Configuration: one `Config` struct, filled from embedded defaults, then an optional TOML file,
//! then `NANO_BANANA_*` environment variables, then command-line flags (each later source wins).
//! The flags and variables are declared once, on `ServeArgs`, so `--help` lists them all; the TOML
//! file uses the same names in snake_case (and is the only place for per-model routes).
//! Imports the settings types of the modules it configures; never `http`, `tasks` or `app`.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use serde::Deserialize;

mod upstreams;

pub use upstreams::{BUILT_IN_PROVIDERS, PROVIDER_KINDS, ProviderConfig, RouteConfig, RouteEntry};

use crate::{
    domain::Prices,
    fetch::{AllowRule, FetchPolicy},
    limits::{FailureMode, RedisSettings},
    providers::{gemini, lanes::ConnectionSettings},
    storage::images::{ImageUrls, MAX_SIGNED_URL_VALIDITY, S3Settings, StorageConfig, StorageUrl},
    telemetry::redact_url,
};

/// Flags of `nano-banana serve`. Every field is optional so that "not given" can fall back to
/// the TOML file and then to the default.
#[derive(clap::Args, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML configuration file (same keys as these flags, in snake_case)
    #[arg(long, env = "NANO_BANANA_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "NANO_BANANA_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,

    /// Folder for the SQLite database and stored images [default: ./data]
    #[arg(long, env = "NANO_BANANA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Database URL: sqlite://PATH, or postgres://USER:PASSWORD@HOST:PORT/DB for several nodes
    /// [default: sqlite://DATA_DIR/nano-banana.db]
    #[arg(long, env = "NANO_BANANA_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,

    /// PostgreSQL connections per process; with several nodes, keep nodes × this under the server's max_connections (SQLite: readers, at most 8, beside its one writer) [default: 16]
    #[arg(long, env = "NANO_BANANA_DATABASE_POOL_SIZE", value_name = "N")]
    pub database_pool_size: Option<u32>,

    /// Base of the image URLs handed to clients, e.g. https://img.example.com [default: http://LISTEN]
    #[arg(long, env = "NANO_BANANA_PUBLIC_BASE_URL", value_name = "URL")]
    pub public_base_url: Option<String>,

    /// Where images are stored: a folder, or s3://BUCKET[/PREFIX] for any S3-compatible service [default: DATA_DIR/images]
    #[arg(
        long,
        env = "NANO_BANANA_STORAGE",
        value_name = "DIR|s3://BUCKET[/PREFIX]"
    )]
    pub storage: Option<String>,

    /// S3 endpoint, for services other than AWS (R2, MinIO, SeaweedFS, …); http:// is allowed [default: AWS]
    #[arg(long, env = "NANO_BANANA_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// S3 region [default: us-east-1]
    #[arg(long, env = "NANO_BANANA_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,

    /// Path-style S3 requests (ENDPOINT/BUCKET/KEY), as MinIO and SeaweedFS need [default: BUCKET.ENDPOINT/KEY]
    #[arg(long, env = "NANO_BANANA_S3_PATH_STYLE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub s3_path_style: Option<bool>,

    /// S3 access key id; AWS_ACCESS_KEY_ID is read too [default: instance metadata credentials]
    #[arg(
        long,
        env = "NANO_BANANA_S3_ACCESS_KEY_ID",
        hide_env_values = true,
        value_name = "ID"
    )]
    pub s3_access_key_id: Option<String>,

    /// S3 secret access key; AWS_SECRET_ACCESS_KEY is read too
    #[arg(
        long,
        env = "NANO_BANANA_S3_SECRET_ACCESS_KEY",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub s3_secret_access_key: Option<String>,

    /// image_url = URL/KEY, for a public bucket or a CDN in front of the store [default: PUBLIC_BASE_URL/images/KEY]
    #[arg(long, env = "NANO_BANANA_IMAGE_BASE_URL", value_name = "URL")]
    pub image_base_url: Option<String>,

    /// image_url = a presigned S3 GET URL valid this long, for private buckets (at most 604800; not with --image-base-url)
    #[arg(long, env = "NANO_BANANA_S3_SIGNED_URLS", value_name = "SECONDS")]
    pub s3_signed_urls: Option<u64>,

    /// Tasks run at once by this process; more wait in the queue. 0: an API-only node that
    /// runs no tasks itself (other nodes on the same database do) [default: 64]
    #[arg(long, env = "NANO_BANANA_WORKERS", value_name = "N")]
    pub workers: Option<usize>,

    /// Largest request body accepted, in bytes [default: 67108864]
    #[arg(long, env = "NANO_BANANA_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Largest input image (each of image_urls), in bytes [default: 10485760]
    #[arg(long, env = "NANO_BANANA_MAX_IMAGE_BYTES", value_name = "BYTES")]
    pub max_image_bytes: Option<usize>,

    /// Longest prompt accepted, in characters [default: 20000]
    #[arg(long, env = "NANO_BANANA_MAX_PROMPT_CHARS", value_name = "N")]
    pub max_prompt_chars: Option<usize>,

    /// Gemini API key, or several comma-separated (a key pool); GEMINI_API_KEY is read too; without one, images are offline placeholders
    #[arg(
        long,
        env = "NANO_BANANA_GEMINI_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub gemini_api_key: Option<String>,

    /// Gemini endpoint (a proxy, or a fake in tests) [default: https://generativelanguage.googleapis.com]
    #[arg(long, env = "NANO_BANANA_GEMINI_BASE_URL", value_name = "URL")]
    pub gemini_base_url: Option<String>,

    /// Gemini API version in the path [default: v1beta]
    #[arg(long, env = "NANO_BANANA_GEMINI_API_VERSION", value_name = "VERSION")]
    pub gemini_api_version: Option<String>,

    /// API key for the `:official` models' upstream [default: the Gemini API key]
    #[arg(
        long,
        env = "NANO_BANANA_OFFICIAL_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub official_api_key: Option<String>,

    /// Endpoint for the `:official` models [default: the Gemini base URL]
    #[arg(long, env = "NANO_BANANA_OFFICIAL_BASE_URL", value_name = "URL")]
    pub official_base_url: Option<String>,

    /// Use the offline placeholder renderer even when an API key is set
    #[arg(long, env = "NANO_BANANA_PLACEHOLDER", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub placeholder: Option<bool>,

    /// Time limit of one upstream call, in seconds [default: 300]
    #[arg(long, env = "NANO_BANANA_UPSTREAM_TIMEOUT", value_name = "SECONDS")]
    pub upstream_timeout: Option<u64>,

    /// Upstream calls in flight on one connection before another is opened: HTTP/2 servers cap the streams of a connection, Google's commonly at 100 [default: 100]
    #[arg(long, env = "NANO_BANANA_UPSTREAM_STREAMS_PER_CONNECTION", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub upstream_streams_per_connection: Option<u32>,

    /// Speak cleartext HTTP/2 (prior knowledge) to http:// upstreams that support it: a local proxy, the fake (https:// upstreams negotiate HTTP/2 by themselves)
    #[arg(long, env = "NANO_BANANA_UPSTREAM_H2C", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub upstream_h2c: Option<bool>,

    /// Upstream calls per image before giving up on retryable failures (429, 5xx, upstream unreachable) [default: 4]
    #[arg(long, env = "NANO_BANANA_MAX_ATTEMPTS", value_name = "N")]
    pub max_attempts: Option<u32>,

    /// A task that has not finished this many seconds after it was accepted fails [default: 900]
    #[arg(long, env = "NANO_BANANA_TASK_DEADLINE", value_name = "SECONDS")]
    pub task_deadline: Option<u64>,

    /// Time limit for fetching one input image, in seconds [default: 30]
    #[arg(long, env = "NANO_BANANA_FETCH_TIMEOUT", value_name = "SECONDS")]
    pub fetch_timeout: Option<u64>,

    /// Let image_urls and callback_url reach these private networks or hosts (comma-separated CIDRs or host names)
    #[arg(
        long,
        env = "NANO_BANANA_FETCH_ALLOW",
        value_delimiter = ',',
        value_name = "CIDR|HOST"
    )]
    pub fetch_allow: Option<Vec<String>>,

    /// Let image_urls and callback_url reach any private address (unsafe outside tests)
    #[arg(long, env = "NANO_BANANA_ALLOW_PRIVATE_NETWORKS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub allow_private_networks: Option<bool>,

    /// Time limit of one callback POST, in seconds [default: 10]
    #[arg(long, env = "NANO_BANANA_CALLBACK_TIMEOUT", value_name = "SECONDS")]
    pub callback_timeout: Option<u64>,

    /// Keep retrying a failing callback for this many seconds [default: 86400]
    #[arg(long, env = "NANO_BANANA_CALLBACK_RETRY_FOR", value_name = "SECONDS")]
    pub callback_retry_for: Option<u64>,

    /// Sign callbacks per Standard Webhooks with this secret (`whsec_` + base64)
    #[arg(
        long,
        env = "NANO_BANANA_CALLBACK_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub callback_secret: Option<String>,

    /// When the database has no token yet, the first token is this value instead of a random one
    #[arg(
        long,
        env = "NANO_BANANA_BOOTSTRAP_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub bootstrap_token: Option<String>,

    /// How long a bearer token's lookup is reused, in seconds; 0: every request reads the database. The admin API empties this process's copy at once; other nodes see a revoked token or a disabled application within this time [default: 5]
    #[arg(long, env = "NANO_BANANA_TOKEN_CACHE", value_name = "SECONDS")]
    pub token_cache: Option<u64>,

    /// A running task's lease: if its process dies, another takes the task over after this [default: 30]
    #[arg(long, env = "NANO_BANANA_TASK_LEASE", value_name = "SECONDS")]
    pub task_lease: Option<u64>,

    /// An uploaded input image (an edit's `data:` input, stored in the image store under `inputs/`) that no task's record references is deleted once it is this old: what a crash or a refused request left behind, and the inputs of deleted task records [default: 3600]
    #[arg(long, env = "NANO_BANANA_INPUT_GRACE", value_name = "SECONDS")]
    pub input_grace: Option<u64>,

    /// How often the input sweeper looks for such input images [default: 600]
    #[arg(long, env = "NANO_BANANA_INPUT_SWEEP_INTERVAL", value_name = "SECONDS")]
    pub input_sweep_interval: Option<u64>,

    /// Finished tasks are deleted this long after they finished — their records, images and uploaded inputs — unless a callback is still owed; 0: kept forever. An application's own retention_seconds (admin API, `admin apps limits`) wins [default: 0]
    #[arg(long, env = "NANO_BANANA_RETENTION", value_name = "SECONDS")]
    pub retention: Option<u64>,

    /// How often the retention sweeper looks for expired tasks (every node; they never delete one thing twice) [default: 60]
    #[arg(
        long,
        env = "NANO_BANANA_RETENTION_SWEEP_INTERVAL",
        value_name = "SECONDS"
    )]
    pub retention_sweep_interval: Option<u64>,

    /// How often each node counts the objects and bytes in the image store and the bytes of the database, for /metrics (a listing of the whole store: one request per 1,000 objects on S3); 0: never [default: 300]
    #[arg(
        long,
        env = "NANO_BANANA_STORAGE_USAGE_INTERVAL",
        value_name = "SECONDS"
    )]
    pub storage_usage_interval: Option<u64>,

    /// How long a client may take to send a request's head, counted from when its connection opened or its previous answer was sent; then the connection is closed (an idle keep-alive connection too) [default: 30]
    #[arg(long, env = "NANO_BANANA_REQUEST_HEAD_TIMEOUT", value_name = "SECONDS")]
    pub request_head_timeout: Option<u64>,

    /// The longest a stop (SIGTERM/SIGINT) takes: running tasks may finish within it, the rest go back to the queue, in seconds [default: 30]
    #[arg(long, env = "NANO_BANANA_SHUTDOWN_GRACE", value_name = "SECONDS")]
    pub shutdown_grace: Option<u64>,

    /// Credits given to the application created on first start [default: 1000000]
    #[arg(long, env = "NANO_BANANA_BOOTSTRAP_CREDITS", value_name = "CREDITS")]
    pub bootstrap_credits: Option<i64>,

    /// Lets anyone sign up in the web console: a new application with this many credits and its
    /// token, shown once; a few sign-ups per client address [default: off]
    #[arg(long, env = "NANO_BANANA_SIGNUP_CREDITS", value_name = "CREDITS")]
    pub signup_credits: Option<i64>,

    /// Key for the /admin/ API (`authorization: Bearer KEY`); without one the admin API is off
    #[arg(
        long,
        env = "NANO_BANANA_ADMIN_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub admin_key: Option<String>,

    /// Share rate limits among all nodes through this Redis: redis://[USER:PASSWORD@]HOST[:PORT][/DB], or rediss://… for TLS (verified against the system's roots, or --redis-ca-file) [default: each process limits on its own]
    #[arg(
        long,
        env = "NANO_BANANA_REDIS_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub redis_url: Option<String>,

    /// The CA certificate(s), PEM, that a rediss:// server's certificate must chain to, instead of the system's roots (a managed Redis with a private CA)
    #[arg(long, env = "NANO_BANANA_REDIS_CA_FILE", value_name = "FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Put before every Redis key, so deployments can share one Redis [default: nano-banana:]
    #[arg(long, env = "NANO_BANANA_REDIS_PREFIX", value_name = "PREFIX")]
    pub redis_prefix: Option<String>,

    /// When Redis does not answer: admit requests unchecked (open) or refuse them with api_error (closed) [default: open]
    #[arg(long, env = "NANO_BANANA_REDIS_FAILURE_MODE", value_name = "MODE")]
    pub redis_failure_mode: Option<FailureMode>,

    /// The longest a request waits for Redis, in milliseconds; then the failure mode applies [default: 250]
    #[arg(long, env = "NANO_BANANA_REDIS_TIMEOUT_MS", value_name = "MS")]
    pub redis_timeout_ms: Option<u64>,

    /// Credits per image (TOML only): `[prices."nano-banana-pro"] 1K = 4, 2K = 4, 4K = 8`
    #[arg(skip)]
    pub prices: BTreeMap<String, BTreeMap<String, i64>>,

    /// Per-model routes (TOML only): `[models."nano-banana"] provider = "gemini"|"placeholder"|"disabled"|NAME, upstream_model = "…"`, or `routes = [...]`
    #[arg(skip)]
    pub models: BTreeMap<String, RouteConfig>,

    /// Named upstreams (TOML only): `[providers.NAME] kind = "…"`, named by `[models.*]` routes
    #[arg(skip)]
    pub providers: BTreeMap<String, ProviderConfig>,
}

/// Everything the server needs, resolved and defaulted. `Debug` leaves secrets out.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    /// Connections per process (`--database-pool-size`).
    pub database_pool_size: u32,
    /// `None`: derived from the bound address once listening.
    pub public_base_url: Option<String>,
    /// Where images are stored. `Debug` leaves S3 credentials out.
    pub storage: StorageConfig,
    /// How `image_url`s are formed.
    pub image_urls: ImageUrls,
    pub workers: usize,
    pub max_body_bytes: usize,
    pub max_prompt_chars: usize,
    pub gemini: Option<UpstreamConfig>,
    pub official: Option<UpstreamConfig>,
    pub upstream_timeout: Duration,
    /// How upstream connections are made (HTTP/2 streams per connection, h2c).
    pub upstream_connections: ConnectionSettings,
    pub max_attempts: u32,
    pub task_deadline: Duration,
    pub fetch: FetchPolicy,
    pub callback_timeout: Duration,
    pub callback_retry_for: Duration,
    /// The decoded Standard Webhooks signing key, when callbacks are signed.
    pub callback_signing_key: Option<Vec<u8>>,
    pub bootstrap_token: Option<String>,
    pub shutdown_grace: Duration,
    /// How long a connection may take to send a request's head (from its opening or its
    /// previous answer) before it is closed.
    pub request_head_timeout: Duration,
    pub models: BTreeMap<String, RouteConfig>,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub prices: Prices,
    pub bootstrap_credits: i64,
    /// `Some`: the console's self-service sign-up is on, and gives a new application this many
    /// credits.
    pub signup_credits: Option<i64>,
    pub admin_key: Option<String>,
    /// `None`: rate limits are kept in process memory.
    pub redis: Option<RedisSettings>,
    /// How long a claimed task's lease lasts without renewal; a dead process's tasks are re-run
    /// after this. Renewed every third of it.
    pub lease: Duration,
    /// How long a token lookup is reused (`ZERO`: never).
    pub token_cache: Duration,
    /// An input image object no task references is deleted once it is this old.
    pub input_grace: Duration,
    /// How often the input sweeper runs.
    pub input_sweep_interval: Duration,
    /// How long finished tasks are kept (`None`: forever).
    pub retention: Option<Duration>,
    /// How often the retention sweeper runs.
    pub retention_sweep_interval: Duration,
    /// How often the storage gauges of `/metrics` are counted again; `None`: never.
    pub storage_usage_interval: Option<Duration>,
    /// How often idle workers look for due work even without a wake-up signal.
    pub poll_interval: Duration,
}

#[derive(Clone)]
pub struct UpstreamConfig {
    pub base_url: String,
    pub api_version: String,
    /// One key, or several comma-separated (a key pool).
    pub api_key: String,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("base_url", &self.base_url)
            .field("api_version", &self.api_version)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |set: bool| if set { "<redacted>" } else { "<none>" };
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url))
            .field("database_pool_size", &self.database_pool_size)
            .field("public_base_url", &self.public_base_url)
            .field("storage", &self.storage)
            .field("image_urls", &self.image_urls)
            .field("workers", &self.workers)
            .field("gemini", &self.gemini)
            .field("official", &self.official)
            .field("upstream_connections", &self.upstream_connections)
            .field("fetch", &self.fetch)
            .field("models", &self.models)
            .field("providers", &self.providers)
            .field("bootstrap_token", &redacted(self.bootstrap_token.is_some()))
            .field("signup_credits", &self.signup_credits)
            .field("admin_key", &redacted(self.admin_key.is_some()))
            .field("redis", &self.redis)
            .field(
                "callback_signing_key",
                &redacted(self.callback_signing_key.is_some()),
            )
            .finish_non_exhaustive()
    }
}

/// Where data goes when no `--data-dir` is given.
pub const DEFAULT_DATA_DIR: &str = "./data";

impl Config {
    /// Embedded defaults, with data under `data_dir`.
    pub fn with_data_dir(data_dir: &Path) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: data_dir.to_path_buf(),
            database_url: default_database_url(data_dir),
            database_pool_size: 16,
            public_base_url: None,
            storage: StorageConfig::Local(data_dir.join("images")),
            image_urls: ImageUrls::Route,
            workers: 64,
            max_body_bytes: 64 * 1024 * 1024,
            max_prompt_chars: 20_000,
            gemini: None,
            official: None,
            upstream_timeout: Duration::from_secs(300),
            upstream_connections: ConnectionSettings::default(),
            max_attempts: 4,
            task_deadline: Duration::from_secs(900),
            fetch: FetchPolicy::default(),
            callback_timeout: Duration::from_secs(10),
            callback_retry_for: Duration::from_secs(24 * 3600),
            callback_signing_key: None,
            bootstrap_token: None,
            shutdown_grace: Duration::from_secs(30),
            request_head_timeout: Duration::from_secs(30),
            models: BTreeMap::new(),
            providers: BTreeMap::new(),
            prices: Prices::default(),
            bootstrap_credits: 1_000_000,
            signup_credits: None,
            admin_key: None,
            redis: None,
            lease: Duration::from_secs(30),
            token_cache: Duration::from_secs(5),
            input_grace: Duration::from_secs(3600),
            input_sweep_interval: Duration::from_secs(600),
            retention: None,
            retention_sweep_interval: Duration::from_secs(60),
            storage_usage_interval: Some(Duration::from_secs(300)),
            poll_interval: Duration::from_secs(1),
        }
    }

    /// Flags and environment (already merged by clap) over the TOML file over the defaults.
    pub fn resolve(flags: ServeArgs) -> anyhow::Result<Config> {
        let file = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the config file {}", path.display()))?;
                toml::from_str::<ServeArgs>(&text)
                    .with_context(|| format!("parsing the config file {}", path.display()))?
            }
            None => ServeArgs::default(),
        };
        // Google's own tools read GEMINI_API_KEY; ours wins when both are set.
        let env_key = std::env::var("GEMINI_API_KEY")
            .ok()
            .filter(|k| !k.is_empty());
        // Likewise the AWS tools' credential variables, when ours are unset.
        let aws = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let aws_keys = AwsEnvKeys {
            access_key_id: aws("AWS_ACCESS_KEY_ID"),
            secret_access_key: aws("AWS_SECRET_ACCESS_KEY"),
        };
        Config::merge_with_aws(flags, file, env_key, aws_keys)
    }

    #[cfg(test)]
    fn merge(
        flags: ServeArgs,
        file: ServeArgs,
        gemini_env_key: Option<String>,
    ) -> anyhow::Result<Config> {
        Config::merge_with_aws(flags, file, gemini_env_key, AwsEnvKeys::default())
    }

    fn merge_with_aws(
        flags: ServeArgs,
        file: ServeArgs,
        gemini_env_key: Option<String>,
        aws_keys: AwsEnvKeys,
    ) -> anyhow::Result<Config> {
        let data_dir = flags
            .data_dir
            .clone()
            .or_else(|| file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let mut config = Config::with_data_dir(&data_dir);
        (config.storage, config.image_urls) =
            storage(&flags, &file, aws_keys, &data_dir.join("images"))?;

        if let Some(listen) = flags.listen.or(file.listen) {
            config.listen = listen
                .parse()
                .with_context(|| format!("--listen {listen:?} is not HOST:PORT"))?;
        }
        if let Some(url) = flags.database_url.or(file.database_url) {
            config.database_url = url;
        }
        if let Some(url) = flags.public_base_url.or(file.public_base_url) {
            let parsed = url::Url::parse(&url)
                .with_context(|| format!("--public-base-url {url:?} is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("--public-base-url must be an http(s) URL");
            }
            config.public_base_url = Some(url.trim_end_matches('/').to_owned());
        }
        macro_rules! take {
            ($field:ident) => {
                flags.$field.or(file.$field)
            };
        }
        if let Some(n) = take!(database_pool_size) {
            if n == 0 {
                bail!("--database-pool-size must be at least 1");
            }
            config.database_pool_size = n;
        }
        if let Some(n) = take!(workers) {
            config.workers = n;
        }
        if let Some(n) = take!(max_body_bytes) {
            config.max_body_bytes = n;
        }
        if let Some(n) = take!(max_image_bytes) {
            config.fetch.max_image_bytes = n;
        }
        if let Some(n) = take!(max_prompt_chars) {
            config.max_prompt_chars = n;
        }
        if let Some(s) = take!(upstream_timeout) {
            config.upstream_timeout = Duration::from_secs(s);
        }
        if let Some(n) = take!(upstream_streams_per_connection) {
            config.upstream_connections.streams_per_connection = n as usize;
        }
        if let Some(h2c) = take!(upstream_h2c) {
            config.upstream_connections.h2c = h2c;
        }
        if let Some(n) = take!(max_attempts) {
            config.max_attempts = n.max(1);
        }
        if let Some(s) = take!(task_deadline) {
            config.task_deadline = Duration::from_secs(s);
        }
        if let Some(s) = take!(fetch_timeout) {
            config.fetch.timeout = Duration::from_secs(s);
        }
        if let Some(rules) = take!(fetch_allow) {
            config.fetch.allow = rules
                .iter()
                .map(|r| r.trim())
                .filter(|r| !r.is_empty())
                .map(|r| {
                    r.parse::<AllowRule>()
                        .map_err(|e| anyhow::anyhow!("--fetch-allow {r:?}: {e}"))
                })
                .collect::<anyhow::Result<_>>()?;
        }
        if let Some(b) = take!(allow_private_networks) {
            config.fetch.allow_private = b;
        }
        if let Some(s) = take!(callback_timeout) {
            config.callback_timeout = Duration::from_secs(s);
        }
        if let Some(s) = take!(callback_retry_for) {
            config.callback_retry_for = Duration::from_secs(s);
        }
        if let Some(s) = take!(task_lease) {
            if s == 0 {
                bail!("--task-lease must be at least 1 second");
            }
            config.lease = Duration::from_secs(s);
        }
        if let Some(s) = take!(input_grace) {
            // A submission writes an input again once it is half this old (tasks/inputs.rs):
            // under a few seconds, that would be nearly every time.
            if s < 2 {
                bail!("--input-grace must be at least 2 seconds");
            }
            config.input_grace = Duration::from_secs(s);
        }
        if let Some(s) = take!(input_sweep_interval) {
            if s == 0 {
                bail!("--input-sweep-interval must be at least 1 second");
            }
            config.input_sweep_interval = Duration::from_secs(s);
        }
        if let Some(s) = take!(retention) {
            config.retention = (s > 0).then(|| Duration::from_secs(s));
        }
        if let Some(s) = take!(retention_sweep_interval) {
            if s == 0 {
                bail!("--retention-sweep-interval must be at least 1 second");
            }
            config.retention_sweep_interval = Duration::from_secs(s);
        }
        if let Some(s) = take!(storage_usage_interval) {
            config.storage_usage_interval = (s > 0).then(|| Duration::from_secs(s));
        }
        if let Some(s) = take!(token_cache) {
            config.token_cache = Duration::from_secs(s);
        }
        if let Some(s) = take!(shutdown_grace) {
            config.shutdown_grace = Duration::from_secs(s);
        }
        if let Some(s) = take!(request_head_timeout) {
            if s == 0 {
                bail!("--request-head-timeout must be at least 1 second");
            }
            config.request_head_timeout = Duration::from_secs(s);
        }
        if let Some(secret) = take!(callback_secret).filter(|s| !s.is_empty()) {
            config.callback_signing_key = Some(decode_webhook_secret(&secret)?);
        }
        config.bootstrap_token = take!(bootstrap_token).filter(|t| !t.is_empty());

        let placeholder = take!(placeholder).unwrap_or(false);
        let api_key = take!(gemini_api_key)
            .or(gemini_env_key)
            .filter(|k| !k.is_empty());
        let base_url = take!(gemini_base_url).unwrap_or_else(|| gemini::DEFAULT_BASE_URL.into());
        let api_version = take!(gemini_api_version).unwrap_or_else(|| "v1beta".into());
        if !placeholder && let Some(api_key) = api_key {
            let official = UpstreamConfig {
                base_url: take!(official_base_url).unwrap_or_else(|| base_url.clone()),
                api_version: api_version.clone(),
                api_key: take!(official_api_key).unwrap_or_else(|| api_key.clone()),
            };
            config.gemini = Some(UpstreamConfig {
                base_url,
                api_version,
                api_key,
            });
            config.official = Some(official);
        }

        if let Some(credits) = take!(bootstrap_credits) {
            config.bootstrap_credits = credits.max(0);
        }
        config.signup_credits = take!(signup_credits).map(|credits| credits.max(0));
        config.admin_key = take!(admin_key).filter(|k| !k.is_empty());
        if let Some(url) = take!(redis_url).filter(|u| !u.is_empty()) {
            let mut redis = RedisSettings::new(url);
            let scheme = redis.url.split_once("://").map(|(scheme, _)| scheme);
            if !matches!(scheme, Some("redis" | "rediss")) {
                bail!(
                    "--redis-url {} must start with redis:// (or rediss:// for TLS)",
                    redis.redacted_url()
                );
            }
            if let Some(path) = take!(redis_ca_file) {
                if scheme != Some("rediss") {
                    bail!("--redis-ca-file is for a rediss:// (TLS) --redis-url");
                }
                let pem = std::fs::read(&path)
                    .with_context(|| format!("reading --redis-ca-file {}", path.display()))?;
                redis.ca_pem = Some(pem);
            }
            if let Some(prefix) = take!(redis_prefix) {
                redis.prefix = prefix;
            }
            if let Some(mode) = take!(redis_failure_mode) {
                redis.failure_mode = mode;
            }
            if let Some(ms) = take!(redis_timeout_ms) {
                if ms == 0 {
                    bail!("--redis-timeout-ms must be at least 1");
                }
                redis.timeout = Duration::from_millis(ms);
            }
            config.redis = Some(redis);
        }
        for (model, by_resolution) in file.prices.iter().chain(flags.prices.iter()) {
            for (resolution, credits) in by_resolution {
                config
                    .prices
                    .set(model, resolution, *credits)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }

        let mut models = file.models;
        models.extend(flags.models);
        let mut providers = file.providers;
        providers.extend(flags.providers);
        upstreams::check(&providers, &models)?;
        config.models = models;
        config.providers = providers;
        Ok(config)
    }
}

/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` from the environment (the fallback for ours).
#[derive(Default)]
struct AwsEnvKeys {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
}

/// The image store and the form of image URLs, from `--storage`, `--s3-*` and
/// `--image-base-url`. `default_dir` is the folder used without `--storage`.
fn storage(
    flags: &ServeArgs,
    file: &ServeArgs,
    aws_keys: AwsEnvKeys,
    default_dir: &Path,
) -> anyhow::Result<(StorageConfig, ImageUrls)> {
    macro_rules! take {
        ($field:ident) => {
            flags.$field.clone().or_else(|| file.$field.clone())
        };
    }
    let location = match take!(storage) {
        Some(url) => url
            .parse::<StorageUrl>()
            .map_err(|e| anyhow::anyhow!("--storage: {e}"))?,
        None => StorageUrl::Local(default_dir.to_path_buf()),
    };
    let signed = take!(s3_signed_urls);
    let storage = match location {
        StorageUrl::Local(dir) => {
            let s3_flags = [
                ("--s3-endpoint", take!(s3_endpoint).is_some()),
                ("--s3-region", take!(s3_region).is_some()),
                ("--s3-path-style", take!(s3_path_style).is_some()),
                ("--s3-access-key-id", take!(s3_access_key_id).is_some()),
                (
                    "--s3-secret-access-key",
                    take!(s3_secret_access_key).is_some(),
                ),
                ("--s3-signed-urls", signed.is_some()),
            ];
            if let Some((flag, _)) = s3_flags.iter().find(|(_, set)| *set) {
                bail!("{flag} is set, but --storage is not an s3:// URL");
            }
            StorageConfig::Local(dir)
        }
        StorageUrl::S3 { bucket, prefix } => {
            let endpoint = match take!(s3_endpoint).filter(|e| !e.is_empty()) {
                Some(endpoint) => {
                    let parsed = url::Url::parse(&endpoint)
                        .with_context(|| format!("--s3-endpoint {endpoint:?} is not a URL"))?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        bail!("--s3-endpoint must be an http(s) URL");
                    }
                    Some(endpoint.trim_end_matches('/').to_owned())
                }
                None => None,
            };
            // A key pair comes whole from one place: ours, else the AWS variables.
            let ours = (
                take!(s3_access_key_id).filter(|k| !k.is_empty()),
                take!(s3_secret_access_key).filter(|k| !k.is_empty()),
            );
            let (access_key_id, secret_access_key) = match ours {
                (None, None) => (aws_keys.access_key_id, aws_keys.secret_access_key),
                pair => pair,
            };
            if access_key_id.is_some() != secret_access_key.is_some() {
                bail!(
                    "--s3-access-key-id and --s3-secret-access-key go together (as do \
                     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY): set both or neither"
                );
            }
            StorageConfig::S3(S3Settings {
                bucket,
                prefix,
                endpoint,
                region: take!(s3_region)
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| "us-east-1".to_owned()),
                path_style: take!(s3_path_style).unwrap_or(false),
                access_key_id,
                secret_access_key,
            })
        }
    };

    let base = match take!(image_base_url).filter(|u| !u.is_empty()) {
        Some(url) => {
            let parsed = url::Url::parse(&url)
                .with_context(|| format!("--image-base-url {url:?} is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("--image-base-url must be an http(s) URL");
            }
            Some(url.trim_end_matches('/').to_owned())
        }
        None => None,
    };
    let urls = match (signed, base) {
        (Some(_), Some(_)) => {
            bail!("--s3-signed-urls and --image-base-url exclude each other: choose one")
        }
        (Some(seconds), None) => {
            let valid_for = Duration::from_secs(seconds);
            if seconds == 0 || valid_for > MAX_SIGNED_URL_VALIDITY {
                bail!("--s3-signed-urls must be between 1 and 604800 seconds (7 days)");
            }
            ImageUrls::Signed(valid_for)
        }
        (None, Some(base)) => ImageUrls::Base(base),
        (None, None) => ImageUrls::Route,
    };
    Ok((storage, urls))
}

/// A Standard Webhooks secret: `whsec_` followed by base64 of at least 24 random bytes.
pub fn decode_webhook_secret(secret: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| anyhow::anyhow!("--callback-secret must be `whsec_` followed by base64"))?;
    if key.len() < 24 {
        bail!("--callback-secret is too short: use at least 24 random bytes");
    }
    Ok(key)
}

/// The database of a data folder when no `--database-url` is given: SQLite, in the folder.
pub fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("nano-banana.db").display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: ServeArgs = toml::from_str(
            r#"
            listen = "127.0.0.1:9000"
            workers = 3
            max_attempts = 7
            upstream_h2c = true
            upstream_streams_per_connection = 50
            [models."nano-banana-pro"]
            provider = "placeholder"
            "#,
        )
        .unwrap();
        let flags = ServeArgs {
            listen: Some("0.0.0.0:1234".into()),
            ..ServeArgs::default()
        };
        let config = Config::merge(flags, file, None).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:1234");
        assert_eq!(config.workers, 3);
        assert_eq!(config.max_attempts, 7);
        assert_eq!(
            config.upstream_connections,
            ConnectionSettings {
                streams_per_connection: 50,
                h2c: true
            }
        );
        assert_eq!(config.database_url, "sqlite://./data/nano-banana.db");
        assert!(config.gemini.is_none());
        assert_eq!(
            config.models["nano-banana-pro"].provider.as_deref(),
            Some("placeholder")
        );
    }

    #[test]
    fn an_api_key_from_the_environment_enables_gemini_unless_placeholder_is_forced() {
        let config =
            Config::merge(ServeArgs::default(), ServeArgs::default(), Some("k".into())).unwrap();
        assert_eq!(config.gemini.unwrap().api_key, "k");
        assert_eq!(config.official.unwrap().base_url, gemini::DEFAULT_BASE_URL);
        let forced = ServeArgs {
            placeholder: Some(true),
            ..ServeArgs::default()
        };
        let config = Config::merge(forced, ServeArgs::default(), Some("k".into())).unwrap();
        assert!(config.gemini.is_none());
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let flags = ServeArgs {
            bootstrap_token: Some("nb-secret-token".into()),
            admin_key: Some("admin-secret".into()),
            ..ServeArgs::default()
        };
        let config =
            Config::merge(flags, ServeArgs::default(), Some("gemini-secret".into())).unwrap();
        let shown = format!("{config:?}");
        assert!(shown.contains("redis: None"), "{shown}");
        for secret in ["nb-secret-token", "admin-secret", "gemini-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn bad_values_are_reported_with_their_flag() {
        let bad = |args: ServeArgs| {
            Config::merge(args, ServeArgs::default(), None)
                .unwrap_err()
                .to_string()
        };
        assert!(
            bad(ServeArgs {
                listen: Some("nowhere".into()),
                ..Default::default()
            })
            .contains("--listen")
        );
        // `--workers 0` is valid: an API-only node.
        assert_eq!(
            Config::merge(
                ServeArgs {
                    workers: Some(0),
                    ..Default::default()
                },
                ServeArgs::default(),
                None
            )
            .map(|c| c.workers)
            .ok(),
            Some(0)
        );
        assert!(
            bad(ServeArgs {
                public_base_url: Some("ftp://x".into()),
                ..Default::default()
            })
            .contains("--public-base-url")
        );
        assert!(
            bad(ServeArgs {
                request_head_timeout: Some(0),
                ..Default::default()
            })
            .contains("--request-head-timeout")
        );
        assert!(
            bad(ServeArgs {
                input_grace: Some(1),
                ..Default::default()
            })
            .contains("--input-grace must be at least 2 seconds")
        );
        assert!(
            bad(ServeArgs {
                input_sweep_interval: Some(0),
                ..Default::default()
            })
            .contains("--input-sweep-interval")
        );
        let inputs: ServeArgs =
            toml::from_str("input_grace = 60\ninput_sweep_interval = 7").expect("a valid file");
        assert_eq!(
            Config::merge(ServeArgs::default(), inputs, None)
                .map(|c| (c.input_grace, c.input_sweep_interval))
                .ok(),
            Some((Duration::from_secs(60), Duration::from_secs(7)))
        );
        let from_file: ServeArgs =
            toml::from_str("request_head_timeout = 5").expect("a valid file");
        assert_eq!(
            Config::merge(ServeArgs::default(), from_file, None)
                .map(|c| c.request_head_timeout)
                .ok(),
            Some(Duration::from_secs(5))
        );
        let unknown: Result<ServeArgs, _> = toml::from_str("no_such_key = 1");
        assert!(unknown.is_err());
        let mut models = BTreeMap::new();
        models.insert("dall-e".to_owned(), RouteConfig::default());
        assert!(
            bad(ServeArgs {
                models,
                ..Default::default()
            })
            .contains("unknown model")
        );
    }

    #[test]
    fn redis_settings_come_from_the_file_and_flags_and_hide_the_password() {
        let file: ServeArgs = toml::from_str(
            r#"
            redis_url = "redis://:file-secret@10.0.0.5:6379/1"
            redis_prefix = "staging:"
            redis_failure_mode = "closed"
            "#,
        )
        .unwrap();
        let config = Config::merge(ServeArgs::default(), file.clone(), None).unwrap();
        let redis = config.redis.clone().unwrap();
        assert_eq!(redis.url, "redis://:file-secret@10.0.0.5:6379/1");
        assert_eq!(redis.prefix, "staging:");
        assert_eq!(redis.failure_mode, FailureMode::Closed);
        assert_eq!(redis.timeout, Duration::from_millis(250));
        let shown = format!("{config:?}");
        assert!(!shown.contains("file-secret"), "{shown}");
        assert!(shown.contains("10.0.0.5"), "{shown}");

        let flags = ServeArgs {
            redis_failure_mode: Some(FailureMode::Open),
            redis_timeout_ms: Some(40),
            ..ServeArgs::default()
        };
        let redis = Config::merge(flags, file, None).unwrap().redis.unwrap();
        assert_eq!(redis.failure_mode, FailureMode::Open);
        assert_eq!(redis.timeout, Duration::from_millis(40));

        // Without a URL the other settings change nothing: limits stay in process.
        let no_url = ServeArgs {
            redis_prefix: Some("x:".into()),
            ..ServeArgs::default()
        };
        assert!(
            Config::merge(no_url, ServeArgs::default(), None)
                .unwrap()
                .redis
                .is_none()
        );
        let defaults = Config::merge(
            ServeArgs {
                redis_url: Some("redis://127.0.0.1".into()),
                ..ServeArgs::default()
            },
            ServeArgs::default(),
            None,
        )
        .unwrap()
        .redis
        .unwrap();
        assert_eq!(defaults.prefix, "nano-banana:");
        assert_eq!(defaults.failure_mode, FailureMode::Open);
    }

    #[test]
    fn a_non_redis_url_is_refused_without_showing_its_password() {
        for url in ["http://:tls-secret@h", "unix://:tls-secret@h"] {
            let error = Config::merge(
                ServeArgs {
                    redis_url: Some(url.into()),
                    ..ServeArgs::default()
                },
                ServeArgs::default(),
                None,
            )
            .unwrap_err()
            .to_string();
            assert!(error.contains("--redis-url"), "{error}");
            assert!(!error.contains("tls-secret"), "{error}");
        }
        let bad_mode: Result<ServeArgs, _> = toml::from_str(r#"redis_failure_mode = "maybe""#);
        assert!(bad_mode.is_err());
    }

    #[test]
    fn rediss_is_taken_and_a_ca_file_only_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let tls = |url: &str, ca_file: Option<PathBuf>| {
            Config::merge(
                ServeArgs {
                    redis_url: Some(url.into()),
                    redis_ca_file: ca_file,
                    ..ServeArgs::default()
                },
                ServeArgs::default(),
                None,
            )
        };
        let redis = tls("rediss://:pw@h:6380", Some(ca.clone()))
            .unwrap()
            .redis
            .unwrap();
        assert_eq!(
            redis.ca_pem.as_deref(),
            Some(&b"-----BEGIN CERTIFICATE-----\n"[..])
        );
        assert!(
            tls("rediss://h:6380", None)
                .unwrap()
                .redis
                .unwrap()
                .ca_pem
                .is_none()
        );
        let error = tls("redis://h:6379", Some(ca)).unwrap_err().to_string();
        assert!(
            error.contains("--redis-ca-file is for a rediss://"),
            "{error}"
        );
        let error = tls("rediss://h:6380", Some(dir.path().join("missing.pem"))).unwrap_err();
        assert!(format!("{error:#}").contains("missing.pem"), "{error:#}");
    }

    #[test]
    fn retention_is_off_by_default_and_zero_keeps_everything() {
        let merged = |retention: Option<u64>, interval: Option<u64>| {
            Config::merge(
                ServeArgs {
                    retention,
                    retention_sweep_interval: interval,
                    ..ServeArgs::default()
                },
                ServeArgs::default(),
                None,
            )
        };
        let default = merged(None, None).unwrap();
        assert_eq!(default.retention, None);
        assert_eq!(default.retention_sweep_interval, Duration::from_secs(60));
        assert_eq!(merged(Some(0), None).unwrap().retention, None);
        let kept = merged(Some(86_400), Some(30)).unwrap();
        assert_eq!(kept.retention, Some(Duration::from_secs(86_400)));
        assert_eq!(kept.retention_sweep_interval, Duration::from_secs(30));
        let error = merged(Some(60), Some(0)).unwrap_err().to_string();
        assert!(
            error.contains("--retention-sweep-interval must be at least 1"),
            "{error}"
        );
    }

    #[test]
    fn the_database_pool_size_is_taken_and_zero_refused() {
        let sized = |n: u32| {
            Config::merge(
                ServeArgs {
                    database_pool_size: Some(n),
                    ..ServeArgs::default()
                },
                ServeArgs::default(),
                None,
            )
        };
        assert_eq!(sized(40).unwrap().database_pool_size, 40);
        assert_eq!(
            Config::merge(ServeArgs::default(), ServeArgs::default(), None)
                .unwrap()
                .database_pool_size,
            16
        );
        let error = sized(0).unwrap_err().to_string();
        assert!(
            error.contains("--database-pool-size must be at least 1"),
            "{error}"
        );
    }

    #[test]
    fn storage_defaults_to_the_data_folder_and_s3_takes_its_settings() {
        let config = Config::merge(ServeArgs::default(), ServeArgs::default(), None).unwrap();
        assert_eq!(
            config.storage,
            StorageConfig::Local(PathBuf::from("./data/images"))
        );
        assert_eq!(config.image_urls, ImageUrls::Route);

        let file: ServeArgs = toml::from_str(
            r#"
            storage = "s3://images/a/b"
            s3_endpoint = "http://127.0.0.1:8333/"
            s3_path_style = true
            s3_access_key_id = "file-id"
            s3_secret_access_key = "file-secret"
            s3_signed_urls = 600
            "#,
        )
        .unwrap();
        let flags = ServeArgs {
            s3_region: Some("eu-west-1".into()),
            ..ServeArgs::default()
        };
        let config = Config::merge(flags, file, None).unwrap();
        let StorageConfig::S3(s3) = &config.storage else {
            panic!("S3 storage: {config:?}");
        };
        assert_eq!(s3.bucket, "images");
        assert_eq!(s3.prefix.as_deref(), Some("a/b"));
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(s3.region, "eu-west-1");
        assert!(s3.path_style);
        assert_eq!(s3.access_key_id.as_deref(), Some("file-id"));
        assert_eq!(
            config.image_urls,
            ImageUrls::Signed(Duration::from_secs(600))
        );
        let shown = format!("{config:?}");
        for secret in ["file-id", "file-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn aws_environment_keys_fill_in_only_when_ours_are_unset() {
        let s3 = |flags: ServeArgs| {
            let flags = ServeArgs {
                storage: Some("s3://images".into()),
                ..flags
            };
            let aws = AwsEnvKeys {
                access_key_id: Some("aws-id".into()),
                secret_access_key: Some("aws-secret".into()),
            };
            match Config::merge_with_aws(flags, ServeArgs::default(), None, aws)
                .unwrap()
                .storage
            {
                StorageConfig::S3(s3) => s3,
                other => panic!("{other:?}"),
            }
        };
        let from_env = s3(ServeArgs::default());
        assert_eq!(from_env.access_key_id.as_deref(), Some("aws-id"));
        assert_eq!(from_env.secret_access_key.as_deref(), Some("aws-secret"));
        assert_eq!(from_env.region, "us-east-1");
        assert!(!from_env.path_style);
        let ours = s3(ServeArgs {
            s3_access_key_id: Some("our-id".into()),
            s3_secret_access_key: Some("our-secret".into()),
            ..ServeArgs::default()
        });
        assert_eq!(ours.access_key_id.as_deref(), Some("our-id"));
        assert_eq!(ours.secret_access_key.as_deref(), Some("our-secret"));
    }

    #[test]
    fn conflicting_or_misplaced_storage_settings_are_refused() {
        let bad = |args: ServeArgs| {
            Config::merge(args, ServeArgs::default(), None)
                .unwrap_err()
                .to_string()
        };
        let s3 = || ServeArgs {
            storage: Some("s3://images".into()),
            ..ServeArgs::default()
        };
        assert!(
            bad(ServeArgs {
                storage: Some("gs://images".into()),
                ..ServeArgs::default()
            })
            .contains("--storage")
        );
        assert!(
            bad(ServeArgs {
                s3_endpoint: Some("http://127.0.0.1:8333".into()),
                ..ServeArgs::default()
            })
            .contains("--s3-endpoint is set, but --storage is not")
        );
        assert!(
            bad(ServeArgs {
                s3_signed_urls: Some(60),
                image_base_url: Some("https://cdn.example.com".into()),
                ..s3()
            })
            .contains("exclude each other")
        );
        for seconds in [0, 604_801] {
            assert!(
                bad(ServeArgs {
                    s3_signed_urls: Some(seconds),
                    ..s3()
                })
                .contains("--s3-signed-urls")
            );
        }
        assert!(
            bad(ServeArgs {
                s3_access_key_id: Some("id".into()),
                ..s3()
            })
            .contains("set both or neither")
        );
        assert!(
            bad(ServeArgs {
                s3_endpoint: Some("ftp://x".into()),
                ..s3()
            })
            .contains("--s3-endpoint")
        );
        assert!(
            bad(ServeArgs {
                image_base_url: Some("not a url".into()),
                ..ServeArgs::default()
            })
            .contains("--image-base-url")
        );
        // A CDN in front of the local folder is fine.
        let config = Config::merge(
            ServeArgs {
                image_base_url: Some("https://cdn.example.com/x/".into()),
                ..ServeArgs::default()
            },
            ServeArgs::default(),
            None,
        )
        .unwrap();
        assert_eq!(
            config.image_urls,
            ImageUrls::Base("https://cdn.example.com/x".into())
        );
    }
}
