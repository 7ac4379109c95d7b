//! Retention (`--retention`, or an application's own `retention_seconds`): finished tasks are
//! deleted once they are that old — the images their answers name (and the console's thumbnails
//! of them), then their records, which takes their uploaded inputs' counts down (`inputs.rs`: the input sweeper deletes an input no record
//! uses once its grace period has passed). A task still running, or whose callback is still
//! owed, is never deleted. Every node sweeps; a batch is claimed first (`Db::claim_expired_tasks`)
//! and each record deleted only under that claim, so two nodes never delete one thing twice. An
//! expired task then retrieves as an unknown id, and its image URLs answer 404.
//!
//! What does not live here: the SQL (`storage::db::retention`), the objects (`storage::images`).

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use tokio::sync::watch;

use super::{Tasks, inputs::request_inputs};
use crate::storage::{db::Expiring, images::ImageStore};

/// Tasks per claim.
const BATCH: usize = 100;
/// How long a sweeper's claim on a batch lasts: other nodes skip it meanwhile, and take it over
/// after, if this one died halfway.
const CLAIM: Duration = Duration::from_secs(60);

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    pub tasks: u64,
    pub images: u64,
}

/// The sweeper of one process: a pass every `--retention-sweep-interval` (the first soon after
/// start) until shutdown. It runs even when `--retention` is off, for the applications with a
/// retention of their own (one small query a pass when there are none).
pub(super) async fn sweep(tasks: Arc<Tasks>, shutdown: watch::Receiver<bool>) {
    let every = tasks.settings.retention_sweep_interval;
    super::inputs::periodically(every, shutdown, || {
        let tasks = tasks.clone();
        async move {
            if let Err(e) = tasks.expire().await {
                tracing::warn!(error = %e, "the retention sweeper failed; it tries again later");
            }
        }
    })
    .await;
}

impl Tasks {
    /// One pass of the retention sweeper: every finished task that owes no callback and is older
    /// than its application's retention (its own, or else `--retention`), deleted with its
    /// images, in batches. What it deleted.
    pub async fn expire(&self) -> Result<Expired, super::inputs::SweepError> {
        let now = crate::domain::now_ms();
        let mut expired = Expired::default();
        for (application, seconds) in self.db.retention_overrides().await? {
            if seconds > 0 {
                let cutoff = now.saturating_sub(seconds.saturating_mul(1000));
                self.expire_batches(Expiring::Application(&application), cutoff, &mut expired)
                    .await?;
            }
        }
        if let Some(retention) = self.settings.retention {
            let cutoff = now.saturating_sub(retention.as_millis() as i64);
            self.expire_batches(Expiring::ByDefault, cutoff, &mut expired)
                .await?;
        }
        if expired.tasks > 0 {
            metrics::counter!("nano_banana_retention_deleted_total", "what" => "tasks")
                .increment(expired.tasks);
            metrics::counter!("nano_banana_retention_deleted_total", "what" => "images")
                .increment(expired.images);
            tracing::info!(
                tasks = expired.tasks,
                images = expired.images,
                "retention sweeper deleted expired tasks"
            );
        }
        Ok(expired)
    }

    /// Claims and deletes `whose` tasks that finished before `cutoff`, a batch at a time.
    async fn expire_batches(
        &self,
        whose: Expiring<'_>,
        cutoff: i64,
        expired: &mut Expired,
    ) -> Result<(), super::inputs::SweepError> {
        let owner = format!("retention:{}", self.owner);
        loop {
            let now = crate::domain::now_ms();
            let batch = self
                .db
                .claim_expired_tasks(
                    &owner,
                    whose,
                    cutoff,
                    now,
                    now + CLAIM.as_millis() as i64,
                    BATCH,
                )
                .await?;
            for task in &batch {
                let keys = image_keys(task.response.as_deref());
                // Images first: a record left without its images (a crash right here) is taken
                // again once the claim runs out; images left without a record would be lost.
                for key in &keys {
                    self.store.delete_image(key).await?;
                }
                let inputs = request_inputs(task.request.as_deref().unwrap_or("{}"))
                    .unwrap_or_else(|_| "[]".to_owned());
                if self
                    .db
                    .delete_task_record(&task.id, &inputs, Some(&owner))
                    .await?
                {
                    expired.tasks += 1;
                    expired.images += keys.len() as u64;
                }
            }
            if batch.len() < BATCH {
                return Ok(());
            }
        }
    }
}

/// The keys of the images an answer names (`data[].image_url`, whichever form the URL has).
fn image_keys(response: Option<&str>) -> Vec<String> {
    let Some(response) = response.and_then(|r| serde_json::from_str::<Value>(r).ok()) else {
        return Vec::new();
    };
    response
        .get("data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|image| image.get("image_url").and_then(Value::as_str))
        .filter_map(ImageStore::key_in_url)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_images_of_an_answer_are_found_by_their_keys() {
        let key = "0b6d9c1e-3f7a-4c2b-9e8d-5a4f3b2c1d0e.png";
        let answer = serde_json::json!({"success": true, "data": [
            {"image_url": format!("http://127.0.0.1:8080/images/{key}")},
            {"image_url": format!("https://b.s3.example.com/p/{key}?X-Amz-Signature=ab")},
            {"image_url": "https://elsewhere.example.com/not-ours.png"},
            {"no_url": true},
        ]});
        assert_eq!(image_keys(Some(&answer.to_string())), vec![key, key]);
        assert!(image_keys(None).is_empty());
        assert!(image_keys(Some("not json")).is_empty());
        assert!(image_keys(Some(r#"{"success": false, "error": {}}"#)).is_empty());
    }
}
