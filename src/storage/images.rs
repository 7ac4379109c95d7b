//! The image store: generated images by key, over `object_store` (a local folder by default). It
//! knows nothing of tasks or the contract; keys are opaque `<uuid>.<ext>` names.

use std::{path::Path, sync::Arc};

use bytes::Bytes;
use futures_util::{StreamExt as _, stream::BoxStream};
use object_store::{
    GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload, local::LocalFileSystem,
    path::Path as ObjectPath,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no image with that key")]
    NotFound,
    #[error("invalid image key")]
    InvalidKey,
    #[error("image store error: {0}")]
    Backend(#[from] object_store::Error),
    #[error("image store setup failed: {0}")]
    Setup(String),
}

#[derive(Clone)]
pub struct ImageStore {
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ImageStore({})", self.store)
    }
}

/// A stored image, ready to stream.
pub struct StoredImage {
    pub size: u64,
    pub content_type: &'static str,
    pub body: BoxStream<'static, Result<Bytes, object_store::Error>>,
}

impl ImageStore {
    /// A store in a local folder, created if missing.
    pub fn local(dir: &Path) -> Result<ImageStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Setup(format!("cannot create {}: {e}", dir.display())))?;
        let fs = LocalFileSystem::new_with_prefix(dir)?;
        Ok(ImageStore {
            store: Arc::new(fs),
        })
    }

    pub fn from_object_store(store: Arc<dyn ObjectStore>) -> ImageStore {
        ImageStore { store }
    }

    /// A fresh, unguessable key for an image of this media type.
    pub fn new_key(mime_type: &str) -> String {
        format!("{}.{}", uuid::Uuid::new_v4(), extension_for(mime_type))
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = object_path(key)?;
        self.store.put(&path, PutPayload::from_bytes(bytes)).await?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<StoredImage, StoreError> {
        let path = object_path(key)?;
        let result = self.store.get(&path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound,
            other => StoreError::Backend(other),
        })?;
        let size = result.meta.size;
        let body = match result.payload {
            GetResultPayload::File(file, _) => read_in_chunks(file, size),
            GetResultPayload::Stream(stream) => stream,
        };
        Ok(StoredImage {
            size,
            content_type: content_type_for(key),
            body,
        })
    }

    /// Whether the store answers at all (readiness).
    pub async fn check(&self) -> Result<(), StoreError> {
        match self.store.head(&ObjectPath::from("readiness-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::Backend(e)),
        }
    }
}

/// How much of a local file one blocking read takes. `object_store` streams local files 8 KiB
/// at a time, each read a trip through the blocking pool: 128 trips for a 1 MB image, which made
/// serving it 4× slower than a plain static file server (BENCHMARKS.md, S6).
const READ_CHUNK: u64 = 256 * 1024;

fn read_in_chunks(
    file: std::fs::File,
    size: u64,
) -> BoxStream<'static, Result<Bytes, object_store::Error>> {
    use std::io::Read;
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| object_store::Error::Generic {
        store: "LocalFileSystem",
        source,
    };
    futures_util::stream::try_unfold((file, size), move |(mut file, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let (file, chunk) = tokio::task::spawn_blocking(move || {
            let mut chunk = Vec::with_capacity(left.min(READ_CHUNK) as usize);
            (&mut file)
                .take(READ_CHUNK)
                .read_to_end(&mut chunk)
                .map(|_| (file, chunk))
        })
        .await
        .map_err(|e| failed(Box::new(e)))?
        .map_err(|e| failed(Box::new(e)))?;
        if chunk.is_empty() {
            // The file is shorter than its metadata said (truncated meanwhile): end here.
            return Ok(None);
        }
        let left = left.saturating_sub(chunk.len() as u64);
        Ok(Some((Bytes::from(chunk), (file, left))))
    })
    .boxed()
}

/// Keys are exactly `<uuid>.<ext>`: anything else (slashes, dots, `..`) is refused before it
/// reaches the store, so a request path can never name a file outside the image folder.
fn object_path(key: &str) -> Result<ObjectPath, StoreError> {
    let (stem, ext) = key.rsplit_once('.').ok_or(StoreError::InvalidKey)?;
    if uuid::Uuid::try_parse(stem).is_err() || !matches!(ext, "png" | "jpg" | "webp" | "gif") {
        return Err(StoreError::InvalidKey);
    }
    Ok(ObjectPath::from(key))
}

fn extension_for(mime_type: &str) -> &'static str {
    match mime_type {
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        "image/gif" => "gif",
        _ => "png",
    }
}

fn content_type_for(key: &str) -> &'static str {
    match key.rsplit_once('.').map(|(_, ext)| ext) {
        Some("jpg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        _ => "image/png",
    }
}

#[cfg(test)]
mod tests {
    use futures_util::TryStreamExt;

    use super::*;

    #[tokio::test]
    async fn put_then_get_round_trips_and_bad_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::local(dir.path()).unwrap();
        let key = ImageStore::new_key("image/jpeg");
        assert!(key.ends_with(".jpg"));
        store.put(&key, Bytes::from_static(b"abc")).await.unwrap();
        let image = store.get(&key).await.unwrap();
        assert_eq!(image.size, 3);
        assert_eq!(image.content_type, "image/jpeg");
        let bytes: Vec<Bytes> = image.body.try_collect().await.unwrap();
        assert_eq!(bytes.concat(), b"abc");

        let missing = ImageStore::new_key("image/png");
        assert!(matches!(
            store.get(&missing).await,
            Err(StoreError::NotFound)
        ));
        for bad in [
            "../etc/passwd",
            "x.png",
            "a/b.png",
            "",
            "00000000-0000-0000-0000-000000000000.exe",
        ] {
            assert!(
                matches!(store.get(bad).await, Err(StoreError::InvalidKey)),
                "{bad}"
            );
        }
        store.check().await.unwrap();
    }
}
