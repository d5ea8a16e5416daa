//! The archive's sections: `archiver` (how closed days are rolled into
//! Parquet) and `object_store` (where the archive lives), each with its
//! defaults and checks.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use super::{empty_as_none, ConfigError, Secret};
use crate::duration::serde_text;

/// Archiver tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiverConfig {
    /// Wait this long after a UTC day ends before archiving it, so events
    /// still in flight (relay lag, clock skew between producers) land first.
    #[serde(with = "serde_text")]
    pub settle: Duration,
    /// Committed days stay in the hot store this many days after they end
    /// (fast reads, late events) before their partition is dropped.
    pub hot_retention_days: u32,
    /// A partition is dropped only once its newest row's subscription
    /// position is older than this (late events written into an old day
    /// keep it longer), so a resume token stays valid at least this long
    /// after its position committed.
    #[serde(with = "serde_text")]
    pub stream_retention: Duration,
    /// How often the continuous archiver looks for work.
    #[serde(with = "serde_text")]
    pub interval: Duration,
    /// A new file starts at the first user boundary after this many rows,
    /// so one user's day always lives in one file.
    pub max_file_rows: u64,
    /// Rows per Parquet row group: small enough that a reader selecting one
    /// user skips most of a file, large enough to compress well.
    pub row_group_rows: usize,
    /// Where files are written before upload; the system temp dir if unset
    /// (or `""`).
    #[serde(deserialize_with = "empty_as_none")]
    pub spool_dir: Option<PathBuf>,
    /// The leader's lease; a leader that cannot renew within it (paused,
    /// partitioned) is replaced and fenced.
    #[serde(with = "serde_text")]
    pub lease_ttl: Duration,
    /// Uncommitted objects older than this are garbage-collected.
    #[serde(with = "serde_text")]
    pub orphan_grace: Duration,
    /// First retry delay after a fault; doubles up to `backoff_max`.
    #[serde(with = "serde_text")]
    pub backoff_initial: Duration,
    /// Longest retry delay.
    #[serde(with = "serde_text")]
    pub backoff_max: Duration,
    /// Upper bound on catalog and lease statements (not on a day's export).
    #[serde(with = "serde_text")]
    pub statement_timeout: Duration,
    /// At start, an object store whose credentials, bucket or permissions
    /// are wrong stops `strata archiver` (and `strata run`) with its error;
    /// when true it is waited for instead, like a store that is down.
    pub wait_for_object_store: bool,
}

impl ArchiverConfig {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = ConfigError::invalid;
        for (key, value) in [
            ("archiver.interval", self.interval),
            ("archiver.lease_ttl", self.lease_ttl),
            ("archiver.backoff_initial", self.backoff_initial),
            ("archiver.backoff_max", self.backoff_max),
            ("archiver.statement_timeout", self.statement_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        if self.max_file_rows == 0 {
            return Err(invalid("archiver.max_file_rows", "must be positive"));
        }
        if self.row_group_rows < 1024 || self.row_group_rows > 4_194_304 {
            return Err(invalid(
                "archiver.row_group_rows",
                "must be between 1024 and 4194304",
            ));
        }
        Ok(())
    }
}

impl Default for ArchiverConfig {
    fn default() -> Self {
        Self {
            settle: Duration::from_secs(600),
            hot_retention_days: 3,
            stream_retention: Duration::from_secs(24 * 3600),
            interval: Duration::from_secs(30),
            max_file_rows: 2_000_000,
            row_group_rows: 2_048,
            spool_dir: None,
            lease_ttl: Duration::from_secs(30),
            orphan_grace: Duration::from_secs(6 * 3600),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(30),
            wait_for_object_store: false,
        }
    }
}

/// The object store holding the archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectStoreConfig {
    /// `s3` (any S3-compatible endpoint) or `local` (a directory). No
    /// default (unset, or `""`): the archiver drops hot partitions once they
    /// are archived, so it must never archive somewhere the operator did not
    /// choose. Any other value is refused.
    #[serde(deserialize_with = "empty_as_none")]
    pub kind: Option<ObjectStoreKind>,
    /// Bucket (`s3`).
    pub bucket: String,
    /// Key prefix inside the bucket (or directory); may be empty.
    pub prefix: String,
    /// Endpoint URL for S3-compatible servers; unset (or `""`) for AWS.
    #[serde(deserialize_with = "empty_as_none")]
    pub endpoint: Option<String>,
    /// Region; unset (or `""`) means the AWS chain (`AWS_REGION`, profile),
    /// else `us-east-1`.
    #[serde(deserialize_with = "empty_as_none")]
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most
    /// S3-compatible servers.
    pub path_style: bool,
    /// Static credentials; when unset (or `""`), the standard AWS chain is
    /// used (environment, profile, web identity, instance metadata).
    #[serde(deserialize_with = "empty_as_none")]
    pub access_key_id: Option<String>,
    /// Secret of `access_key_id`.
    pub secret_access_key: Secret,
    /// SSE-KMS: every object written (archive files, manifests, export
    /// files) is encrypted with this KMS key (id, alias or ARN), sent as
    /// `x-amz-server-side-encryption: aws:kms` with the key id. Unset (or
    /// `""`): the bucket's default encryption applies. `s3` only.
    #[serde(deserialize_with = "empty_as_none")]
    pub sse_kms_key_id: Option<String>,
    /// Directory (`local`); `""` is unset.
    #[serde(deserialize_with = "empty_as_none")]
    pub local_dir: Option<PathBuf>,
    /// Files larger than this are uploaded in parts.
    pub multipart_threshold_bytes: u64,
    /// Size of each part (S3 needs at least 5 MiB but for the last).
    pub part_size_bytes: u64,
    /// Multipart uploads left unfinished this long (a crashed archiver) are aborted.
    #[serde(with = "serde_text")]
    pub abandoned_upload_after: Duration,
    /// Upper bound on one request (one part, one GET).
    #[serde(with = "serde_text")]
    pub request_timeout: Duration,
}

impl Default for ObjectStoreConfig {
    fn default() -> Self {
        Self {
            kind: None,
            bucket: String::new(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            path_style: false,
            access_key_id: None,
            secret_access_key: Secret::default(),
            sse_kms_key_id: None,
            local_dir: None,
            multipart_threshold_bytes: 32 << 20,
            part_size_bytes: 16 << 20,
            abandoned_upload_after: Duration::from_secs(24 * 3600),
            request_timeout: Duration::from_secs(120),
        }
    }
}

impl ObjectStoreConfig {
    /// Checks values that parse but make no sense. (An unknown `kind` is
    /// refused while parsing, naming the key and the accepted values.)
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = ConfigError::invalid;
        if self.request_timeout.is_zero() {
            return Err(invalid(
                "object_store.request_timeout",
                "must be greater than zero",
            ));
        }
        if self.part_size_bytes < 5 << 20 || self.part_size_bytes > 5 << 30 {
            return Err(invalid(
                "object_store.part_size_bytes",
                "must be between 5 MiB and 5 GiB (S3's limits)",
            ));
        }
        if self.kind == Some(ObjectStoreKind::S3) && self.bucket.is_empty() {
            return Err(invalid(
                "object_store.bucket",
                "is required when kind = \"s3\"",
            ));
        }
        if self.sse_kms_key_id.is_some() && self.kind != Some(ObjectStoreKind::S3) {
            return Err(invalid(
                "object_store.sse_kms_key_id",
                "applies only to kind = \"s3\"",
            ));
        }
        if self.kind == Some(ObjectStoreKind::Local) && self.local_dir.is_none() {
            return Err(invalid(
                "object_store.local_dir",
                "is required when kind = \"local\"",
            ));
        }
        if self.prefix.starts_with('/') || self.prefix.contains("..") {
            return Err(invalid(
                "object_store.prefix",
                "must be relative and must not contain \"..\"",
            ));
        }
        Ok(())
    }
}

/// The kind of object store: the value of `object_store.kind`. Any other
/// value is refused while parsing with the message it always had (`must be
/// "s3" or "local"`, naming the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectStoreKind {
    /// Any S3-compatible endpoint (`s3`).
    S3,
    /// A directory on the local filesystem (`local`).
    Local,
}

impl ObjectStoreKind {
    /// The name as configured: `s3` or `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S3 => "s3",
            Self::Local => "local",
        }
    }
}

impl<'de> Deserialize<'de> for ObjectStoreKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match String::deserialize(deserializer)?.as_str() {
            "s3" => Ok(Self::S3),
            "local" => Ok(Self::Local),
            _ => Err(D::Error::custom(r#"must be "s3" or "local""#)),
        }
    }
}

impl fmt::Display for ObjectStoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn defaults_validate() {
        ArchiverConfig::default().validate().expect("valid");
        ObjectStoreConfig::default().validate().expect("valid");
    }

    #[test]
    fn kinds_parse_and_unknown_kinds_are_refused_naming_the_key() {
        let config = Config::load(
            None,
            &[
                "object_store.kind=s3".into(),
                "object_store.bucket=b".into(),
            ],
        )
        .expect("valid");
        assert_eq!(config.object_store.kind, Some(ObjectStoreKind::S3));
        let config = Config::load(
            None,
            &[
                "object_store.kind=local".into(),
                "object_store.local_dir=/srv/archive".into(),
            ],
        )
        .expect("valid");
        assert_eq!(config.object_store.kind, Some(ObjectStoreKind::Local));
        assert_eq!(
            config.object_store.local_dir,
            Some(PathBuf::from("/srv/archive"))
        );
        assert_eq!(ObjectStoreKind::Local.to_string(), "local");
        for value in ["gcs", "S3", "\" s3\""] {
            let err = Config::load(None, &[format!("object_store.kind={value}")])
                .unwrap_err()
                .to_string();
            assert!(err.contains("object_store.kind"), "{err}");
            assert!(err.contains(r#"must be "s3" or "local""#), "{err}");
            assert!(!err.contains("unknown variant"), "{err}");
        }
    }

    #[test]
    fn object_store_checks_name_the_key() {
        for (settings, key) in [
            (&["object_store.kind=s3"][..], "object_store.bucket"),
            (
                &["object_store.kind=local", "object_store.local_dir=\"\""][..],
                "object_store.local_dir",
            ),
            (&["object_store.prefix=/abs"][..], "object_store.prefix"),
            (&["object_store.prefix=a/../b"][..], "object_store.prefix"),
            (
                &["object_store.part_size_bytes=1024"][..],
                "object_store.part_size_bytes",
            ),
            (
                &["object_store.request_timeout=\"0s\""][..],
                "object_store.request_timeout",
            ),
            (&["archiver.lease_ttl=\"0s\""][..], "archiver.lease_ttl"),
            (&["archiver.max_file_rows=0"][..], "archiver.max_file_rows"),
            (
                &["archiver.row_group_rows=1023"][..],
                "archiver.row_group_rows",
            ),
        ] {
            let settings: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
            let err = Config::load(None, &settings).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{settings:?}: {err}");
        }
    }
}
