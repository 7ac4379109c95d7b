//! Wiring: `Application::build(config)` opens the database and image store, builds the provider
//! routes, binds the listener (port 0 works: tests use it) and creates the first token on an empty
//! database; `run_until_stopped` serves HTTP and runs the workers until a shutdown signal.
//! The top of the graph: it imports every service, and nothing imports it but `main`.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch};

mod upstreams;

use crate::{
    accounts::{Accounts, AdminKey},
    config::Config,
    console::{self, ConsoleSettings},
    domain::RequestLimits,
    fetch::Fetcher,
    http::{self, AppState, Services},
    limits::{RateLimiter, RedisLimiter},
    storage::{Db, ImageStore, db::DbOptions},
    tasks::{TaskSettings, Tasks},
    telemetry::redact_url,
};

pub struct Application {
    listener: TcpListener,
    port: u16,
    base_url: String,
    router: axum::Router,
    db: Db,
    store: ImageStore,
    tasks: Arc<Tasks>,
    created_token: Option<String>,
    placeholder: bool,
    shutdown_grace: Duration,
    request_head_timeout: Duration,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        Application::build_with(config, |_| {}).await
    }

    /// Like `build`, with a hook to adjust the task settings (tests shorten backoffs).
    pub async fn build_with(
        config: Config,
        adjust: impl FnOnce(&mut TaskSettings),
    ) -> anyhow::Result<Application> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating the data folder {}", config.data_dir.display()))?;
        let db_options = DbOptions {
            pool_size: config.database_pool_size,
            ..DbOptions::default()
        };
        let db = Db::connect_with(&config.database_url, db_options)
            .await
            .with_context(|| {
                format!("opening the database {}", redact_url(&config.database_url))
            })?;
        // Not contacted here: a store that is down at start is reported by readiness, and a
        // request that needs it then fails with a clear error rather than the whole server.
        let store = ImageStore::open(&config.storage, config.image_urls.clone())
            .context("opening the image store")?;
        let routes = upstreams::build_routes(&config)?;
        // Install the metrics recorder before anything records.
        crate::telemetry::metrics();
        let fetcher = Fetcher::new(config.fetch.clone()).context("building the HTTP client")?;

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let local = listener.local_addr().context("reading the bound address")?;
        let base_url = config
            .public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"));

        let accounts = Accounts::new(db.clone(), config.token_cache);
        let created_token = accounts
            .bootstrap(config.bootstrap_token.as_deref(), config.bootstrap_credits)
            .await
            .context("creating the first application and token")?;
        let mut settings = TaskSettings::from_config(&config);
        adjust(&mut settings);
        let placeholder = routes.uses_placeholder();
        let tasks = Tasks::new(
            db.clone(),
            store.clone(),
            routes,
            fetcher,
            config.prices.clone(),
            settings,
            base_url.clone(),
        );
        let console_settings = ConsoleSettings {
            secure_cookies: base_url.starts_with("https://"),
            max_body_bytes: config.max_body_bytes,
            signup_credits: config.signup_credits,
        };
        let state = AppState::new(Services {
            accounts,
            tasks: tasks.clone(),
            images: store.clone(),
            db: db.clone(),
            limits: RequestLimits {
                max_prompt_chars: config.max_prompt_chars,
                ..RequestLimits::default()
            },
            max_image_bytes: config.fetch.max_image_bytes,
            rate_limiter: build_rate_limiter(&config).await?,
            admin_key: config.admin_key.as_deref().map(AdminKey::new),
        });
        Ok(Application {
            listener,
            port: local.port(),
            base_url,
            router: http::router(
                state,
                config.max_body_bytes,
                console::routes(console_settings),
            ),
            db,
            store,
            tasks,
            created_token,
            placeholder,
            shutdown_grace: config.shutdown_grace,
            request_head_timeout: config.request_head_timeout,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The public base URL (image URLs start with it).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The token created on first start, when the database had none (shown once).
    pub fn created_token(&self) -> Option<&str> {
        self.created_token.as_deref()
    }

    /// Whether some model is served by the offline placeholder renderer.
    pub fn uses_placeholder(&self) -> bool {
        self.placeholder
    }

    /// The database (tests look inside it).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The image store (tests look inside it).
    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    /// Serves until `signal` completes; then stops accepting, lets running tasks finish within
    /// the grace period, and returns. The whole stop fits in `--shutdown-grace`: running tasks
    /// get the grace less a reserve (a quarter of it, at most a second), in which unfinished
    /// tasks go back to the queue, the sync requests still waiting are answered (their tasks
    /// continue elsewhere) and the connections close.
    pub async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let reserve = (self.shutdown_grace / 4).min(Duration::from_secs(1));
        let background = self
            .tasks
            .spawn_background(stopped.clone(), self.shutdown_grace - reserve);
        // Connections share the router (a reference count each): no route table per connection.
        let server = crate::http::server::serve(
            self.listener,
            self.router,
            self.request_head_timeout,
            stopped.clone(),
        );
        let server = tokio::spawn(server);
        signal.await;
        tracing::info!(
            "shutting down: no new requests; running tasks get {:?}",
            self.shutdown_grace
        );
        let deadline = tokio::time::Instant::now() + self.shutdown_grace;
        let _ = stop.send(true);
        let _ = background.await;
        // Every waiting request has been answered by now; what is left is writing the answers
        // and closing the connections. A client that stops reading must not hold the shutdown.
        let closing = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_millis(200));
        match tokio::time::timeout(closing, server).await {
            Ok(Ok(())) | Err(_) => {}
            Ok(Err(e)) => return Err(e).context("the HTTP server task failed"),
        }
        // Bounded too: a connection still checked out (an aborted request) is not waited for.
        let _ = tokio::time::timeout(Duration::from_millis(500), self.db.close()).await;
        Ok(())
    }
}

/// Process memory, or Redis when configured. A Redis that is down at startup is not fatal: it is
/// reported, and requests meet the failure mode until it answers.
async fn build_rate_limiter(config: &Config) -> anyhow::Result<RateLimiter> {
    let Some(settings) = &config.redis else {
        return Ok(RateLimiter::default());
    };
    let limiter = RedisLimiter::new(settings.clone())
        .with_context(|| format!("connecting to Redis at {}", settings.redacted_url()))?;
    let limiter = RateLimiter::Redis(limiter);
    match limiter.check().await {
        Ok(()) => tracing::info!(
            redis = %settings.redacted_url(),
            prefix = %settings.prefix,
            failure_mode = %settings.failure_mode,
            "rate limits are shared through Redis"
        ),
        // The limiter has already logged the failure and its consequence.
        Err(e) => tracing::warn!(
            redis = %settings.redacted_url(),
            error = %e,
            "Redis does not answer at startup; serving anyway"
        ),
    }
    Ok(limiter)
}
