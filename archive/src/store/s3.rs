//! The S3-compatible backend of [`ObjectStore`](super::ObjectStore):
//! aws-sdk-s3 against any endpoint, uploads in parts with CRC32C
//! checksums above the multipart threshold, presigned GETs.

use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption,
};
use aws_sdk_s3::Client;
use strata_core::config::ObjectStoreConfig;
use tokio::io::AsyncWriteExt;

use super::{ObjectMeta, StoreError, StoreErrorKind};

/// Formats an SDK error with the service's code and message, which the
/// SDK's `Display` leaves out ("service error").
fn sdk_message<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            format!(
                "{}: {}",
                e.code().unwrap_or("service error"),
                e.message().unwrap_or("(no message)")
            )
        }
        other => strata_core::error_chain(other),
    }
}

/// `err` of `op` on `key`: its text ([`sdk_message`]) and its kind
/// ([`sdk_kind`]).
fn sdk_error<E>(op: &'static str, key: &str, err: &SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    StoreError::new(op, key, sdk_kind(err), sdk_message(err))
}

/// What an SDK error means for a retry: a service's answer by its status
/// and code ([`service_kind`]); a request that could not be built is
/// permanent; a timeout, a connection or dispatch failure and a response
/// that does not parse may pass.
fn sdk_kind<E>(err: &SdkError<E, HttpResponse>) -> StoreErrorKind
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(service) => {
            service_kind(service.raw().status().as_u16(), service.err().code())
        }
        SdkError::ConstructionFailure(_) => StoreErrorKind::Invalid,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreErrorKind::Transient
        }
        _ => StoreErrorKind::Transient,
    }
}

/// Error codes that mean "try again later" whatever the HTTP status they
/// come with: the SDK's own throttling and transient codes, and S3's
/// `InternalError` (which a copy or a multipart completion can report in
/// a 200 answer), `ServiceUnavailable` and `OperationAborted` (a
/// conflicting operation in progress).
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
    // A body cut short or damaged in transit: the same request again can pass.
    "IncompleteBody",
    "BadDigest",
    "XAmzContentSHA256Mismatch",
    // A multipart upload gone under a retried completion: a new put starts
    // a new upload.
    "NoSuchUpload",
];

/// The kind of a service's error answer, from its HTTP status and its
/// error code (when the body had one; a HEAD's 404 has the SDK's
/// `NotFound`). A 404 is a missing object only for `NoSuchKey` or
/// `NotFound` (a missing bucket is a configuration fault; a missing
/// multipart upload passes with a new put); 401 and 403 are refusals; 408, 429 and throttling codes pass;
/// any other 4xx and a redirect (a bucket in another region) are
/// permanent; 5xx (and anything else) may pass.
fn service_kind(status: u16, code: Option<&str>) -> StoreErrorKind {
    if code.is_some_and(|code| TRANSIENT_CODES.contains(&code)) {
        return StoreErrorKind::Transient;
    }
    match status {
        404 if matches!(code, Some("NoSuchKey" | "NotFound")) => StoreErrorKind::NotFound,
        401 | 403 => StoreErrorKind::Denied,
        408 | 429 => StoreErrorKind::Transient,
        300..=499 => StoreErrorKind::Invalid,
        _ => StoreErrorKind::Transient,
    }
}

/// The kind of a local or streaming failure: that of the I/O error in its
/// chain ([`StoreErrorKind::of_io`]), transient when there is none.
fn io_chain_kind(err: &(dyn std::error::Error + 'static)) -> StoreErrorKind {
    let mut next = Some(err);
    while let Some(cause) = next {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return StoreErrorKind::of_io(io);
        }
        next = cause.source();
    }
    StoreErrorKind::Transient
}

/// An S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    pub(super) bucket: String,
    multipart_threshold: u64,
    part_size: u64,
    /// SSE-KMS key for every object written (`object_store.sse_kms_key_id`).
    sse_kms_key_id: Option<String>,
}

impl S3Store {
    pub(super) async fn new(config: &ObjectStoreConfig) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(access_key_id) = &config.access_key_id {
            loader = loader.credentials_provider(Credentials::new(
                access_key_id.clone(),
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
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint.clone());
        }
        Self {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            multipart_threshold: config.multipart_threshold_bytes,
            part_size: config.part_size_bytes,
            sse_kms_key_id: config.sse_kms_key_id.clone(),
        }
    }

    /// `aws:kms` when a KMS key is configured.
    fn sse(&self) -> Option<ServerSideEncryption> {
        self.sse_kms_key_id
            .as_ref()
            .map(|_| ServerSideEncryption::AwsKms)
    }

    pub(super) async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| {
                let kind = StoreErrorKind::of_io(&e);
                StoreError::new("put", key, kind, format!("{}: {e}", path.display()))
            })?
            .len();
        if size <= self.multipart_threshold {
            let body = ByteStream::from_path(path)
                .await
                .map_err(|e| StoreError::new("put", key, io_chain_kind(&e), e))?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .set_server_side_encryption(self.sse())
                .set_ssekms_key_id(self.sse_kms_key_id.clone())
                .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                .body(body)
                .send()
                .await
                .map_err(|e| sdk_error("put", key, &e))?;
            return Ok(size);
        }
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_server_side_encryption(self.sse())
            .set_ssekms_key_id(self.sse_kms_key_id.clone())
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .send()
            .await
            .map_err(|e| sdk_error("create multipart upload", key, &e))?;
        let upload_id = upload
            .upload_id()
            .ok_or_else(|| {
                let kind = StoreErrorKind::Transient;
                StoreError::new("create multipart upload", key, kind, "no upload id")
            })?
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
                    .map_err(|e| sdk_error("complete multipart upload", key, &e))?;
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
                .map_err(|e| StoreError::new("upload part", key, io_chain_kind(&e), e))?;
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
                .map_err(|e| sdk_error("upload part", key, &e))?;
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

    pub(super) async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_server_side_encryption(self.sse())
            .set_ssekms_key_id(self.sse_kms_key_id.clone())
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| sdk_error("put", key, &e))?;
        Ok(())
    }

    pub(super) async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_error("get", key, &e))?;
        let mut reader = out.body.into_async_read();
        let mut file = tokio::fs::File::create(path).await.map_err(|e| {
            let kind = StoreErrorKind::of_io(&e);
            StoreError::new("get", key, kind, format!("{}: {e}", path.display()))
        })?;
        let copied = tokio::io::copy(&mut reader, &mut file)
            .await
            .map_err(|e| StoreError::io("get", key, &e))?;
        file.flush()
            .await
            .map_err(|e| StoreError::io("get", key, &e))?;
        Ok(copied)
    }

    pub(super) async fn ensure_bucket(&self) -> Result<(), StoreError> {
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
            .map_err(|e| sdk_error("create bucket", &self.bucket, &e))?;
        Ok(())
    }

    pub(super) async fn get_range(
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
            .map_err(|e| sdk_error("get range", key, &e))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::new("get range", key, io_chain_kind(&e), e))?
            .into_bytes();
        if bytes.len() as u64 != range.end - range.start {
            // A response cut short: the next try may read it whole.
            return Err(StoreError::new(
                "get range",
                key,
                StoreErrorKind::Transient,
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

    pub(super) async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String, StoreError> {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)
            .map_err(|e| StoreError::new("presign", key, StoreErrorKind::Invalid, e))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| sdk_error("presign", key, &e))?;
        Ok(request.uri().to_string())
    }

    pub(super) async fn size(&self, key: &str) -> Result<u64, StoreError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_error("head", key, &e))?;
        Ok(out.content_length().unwrap_or(0).max(0) as u64)
    }

    pub(super) async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            // A copy is encrypted as the request says, not as its source.
            .set_server_side_encryption(self.sse())
            .set_ssekms_key_id(self.sse_kms_key_id.clone())
            .copy_source(format!("{}/{}", self.bucket, from))
            .send()
            .await
            .map_err(|e| sdk_error("copy", to, &e))?;
        Ok(())
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_error("delete", key, &e))?;
        Ok(())
    }

    pub(super) async fn probe(&self, prefix: &str) -> Result<(), StoreError> {
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| sdk_error("list", &format!("s3://{}/{prefix}", self.bucket), &e))?;
        Ok(())
    }

    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut objects = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("list", prefix, &e))?;
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

    pub(super) async fn abort_abandoned_uploads(
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
            .map_err(|e| sdk_error("list multipart uploads", prefix, &e))?;
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
                    .map_err(|e| sdk_error("abort multipart upload", key, &e))?;
                aborted += 1;
            }
        }
        Ok(aborted)
    }
}

#[cfg(test)]
mod tests;
