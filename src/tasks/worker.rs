//! The workers: claim due tasks with a lease, keep the lease alive while the upstream works, make
//! the images (one upstream call per image, in parallel, retried with backoff when the failure is
//! retryable), store them, and record the result fenced on the lease.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use rand::Rng;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, watch};

use super::{
    TaskResult, Tasks,
    inputs::{Preloaded, load_error},
    output::{Finishing, Mask, OutputError},
};
use crate::{
    api::{self, ApiError, ErrorCode, ImageEntry},
    domain::{AspectRatio, ImagesRequest, RequestLimits, now_ms},
    providers::{ImageJob, InputImage, ModelRoutes, Pick, ProviderError},
    storage::{ImageStore, db::ClaimedTask, db::Completion},
};

/// The longest a stopping process waits for the database to take its unfinished tasks back.
pub(crate) const RELEASE_TIMEOUT: Duration = Duration::from_millis(500);

/// Claims and runs tasks until `shutdown`, with the tasks claimed at admission (handed over by
/// `Tasks::submit`); then waits up to `grace` for running tasks and puts the unfinished ones back
/// in the queue.
pub(super) async fn run(tasks: Arc<Tasks>, mut shutdown: watch::Receiver<bool>, grace: Duration) {
    let handed_off = tasks
        .handed_off
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let Some(mut handed_off) = handed_off else {
        tracing::error!("the workers were started twice; the second start does nothing");
        return;
    };
    let mut running = tokio::task::JoinSet::new();
    let spawn = |running: &mut tokio::task::JoinSet<()>, task, permit, preloaded| {
        let tasks = tasks.clone();
        running.spawn(async move {
            let _permit: OwnedSemaphorePermit = permit;
            execute(tasks, task, preloaded).await;
        });
    };
    let mut claim = true;
    loop {
        if *shutdown.borrow() {
            break;
        }
        // The slots first, then the claim: an admission that takes a slot meanwhile cannot
        // leave a claimed task without one.
        let mut slots = Vec::new();
        let mut claimed_all = false;
        if claim {
            while slots.len() < 32 {
                match tasks.slots.clone().try_acquire_owned() {
                    Ok(slot) => slots.push(slot),
                    Err(_) => break,
                }
            }
        }
        if !slots.is_empty() {
            match tasks
                .db
                .claim_tasks(&tasks.owner, tasks.settings.lease, slots.len(), now_ms())
                .await
            {
                Ok(claimed) => {
                    claimed_all = claimed.len() == slots.len();
                    for (task, slot) in claimed.into_iter().zip(slots.drain(..)) {
                        spawn(&mut running, task, slot, Preloaded::default());
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not claim tasks"),
            }
        }
        // Slots left unused go back now.
        drop(slots);
        // Reap finished executions so the set does not grow.
        while running.try_join_next().is_some() {}
        if claimed_all {
            continue;
        }
        let busy = tasks.slots.available_permits() == 0;
        claim = true;
        tokio::select! {
            Some((task, slot, preloaded)) = handed_off.recv() => {
                spawn(&mut running, task, slot, preloaded);
                // Nothing new in the queue: no claim for this wake-up.
                claim = false;
            }
            _ = tasks.task_queued.notified() => {}
            _ = tasks.slot_freed(), if busy => {}
            _ = tokio::time::sleep(tasks.settings.poll_interval) => {}
            _ = shutdown.changed() => {}
        }
    }
    // No more claims at admission; those under way still arrive here and run.
    tasks.slots.close();
    // Every slot back: nothing runs, and no admission holds one to hand over.
    let all_back = || tasks.slots.available_permits() >= tasks.settings.workers;
    if !all_back() {
        tracing::info!(
            running = running.len(),
            "waiting for running tasks to finish"
        );
    }
    let drained = tokio::time::timeout(grace, async {
        loop {
            if all_back() {
                return;
            }
            tokio::select! {
                Some(_) = running.join_next() => {}
                Some((task, slot, preloaded)) = handed_off.recv() => {
                    spawn(&mut running, task, slot, preloaded);
                }
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            unfinished = running.len(),
            "the grace period is over: unfinished tasks go back to the queue"
        );
        running.abort_all();
        while running.join_next().await.is_some() {}
        // Whatever was still running goes back to the queue for the next start (or another
        // process); nothing was recorded for it, so nothing is half-written.
        // Bounded: a database that does not answer must not hold the shutdown past its grace.
        match tokio::time::timeout(RELEASE_TIMEOUT, tasks.release_my_tasks()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not release unfinished tasks; their leases will expire")
            }
            Err(_) => tracing::error!(
                "the database did not take back the unfinished tasks in time; their leases will expire"
            ),
        }
    }
}

impl Tasks {
    async fn slot_freed(&self) {
        // A permit being returned is observed by acquiring and dropping one.
        if let Ok(permit) = self.slots.acquire().await {
            drop(permit);
        }
    }

    async fn release_my_tasks(&self) -> Result<(), crate::storage::db::DbError> {
        self.db.release_tasks_of(&self.owner, now_ms()).await
    }
}

#[tracing::instrument(skip_all, fields(task_id = %task.id, trace_id = %task.trace_id))]
async fn execute(tasks: Arc<Tasks>, task: ClaimedTask, preloaded: Preloaded) {
    let started = Instant::now();
    // Until this returns, waiters here skip their database polls: the result comes from us (or,
    // if we lose the lease or cannot record it, polling resumes when this guard drops).
    let _running = tasks.run_here(&task.id);
    // Stopped when this ends, however it ends: a run cut off at shutdown must not go on
    // renewing a lease that has been handed back.
    let heartbeat = Heartbeat(tokio::spawn(keep_lease(tasks.clone(), task.id.clone())));
    let (result, images, failed_images) = run_task(&tasks, &task, preloaded).await;

    let body = result.body.to_string();
    let callback_id = uuid::Uuid::new_v4().to_string();
    let completion = Completion {
        succeeded: result.status == 200,
        images,
        failed_images,
        http_status: result.status,
        response: &body,
        callback_url: task.callback_url.as_deref(),
        callback_id: &callback_id,
        now: now_ms(),
    };
    // Boxed: the database future is large, and unboxed its space would be held by every
    // running task's future for the whole upstream call (BENCHMARKS.md, S3). While the database
    // is unavailable the result is kept here and written when it is back (the lease is still
    // renewed meanwhile, so no other node takes the task over if the outage is shorter than it).
    let recorded = super::until_written("the task result", || {
        Box::pin(tasks.db.complete_task(&task.id, &tasks.owner, &completion))
    })
    .await;
    drop(heartbeat);
    match recorded {
        Ok(true) => {
            tracing::info!(
                status = result.status,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "task finished"
            );
            let outcome = if result.status == 200 {
                "succeeded"
            } else {
                "failed"
            };
            metrics::counter!("nano_banana_tasks_finished_total", "outcome" => outcome)
                .increment(1);
            metrics::histogram!("nano_banana_task_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            tasks.notify_waiters(&task.id, &result);
            if task.callback_url.is_some() {
                tasks.callback_queued.notify_one();
            }
        }
        Ok(false) => {
            tracing::warn!(
                "task lease was lost before the result was recorded; another worker owns it"
            );
        }
        Err(e) => {
            // The lease will expire and the task will run again: at least once, never lost.
            tracing::error!(error = %e, "could not record the task result");
        }
    }
}

/// The task renewing a running task's lease; stopped when dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn keep_lease(tasks: Arc<Tasks>, id: String) {
    let every = tasks.settings.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let until = now_ms() + tasks.settings.lease.as_millis() as i64;
        match tasks.db.renew_task_lease(&id, &tasks.owner, until).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(task_id = %id, "task lease lost");
                return;
            }
            Err(e) => tracing::warn!(task_id = %id, error = %e, "could not renew a task lease"),
        }
    }
}

/// The task's result, with the number of images made and failed (for billing).
async fn run_task(
    tasks: &Tasks,
    task: &ClaimedTask,
    preloaded: Preloaded,
) -> (TaskResult, i64, i64) {
    let fail = |error: ApiError| {
        let result = TaskResult {
            status: error.code.http_status(),
            body: error.body(&task.trace_id, Some(&task.id)),
        };
        (result, 0, 0)
    };
    if task.attempts > tasks.settings.max_claims {
        tracing::error!(
            attempts = task.attempts,
            "task was interrupted too often; failing it"
        );
        return fail(ApiError::new(
            ErrorCode::ApiError,
            "The task was interrupted too many times and was abandoned.",
        ));
    }
    let deadline_ms = task.created_at + tasks.settings.task_deadline.as_millis() as i64;
    let remaining = Duration::from_millis((deadline_ms - now_ms()).max(0) as u64);
    match tokio::time::timeout(remaining, make_images(tasks, task, preloaded, deadline_ms)).await {
        Ok(Ok((data, failed))) => {
            let result = TaskResult {
                status: 200,
                body: api::success_body(&task.id, &task.trace_id, &data),
            };
            (result, data.len() as i64, failed as i64)
        }
        Ok(Err(error)) => fail(error),
        Err(_) => fail(ApiError::new(
            ErrorCode::ApiError,
            "The task did not finish before its deadline.",
        )),
    }
}

async fn make_images(
    tasks: &Tasks,
    task: &ClaimedTask,
    preloaded: Preloaded,
    deadline_ms: i64,
) -> Result<(Vec<ImageEntry>, usize), ApiError> {
    let body: Value = serde_json::from_str(&task.request).map_err(|e| {
        tracing::error!(error = %e, "stored request is not JSON");
        ApiError::internal()
    })?;
    // The stored request was valid when accepted; limits only bound sizes, so the loosest ones
    // re-parse it identically.
    let loose = RequestLimits {
        max_prompt_chars: usize::MAX,
        max_url_chars: usize::MAX,
    };
    let request = ImagesRequest::parse(&body, &loose).map_err(|e| {
        tracing::error!(error = %e, "stored request no longer parses");
        ApiError::internal()
    })?;
    let Some(routes) = tasks.routes.get(request.model) else {
        return Err(ApiError::new(
            ErrorCode::ApiNotImplemented,
            format!(
                "model {} is not offered by this server.",
                request.model.name()
            ),
        ));
    };

    // Loaded once for the task: every image of `count`, and every retry, uses these bytes.
    let loads = request
        .image_urls
        .iter()
        .map(|source| tasks.load_input(source, &preloaded));
    let mut inputs = Vec::with_capacity(request.image_urls.len());
    for (i, loaded) in join_all(loads).await.into_iter().enumerate() {
        inputs.push(loaded.map_err(|e| load_error(Some(i), e))?);
    }

    let finishing = Finishing {
        output: request.output,
        mask: match &request.mask {
            None => None,
            Some(source) => Some(load_mask(tasks, source, &preloaded, inputs.first()).await?),
        },
    };
    drop(preloaded);

    let ratio = request.aspect_ratio.unwrap_or_else(|| {
        inputs
            .first()
            .map(|first| AspectRatio::nearest(first.width, first.height))
            .unwrap_or(AspectRatio::R1x1)
    });
    let (width, height) = request.model.pixel_size(ratio, request.resolution);
    // Each call fills in its route's upstream model and whether that upstream takes a size.
    let job = ImageJob {
        prompt: request.prompt.clone(),
        model: request.model.name().to_owned(),
        upstream_model: String::new(),
        inputs,
        // An edit without a ratio leaves it out: the upstream then follows the first image.
        aspect_ratio: request.aspect_ratio,
        image_size: Some(request.resolution),
        width,
        height,
    };

    let calls = (0..request.count).map(|_| {
        let job = &job;
        let finishing = &finishing;
        async move {
            let image = generate_with_failover(tasks, routes, job, deadline_ms).await?;
            let image = finish(finishing, image).await?;
            store_image(&tasks.store, &tasks.public_base_url, image).await
        }
    });
    let outcomes = join_all(calls).await;

    let mut data = Vec::new();
    let mut errors = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(image_url) => data.push(ImageEntry {
                prompt: request.prompt.clone(),
                image_url,
            }),
            Err(e) => errors.push(e),
        }
    }
    if !data.is_empty() {
        if !errors.is_empty() {
            tracing::warn!(
                succeeded = data.len(),
                failed = errors.len(),
                "partial success"
            );
        }
        return Ok((data, errors.len()));
    }
    Err(summarise_failure(&errors))
}

#[derive(Debug)]
enum ImageFailure {
    Provider(ProviderError, u32),
    /// Every route was cooling down until past the task's deadline; none was called.
    Cooling,
    Output(OutputError),
    Store,
}

/// An edit's mask, checked against the first input image and decoded once for every image.
async fn load_mask(
    tasks: &Tasks,
    source: &str,
    preloaded: &Preloaded,
    first: Option<&InputImage>,
) -> Result<Arc<Mask>, ApiError> {
    let mask = tasks
        .load_input(source, preloaded)
        .await
        .map_err(|e| load_error(None, e))?;
    let first = first
        .cloned()
        .ok_or_else(|| ApiError::bad_request("mask needs an image to edit."))?;
    match tokio::task::spawn_blocking(move || Mask::new(&first, &mask)).await {
        Ok(Ok(mask)) => Ok(Arc::new(mask)),
        Ok(Err(e)) => Err(ApiError::bad_request(format!("{e}."))),
        Err(e) => {
            tracing::error!(error = %e, "decoding a mask failed");
            Err(ApiError::internal())
        }
    }
}

/// The made image in the format (and with the mask) the client asked for.
async fn finish(
    finishing: &Finishing,
    image: crate::providers::GeneratedImage,
) -> Result<crate::providers::GeneratedImage, ImageFailure> {
    if finishing.mask.is_none() && finishing.output.format.is_none() {
        return Ok(image);
    }
    let finishing = finishing.clone();
    match tokio::task::spawn_blocking(move || finishing.apply(image)).await {
        Ok(result) => result.map_err(|e| {
            tracing::error!(error = %e, "could not convert a made image");
            ImageFailure::Output(e)
        }),
        Err(e) => {
            tracing::error!(error = %e, "converting a made image failed");
            Err(ImageFailure::Store)
        }
    }
}

/// Stores the image and returns its `image_url`.
async fn store_image(
    store: &ImageStore,
    public_base_url: &str,
    image: crate::providers::GeneratedImage,
) -> Result<String, ImageFailure> {
    let key = ImageStore::new_key(&image.mime_type);
    // A store that is down (S3 unreachable or answering 5xx, a full disk) keeps the image here
    // and tries again, from 200 ms to every 5 s, until it is stored or the task's deadline ends
    // the task (`run_task`). No URL is handed out before its object exists.
    let mut delay = Duration::from_millis(200);
    let mut failures = 0u32;
    loop {
        match store.put(&key, image.bytes.clone()).await {
            Ok(()) => break,
            Err(e) if e.is_retryable() => {
                if failures == 0 {
                    tracing::warn!(error = %e, "could not store a made image; keeping it and trying again");
                }
                failures += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %e, "could not store a generated image");
                return Err(ImageFailure::Store);
            }
        }
    }
    if failures > 0 {
        tracing::info!(
            failures,
            "stored a made image once the store answered again"
        );
    }
    store.image_url(public_base_url, &key).await.map_err(|e| {
        tracing::error!(error = %e, "could not form an image URL");
        ImageFailure::Store
    })
}

/// One image through the model's routes: a route of the best priority that is not cooling down;
/// after a retryable failure (which cools that route down) the next route at once, or, when
/// every route has been tried or is cooling, the same ones again once the first cooldown ends —
/// up to `--max-attempts` calls and never past the task's deadline. A call that may have
/// reached its upstream (a timeout after sending) is final: it is never sent again, anywhere.
async fn generate_with_failover(
    tasks: &Tasks,
    routes: &ModelRoutes,
    template: &ImageJob,
    deadline_ms: i64,
) -> Result<crate::providers::GeneratedImage, ImageFailure> {
    let max_attempts = tasks.settings.max_attempts.max(1);
    let mut attempt = 0;
    let mut tried = Vec::new();
    let mut last_error = None;
    loop {
        let (index, route) = match routes.pick(&tried, Instant::now()) {
            Pick::Call(index, route) => (index, route),
            Pick::Wait(until) => {
                let wait = until.saturating_duration_since(Instant::now());
                // Waiting past the deadline would only turn this failure into a deadline one.
                if now_ms() + wait.as_millis() as i64 >= deadline_ms {
                    return Err(match last_error {
                        Some(error) => ImageFailure::Provider(error, attempt),
                        None => ImageFailure::Cooling,
                    });
                }
                tokio::time::sleep(wait).await;
                tried.clear();
                continue;
            }
        };
        attempt += 1;
        let job = ImageJob {
            upstream_model: route.upstream_model.clone(),
            image_size: template.image_size.filter(|_| route.sends_image_size),
            ..template.clone()
        };
        let provider = route.provider.as_ref();
        let (result, elapsed) = route.generate(&job).await;
        let elapsed_ms = elapsed.as_millis() as u64;
        metrics::counter!(
            "nano_banana_upstream_calls_total",
            "provider" => provider.name(),
            "outcome" => upstream_outcome(&result),
            "route" => route.label(),
        )
        .increment(1);
        metrics::histogram!(
            "nano_banana_upstream_call_duration_seconds",
            "provider" => provider.name(),
            "route" => route.label(),
        )
        .record(elapsed_ms as f64 / 1000.0);
        match result {
            Ok(image) => {
                route.succeeded();
                tracing::info!(route = %route.label(), attempt, elapsed_ms, "upstream made an image");
                return Ok(image);
            }
            Err(error) => {
                let cooldown = route.failed(&error, |failures| {
                    backoff(tasks.settings.retry_base, failures, None)
                });
                tracing::warn!(
                    route = %route.label(),
                    attempt,
                    elapsed_ms,
                    cooldown_ms = cooldown.map(|c| c.as_millis() as u64),
                    error = %error,
                    "upstream call failed"
                );
                if !error.is_retryable() || attempt >= max_attempts {
                    return Err(ImageFailure::Provider(error, attempt));
                }
                tried.push(index);
                last_error = Some(error);
            }
        }
    }
}

fn upstream_outcome(
    result: &Result<crate::providers::GeneratedImage, ProviderError>,
) -> &'static str {
    match result {
        Ok(_) => "image",
        Err(ProviderError::Refused(_)) => "refused",
        Err(ProviderError::NoImage(_)) => "no_image",
        Err(ProviderError::Upstream { status: 429, .. }) => "rate_limited",
        Err(ProviderError::Upstream { .. }) => "http_error",
        Err(ProviderError::Transport { .. }) => "unreachable",
        Err(ProviderError::InvalidResponse(_)) => "invalid_response",
    }
}

/// Exponential backoff with full jitter on the upper half, never shorter than what the upstream
/// asked for (`RetryInfo`), capped at a minute.
pub(crate) fn backoff(base: Duration, attempt: u32, asked: Option<Duration>) -> Duration {
    let exponential = base.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    let capped = exponential.min(Duration::from_secs(60));
    let jittered = capped.mul_f64(rand::rng().random_range(0.5..=1.0));
    jittered.max(asked.unwrap_or_default())
}

/// No image was made: a refusal of every image is `forbidden` (and not billed); anything else is
/// `api_error` with a message that says what happened, without upstream internals.
fn summarise_failure(errors: &[ImageFailure]) -> ApiError {
    let all_refused = !errors.is_empty()
        && errors
            .iter()
            .all(|e| matches!(e, ImageFailure::Provider(ProviderError::Refused(_), _)));
    if all_refused {
        return ApiError::new(
            ErrorCode::Forbidden,
            "The upstream model's safety policy refused to make this image.",
        );
    }
    let message = match errors.first() {
        Some(ImageFailure::Provider(error, attempts)) => match error {
            ProviderError::Refused(_) => {
                "The upstream model's safety policy refused to make this image.".to_owned()
            }
            ProviderError::NoImage(_) => "The upstream model returned no image.".to_owned(),
            ProviderError::Upstream { status, .. } => format!(
                "The upstream model failed: it answered HTTP {status} (after {attempts} attempt{}).",
                if *attempts == 1 { "" } else { "s" }
            ),
            ProviderError::Transport { .. } => format!(
                "The upstream model could not be reached (after {attempts} attempt{}).",
                if *attempts == 1 { "" } else { "s" }
            ),
            ProviderError::InvalidResponse(_) => {
                "The upstream model's answer could not be read.".to_owned()
            }
        },
        Some(ImageFailure::Output(e)) => format!("The made image could not be finished: {e}."),
        Some(ImageFailure::Store) => "The image could not be stored.".to_owned(),
        Some(ImageFailure::Cooling) => {
            "Every upstream of this model is cooling down after errors; try again later.".to_owned()
        }
        None => "No image was made.".to_owned(),
    };
    ApiError::new(ErrorCode::ApiError, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_honours_the_upstream() {
        let base = Duration::from_millis(100);
        let first = backoff(base, 1, None);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let third = backoff(base, 3, None);
        assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
        assert!(backoff(base, 40, None) <= Duration::from_secs(60));
        assert_eq!(
            backoff(base, 1, Some(Duration::from_secs(15))),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn refusals_of_every_image_are_forbidden_and_mixed_failures_are_api_errors() {
        let refused = || ImageFailure::Provider(ProviderError::Refused("IMAGE_SAFETY".into()), 1);
        assert_eq!(
            summarise_failure(&[refused(), refused()]).code,
            ErrorCode::Forbidden
        );
        let unavailable = ImageFailure::Provider(
            ProviderError::Upstream {
                status: 503,
                message: "UNAVAILABLE".into(),
                retry_after: None,
            },
            4,
        );
        let error = summarise_failure(&[unavailable, refused()]);
        assert_eq!(error.code, ErrorCode::ApiError);
        assert_eq!(
            error.message,
            "The upstream model failed: it answered HTTP 503 (after 4 attempts)."
        );
    }
}
