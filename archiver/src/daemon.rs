//! `strata archiver`: wait for the lease, then archive pass after pass
//! until shut down or fenced; a fenced archiver goes back to waiting.

use strata_core::backoff::Backoff;
use tokio_util::sync::CancellationToken;

use crate::archive::ArchiverOptions;
use crate::error::ArchiveError;
use crate::lease::LeasedArchiver;
use crate::metrics;

/// Runs the continuous archiver until `cancel`. A start that fails for a
/// reason retrying cannot fix (TLS settings, a malformed URL, a database
/// without Strata's schema) ends it with that error, so that a
/// misconfigured archiver exits at start-up instead of logging forever;
/// faults that may pass (the hot store down, the lease held) are waited
/// out.
pub async fn run(options: ArchiverOptions, cancel: CancellationToken) -> Result<(), ArchiveError> {
    metrics::register();
    let holder = strata_pg::holder_id();
    let config = options.archiver.clone();
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    while !cancel.is_cancelled() {
        let mut archiver = match LeasedArchiver::start(options.clone(), &holder, &cancel).await {
            Ok(archiver) => archiver,
            Err(ArchiveError::LeaseHeld { holder, until }) => {
                tracing::debug!(%holder, %until, "another archiver leads; standing by");
                wait(&cancel, config.lease_ttl / 3).await;
                continue;
            }
            Err(ArchiveError::Cancelled) => break,
            Err(err) if !err.is_retryable() => {
                metrics::ERRORS.with_label_values(&[err.label()]).inc();
                return Err(err);
            }
            Err(err) => {
                metrics::ERRORS.with_label_values(&[err.label()]).inc();
                let delay = backoff.next_delay();
                tracing::warn!(error = %err, retry_in = ?delay, "archiver could not start");
                wait(&cancel, delay).await;
                continue;
            }
        };
        // Work stops on shutdown or when the lease is lost.
        let work = archiver.work().clone();
        loop {
            match archiver.pass(&work).await {
                Ok(()) => backoff.reset(),
                Err(ArchiveError::Cancelled) => break,
                Err(err @ ArchiveError::Fenced { .. }) => {
                    tracing::warn!(error = %err, "archiver fenced; standing by");
                    break;
                }
                Err(err) => {
                    metrics::ERRORS.with_label_values(&[err.label()]).inc();
                    let delay = backoff.next_delay();
                    if archiver.connection_closed() {
                        // A crash restart of the hot store: start over
                        // with a new connection (and a new term, so
                        // anything the old one began is fenced).
                        tracing::warn!(error = %err, retry_in = ?delay, "hot store connection lost; reconnecting");
                        wait(&work, delay).await;
                        break;
                    }
                    tracing::error!(error = %err, retry_in = ?delay, "archiver pass failed");
                    wait(&work, delay).await;
                    continue;
                }
            }
            if work.is_cancelled() {
                break;
            }
            wait(&work, config.interval).await;
            if work.is_cancelled() {
                break;
            }
        }
        // A lost lease is not released: it is another archiver's now (or
        // expired).
        archiver.release().await;
    }
    tracing::info!("archiver stopped");
    Ok(())
}

async fn wait(cancel: &CancellationToken, delay: std::time::Duration) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}
