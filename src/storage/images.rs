//! The image store: generated images by key, over `object_store`: a local folder by default, or
//! any S3-compatible bucket (`--storage s3://BUCKET[/PREFIX]`). It also forms the `image_url`
//! clients get for a key (our own route, a public/CDN base, or a presigned S3 URL). It knows
//! nothing of tasks or the contract; keys are opaque `<uuid>.<ext>` names.
//!
//! Input images (an edit's uploads) live in the same store under their own prefix,
//! `inputs/<sha256 hex>`: content-addressed, so the same bytes are stored once whoever sends
//! them. They are never served (`GET /images/{key}` accepts `<uuid>.<ext>` keys only); who
//! references them, and when one may be deleted, is the database's and `tasks`'s business.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures_util::{StreamExt as _, stream::BoxStream};
use object_store::{
    Attribute, Attributes, ClientOptions, GetResultPayload, ObjectStore, ObjectStoreExt,
    PutOptions, PutPayload, RetryConfig,
    aws::{AmazonS3, AmazonS3Builder},
    local::LocalFileSystem,
    path::Path as ObjectPath,
    prefix::PrefixStore,
    signer::Signer,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no image with that key")]
    NotFound,
    #[error("invalid image key")]
    InvalidKey,
    #[error("image store error: {0}")]
    Backend(#[from] object_store::Error),
    #[error("image store error: cannot write the image: {0}")]
    Write(std::io::Error),
    #[error("image store setup failed: {0}")]
    Setup(String),
    /// The readiness check failed; the text has the whole cause chain (the top-level error of
    /// a refused connection only says "error sending request").
    #[error("image store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether trying again later may succeed: the store was unreachable or answered a server
    /// error (after `object_store`'s own retries), or the disk is full; not a bad key, refused
    /// credentials, a missing bucket or a folder we may not write.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Backend(e) => matches!(e, object_store::Error::Generic { .. }),
            StoreError::Write(e) => {
                matches!(
                    e.kind(),
                    std::io::ErrorKind::StorageFull
                        | std::io::ErrorKind::QuotaExceeded
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) || e.raw_os_error() == Some(libc::EIO)
            }
            StoreError::Unavailable(_) => true,
            StoreError::NotFound | StoreError::InvalidKey | StoreError::Setup(_) => false,
        }
    }
}

/// Where images live: the value of `--storage`, parsed. A folder path (or `file:///abs/path`),
/// or `s3://BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    Local(PathBuf),
    S3 {
        bucket: String,
        /// Keys are stored under `PREFIX/`; no leading or trailing slash.
        prefix: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StorageUrlError(String);

impl FromStr for StorageUrl {
    type Err = StorageUrlError;

    fn from_str(value: &str) -> Result<StorageUrl, StorageUrlError> {
        let bad = |why: &str| StorageUrlError(format!("storage {value:?}: {why}"));
        if value.trim().is_empty() {
            return Err(bad("is empty; use a folder path or s3://BUCKET[/PREFIX]"));
        }
        let Some((scheme, rest)) = value.split_once("://") else {
            return Ok(StorageUrl::Local(PathBuf::from(value)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(bad(
                        "a file:// URL needs an absolute path (file:///srv/images)",
                    ));
                }
                Ok(StorageUrl::Local(PathBuf::from(rest)))
            }
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                check_bucket_name(bucket).map_err(|why| bad(&why))?;
                if prefix.contains(['?', '#']) {
                    return Err(bad("query strings and fragments are not allowed"));
                }
                let prefix = prefix.trim_matches('/');
                if prefix.is_empty() {
                    return Ok(StorageUrl::S3 {
                        bucket: bucket.to_owned(),
                        prefix: None,
                    });
                }
                // object_store's own rules (no empty, `.` or `..` segments, no control
                // characters), so the prefix we were given is the one objects land under.
                let parsed = ObjectPath::parse(prefix)
                    .map_err(|e| bad(&format!("the prefix {prefix:?} is not usable: {e}")))?;
                if parsed.as_ref() != prefix {
                    return Err(bad(&format!("the prefix {prefix:?} is not usable")));
                }
                Ok(StorageUrl::S3 {
                    bucket: bucket.to_owned(),
                    prefix: Some(prefix.to_owned()),
                })
            }
            other => Err(bad(&format!(
                "unsupported scheme {other:?}; use a folder path or s3://BUCKET[/PREFIX]"
            ))),
        }
    }
}

/// S3's bucket naming rules (the common subset every S3-compatible service accepts).
fn check_bucket_name(bucket: &str) -> Result<(), String> {
    if bucket.is_empty() {
        return Err("no bucket name; use s3://BUCKET[/PREFIX]".into());
    }
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{bucket:?} is not a bucket name (3-63 characters: a-z, 0-9, '-', '.')"
        ))
    }
}

/// Everything needed to reach an S3-compatible bucket. `Debug` leaves the credentials out.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    pub prefix: Option<String>,
    /// `None`: AWS itself (`s3.REGION.amazonaws.com`).
    pub endpoint: Option<String>,
    pub region: String,
    /// `ENDPOINT/BUCKET/KEY` instead of `BUCKET.ENDPOINT/KEY` (SeaweedFS, MinIO need it).
    pub path_style: bool,
    /// Without keys, the builder falls back to the EC2/ECS instance metadata credentials.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |set: bool| if set { "<redacted>" } else { "<none>" };
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &redacted(self.access_key_id.is_some()))
            .field(
                "secret_access_key",
                &redacted(self.secret_access_key.is_some()),
            )
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    Local(PathBuf),
    S3(S3Settings),
}

/// How the `image_url` handed to clients is formed for a stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageUrls {
    /// `{public_base_url}/images/{key}`: our own route, which streams from the store.
    Route,
    /// `{base}/{key}`: a public bucket or a CDN in front of the store.
    Base(String),
    /// A presigned S3 GET URL valid this long (private buckets).
    Signed(Duration),
}

/// Longest validity SigV4 allows for a presigned URL.
pub const MAX_SIGNED_URL_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone)]
pub struct ImageStore {
    store: Arc<dyn ObjectStore>,
    /// The folder, when the store is local: images are written straight into it (reads still
    /// go through `store`).
    local_dir: Option<Arc<PathBuf>>,
    /// The bucket itself (unprefixed), when the store is S3: it signs URLs.
    s3: Option<(Arc<AmazonS3>, Option<String>)>,
    urls: ImageUrls,
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
    /// The store `config` describes, forming image URLs as `urls` says.
    pub fn open(config: &StorageConfig, urls: ImageUrls) -> Result<ImageStore, StoreError> {
        let mut store = match config {
            StorageConfig::Local(dir) => ImageStore::local(dir)?,
            StorageConfig::S3(settings) => ImageStore::s3(settings)?,
        };
        if matches!(urls, ImageUrls::Signed(_)) && store.s3.is_none() {
            return Err(StoreError::Setup(
                "signed image URLs need S3 storage".to_owned(),
            ));
        }
        store.urls = urls;
        Ok(store)
    }

    /// A store in a local folder, created if missing.
    pub fn local(dir: &Path) -> Result<ImageStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Setup(format!("cannot create {}: {e}", dir.display())))?;
        let dir = std::fs::canonicalize(dir)
            .map_err(|e| StoreError::Setup(format!("cannot open {}: {e}", dir.display())))?;
        let fs = LocalFileSystem::new_with_prefix(&dir)?;
        Ok(ImageStore {
            local_dir: Some(Arc::new(dir)),
            ..ImageStore::from_object_store(Arc::new(fs))
        })
    }

    /// A store in an S3-compatible bucket. Nothing is contacted yet: `check` does that.
    pub fn s3(settings: &S3Settings) -> Result<ImageStore, StoreError> {
        let s3 = Arc::new(s3_builder(settings)?.build()?);
        let store: Arc<dyn ObjectStore> = match &settings.prefix {
            Some(prefix) => Arc::new(PrefixStore::new(s3.clone(), prefix.as_str())),
            None => s3.clone(),
        };
        Ok(ImageStore {
            store,
            local_dir: None,
            s3: Some((s3, settings.prefix.clone())),
            urls: ImageUrls::Route,
        })
    }

    pub fn from_object_store(store: Arc<dyn ObjectStore>) -> ImageStore {
        ImageStore {
            store,
            local_dir: None,
            s3: None,
            urls: ImageUrls::Route,
        }
    }

    /// A fresh, unguessable key for an image of this media type.
    pub fn new_key(mime_type: &str) -> String {
        format!("{}.{}", uuid::Uuid::new_v4(), extension_for(mime_type))
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.put_at(object_path(key)?, content_type_for(key), bytes)
            .await
    }

    /// Stores the thumbnail of image `key` (a JPEG), under a prefix of its own. Thumbnails are
    /// derived data: one already there (made by a concurrent request) is fine.
    pub async fn put_thumbnail(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        match self.put_at(thumbnail_path(key)?, "image/jpeg", bytes).await {
            Err(StoreError::Write(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    /// The thumbnail of image `key`, if one was stored.
    pub async fn read_thumbnail(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = thumbnail_path(key)?;
        let result = self.store.get(&path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound,
            other => StoreError::Backend(other),
        })?;
        result.bytes().await.map_err(StoreError::Backend)
    }

    async fn put_at(
        &self,
        path: ObjectPath,
        content_type: &'static str,
        bytes: Bytes,
    ) -> Result<(), StoreError> {
        if let Some(dir) = &self.local_dir {
            let file = dir.join(path.as_ref());
            return tokio::task::spawn_blocking(move || write_new_file(&file, &bytes))
                .await
                .map_err(|e| StoreError::Write(std::io::Error::other(e)))?
                .map_err(StoreError::Write);
        }
        let mut options = PutOptions::default();
        // Object stores hand these headers to whoever fetches the object directly (a public
        // bucket, a CDN, a signed URL). The local folder keeps no attributes (and refuses them);
        // our route derives the same headers from the key.
        if self.s3.is_some() {
            let mut attributes = Attributes::new();
            attributes.insert(Attribute::ContentType, content_type.into());
            attributes.insert(Attribute::CacheControl, IMMUTABLE.into());
            options.attributes = attributes;
        }
        self.store
            .put_opts(&path, PutPayload::from_bytes(bytes), options)
            .await?;
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

    /// The whole image `key` in memory, with its content type: for answers that carry the image
    /// itself (OpenAI's `b64_json`, Gemini's `inlineData`).
    pub async fn read(&self, key: &str) -> Result<(Bytes, &'static str), StoreError> {
        let image = self.get(key).await?;
        let mut bytes = Vec::with_capacity(usize::try_from(image.size).unwrap_or(0));
        let mut body = image.body;
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.map_err(StoreError::Backend)?);
        }
        Ok((Bytes::from(bytes), image.content_type))
    }

    /// The key of an image URL this store handed out: its last path segment, whichever form the
    /// URL has (our route, `--image-base-url`, or a presigned URL with its query).
    pub fn key_in_url(url: &str) -> Option<String> {
        let parsed = url::Url::parse(url).ok()?;
        let key = parsed.path_segments()?.next_back()?;
        object_path(key).ok().map(|_| key.to_owned())
    }

    /// The URL a client fetches the image `key` from. `route_base` is our public base URL,
    /// used when image URLs point at our own `/images/{key}` route.
    pub async fn image_url(&self, route_base: &str, key: &str) -> Result<String, StoreError> {
        let path = object_path(key)?;
        match (&self.urls, &self.s3) {
            (ImageUrls::Route, _) => Ok(format!("{route_base}/images/{key}")),
            (ImageUrls::Base(base), _) => Ok(format!("{base}/{key}")),
            (ImageUrls::Signed(valid_for), Some((s3, prefix))) => {
                // The prefix store does not sign; sign the full key on the bucket itself.
                let full = match prefix {
                    Some(prefix) => ObjectPath::from(format!("{prefix}/{key}")),
                    None => path,
                };
                let url = s3.signed_url(http::Method::GET, &full, *valid_for).await?;
                Ok(url.to_string())
            }
            (ImageUrls::Signed(_), None) => Err(StoreError::Setup(
                "signed image URLs need S3 storage".to_owned(),
            )),
        }
    }

    /// `url` signed afresh when it is a presigned URL of this store (`--s3-signed-urls`) that has
    /// expired at `now` (Unix seconds) or expires within a quarter of its validity (at most a
    /// minute): a task retrieved after its URL expired gets one that works. `None` when nothing
    /// needs doing: URLs are not signed, the URL is still good, or it is not one of ours.
    pub async fn resigned(&self, url: &str, now: i64) -> Option<String> {
        let ImageUrls::Signed(valid_for) = self.urls else {
            return None;
        };
        let expires = presigned_expiry(url)?;
        let margin = (valid_for / 4).min(Duration::from_secs(60)).as_secs() as i64;
        if expires - margin > now {
            return None;
        }
        let key = ImageStore::key_in_url(url)?;
        match self.image_url("", &key).await {
            Ok(fresh) => Some(fresh),
            Err(e) => {
                tracing::warn!(error = %e, "could not sign an image URL again");
                None
            }
        }
    }

    /// Stores an input image under its SHA-256 `digest` (64 lowercase hex digits). The same
    /// bytes are written once: an object already there and written less than `fresh_for` ago is
    /// left alone; an older one is written again, which renews its modification time, so that
    /// the sweeper (which deletes only objects older than its grace period and referenced by no
    /// task) cannot take it while the task that now uses it is being recorded. The write is
    /// atomic (a staging file renamed into place, or one S3 `PUT`): a reader never sees half.
    pub async fn put_input(
        &self,
        digest: &str,
        bytes: Bytes,
        fresh_for: Duration,
    ) -> Result<(), StoreError> {
        let path = input_path(digest)?;
        match self.store.head(&path).await {
            Ok(meta) if modified_within(meta.last_modified.into(), fresh_for) => return Ok(()),
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(StoreError::Backend(e)),
        }
        self.store.put(&path, PutPayload::from_bytes(bytes)).await?;
        Ok(())
    }

    /// The bytes of the input image `digest`.
    pub async fn read_input(&self, digest: &str) -> Result<Bytes, StoreError> {
        let path = input_path(digest)?;
        if let Some(dir) = &self.local_dir {
            // One read into one buffer: `object_store` would stream a local file 8 KiB at a
            // time, each chunk a trip through the blocking pool.
            let file = dir.join(path.as_ref());
            return match tokio::task::spawn_blocking(move || std::fs::read(file)).await {
                Ok(Ok(bytes)) => Ok(Bytes::from(bytes)),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound),
                Ok(Err(e)) => Err(StoreError::Write(e)),
                Err(e) => Err(StoreError::Write(std::io::Error::other(e))),
            };
        }
        let result = self.store.get(&path).await.map_err(not_found)?;
        result.bytes().await.map_err(not_found)
    }

    /// Every stored input image: its digest and when it was last written.
    pub async fn list_inputs(&self) -> Result<Vec<(String, SystemTime)>, StoreError> {
        let prefix = ObjectPath::from(INPUT_PREFIX);
        let mut listing = self.store.list(Some(&prefix));
        let mut found = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = match meta {
                Ok(meta) => meta,
                // A file that vanished between the listing and its metadata (deleted meanwhile).
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(StoreError::Backend(e)),
            };
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if is_digest(name) {
                found.push((name.to_owned(), meta.last_modified.into()));
            }
        }
        Ok(found)
    }

    /// What the store holds, by kind, counted by listing every object (`/metrics`' storage
    /// gauges). On S3 that is one LIST request per 1,000 objects.
    pub async fn usage(&self) -> Result<Usage, StoreError> {
        let mut usage = Usage::default();
        let mut listing = self.store.list(None);
        while let Some(meta) = listing.next().await {
            let meta = match meta {
                Ok(meta) => meta,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(StoreError::Backend(e)),
            };
            let mut parts = meta.location.parts();
            let first = parts.next();
            let kind = match (first.as_ref().map(|p| p.as_ref()), parts.next()) {
                (Some(INPUT_PREFIX), Some(_)) => &mut usage.inputs,
                (Some("thumbs"), Some(_)) => &mut usage.thumbnails,
                (Some(name), None) if object_path(name).is_ok() => &mut usage.images,
                _ => &mut usage.other,
            };
            kind.objects += 1;
            kind.bytes += meta.size;
        }
        Ok(usage)
    }

    /// Deletes the image `key` and its console thumbnail, if any; what is already gone is fine.
    pub async fn delete_image(&self, key: &str) -> Result<(), StoreError> {
        for path in [object_path(key)?, thumbnail_path(key)?] {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(StoreError::Backend(e)),
            }
        }
        Ok(())
    }

    /// Deletes the input image `digest`; one already gone is fine.
    pub async fn delete_input(&self, digest: &str) -> Result<(), StoreError> {
        match self.store.delete(&input_path(digest)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::Backend(e)),
        }
    }

    /// Whether the store answers and lets us in (readiness): lists a probe prefix that is
    /// normally empty. An empty answer is fine; an unreachable endpoint, refused credentials or
    /// a missing bucket are errors. (A `head` would not do: S3 answers 404 for a missing bucket
    /// as for a missing key.)
    pub async fn check(&self) -> Result<(), StoreError> {
        match self
            .store
            .list_with_delimiter(Some(&ObjectPath::from("readiness-probe")))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    let cause_text = cause.to_string();
                    if !text.contains(&cause_text) {
                        text = format!("{text}: {cause_text}");
                    }
                    source = cause.source();
                }
                Err(StoreError::Unavailable(text))
            }
        }
    }
}

/// Objects and bytes of one kind of object in the store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub objects: u64,
    pub bytes: u64,
}

/// The store's contents by kind (`ImageStore::usage`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Generated images (`<uuid>.<ext>` at the top).
    pub images: Count,
    /// Uploaded input images (`inputs/<sha256>`).
    pub inputs: Count,
    /// The console's thumbnails (`thumbs/`).
    pub thumbnails: Count,
    /// Anything else under the store's folder or prefix (not ours, or a write in progress).
    pub other: Count,
}

impl Usage {
    /// `(kind, count)` for each kind, as the `kind` label of the gauges.
    pub fn kinds(&self) -> [(&'static str, Count); 4] {
        [
            ("images", self.images),
            ("inputs", self.inputs),
            ("thumbnails", self.thumbnails),
            ("other", self.other),
        ]
    }
}

/// `Cache-Control` of stored images: a key is never reused for other bytes.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn s3_builder(settings: &S3Settings) -> Result<AmazonS3Builder, StoreError> {
    let setup = |why: String| StoreError::Setup(why);
    // Fail within seconds when the store is down instead of object_store's default of up to
    // three minutes of retries: a request waits on this, and readiness must answer quickly.
    let retry = RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(15),
        ..RetryConfig::default()
    };
    let mut client = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        // A whole request, body included: generous for large images on slow links.
        .with_timeout(Duration::from_secs(300));
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&settings.bucket)
        .with_region(&settings.region)
        .with_retry(retry)
        .with_virtual_hosted_style_request(!settings.path_style);
    if let Some(endpoint) = &settings.endpoint {
        let mut url = url::Url::parse(endpoint)
            .map_err(|e| setup(format!("the S3 endpoint {endpoint:?} is not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" => client = client.with_allow_http(true),
            _ => return Err(setup("the S3 endpoint must be an http(s) URL".into())),
        }
        if !settings.path_style {
            // Virtual-hosted style: the bucket is part of the host name, as AWS's SDKs do it.
            let host = match url.host() {
                Some(url::Host::Domain(host)) => host.to_owned(),
                _ => {
                    return Err(setup(format!(
                        "the S3 endpoint {endpoint:?} has no host name to put the bucket in; \
                         use --s3-path-style"
                    )));
                }
            };
            url.set_host(Some(&format!("{}.{host}", settings.bucket)))
                .map_err(|e| setup(format!("the S3 endpoint {endpoint:?}: {e}")))?;
        }
        builder = builder.with_endpoint(url.as_str().trim_end_matches('/'));
    }
    if let Some(id) = &settings.access_key_id {
        builder = builder.with_access_key_id(id);
    }
    if let Some(secret) = &settings.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    Ok(builder.with_client_options(client))
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

/// Writes a new image file in place. `object_store`'s local put writes a staging file and renames
/// it, which costs a second directory operation per image under the folder's lock (a third of the
/// server's CPU per small image, BENCHMARKS.md S1). Nothing reads a key before its task has
/// recorded it, so an image needs no atomic publication; `create_new` makes sure a key is never
/// written twice. A half-written file (the process died) belongs to no task and is never served.
fn write_new_file(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(file)
    };
    let mut out = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // The folder was removed under us: make it again, as object_store would.
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            open()?
        }
        other => other?,
    };
    if let Err(e) = out.write_all(bytes) {
        drop(out);
        let _ = std::fs::remove_file(file);
        return Err(e);
    }
    Ok(())
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

/// The folder (or key prefix) of input images.
pub const INPUT_PREFIX: &str = "inputs";

/// Whether `name` is a SHA-256 digest as input keys spell it: 64 lowercase hex digits.
pub fn is_digest(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn input_path(digest: &str) -> Result<ObjectPath, StoreError> {
    if !is_digest(digest) {
        return Err(StoreError::InvalidKey);
    }
    Ok(ObjectPath::from(format!("{INPUT_PREFIX}/{digest}")))
}

fn modified_within(modified: SystemTime, window: Duration) -> bool {
    SystemTime::now()
        .duration_since(modified)
        // Modified "in the future" (clocks apart): as fresh as can be.
        .map_or(true, |age| age < window)
}

fn not_found(e: object_store::Error) -> StoreError {
    match e {
        object_store::Error::NotFound { .. } => StoreError::NotFound,
        other => StoreError::Backend(other),
    }
}

/// Where the thumbnail of image `key` is kept: `thumbs/KEY.jpg`.
fn thumbnail_path(key: &str) -> Result<ObjectPath, StoreError> {
    object_path(key)?;
    Ok(ObjectPath::from(format!("thumbs/{key}.jpg")))
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

/// When a SigV4 presigned URL stops working, in Unix seconds: its `X-Amz-Date`
/// (`YYYYMMDDTHHMMSSZ`) plus its `X-Amz-Expires`.
fn presigned_expiry(url: &str) -> Option<i64> {
    let parsed = url::Url::parse(url).ok()?;
    let (mut signed_at, mut expires) = (None, None);
    for (name, value) in parsed.query_pairs() {
        match &*name {
            "X-Amz-Date" => signed_at = amz_date(&value),
            "X-Amz-Expires" => expires = value.parse::<i64>().ok(),
            _ => {}
        }
    }
    Some(signed_at? + expires?)
}

/// `YYYYMMDDTHHMMSSZ` (UTC) in Unix seconds.
fn amz_date(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
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
        // A key is written once; the first image stays.
        let again = store.put(&key, Bytes::from_static(b"xyz")).await;
        assert!(matches!(again, Err(StoreError::Write(_))), "{again:?}");
        let image = store.get(&key).await.unwrap();
        assert_eq!(
            image
                .body
                .try_collect::<Vec<Bytes>>()
                .await
                .unwrap()
                .concat(),
            b"abc"
        );
        // Nothing but the image itself lands in the folder (no staging files).
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![key.clone()]);

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

    #[tokio::test]
    async fn inputs_are_stored_by_digest_once_and_never_served_as_images() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::local(dir.path()).unwrap();
        let digest = "a".repeat(64);
        let hour = Duration::from_secs(3600);
        store
            .put_input(&digest, Bytes::from_static(b"one"), hour)
            .await
            .unwrap();
        // Fresh: the same digest is not written again.
        store
            .put_input(&digest, Bytes::from_static(b"two"), hour)
            .await
            .unwrap();
        assert_eq!(store.read_input(&digest).await.unwrap().as_ref(), b"one");
        // Older than the window: written again (and so made young again).
        store
            .put_input(&digest, Bytes::from_static(b"one"), Duration::ZERO)
            .await
            .unwrap();
        let listed = store.list_inputs().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, digest);
        assert!(modified_within(listed[0].1, Duration::from_secs(60)));
        assert!(matches!(
            store.get(&format!("{INPUT_PREFIX}/{digest}")).await,
            Err(StoreError::InvalidKey)
        ));
        for bad in ["../x", &"A".repeat(64), &"a".repeat(63), ""] {
            assert!(
                matches!(store.read_input(bad).await, Err(StoreError::InvalidKey)),
                "{bad}"
            );
        }
        store.delete_input(&digest).await.unwrap();
        store.delete_input(&digest).await.unwrap();
        assert!(matches!(
            store.read_input(&digest).await,
            Err(StoreError::NotFound)
        ));
        assert!(store.list_inputs().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_removed_folder_is_made_again_on_the_next_write() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("images");
        let store = ImageStore::local(&dir).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        let key = ImageStore::new_key("image/png");
        store.put(&key, Bytes::from_static(b"png")).await.unwrap();
        assert_eq!(std::fs::read(dir.join(&key)).unwrap(), b"png");
    }

    #[test]
    fn storage_urls_parse_into_folders_and_buckets() {
        let parse = |s: &str| s.parse::<StorageUrl>();
        assert_eq!(
            parse("./data/images"),
            Ok(StorageUrl::Local(PathBuf::from("./data/images")))
        );
        assert_eq!(
            parse("file:///srv/images"),
            Ok(StorageUrl::Local(PathBuf::from("/srv/images")))
        );
        let s3 = |bucket: &str, prefix: Option<&str>| {
            Ok(StorageUrl::S3 {
                bucket: bucket.into(),
                prefix: prefix.map(Into::into),
            })
        };
        assert_eq!(parse("s3://images"), s3("images", None));
        assert_eq!(parse("s3://images/"), s3("images", None));
        assert_eq!(
            parse("S3://my.bucket-1/a/b"),
            s3("my.bucket-1", Some("a/b"))
        );
        assert_eq!(parse("s3://images/a/b/"), s3("images", Some("a/b")));
    }

    #[test]
    fn bad_storage_urls_say_what_is_wrong() {
        let error = |s: &str| s.parse::<StorageUrl>().unwrap_err().to_string();
        assert!(error("gs://bucket").contains("unsupported scheme \"gs\""));
        assert!(error("https://example.com/x").contains("unsupported scheme"));
        assert!(error("s3://").contains("no bucket name"));
        assert!(error("s3:///prefix").contains("no bucket name"));
        assert!(error("s3://Upper").contains("not a bucket name"));
        assert!(error("s3://ab").contains("not a bucket name"));
        assert!(error("s3://a_b_c").contains("not a bucket name"));
        assert!(error("s3://bucket/a//b").contains("prefix"));
        assert!(error("s3://bucket/a/../b").contains("prefix"));
        assert!(error("s3://bucket/a?x=1").contains("query"));
        assert!(error("file://relative/path").contains("absolute path"));
        assert!(error("").contains("empty"));
    }

    #[test]
    fn s3_endpoints_follow_the_addressing_style() {
        let settings = |endpoint: &str, path_style: bool| S3Settings {
            bucket: "images".into(),
            prefix: None,
            endpoint: Some(endpoint.into()),
            region: "us-east-1".into(),
            path_style,
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("s3cr3t-value".into()),
        };
        assert!(ImageStore::s3(&settings("http://127.0.0.1:8333", true)).is_ok());
        assert!(ImageStore::s3(&settings("https://r2.example.com", false)).is_ok());
        let error = ImageStore::s3(&settings("http://127.0.0.1:8333", false))
            .unwrap_err()
            .to_string();
        assert!(error.contains("--s3-path-style"), "{error}");
        let error = ImageStore::s3(&settings("ftp://x", true))
            .unwrap_err()
            .to_string();
        assert!(error.contains("http(s)"), "{error}");
        let shown = format!("{:?}", settings("http://x", true));
        assert!(
            !shown.contains("s3cr3t-value") && !shown.contains("AKIDEXAMPLE"),
            "{shown}"
        );
    }

    #[test]
    fn presigned_urls_tell_when_they_expire() {
        // 2026-12-06 10:45:00 UTC is 1796553900.
        let url = "https://s3.example.com/b/k.png?X-Amz-Algorithm=AWS4-HMAC-SHA256\
                   &X-Amz-Date=20261206T104500Z&X-Amz-Expires=300&X-Amz-Signature=ab";
        assert_eq!(presigned_expiry(url), Some(1_796_553_900 + 300));
        assert_eq!(amz_date("19700101T000000Z"), Some(0));
        assert_eq!(amz_date("20000229T235959Z"), Some(951_868_799));
        for broken in [
            "2026-12-06T10:45:00Z",
            "20261306T104500Z",
            "20261206T104500",
            "",
        ] {
            assert_eq!(amz_date(broken), None, "{broken}");
        }
        assert_eq!(presigned_expiry("https://cdn.example.com/k.png"), None);
        assert_eq!(presigned_expiry("not a url"), None);
    }

    #[tokio::test]
    async fn image_urls_follow_the_configured_mode() {
        let dir = tempfile::tempdir().unwrap();
        let local = StorageConfig::Local(dir.path().to_path_buf());
        let key = ImageStore::new_key("image/png");
        let route = ImageStore::open(&local, ImageUrls::Route).unwrap();
        assert_eq!(
            route.image_url("http://h", &key).await.unwrap(),
            format!("http://h/images/{key}")
        );
        let cdn = ImageStore::open(&local, ImageUrls::Base("https://cdn.example".into())).unwrap();
        assert_eq!(
            cdn.image_url("http://h", &key).await.unwrap(),
            format!("https://cdn.example/{key}")
        );
        let signed = ImageStore::open(&local, ImageUrls::Signed(Duration::from_secs(60)));
        assert!(signed.unwrap_err().to_string().contains("need S3"));
    }
}
