//! The Redis backend: one GCRA step per request in a Lua script (`gcra.lua`), atomic and timed by
//! Redis's own clock, so every node shares one limit per application. Keys are
//! `{prefix}rl:{application_id}` and expire once they carry no state.
//!
//! Redis being down must not stall requests: every call is cut off after a short timeout, and then
//! the failure mode decides. `open` (the default) admits the request unchecked: a rate limit is a
//! fairness tool, and credits (checked in the database) still bound what anyone can spend, so
//! losing image generation for everybody costs more than a short unlimited window. `closed`
//! refuses with the contract's `api_error`. Either way the first failure of a run of failures logs
//! a warning (then at most one a minute), `nano_banana_rate_limit_backend_errors_total` counts
//! every failure, and `nano_banana_rate_limit_backend_up` is 0 until Redis answers again.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Deserialize;

use super::{Gcra, LimiterError, Verdict};
use crate::telemetry::redact_url;

/// What a request gets when Redis cannot be asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Admit the request without a rate-limit check.
    #[default]
    Open,
    /// Refuse the request with `api_error` (HTTP 500).
    Closed,
}

impl FailureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureMode::Open => "open",
            FailureMode::Closed => "closed",
        }
    }
}

impl std::fmt::Display for FailureMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to reach Redis. `Debug` hides the URL's password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://…` for TLS.
    pub url: String,
    /// With `rediss://`: the CA certificates (PEM) the server's certificate must chain to, in
    /// place of the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Put before every key, so that several deployments can share one Redis.
    pub prefix: String,
    pub failure_mode: FailureMode,
    /// The longest a request waits for Redis.
    pub timeout: Duration,
}

pub const DEFAULT_REDIS_PREFIX: &str = "nano-banana:";
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);

impl RedisSettings {
    pub fn new(url: impl Into<String>) -> RedisSettings {
        RedisSettings {
            url: url.into(),
            ca_pem: None,
            prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            failure_mode: FailureMode::default(),
            timeout: DEFAULT_REDIS_TIMEOUT,
        }
    }

    /// The URL with its password replaced, for logs.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.redacted_url())
            .field("ca_pem", &self.ca_pem.as_ref().map(|pem| pem.len()))
            .field("prefix", &self.prefix)
            .field("failure_mode", &self.failure_mode)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Rate limits kept in Redis, shared by every node that uses the same Redis and prefix.
pub struct RedisLimiter {
    connection: ConnectionManager,
    script: redis::Script,
    settings: RedisSettings,
    health: Health,
}

impl RedisLimiter {
    /// Prepares the connection without opening it: a Redis that is down at startup is handled
    /// like one that goes down later (the failure mode), and reconnection is automatic.
    pub fn new(settings: RedisSettings) -> Result<RedisLimiter, LimiterError> {
        let client = match &settings.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                settings.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            )?,
            // `rediss://` without a CA file: the system's roots (rustls-native-certs).
            None => redis::Client::open(settings.url.as_str())?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            // Reconnect attempts run in the background of the next calls; keep them short so
            // a Redis that comes back is used again within about a second.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(RedisLimiter {
            connection,
            script: redis::Script::new(include_str!("gcra.lua")),
            settings,
            health: Health::default(),
        })
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    pub async fn admit(&self, application_id: &str, per_minute: u64, burst: u64) -> Verdict {
        let gcra = Gcra::new(per_minute, burst);
        match self.step(application_id, gcra, None).await {
            Ok(decision) => Verdict::Checked(decision),
            Err(_) => match self.settings.failure_mode {
                FailureMode::Open => Verdict::Unchecked,
                FailureMode::Closed => Verdict::Unavailable,
            },
        }
    }

    /// A PING within the timeout.
    pub async fn check(&self) -> Result<(), LimiterError> {
        let mut connection = self.connection.clone();
        let ping = redis::cmd("PING");
        let result = self
            .within_timeout(ping.query_async::<String>(&mut connection))
            .await
            .map(drop);
        self.record(&result);
        result
    }

    /// One GCRA step in Redis; `now_us` replaces Redis's clock (tests only).
    pub(crate) async fn step(
        &self,
        application_id: &str,
        gcra: Gcra,
        now_us: Option<u64>,
    ) -> Result<super::Decision, LimiterError> {
        let key = format!("{}rl:{application_id}", self.settings.prefix);
        let mut invocation = self.script.key(key);
        invocation
            .arg(gcra.interval_us)
            .arg(gcra.tolerance_us)
            .arg(gcra.burst)
            .arg(now_us.map(|n| n.to_string()).unwrap_or_default());
        let mut connection = self.connection.clone();
        let result = self
            .within_timeout(invocation.invoke_async::<(u8, u64, u64, u64)>(&mut connection))
            .await
            .map(|(allowed, remaining, retry_us, reset_us)| {
                gcra.decision(allowed == 1, remaining, retry_us, reset_us)
            });
        self.record(&result);
        result
    }

    async fn within_timeout<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, LimiterError> {
        match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(LimiterError::Timeout(self.settings.timeout)),
        }
    }

    fn record<T>(&self, result: &Result<T, LimiterError>) {
        let mode = self.settings.failure_mode;
        match result {
            Ok(_) => self.health.succeeded(),
            Err(error) => self.health.failed(error, mode),
        }
    }
}

/// Whether Redis answered last time, and when a failure was last logged as a warning.
struct Health {
    up: AtomicBool,
    /// Failures since the last warning.
    unreported: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            up: AtomicBool::new(true),
            unreported: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        }
    }
}

/// While Redis stays down, repeat the warning this often (with the number of failures since).
const WARN_EVERY: Duration = Duration::from_secs(60);

impl Health {
    fn succeeded(&self) {
        metrics::gauge!("nano_banana_rate_limit_backend_up", "backend" => "redis").set(1.0);
        if !self.up.swap(true, Ordering::Relaxed) {
            let failures = self.unreported.swap(0, Ordering::Relaxed);
            tracing::info!(
                failures_since_last_warning = failures,
                "Redis answers again: rate limits are shared again"
            );
        }
    }

    fn failed(&self, error: &LimiterError, mode: FailureMode) {
        metrics::counter!(
            "nano_banana_rate_limit_backend_errors_total",
            "backend" => "redis",
            "failure_mode" => mode.as_str()
        )
        .increment(1);
        metrics::gauge!("nano_banana_rate_limit_backend_up", "backend" => "redis").set(0.0);
        let was_up = self.up.swap(false, Ordering::Relaxed);
        let failures = self.unreported.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = was_up || last.is_none_or(|at| now.duration_since(at) >= WARN_EVERY);
        if !due {
            tracing::debug!(error = %error, "Redis rate limiter failed again");
            return;
        }
        *last = Some(now);
        self.unreported.store(0, Ordering::Relaxed);
        let consequence = match mode {
            FailureMode::Open => "requests are admitted WITHOUT a rate-limit check",
            FailureMode::Closed => "requests are refused with api_error",
        };
        tracing::warn!(
            error = %error,
            failures,
            failure_mode = %mode,
            "Redis rate limiter unreachable: failing {mode}, {consequence}"
        );
    }
}
