//! The task lifecycle: accepting a request as a durable task, waking the workers that run it,
//! waiting for it (sync mode), and reading task records back in the contract's shape.
//!
//! Workers (`worker.rs`) claim tasks from the database with a lease, so a task survives the death
//! of the process that accepted it; callbacks (`callbacks.rs`) go through an outbox written with
//! the result. What does not live here: HTTP (the `http` module calls `Tasks`), SQL (`storage`).
//! Imports `accounts` only for the `Caller`; never `http`, `app` or `client`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::{
    accounts::Caller,
    api::{self, ApiError, ErrorCode, IMAGES_API_ID, TaskRecord, TaskState, Throttle},
    config::Config,
    domain::{ImagesRequest, Model, Prices, now_ms, sha256_hex},
    fetch::{FetchError, Fetcher},
    providers::Routes,
    storage::{
        Db, ImageStore,
        db::{
            Admission, Claim, ClaimedTask, DbError, DeliveryAttempt, Event, NewTask, Pace,
            QueueStats, TaskFilter, TaskRow, TaskSummary,
        },
    },
    tasks::inputs::Preloaded,
};

pub mod callbacks;
pub mod inputs;
mod output;
mod retention;
mod usage;
mod worker;

/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// A task's final answer: the HTTP status a sync client gets, and the body (also the record's
/// `response` and the callback's payload).
#[derive(Debug, Clone)]
pub struct TaskResult {
    pub status: u16,
    pub body: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Db(#[from] crate::storage::db::DbError),
    #[error("stored JSON is unreadable: {0}")]
    Json(#[from] serde_json::Error),
}

/// Knobs of the task machinery, from `Config`.
#[derive(Debug, Clone)]
pub struct TaskSettings {
    pub workers: usize,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub max_attempts: u32,
    pub task_deadline: Duration,
    /// The first retry waits about this long; each later one twice as long (with jitter).
    pub retry_base: Duration,
    pub callback_timeout: Duration,
    pub callback_retry_for: Duration,
    pub callback_retry_base: Duration,
    /// Standard Webhooks signing key; `None`: callbacks are unsigned.
    pub callback_signing_key: Option<Vec<u8>>,
    /// A task claimed this many times without finishing (its process kept dying) fails.
    pub max_claims: i64,
    /// An input image object referenced by no task is deleted once it is this old.
    pub input_grace: Duration,
    /// How often the input sweeper looks (`inputs.rs`).
    pub input_sweep_interval: Duration,
    /// The test-only fault hook of `inputs.rs` (`NANO_BANANA_TEST_FAULT`).
    pub pause_after_input_write: bool,
    /// How long finished tasks are kept (`None`: forever; `retention.rs`).
    pub retention: Option<Duration>,
    /// How often the retention sweeper looks.
    pub retention_sweep_interval: Duration,
    /// How often the storage gauges are counted (`usage.rs`); `None`: never.
    pub storage_usage_interval: Option<Duration>,
}

impl TaskSettings {
    pub fn from_config(config: &Config) -> TaskSettings {
        TaskSettings {
            workers: config.workers,
            lease: config.lease,
            poll_interval: config.poll_interval,
            max_attempts: config.max_attempts,
            task_deadline: config.task_deadline,
            retry_base: Duration::from_millis(500),
            callback_timeout: config.callback_timeout,
            callback_retry_for: config.callback_retry_for,
            callback_retry_base: Duration::from_secs(5),
            callback_signing_key: config.callback_signing_key.clone(),
            max_claims: 5,
            input_grace: config.input_grace,
            input_sweep_interval: config.input_sweep_interval,
            pause_after_input_write: std::env::var(inputs::FAULT_ENV)
                .is_ok_and(|fault| fault == inputs::PAUSE_AFTER_INPUT_WRITE),
            retention: config.retention,
            retention_sweep_interval: config.retention_sweep_interval,
            storage_usage_interval: config.storage_usage_interval,
        }
    }
}

/// The task service shared by the HTTP handlers and the background workers.
pub struct Tasks {
    db: Db,
    store: ImageStore,
    routes: Routes,
    fetcher: Fetcher,
    prices: Prices,
    settings: TaskSettings,
    /// Absolute base of image URLs, e.g. `https://img.example.com`.
    public_base_url: String,
    /// This process's identity in leases.
    owner: String,
    /// Sync requests waiting for their task, by task id.
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<TaskResult>>>>,
    /// Tasks this process's workers are running now: a sync request waiting for one of them
    /// needs no database polling, the worker's signal will come.
    running_here: Mutex<HashSet<String>>,
    /// Wakes idle workers when a task is queued.
    task_queued: Notify,
    /// Wakes the callback deliverer when a callback is queued.
    callback_queued: Notify,
    /// Bounds the tasks running at once in this process. Closed when the workers stop, so
    /// no task is claimed at admission after that.
    slots: Arc<Semaphore>,
    /// Tasks claimed at admission, with their slot, for the workers' loop to run.
    handoff: mpsc::UnboundedSender<Handoff>,
    handed_off: Mutex<Option<mpsc::UnboundedReceiver<Handoff>>>,
    /// Turns true when this process has stopped running tasks (shutdown, after the grace
    /// period): sync requests still waiting here are answered with where their task stands.
    closing: watch::Sender<bool>,
}

/// A task claimed at admission, its worker slot, and its input images already decoded.
type Handoff = (ClaimedTask, OwnedSemaphorePermit, Preloaded);

impl Tasks {
    pub fn new(
        db: Db,
        store: ImageStore,
        routes: Routes,
        fetcher: Fetcher,
        prices: Prices,
        settings: TaskSettings,
        public_base_url: String,
    ) -> Arc<Tasks> {
        let slots = Arc::new(Semaphore::new(settings.workers));
        let (handoff, handed_off) = mpsc::unbounded_channel();
        Arc::new(Tasks {
            db,
            store,
            routes,
            fetcher,
            prices,
            settings,
            public_base_url,
            owner: uuid::Uuid::new_v4().to_string(),
            waiters: Mutex::new(HashMap::new()),
            running_here: Mutex::new(HashSet::new()),
            task_queued: Notify::new(),
            callback_queued: Notify::new(),
            slots,
            handoff,
            handed_off: Mutex::new(Some(handed_off)),
            closing: watch::Sender::new(false),
        })
    }

    /// Starts the workers and the callback deliverer; they stop when `shutdown` turns true,
    /// after running tasks finish or `grace` passes (then their tasks go back to the queue).
    /// Then the sync requests still waiting here are answered (`wait`), and the handle ends.
    pub fn spawn_background(
        self: &Arc<Self>,
        shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) -> tokio::task::JoinHandle<()> {
        // No workers: an API-only node that accepts and answers requests while other nodes
        // run the tasks.
        let workers = if self.settings.workers > 0 {
            tokio::spawn(worker::run(self.clone(), shutdown.clone(), grace))
        } else {
            tokio::spawn(async {})
        };
        let deliverer = tokio::spawn(callbacks::run(self.clone(), shutdown.clone(), grace));
        let sweeper = tokio::spawn(inputs::sweep(
            self.clone(),
            self.settings.input_sweep_interval,
            shutdown.clone(),
        ));
        let expirer = tokio::spawn(retention::sweep(self.clone(), shutdown.clone()));
        tokio::spawn(usage::count(self.clone(), shutdown.clone()));
        // Kept until the workers have stopped: while they drain, a sync request waiting here
        // for a task another node runs is still answered when that node finishes it.
        let listener = tokio::spawn(listen(self.clone()));
        let tasks = self.clone();
        let mut stopping = shutdown;
        tokio::spawn(async move {
            until_closed(&mut stopping).await;
            let deadline = tokio::time::Instant::now() + grace;
            let _ = workers.await;
            let _ = deliverer.await;
            let _ = sweeper.await;
            let _ = expirer.await;
            // Sync requests still waiting here are for tasks that now run elsewhere (or wait in
            // the queue): answered as those finish (the listener still runs), for what is left
            // of the grace; then with an error that names the task (`stopped_waiting`).
            while !tasks.lock_waiters().is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tasks.closing.send_replace(true);
            listener.abort();
            let _ = listener.await;
        })
    }

    /// Another node finished `task_id`: answer this process's sync requests waiting for it.
    async fn finished_elsewhere(&self, task_id: &str) {
        if !self.lock_waiters().contains_key(task_id) {
            return;
        }
        match self.db.task_result(task_id).await {
            Ok(Some((status, body))) => {
                let body = serde_json::from_str(&body).unwrap_or(Value::Null);
                self.notify_waiters(task_id, &TaskResult { status, body });
            }
            Ok(None) => {}
            // The waiter's own poll still finds the result.
            Err(e) => tracing::warn!(error = %e, task_id, "could not read a finished task"),
        }
    }

    /// Checks what can be checked before a task exists (input image sources), stores `data:`
    /// inputs in the image store (`inputs.rs`: the stored request names them), then writes the
    /// task. Sync requests get a receiver for the result, registered before the task is visible
    /// to workers so that a fast worker cannot finish it unseen.
    ///
    /// With an idempotency key already used by this application in the last 24 hours, no task
    /// is created: the answer is the original task's.
    #[tracing::instrument(skip_all, fields(trace_id = %trace_id))]
    pub async fn submit(
        &self,
        caller: &Caller,
        trace_id: &str,
        body: &mut Value,
        request: &mut ImagesRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Submitted, ApiError> {
        if self.routes.get(request.model).is_none() {
            return Err(not_offered(request));
        }
        // Written before the task: a crash in between leaves objects no task references, which
        // the input sweeper removes. The other order could leave a task without its inputs.
        let inputs = self.store_inputs(body, request).await?;
        let request = &*request;
        let task_id = uuid::Uuid::new_v4().to_string();
        let sync = !request.answers_at_once();
        let receiver = sync.then(|| self.register_waiter(&task_id));
        let request_json = body.to_string();
        let now = now_ms();
        // A free worker here: the task is written already claimed and runs at once, which
        // saves the claim's trip to the database and a worker wake-up (BENCHMARKS.md, S1).
        let slot = self.slots.clone().try_acquire_owned().ok();
        let lease_until = now + self.settings.lease.as_millis() as i64;
        let reserved =
            i64::from(request.count) * self.prices.unit(request.model, request.resolution);
        let task = NewTask {
            id: &task_id,
            trace_id,
            application_id: &caller.application_id,
            user_id: &caller.user_id,
            api_id: IMAGES_API_ID,
            credential_id: &caller.token_id,
            request: &request_json,
            inputs: &inputs.digests,
            callback_url: request.callback_url.as_deref(),
            model: request.model.name(),
            reserved,
            now,
            claim: slot.as_ref().map(|_| Claim {
                owner: &self.owner,
                until: lease_until,
            }),
        };
        // serde_json sorts object keys, so equal bodies hash equal whatever their order; inputs
        // are named by their digests, so equal images hash equal and the text hashed is small.
        let hash = idempotency_key.map(|_| sha256_hex(request_json.as_bytes()));
        let window = IDEMPOTENCY_WINDOW.as_millis() as i64;
        let idempotency = idempotency_key
            .zip(hash.as_deref())
            .map(|(key, hash)| (key, hash, now - window));
        let admission = self.db.admit_task(&task, idempotency).await;
        if !matches!(admission, Ok(Admission::Inserted)) {
            self.lock_waiters().remove(&task_id);
        }
        match admission {
            Ok(Admission::Inserted) => {}
            Ok(Admission::UsedUp) => {
                return Err(ApiError::new(
                    ErrorCode::UsedUp,
                    format!(
                        "The balance is too low for this request: it needs {reserved} credits."
                    ),
                ));
            }
            Ok(Admission::TooManyConcurrent { limit }) => {
                let retry_after = match self.db.pace(&caller.application_id, PACE_SAMPLE).await {
                    Ok(pace) => concurrency_retry_after(&pace, now_ms()),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not estimate when a task finishes");
                        TYPICAL_TASK
                    }
                };
                return Err(ApiError::throttled(
                    Throttle::Concurrency {
                        limit: limit.max(0) as u64,
                        retry_after: retry_after.as_secs(),
                    },
                    format!(
                        "Too many unfinished tasks: at most {limit} at a time. \
                         Try again when one has finished (in about {} s).",
                        retry_after.as_secs()
                    ),
                ));
            }
            Ok(Admission::Existing {
                task_id: original,
                request_hash,
            }) => {
                if hash.as_deref() != Some(request_hash.as_str()) {
                    return Err(ApiError::bad_request(
                        "Idempotency-Key was already used with a different request body.",
                    ));
                }
                tracing::info!(task_id = %original, "idempotent replay");
                let receiver = sync.then(|| self.register_waiter(&original));
                return Ok(Submitted {
                    task_id: original,
                    trace_id: trace_id.to_owned(),
                    receiver,
                    replayed: true,
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "could not record a new task");
                return Err(if e.is_unavailable() {
                    ApiError::unavailable("database")
                } else {
                    ApiError::internal()
                });
            }
        }
        tracing::info!(task_id = %task_id, model = request.model.name(), count = request.count, "task accepted");
        match slot {
            Some(slot) => {
                let claimed = ClaimedTask {
                    id: task_id.clone(),
                    trace_id: trace_id.to_owned(),
                    callback_url: request.callback_url.clone(),
                    request: request_json,
                    attempts: 1,
                    created_at: now,
                };
                // The workers' loop runs it (and waits for it at shutdown). If the loop has
                // stopped, the task keeps its lease until it expires, then runs again.
                if self
                    .handoff
                    .send((claimed, slot, inputs.preloaded))
                    .is_err()
                {
                    tracing::warn!(task_id = %task_id, "workers stopped; the task waits for its lease to expire");
                }
            }
            None => self.task_queued.notify_one(),
        }
        Ok(Submitted {
            task_id,
            trace_id: trace_id.to_owned(),
            receiver,
            replayed: false,
        })
    }

    fn register_waiter(&self, task_id: &str) -> oneshot::Receiver<TaskResult> {
        let (sender, receiver) = oneshot::channel();
        self.lock_waiters()
            .entry(task_id.to_owned())
            .or_default()
            .push(sender);
        receiver
    }

    /// Waits for a sync request's task. The in-process signal is the fast path (from this
    /// process's worker, or from another node's `NOTIFY` on PostgreSQL); the database is checked
    /// every few seconds too, in case another process ran the task unheard — but not while this
    /// process is running it, so thousands of waiting requests cost no queries.
    pub async fn wait(&self, submitted: Submitted) -> TaskResult {
        let Submitted {
            task_id,
            trace_id,
            receiver,
            replayed,
        } = submitted;
        let Some(mut receiver) = receiver else {
            return TaskResult {
                status: 200,
                body: Value::Null,
            };
        };
        let mut check = tokio::time::interval(Duration::from_secs(3));
        let mut closing = self.closing.subscribe();
        // A replayed task may have finished long ago: look at once (the waiter was registered
        // first, so a result recorded in between is not missed either).
        if !replayed {
            check.tick().await;
        }
        loop {
            tokio::select! {
                result = &mut receiver => {
                    if let Ok(result) = result {
                        return result;
                    }
                    // The sender was dropped without a result (lease lost): fall back to polling.
                    receiver = oneshot::channel().1;
                }
                _ = check.tick() => {
                    if self.is_running_here(&task_id) {
                        continue;
                    }
                    // Boxed: inline, the query's future would add its size to every waiting
                    // request's for the whole wait (BENCHMARKS.md, S3).
                    match Box::pin(self.db.task_result(&task_id)).await {
                        Ok(Some((status, body))) => {
                            self.lock_waiters().remove(&task_id);
                            return TaskResult { status, body: serde_json::from_str(&body).unwrap_or(Value::Null) };
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, task_id = %task_id, "could not poll a task"),
                    }
                }
                _ = until_closed(&mut closing) => {
                    return Box::pin(self.stopped_waiting(&task_id, &trace_id)).await;
                }
            }
        }
    }

    /// The answer to a sync request still waiting when this process stops: the result if the
    /// task has one by now, else an error that names the task, which is not lost (it runs on
    /// another node, or here after a restart) and can be retrieved.
    async fn stopped_waiting(&self, task_id: &str, trace_id: &str) -> TaskResult {
        self.lock_waiters().remove(task_id);
        if let Ok(Some((status, body))) = self.db.task_result(task_id).await {
            return TaskResult {
                status,
                body: serde_json::from_str(&body).unwrap_or(Value::Null),
            };
        }
        let error = ApiError::new(
            ErrorCode::ApiError,
            "This server is shutting down before the task finished. The task is not lost: it \
             continues on another node (or after a restart); retrieve it by its task_id.",
        );
        TaskResult {
            status: error.code.http_status(),
            body: error.body(trace_id, Some(task_id)),
        }
    }

    /// The public model `name` means: one of ours, or the upstream model id one of ours is routed
    /// to (`gemini-3-pro-image` is `nano-banana-pro` by default).
    pub fn model_named(&self, name: &str) -> Option<Model> {
        Model::parse(name).or_else(|| self.routes.by_upstream(name))
    }

    /// The names `model_named` knows for the models offered here: ours, then the upstream ids.
    pub fn model_names(&self) -> Vec<String> {
        let offered = self.routes.offered();
        let mut names: Vec<String> = offered.iter().map(|m| m.name().to_owned()).collect();
        for model in offered {
            if let Some(routes) = self.routes.get(model) {
                let upstream = &routes.primary().upstream_model;
                if !names.contains(upstream) {
                    names.push(upstream.clone());
                }
            }
        }
        names
    }

    /// The absolute base of this server's URLs.
    pub fn public_base_url(&self) -> &str {
        &self.public_base_url
    }

    /// The models this server's configuration offers.
    pub fn offered_models(&self) -> Vec<Model> {
        self.routes.offered()
    }

    /// How long an application's finished tasks are kept: its own `retention_seconds` (0:
    /// forever) or else `--retention`; `None` is forever.
    pub fn retention_of(&self, retention_seconds: Option<i64>) -> Option<Duration> {
        match retention_seconds {
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s.unsigned_abs())),
            None => self.settings.retention,
        }
    }

    /// Every offered model's routes and their state, as this process sees them.
    pub fn route_status(&self) -> Vec<(Model, Vec<crate::providers::RouteStatus>)> {
        self.routes.status()
    }

    /// Tasks per state and the callback backlog, for `/metrics`.
    pub async fn queue_stats(&self) -> Result<QueueStats, DbError> {
        self.db.queue_stats().await
    }

    /// One task record in the contract's shape; `None` for an unknown task or another
    /// application's task (both answer `{}`).
    pub async fn retrieve(
        &self,
        application_id: &str,
        id: &str,
    ) -> Result<Option<TaskRecord>, TaskError> {
        match self.db.get_task(id, application_id).await? {
            Some(row) => {
                let mut record = task_record(&row)?;
                self.refresh_image_urls(&mut record).await;
                Ok(Some(record))
            }
            None => Ok(None),
        }
    }

    pub async fn retrieve_batch(
        &self,
        application_id: &str,
        ids: &[String],
    ) -> Result<Vec<TaskRecord>, TaskError> {
        let rows = self.db.get_tasks(ids, application_id).await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut record = task_record(row)?;
            self.refresh_image_urls(&mut record).await;
            records.push(record);
        }
        Ok(records)
    }

    /// Presigned image URLs (`--s3-signed-urls`) in a record's response that have expired, or
    /// are about to, signed afresh: the stored response keeps the URLs it was answered with, and
    /// whoever retrieves it later gets ones that work.
    async fn refresh_image_urls(&self, record: &mut TaskRecord) {
        let Some(images) = record
            .response
            .as_mut()
            .and_then(|response| response.get_mut("data"))
            .and_then(serde_json::Value::as_array_mut)
        else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for image in images {
            let Some(url) = image.get("image_url").and_then(serde_json::Value::as_str) else {
                continue;
            };
            if let Some(fresh) = self.store.resigned(url, now).await {
                image["image_url"] = serde_json::Value::String(fresh);
            }
        }
    }

    /// One page of an application's tasks, newest first (the console's gallery).
    pub async fn list(
        &self,
        application_id: &str,
        filter: &TaskFilter,
    ) -> Result<Vec<TaskSummary>, TaskError> {
        Ok(self.db.list_tasks(application_id, filter).await?)
    }

    /// Everything the console's task page shows: the record, what was reserved and charged, and
    /// each callback delivery attempt. `None` for an unknown task or another application's.
    pub async fn details(
        &self,
        application_id: &str,
        id: &str,
    ) -> Result<Option<TaskDetails>, TaskError> {
        let Some(record) = self.retrieve(application_id, id).await? else {
            return Ok(None);
        };
        let Some(summary) = self.db.task_summary(id, application_id).await? else {
            return Ok(None);
        };
        let deliveries = self.db.delivery_attempts(id).await?;
        Ok(Some(TaskDetails {
            record,
            summary,
            deliveries,
        }))
    }

    /// A task's state and final response without its request (cheap enough to poll).
    pub async fn summary(
        &self,
        application_id: &str,
        id: &str,
    ) -> Result<Option<TaskSummary>, TaskError> {
        Ok(self.db.task_summary(id, application_id).await?)
    }

    fn check_image_source(&self, index: usize, source: &str) -> Result<(), ApiError> {
        self.fetcher
            .check_source(source)
            .map_err(|e| image_error(index, &e))
    }

    fn lock_waiters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Vec<oneshot::Sender<TaskResult>>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still safe to use.
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_running_here(&self, task_id: &str) -> bool {
        self.running_here
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(task_id)
    }

    /// Marks a task as running in this process until the guard is dropped.
    fn run_here(self: &Arc<Self>, task_id: &str) -> RunningHere {
        self.running_here
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(task_id.to_owned());
        RunningHere {
            tasks: self.clone(),
            task_id: task_id.to_owned(),
        }
    }

    fn notify_waiters(&self, task_id: &str, result: &TaskResult) {
        let senders = self.lock_waiters().remove(task_id).unwrap_or_default();
        for sender in senders {
            let _ = sender.send(result.clone());
        }
    }
}

/// Waits until `closing` turns true (or its sender is gone). Its own function: the guard that
/// `wait_for` returns is not `Send`, and in the caller's `select!` it would live on into the
/// branch.
async fn until_closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closed| *closed).await;
}

/// Runs `write` until it succeeds, waiting while the database is unavailable (see
/// `DbError::is_unavailable`: down, failing over, its disk full), from 100 ms to every 2 s; any
/// other error is returned at once. For results held in memory that must not be lost: a task's
/// result, a callback attempt. Bounded by the caller (shutdown aborts it; then the task's lease
/// expires and it runs again, or the callback is delivered again: at least once, never lost).
async fn until_written<T, F, Fut>(what: &str, mut write: F) -> Result<T, DbError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbError>>,
{
    let mut delay = Duration::from_millis(100);
    let mut failures = 0u32;
    loop {
        match write().await {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!(
                        failures,
                        "{what} was written once the database answered again"
                    );
                }
                return Ok(value);
            }
            Err(e) if e.is_unavailable() => {
                if failures == 0 {
                    tracing::warn!(error = %e, "could not write {what}: the database is unavailable; keeping it and trying again");
                }
                failures += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Hears other nodes through the database (PostgreSQL `LISTEN`): queued tasks wake this
/// process's idle workers, finished tasks answer its waiting sync requests. A no-op on SQLite.
/// Lost notifications (while reconnecting) only cost latency: workers and waiters also poll.
/// Runs until aborted (`spawn_background`, once the workers have stopped).
async fn listen(tasks: Arc<Tasks>) {
    let mut listener = loop {
        match tasks.db.listen().await {
            Ok(Some(listener)) => break listener,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not listen for other nodes' tasks; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        match listener.recv().await {
            Ok(Event::TaskQueued) => tasks.task_queued.notify_one(),
            Ok(Event::TaskDone(task_id)) => tasks.finished_elsewhere(&task_id).await,
            Err(e) => {
                tracing::warn!(error = %e, "lost the notification connection; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// While alive, the task counts as running in this process (see `Tasks::running_here`).
struct RunningHere {
    tasks: Arc<Tasks>,
    task_id: String,
}

impl Drop for RunningHere {
    fn drop(&mut self) {
        self.tasks
            .running_here
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.task_id);
    }
}

/// A task as the console's task page shows it.
pub struct TaskDetails {
    pub record: TaskRecord,
    pub summary: TaskSummary,
    pub deliveries: Vec<DeliveryAttempt>,
}

/// A freshly accepted task; `receiver` is set for sync requests.
pub struct Submitted {
    pub task_id: String,
    /// The request's, for an answer made here rather than by the task (`stopped_waiting`).
    trace_id: String,
    receiver: Option<oneshot::Receiver<TaskResult>>,
    /// An idempotent replay of an earlier request: no new task was created.
    pub replayed: bool,
}

/// How many of an application's recent tasks its typical task duration is taken from.
const PACE_SAMPLE: i64 = 20;
/// The typical task when an application has none finished yet: what an image model takes.
const TYPICAL_TASK: Duration = Duration::from_secs(10);
/// The bounds of the concurrency limit's `Retry-After`.
const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

/// When an application over its concurrency limit should try again: when its longest-running
/// task is expected to end, judged by the median duration of its recent tasks (10 s without
/// any). A task already past that median may end at any moment, or take much longer: then a
/// quarter of the median. Whole seconds from 1 to 60 — an estimate, never a promise.
fn concurrency_retry_after(pace: &Pace, now: i64) -> Duration {
    let typical = median(&pace.durations)
        .map(|ms| Duration::from_millis(ms.max(0) as u64))
        .unwrap_or(TYPICAL_TASK);
    let left = match pace.oldest_started {
        Some(started) => {
            let age = Duration::from_millis((now - started).max(0) as u64);
            typical.checked_sub(age).unwrap_or(typical / 4)
        }
        // Nothing running yet (all queued): a whole task's time at least.
        None => typical,
    };
    let seconds = left.as_millis().div_ceil(1000) as u64;
    Duration::from_secs(seconds).clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX)
}

fn median(values: &[i64]) -> Option<i64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}

/// A model the contract knows but this server's configuration does not offer.
pub(crate) fn not_offered(request: &ImagesRequest) -> ApiError {
    ApiError::new(
        ErrorCode::ApiNotImplemented,
        format!(
            "model {} is not offered by this server.",
            request.model.name()
        ),
    )
}

/// The contract's error for an input image that could not be used, naming which one.
pub fn image_error(index: usize, error: &FetchError) -> ApiError {
    if error.is_too_large() {
        ApiError::new(
            ErrorCode::RequestTooLarge,
            format!("image_urls[{index}] is too large: {error}."),
        )
    } else {
        ApiError::bad_request(format!("image_urls[{index}] cannot be used: {error}."))
    }
}

/// Builds the contract's task record from a row. A record of an unfinished task has no
/// `finished_at`, no `elapsed` and no `response` key at all.
fn task_record(row: &TaskRow) -> Result<TaskRecord, TaskError> {
    let state = TaskState::parse(&row.state).unwrap_or(TaskState::Pending);
    let finished_at = row.finished_at.filter(|_| state.is_terminal());
    let response = match &row.response {
        Some(response) if state.is_terminal() => Some(serde_json::from_str(response)?),
        _ => None,
    };
    Ok(TaskRecord {
        api_id: row.api_id.clone(),
        application_id: row.application_id.clone(),
        created_at: api::unix_seconds(row.created_at),
        credential_id: row.credential_id.clone(),
        elapsed: finished_at.map(|finished| {
            api::unix_seconds((finished - row.started_at.unwrap_or(row.created_at)).max(0))
        }),
        finished_at: finished_at.map(api::unix_seconds),
        id: row.id.clone(),
        request: serde_json::from_str(&row.request)?,
        response,
        started_at: row.started_at.map(api::unix_seconds),
        state,
        trace_id: row.trace_id.clone(),
        kind: "images".into(),
        user_id: row.user_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(oldest_started: Option<i64>, durations: &[i64]) -> Pace {
        Pace {
            oldest_started,
            durations: durations.to_vec(),
        }
    }

    #[test]
    fn retry_after_is_what_is_left_of_a_typical_task() {
        // Typical 12 s (the median), the running task started 4.5 s ago: 7.5 s left → 8 s.
        let p = pace(
            Some(100_000 - 4_500),
            &[30_000, 12_000, 11_000, 12_000, 13_000],
        );
        assert_eq!(concurrency_retry_after(&p, 100_000), Duration::from_secs(8));
    }

    #[test]
    fn retry_after_without_history_assumes_ten_seconds() {
        assert_eq!(
            concurrency_retry_after(&pace(Some(0), &[]), 3_000),
            Duration::from_secs(7)
        );
        // Only queued tasks: a whole typical task.
        assert_eq!(
            concurrency_retry_after(&pace(None, &[]), 3_000),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn an_overdue_task_gives_a_quarter_of_the_typical_time() {
        let p = pace(Some(0), &[20_000]);
        assert_eq!(concurrency_retry_after(&p, 90_000), Duration::from_secs(5));
    }

    #[test]
    fn retry_after_stays_within_one_second_and_a_minute() {
        assert_eq!(
            concurrency_retry_after(&pace(Some(0), &[600_000]), 1_000),
            Duration::from_secs(60)
        );
        assert_eq!(
            concurrency_retry_after(&pace(Some(0), &[100]), 1_000),
            Duration::from_secs(1)
        );
        // A clock that went backwards does not panic or go negative.
        assert_eq!(
            concurrency_retry_after(&pace(Some(5_000), &[-50, 2_000]), 1_000),
            Duration::from_secs(2)
        );
    }
}
