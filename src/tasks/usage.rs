//! The storage gauges of `/metrics`: what the image store holds (objects and bytes, by kind)
//! and the bytes of the database, counted every `--storage-usage-interval` by each node (the
//! store is listed whole, so this is not done at scrape time). Every node reports the same
//! deployment-wide numbers; a dashboard takes any one of them (e.g. `max`).

use std::sync::Arc;

use tokio::sync::watch;

use super::Tasks;

/// Counts until shutdown; the first count soon after start. Nothing when the interval is off.
pub(super) async fn count(tasks: Arc<Tasks>, shutdown: watch::Receiver<bool>) {
    let Some(every) = tasks.settings.storage_usage_interval else {
        return;
    };
    super::inputs::periodically(every, shutdown, || {
        let tasks = tasks.clone();
        async move { tasks.report_storage_usage().await }
    })
    .await;
}

impl Tasks {
    /// Counts the store and the database once and sets the gauges
    /// `nano_banana_store_objects{kind}`, `nano_banana_store_bytes{kind}` and
    /// `nano_banana_database_bytes`. A failure is logged and leaves the last numbers.
    pub async fn report_storage_usage(&self) {
        match self.store.usage().await {
            Ok(usage) => {
                for (kind, count) in usage.kinds() {
                    metrics::gauge!("nano_banana_store_objects", "kind" => kind)
                        .set(count.objects as f64);
                    metrics::gauge!("nano_banana_store_bytes", "kind" => kind)
                        .set(count.bytes as f64);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not count the image store's objects"),
        }
        match self.db.size_bytes().await {
            Ok(bytes) => metrics::gauge!("nano_banana_database_bytes").set(bytes as f64),
            Err(e) => tracing::warn!(error = %e, "could not read the database's size"),
        }
    }
}
