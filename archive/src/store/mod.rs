//! The object store holding the archive: any S3-compatible endpoint, or a
//! local directory (the embedded default of `strata demo`).
//!
//! Only what the archiver and the history API need: upload a local file
//! (in parts when large, each part with a CRC32 checksum the server
//! verifies), download to a local file, ranged reads, server-side copy,
//! list, delete, and cleanup of multipart uploads a crashed archiver left
//! behind. Correctness never depends on conditional writes (several
//! S3-compatible servers ignore them): object keys are unique per attempt
//! and the catalog in Postgres is the commit point.
//!
//! This module holds the shared surface ([`ObjectStore`], [`StoreError`],
//! [`ObjectMeta`]); the backends are in `s3` and `local`.

use std::path::Path;
use std::time::{Duration, SystemTime};

use strata_core::config::{ObjectStoreConfig, ObjectStoreKind};

mod local;
mod s3;

pub use local::LocalStore;
pub use s3::S3Store;

/// An object store operation that failed.
///
/// The message holds the cause as text (the server's code and message, or
/// the local error), which is what a log line (`error = %err`) shows; so
/// the cause is not also the `source()`, or `{err:#}` would print it twice.
/// What the cause means for a retry is kept as [`StoreErrorKind`].
#[derive(Debug, thiserror::Error)]
#[error("object store: {op} {key}: {message}")]
pub struct StoreError {
    /// What was attempted (`put`, `get`, ...).
    pub op: &'static str,
    /// The key (or prefix) involved.
    pub key: String,
    /// The cause, with the server's message when there is one.
    pub message: String,
    /// What kind of failure it is.
    pub kind: StoreErrorKind,
}

/// What kind of failure a [`StoreError`] is, which decides whether trying
/// the same call again may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The object does not exist (S3 `NoSuchKey`, a HEAD's 404, a missing
    /// local file).
    NotFound,
    /// The store refused the credentials or the permission (HTTP 401 or
    /// 403, a local permission error).
    Denied,
    /// The request cannot succeed as made: any other 4xx (a missing
    /// bucket, a bad argument, a failed precondition), a request that
    /// could not be built, an invalid key or configuration.
    Invalid,
    /// A fault that may pass: 5xx, 408, 429 and throttling codes
    /// (`SlowDown`, `RequestTimeout`, ...), timeouts, connection and
    /// dispatch failures, an unreadable or cut-short response, local I/O
    /// errors other than a missing file or a permission.
    Transient,
}

impl StoreErrorKind {
    /// Whether trying the same call again may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Transient)
    }

    /// The kind of a local I/O failure (the local store's files, the spool
    /// files an upload reads or a download writes).
    pub(crate) fn of_io(err: &std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::NotFound => Self::NotFound,
            std::io::ErrorKind::PermissionDenied => Self::Denied,
            _ => Self::Transient,
        }
    }
}

impl StoreError {
    /// A failure of `op` on `key` of `kind`, for `message`.
    pub(crate) fn new(
        op: &'static str,
        key: &str,
        kind: StoreErrorKind,
        message: impl std::fmt::Display,
    ) -> Self {
        Self {
            op,
            key: key.to_string(),
            message: message.to_string(),
            kind,
        }
    }

    /// A local I/O failure of `op` on `key`, its text the message.
    pub(crate) fn io(op: &'static str, key: &str, err: &std::io::Error) -> Self {
        Self::new(op, key, StoreErrorKind::of_io(err), err)
    }

    /// The object does not exist (GET or HEAD of a missing key).
    pub fn not_found(&self) -> bool {
        self.kind == StoreErrorKind::NotFound
    }

    /// Whether trying the same call again may succeed (a transient fault;
    /// see [`StoreErrorKind`]).
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
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
        match config.kind {
            Some(ObjectStoreKind::S3) => Ok(Self::S3(S3Store::new(config).await)),
            Some(ObjectStoreKind::Local) => Ok(Self::Local(LocalStore::new(
                config.local_dir.as_deref().unwrap_or(Path::new("")),
            )?)),
            None => Err(StoreError::new(
                "configure",
                "",
                StoreErrorKind::Invalid,
                "object_store.kind is not set: choose \"s3\" or \"local\"",
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

    /// One cheap call that needs the credentials, the bucket and the right
    /// to list it (a listing of at most one key under `prefix`); for
    /// start-up checks and readiness probes. The local backend checks its
    /// directory is still there.
    pub async fn probe(&self, prefix: &str) -> Result<(), StoreError> {
        match self {
            Self::S3(s) => s.probe(prefix).await,
            Self::Local(l) => l.probe().await,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_faults_are_retried_and_only_missing_objects_are_not_found() {
        // (kind, retryable, not found)
        let cases = [
            (StoreErrorKind::NotFound, false, true),
            (StoreErrorKind::Denied, false, false),
            (StoreErrorKind::Invalid, false, false),
            (StoreErrorKind::Transient, true, false),
        ];
        for (kind, retryable, not_found) in cases {
            let err = StoreError::new("get", "activity/x.parquet", kind, "why");
            assert_eq!(err.is_retryable(), retryable, "{kind:?}");
            assert_eq!(err.not_found(), not_found, "{kind:?}");
            assert_eq!(err.to_string(), "object store: get activity/x.parquet: why");
        }
    }

    #[test]
    fn local_io_errors_are_classified_by_their_kind() {
        use std::io::{Error, ErrorKind};
        let cases = [
            (ErrorKind::NotFound, StoreErrorKind::NotFound),
            (ErrorKind::PermissionDenied, StoreErrorKind::Denied),
            (ErrorKind::UnexpectedEof, StoreErrorKind::Transient),
            (ErrorKind::Interrupted, StoreErrorKind::Transient),
            (ErrorKind::Other, StoreErrorKind::Transient),
        ];
        for (io, kind) in cases {
            let err = StoreError::io("head", "k", &Error::from(io));
            assert_eq!(err.kind, kind, "{io:?}");
            assert_eq!(err.message, Error::from(io).to_string());
            assert!(std::error::Error::source(&err).is_none());
        }
    }

    #[tokio::test]
    async fn a_missing_kind_is_a_configuration_error() {
        let config = ObjectStoreConfig {
            kind: None,
            ..ObjectStoreConfig::default()
        };
        let err = ObjectStore::from_config(&config)
            .await
            .expect_err("no kind");
        assert_eq!(err.kind, StoreErrorKind::Invalid);
        assert!(!err.is_retryable());
    }
}
