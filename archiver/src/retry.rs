//! Object-store calls retried in place: a few tries with capped, jittered
//! backoff before the attempt fails (the day is then retried later as a
//! whole).

use strata_archive::StoreError;
use strata_core::backoff::Backoff;
use tokio_util::sync::CancellationToken;

use crate::archive::Archiver;
use crate::error::ArchiveError;
use crate::metrics;

/// Tries of one object-store call before the attempt fails.
const STORE_ATTEMPTS: u32 = 8;

impl Archiver {
    /// Runs `call` until it succeeds, fails for good (not
    /// [`StoreError::is_retryable`]: a missing object, a refusal of the
    /// credentials, a request the store rejects), or has been tried
    /// [`STORE_ATTEMPTS`] times; waits between tries unless `cancel`.
    pub(crate) async fn with_retries<T, F, Fut>(
        &self,
        what: &str,
        cancel: &CancellationToken,
        mut call: F,
    ) -> Result<T, ArchiveError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let config = &self.options.archiver;
        let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
        let mut attempt = 1;
        loop {
            let err = match call().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if !err.is_retryable() || attempt >= STORE_ATTEMPTS {
                return Err(err.into());
            }
            let delay = backoff.next_delay();
            tracing::warn!(error = %err, attempt, retry_in = ?delay, "object store {what} failed; retrying");
            metrics::ERRORS.with_label_values(&["object_store"]).inc();
            attempt += 1;
            tokio::select! {
                _ = cancel.cancelled() => return Err(ArchiveError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}
