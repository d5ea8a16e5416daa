//! The S3-compatible backend of [`ObjectStore`](super::ObjectStore):
//! aws-sdk-s3 against any endpoint, uploads in parts with CRC32C
//! checksums above the multipart threshold, presigned GETs.

use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use strata_core::config::ObjectStoreConfig;
use tokio::io::AsyncWriteExt;

use super::{ObjectMeta, StoreError};

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

/// An S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    pub(super) bucket: String,
    multipart_threshold: u64,
    part_size: u64,
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
        }
    }

    pub(super) async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
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

    pub(super) async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
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

    pub(super) async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
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
            .map_err(|e| StoreError::new("create bucket", &self.bucket, sdk_message(&e)))?;
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

    pub(super) async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String, StoreError> {
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

    pub(super) async fn size(&self, key: &str) -> Result<u64, StoreError> {
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

    pub(super) async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
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

    pub(super) async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StoreError::new("delete", key, sdk_message(&e)))?;
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
