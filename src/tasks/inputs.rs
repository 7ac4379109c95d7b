//! An edit's input images outside the database. A `data:` input (the contract's own, an OpenAI
//! multipart upload, a Gemini `inlineData` part: every dialect's uploads arrive here as `data:`
//! URIs) is decoded once at submission, checked (size, type, dimensions), and written to the
//! image store as `inputs/<sha256 of the bytes>`; the task's stored request names it
//! `input:sha256:<digest>` instead of carrying the base64. The worker reads them back from the
//! store — or, when this process runs the task at once, gets the decoded images handed over in
//! memory.
//!
//! Content-addressed objects are shared between tasks, so an object may be deleted only when no
//! task's record uses it. The database counts the records that use each image
//! (`input_objects`): a task's admission adds one for each image it uses, in the transaction
//! that writes the task; deleting its record (`Tasks::delete_record`) takes one off in the
//! transaction that deletes it, and the row goes at zero. The input sweeper (`sweep`) deletes
//! objects that have no row and were written longer ago than the grace period
//! (`--input-grace`): objects orphaned by a crash between the store write and the task's row,
//! by a refused admission, or by deleting the last record that used them. A submission writes an object again whenever the stored copy is older
//! than half the grace period, so an object a new task is about to reference is always younger
//! than the grace period and no sweeper takes it meanwhile.
//!
//! What does not live here: `data:` URI parsing and sniffing (`fetch`), the object store
//! (`storage::images`), SQL (`storage::db`).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures_util::future::join_all;
use serde_json::Value;
use tokio::sync::watch;

use super::{Tasks, image_error};
use crate::{
    api::{ApiError, ErrorCode},
    domain::{ImagesRequest, sha256_hex},
    fetch::{FetchError, parse_data_uri, sniff_image},
    providers::InputImage,
    storage::images::{StoreError, is_digest},
};

/// How a stored request names an input image kept in the image store.
pub const STORED_INPUT: &str = "input:sha256:";

/// The test-only fault hook: with `NANO_BANANA_TEST_FAULT=pause-after-input-write`, a
/// submission stops for an hour between writing its input objects and writing its task, so that
/// a test can kill the process exactly there (tests/api/crash.rs).
pub const FAULT_ENV: &str = "NANO_BANANA_TEST_FAULT";
pub const PAUSE_AFTER_INPUT_WRITE: &str = "pause-after-input-write";

/// The input images decoded at submission, by digest, for the worker of this process.
pub type Preloaded = Arc<HashMap<String, InputImage>>;

/// The digest an `input:sha256:…` source names.
pub fn stored_digest(source: &str) -> Option<&str> {
    source.strip_prefix(STORED_INPUT).filter(|d| is_digest(d))
}

fn is_data_uri(source: &str) -> bool {
    source
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("data:"))
}

/// What `store_inputs` did: the digests the task uses (as `NewTask::inputs` wants them) and the
/// decoded images.
pub(super) struct StoredInputs {
    pub digests: String,
    pub preloaded: Preloaded,
}

/// Why an input image could not be loaded for a task.
pub(super) enum LoadError {
    /// The source itself (a URL's answer, a `data:` URI of an older task) is unusable.
    Fetch(FetchError),
    /// A stored input is gone (deleted under the task; see the module documentation).
    Lost,
    Store(StoreError),
}

impl Tasks {
    /// Checks every input source of `request` before a task exists; stores each `data:` input
    /// in the image store and puts its reference in its place, in `request` and in `body` (the
    /// stored request).
    pub(super) async fn store_inputs(
        &self,
        body: &mut Value,
        request: &mut ImagesRequest,
    ) -> Result<StoredInputs, ApiError> {
        let policy = self.fetcher.policy();
        let (max_bytes, max_pixels) = (policy.max_image_bytes, policy.max_pixels);
        let mut preloaded = HashMap::new();
        let mut order = Vec::new();
        let mut keep = |image: InputImage, preloaded: &mut HashMap<String, InputImage>| {
            let digest = sha256_hex(&image.bytes);
            if !preloaded.contains_key(&digest) {
                order.push(digest.clone());
                preloaded.insert(digest.clone(), image);
            }
            format!("{STORED_INPUT}{digest}")
        };
        for (i, source) in request.image_urls.iter_mut().enumerate() {
            if !is_data_uri(source) {
                self.check_image_source(i, source)?;
                continue;
            }
            let image =
                parse_data_uri(source, max_bytes, max_pixels).map_err(|e| image_error(i, &e))?;
            *source = keep(image, &mut preloaded);
            if let Some(slot) = body.get_mut("image_urls").and_then(|urls| urls.get_mut(i)) {
                *slot = Value::String(source.clone());
            }
        }
        // A mask that is not a usable image stays as sent: the worker refuses it as before.
        if let Some(mask) = request.mask.as_mut().filter(|m| is_data_uri(m))
            && let Ok(image) = parse_data_uri(mask, max_bytes, max_pixels)
        {
            *mask = keep(image, &mut preloaded);
            if let Some(slot) = body.get_mut("mask") {
                *slot = Value::String(mask.clone());
            }
        }
        let fresh_for = self.settings.input_grace / 2;
        let writes = order.iter().map(|digest| {
            let bytes = preloaded[digest].bytes.clone();
            self.store.put_input(digest, bytes, fresh_for)
        });
        for written in join_all(writes).await {
            if let Err(e) = written {
                tracing::error!(error = %e, "could not store an input image");
                return Err(ApiError::internal());
            }
        }
        if !order.is_empty() && self.settings.pause_after_input_write {
            tracing::warn!("{FAULT_ENV}={PAUSE_AFTER_INPUT_WRITE}: pausing before the task row");
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(StoredInputs {
            digests: serde_json::to_string(&order).unwrap_or_else(|_| "[]".to_owned()),
            preloaded: Arc::new(preloaded),
        })
    }

    /// One input image of a running task: handed over, read from the image store, or (a URL,
    /// or a `data:` URI stored by an older version) fetched under the outbound policy.
    pub(super) async fn load_input(
        &self,
        source: &str,
        preloaded: &Preloaded,
    ) -> Result<InputImage, LoadError> {
        let Some(digest) = stored_digest(source) else {
            return self
                .fetcher
                .load_image(source)
                .await
                .map_err(LoadError::Fetch);
        };
        if let Some(image) = preloaded.get(digest) {
            return Ok(image.clone());
        }
        let bytes = match self.store.read_input(digest).await {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound) => return Err(LoadError::Lost),
            Err(e) => return Err(LoadError::Store(e)),
        };
        let (mime_type, width, height) =
            sniff_image(&bytes, self.fetcher.policy().max_pixels).map_err(LoadError::Fetch)?;
        Ok(InputImage {
            bytes,
            mime_type,
            width,
            height,
        })
    }

    /// Deletes a finished task's record (see `Db::delete_task_record`): its input images go
    /// once no other record uses them and the sweeper's grace period has passed. `false`: no
    /// such finished task of this application.
    pub async fn delete_record(
        &self,
        application_id: &str,
        id: &str,
    ) -> Result<bool, super::TaskError> {
        let Some(row) = self.db.get_task(id, application_id).await? else {
            return Ok(false);
        };
        let inputs = request_inputs(&row.request)?;
        Ok(self.db.delete_task_record(id, &inputs, None).await?)
    }

    /// One pass of the input sweeper: deletes every input object that no task's record
    /// references and that was written longer than the grace period ago. The number deleted.
    pub async fn sweep_inputs(&self) -> Result<usize, SweepError> {
        let grace = self.settings.input_grace;
        let now = SystemTime::now();
        let old: Vec<String> = self
            .store
            .list_inputs()
            .await?
            .into_iter()
            .filter(|(_, written)| now.duration_since(*written).is_ok_and(|age| age >= grace))
            .map(|(digest, _)| digest)
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        let used = self.db.referenced_inputs(&old).await?;
        let mut deleted = 0;
        for digest in old.iter().filter(|d| !used.contains(*d)) {
            self.store.delete_input(digest).await?;
            deleted += 1;
        }
        if deleted > 0 {
            tracing::info!(deleted, "input sweeper deleted unreferenced input images");
        }
        Ok(deleted)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] crate::storage::db::DbError),
}

/// The digests of the input images a stored request names (`image_urls` and `mask`), as a JSON
/// array without repeats: what its admission counted (`NewTask::inputs`).
pub fn request_inputs(request: &str) -> Result<String, serde_json::Error> {
    let request: Value = serde_json::from_str(request)?;
    let mut digests: Vec<&str> = Vec::new();
    let urls = request.get("image_urls").and_then(Value::as_array);
    let sources = urls
        .into_iter()
        .flatten()
        .chain(request.get("mask"))
        .filter_map(Value::as_str);
    for digest in sources.filter_map(stored_digest) {
        if !digests.contains(&digest) {
            digests.push(digest);
        }
    }
    serde_json::to_string(&digests)
}

/// The contract's error for an input image of a running task that could not be loaded:
/// `image_urls[index]`, or the mask (`None`).
pub(super) fn load_error(index: Option<usize>, error: LoadError) -> ApiError {
    let name = index.map_or_else(|| "mask".to_owned(), |i| format!("image_urls[{i}]"));
    match (error, index) {
        (LoadError::Fetch(e), Some(i)) => image_error(i, &e),
        (LoadError::Fetch(e), None) => ApiError::bad_request(format!("mask cannot be used: {e}.")),
        (LoadError::Lost, _) => ApiError::new(
            ErrorCode::ApiError,
            format!("{name} is no longer stored; send the request again."),
        ),
        (LoadError::Store(e), _) => {
            tracing::error!(error = %e, input = %name, "could not read a stored input image");
            ApiError::internal()
        }
    }
}

/// Runs the input sweeper every `every` until `shutdown`: the first pass soon after start, so
/// that what a crash left behind goes once its grace period has passed.
pub(super) async fn sweep(tasks: Arc<Tasks>, every: Duration, shutdown: watch::Receiver<bool>) {
    periodically(every, shutdown, || {
        let tasks = tasks.clone();
        async move {
            if let Err(e) = tasks.sweep_inputs().await {
                tracing::warn!(error = %e, "the input sweeper failed; it tries again later");
            }
        }
    })
    .await;
}

/// Runs `pass` every `every` — the first time after at most 5 s — until `shutdown`.
pub(super) async fn periodically<F: Future<Output = ()>>(
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut pass: impl FnMut() -> F,
) {
    let mut wait = every.min(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        wait = every;
        pass().await;
    }
}
