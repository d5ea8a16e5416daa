//! The object store holding the archive: any S3-compatible endpoint, or a
//! local directory (the embedded default of `strata demo`).
//!
//! Only what the archiver needs: upload a local file (in parts when large,
//! each part with a CRC32 checksum the server verifies), download to a local
//! file, server-side copy, list, delete, and cleanup of multipart uploads a
//! crashed archiver left behind. Correctness never depends on conditional
//! writes (several S3-compatible servers ignore them): object keys are unique
//! per attempt and the catalog in Postgres is the commit point.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use strata_core::config::ObjectStoreConfig;
use tokio::io::AsyncWriteExt;

/// An object store operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("object store: {op} {key}: {message}")]
pub struct StoreError {
    /// What was attempted (`put`, `get`, ...).
    pub op: &'static str,
    /// The key (or prefix) involved.
    pub key: String,
    /// The cause, with the server's message when there is one.
    pub message: String,
    /// The object does not exist (GET/HEAD of a missing key).
    pub not_found: bool,
}

impl StoreError {
    fn new(op: &'static str, key: &str, message: impl std::fmt::Display) -> Self {
        Self {
            op,
            key: key.to_string(),
            message: message.to_string(),
            not_found: false,
        }
    }
}

/// Formats an SDK error with the service's code and message, which the
/// SDK's `Display` leaves out ("service error").
fn sdk_message<E, R>(err: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_s3::error::SdkError;
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            format!(
                "{}: {}",
                e.code().unwrap_or("service error"),
                e.message().unwrap_or("(no message)")
            )
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

/// One listed object.
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    /// Full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, when the store reports it.
    pub last_modified: Option<SystemTime>,
}

/// Where archive objects go.
#[derive(Debug, Clone)]
pub enum ObjectStore {
    /// An S3-compatible bucket.
    S3(S3Store),
    /// A directory on the local filesystem.
    Local(LocalStore),
}

impl ObjectStore {
    /// Builds the store `config` describes.
    pub async fn from_config(config: &ObjectStoreConfig) -> Result<Self, StoreError> {
        match config.kind.as_str() {
            "s3" => Ok(Self::S3(S3Store::new(config).await)),
            "local" => Ok(Self::Local(LocalStore::new(&config.local_dir)?)),
            "" => Err(StoreError::new(
                "configure",
                "",
                "object_store.kind is not set: choose \"s3\" or \"local\"",
            )),
            other => Err(StoreError::new(
                "configure",
                "",
                format!("unknown object_store.kind {other:?}"),
            )),
        }
    }

    /// Human-readable location, for logs and the demo.
    pub fn describe(&self) -> String {
        match self {
            Self::S3(s) => format!("s3://{}", s.bucket),
            Self::Local(l) => l.root.display().to_string(),
        }
    }

    /// Uploads the local file at `path` as `key`; returns its size.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        match self {
            Self::S3(s) => s.put_file(key, path).await,
            Self::Local(l) => l.put_file(key, path).await,
        }
    }

    /// Uploads small in-memory content (manifests).
    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        match self {
            Self::S3(s) => s.put_bytes(key, bytes).await,
            Self::Local(l) => l.put_bytes(key, &bytes).await,
        }
    }

    /// Downloads `key` into the local file `path`; returns its size.
    pub async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        match self {
            Self::S3(s) => s.get_to_file(key, path).await,
            Self::Local(l) => l.get_to_file(key, path).await,
        }
    }

    /// Creates the bucket when it does not exist (benchmarks and first
    /// runs against a fresh S3-compatible server; production buckets are
    /// usually provisioned with their lifecycle rules beforehand).
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        match self {
            Self::S3(s) => s.ensure_bucket().await,
            Self::Local(_) => Ok(()),
        }
    }

    /// Size of `key`.
    pub async fn size(&self, key: &str) -> Result<u64, StoreError> {
        match self {
            Self::S3(s) => s.size(key).await,
            Self::Local(l) => l.size(key).await,
        }
    }

    /// Server-side copy of `from` to `to`.
    pub async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        match self {
            Self::S3(s) => s.copy(from, to).await,
            Self::Local(l) => l.copy(from, to).await,
        }
    }

    /// Deletes `key`; deleting a missing key succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Self::S3(s) => s.delete(key).await,
            Self::Local(l) => l.delete(key).await,
        }
    }

    /// Bytes `range` of `key` (one ranged GET).
    pub async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, StoreError> {
        if range.is_empty() {
            return Ok(bytes::Bytes::new());
        }
        match self {
            Self::S3(s) => s.get_range(key, range).await,
            Self::Local(l) => l.get_range(key, range).await,
        }
    }

    /// A URL that lets its holder GET `key` for `ttl` without credentials
    /// (S3 presigned URL). A local store has no server: it returns a
    /// `file://` URL, which does not expire.
    pub async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String, StoreError> {
        match self {
            Self::S3(s) => s.presign_get(key, ttl).await,
            Self::Local(l) => Ok(format!("file://{}", l.path_of(key)?.display())),
        }
    }

    /// Every object under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        match self {
            Self::S3(s) => s.list(prefix).await,
            Self::Local(l) => l.list(prefix).await,
        }
    }

    /// Aborts multipart uploads under `prefix` started more than `older_than`
    /// ago (left by a crashed archiver; S3 bills their parts until then).
    /// Returns how many were aborted.
    pub async fn abort_abandoned_uploads(
        &self,
        prefix: &str,
        older_than: Duration,
    ) -> Result<usize, StoreError> {
        match self {
            Self::S3(s) => s.abort_abandoned_uploads(prefix, older_than).await,
            Self::Local(_) => Ok(0),
        }
    }
}

/// An S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    multipart_threshold: u64,
    part_size: u64,
}

impl S3Store {
    async fn new(config: &ObjectStoreConfig) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if !config.region.is_empty() {
            loader = loader.region(Region::new(config.region.clone()));
        }
        if !config.access_key_id.is_empty() {
            loader = loader.credentials_provider(Credentials::new(
                config.access_key_id.clone(),
                config.secret_access_key.expose().to_string(),
                None,
                None,
                "strata-config",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            // Every download is checked against the SHA-256 recorded when
            // the file was written; the SDK's own response check cannot
            // validate multipart (composite) checksums and warns on each.
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(config.request_timeout)
                    .build(),
            );
        if shared.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        if !config.endpoint.is_empty() {
            builder = builder.endpoint_url(config.endpoint.clone());
        }
        Self {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            multipart_threshold: config.multipart_threshold_bytes,
            part_size: config.part_size_bytes,
        }
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| StoreError::new("put", key, format!("{}: {e}", path.display())))?
            .len();
        if size <= self.multipart_threshold {
            let body = ByteStream::from_path(path)
                .await
                .map_err(|e| StoreError::new("put", key, e))?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                .body(body)
                .send()
                .await
                .map_err(|e| StoreError::new("put", key, sdk_message(&e)))?;
            return Ok(size);
        }
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .send()
            .await
            .map_err(|e| StoreError::new("create multipart upload", key, sdk_message(&e)))?;
        let upload_id = upload
            .upload_id()
            .ok_or_else(|| StoreError::new("create multipart upload", key, "no upload id"))?
            .to_string();
        match self.upload_parts(key, path, size, &upload_id).await {
            Ok(parts) => {
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| {
                        StoreError::new("complete multipart upload", key, sdk_message(&e))
                    })?;
                Ok(size)
            }
            Err(err) => {
                // Best effort: a leftover upload is also reaped later.
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(err)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
    ) -> Result<Vec<CompletedPart>, StoreError> {
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < size {
            let length = self.part_size.min(size - offset);
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(length))
                .build()
                .await
                .map_err(|e| StoreError::new("upload part", key, e))?;
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                .body(body)
                .send()
                .await
                .map_err(|e| StoreError::new("upload part", key, sdk_message(&e)))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .set_checksum_crc32_c(out.checksum_crc32_c().map(str::to_string))
                    .build(),
            );
            offset += length;
            number += 1;
        }
        Ok(parts)
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| StoreError::new("put", key, sdk_message(&e)))?;
        Ok(())
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                let mut err = StoreError::new("get", key, sdk_message(&e));
                err.not_found = e.as_service_error().is_some_and(|s| s.is_no_such_key());
                err
            })?;
        let mut reader = out.body.into_async_read();
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| StoreError::new("get", key, format!("{}: {e}", path.display())))?;
        let copied = tokio::io::copy(&mut reader, &mut file)
            .await
            .map_err(|e| StoreError::new("get", key, e))?;
        file.flush()
            .await
            .map_err(|e| StoreError::new("get", key, e))?;
        Ok(copied)
    }

    async fn ensure_bucket(&self) -> Result<(), StoreError> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        self.client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| StoreError::new("create bucket", &self.bucket, sdk_message(&e)))?;
        Ok(())
    }

    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await
            .map_err(|e| {
                let mut err = StoreError::new("get range", key, sdk_message(&e));
                err.not_found = e.as_service_error().is_some_and(|s| s.is_no_such_key());
                err
            })?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::new("get range", key, e))?
            .into_bytes();
        if bytes.len() as u64 != range.end - range.start {
            return Err(StoreError::new(
                "get range",
                key,
                format!(
                    "asked for {} bytes at {}, got {}",
                    range.end - range.start,
                    range.start,
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String, StoreError> {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)
            .map_err(|e| StoreError::new("presign", key, e))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| StoreError::new("presign", key, sdk_message(&e)))?;
        Ok(request.uri().to_string())
    }

    async fn size(&self, key: &str) -> Result<u64, StoreError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                let mut err = StoreError::new("head", key, sdk_message(&e));
                err.not_found = e.as_service_error().is_some_and(|s| s.is_not_found());
                err
            })?;
        Ok(out.content_length().unwrap_or(0).max(0) as u64)
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(format!("{}/{}", self.bucket, from))
            .send()
            .await
            .map_err(|e| StoreError::new("copy", to, sdk_message(&e)))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StoreError::new("delete", key, sdk_message(&e)))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut objects = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| StoreError::new("list", prefix, sdk_message(&e)))?;
            for object in page.contents() {
                objects.push(ObjectMeta {
                    key: object.key().unwrap_or_default().to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    last_modified: object
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok()),
                });
            }
        }
        Ok(objects)
    }

    async fn abort_abandoned_uploads(
        &self,
        prefix: &str,
        older_than: Duration,
    ) -> Result<usize, StoreError> {
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .map_err(|e| StoreError::new("list multipart uploads", prefix, sdk_message(&e)))?;
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut aborted = 0;
        for upload in out.uploads() {
            let started = upload
                .initiated()
                .and_then(|t| SystemTime::try_from(*t).ok());
            let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                continue;
            };
            if started.is_some_and(|t| t < cutoff) {
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(|e| StoreError::new("abort multipart upload", key, sdk_message(&e)))?;
                aborted += 1;
            }
        }
        Ok(aborted)
    }
}

/// A directory standing in for a bucket: keys are relative paths. Writes go
/// to a temporary name, are fsynced, then renamed, so a crash never leaves a
/// partial object under its final key.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    fn new(root: &str) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root)
            .map_err(|e| StoreError::new("configure", root, format!("cannot create: {e}")))?;
        let root =
            std::fs::canonicalize(root).map_err(|e| StoreError::new("configure", root, e))?;
        Ok(Self { root })
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        if key.split('/').any(|part| part == ".." || part.is_empty()) {
            return Err(StoreError::new("resolve", key, "invalid key"));
        }
        Ok(self.root.join(key))
    }

    async fn write_atomically(
        &self,
        key: &str,
        write: impl AsyncFnOnce(&Path) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        let target = self.path_of(key)?;
        let dir = target
            .parent()
            .ok_or_else(|| StoreError::new("put", key, "key has no parent"))?
            .to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| StoreError::new("put", key, e))?;
        let temp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let result = async {
            write(&temp).await?;
            tokio::fs::File::open(&temp).await?.sync_all().await?;
            tokio::fs::rename(&temp, &target).await?;
            tokio::fs::File::open(&dir).await?.sync_all().await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result.map_err(|e| StoreError::new("put", key, e))
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let mut size = 0;
        self.write_atomically(key, async |temp: &Path| {
            size = tokio::fs::copy(path, temp).await?;
            Ok(())
        })
        .await?;
        Ok(size)
    }

    async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.write_atomically(key, async |temp: &Path| tokio::fs::write(temp, bytes).await)
            .await
    }

    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, StoreError> {
        use std::io::{Read, Seek};
        let path = self.path_of(key)?;
        let owned_key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let not_found = |e: std::io::Error| {
                let mut err = StoreError::new("get range", &owned_key, e.to_string());
                err.not_found = e.kind() == std::io::ErrorKind::NotFound;
                err
            };
            let mut file = std::fs::File::open(&path).map_err(not_found)?;
            file.seek(std::io::SeekFrom::Start(range.start))
                .map_err(not_found)?;
            let mut buffer = vec![0u8; (range.end - range.start) as usize];
            file.read_exact(&mut buffer).map_err(not_found)?;
            Ok(bytes::Bytes::from(buffer))
        })
        .await
        .map_err(|e| StoreError::new("get range", key, e))?
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        tokio::fs::copy(self.path_of(key)?, path)
            .await
            .map_err(|e| {
                let mut err = StoreError::new("get", key, e.to_string());
                err.not_found = e.kind() == std::io::ErrorKind::NotFound;
                err
            })
    }

    async fn size(&self, key: &str) -> Result<u64, StoreError> {
        let meta = tokio::fs::metadata(self.path_of(key)?).await.map_err(|e| {
            let mut err = StoreError::new("head", key, e.to_string());
            err.not_found = e.kind() == std::io::ErrorKind::NotFound;
            err
        })?;
        Ok(meta.len())
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let source = self.path_of(from)?;
        self.put_file(to, &source).await.map(|_| ())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path_of(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::new("delete", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let root = self.root.clone();
        let prefix_owned = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut objects = Vec::new();
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                for entry in entries {
                    let entry = entry?;
                    let meta = entry.metadata()?;
                    let path = entry.path();
                    if meta.is_dir() {
                        stack.push(path);
                        continue;
                    }
                    let Ok(relative) = path.strip_prefix(&root) else {
                        continue;
                    };
                    let key = relative.to_string_lossy().replace('\\', "/");
                    let is_temp = relative
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"));
                    if key.starts_with(&prefix_owned) && !is_temp {
                        objects.push(ObjectMeta {
                            key,
                            size: meta.len(),
                            last_modified: meta.modified().ok(),
                        });
                    }
                }
            }
            objects.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(objects)
        })
        .await
        .map_err(|e| StoreError::new("list", prefix, e))?
        .map_err(|e| StoreError::new("list", prefix, e))
    }
}
