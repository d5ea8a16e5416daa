//! The `Archiver`: one process's handle on the hot store, the object store
//! and the lease, its options and reports, and the continuous archiver's
//! pass (publish, archive settled days, archive late rows, drop expired
//! partitions, collect garbage). The steps live in rooms of their own:
//! `closure` (may a day be sealed, which days wait), `commit` (a day's or
//! late file's seal -> export -> stage -> commit), `stage` (export, upload
//! and verify), `publish` (final keys, manifest, verify), `retention`
//! (dropping partitions, garbage) and `lease` (keeping and giving up the
//! lease).
//!
//! Commit protocol of a day (each step idempotent; a crash anywhere leaves
//! either no commit, and the day is redone with new object keys, or a
//! commit whose publication is finished by the next pass):
//! 1. seal: the day gets a catalog row and its partition a trigger that
//!    copies every later insert into `strata.late_activity`;
//! 2. export under one REPEATABLE READ snapshot, sorted, into spool files;
//! 3. upload each to `_staging/`, download it again and check its bytes'
//!    SHA-256 and its rows' count and content digest against the hot store;
//! 4. commit in one transaction: lease re-checked under a row lock, files
//!    recorded, captured rows the export already saw deleted;
//! 5. publish: copy staged objects to their final keys, write the manifest;
//! 6. once published and older than the hot retention, drop the partition.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use strata_archive::ObjectStore;
use strata_core::config::{ArchiverConfig, DatabaseUrl, ObjectStoreConfig};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::catalog::{self, Lease};
use crate::error::ArchiveError;
use crate::metrics;
use crate::pg::connect;

/// Everything an archiver needs.
#[derive(Debug, Clone)]
pub struct ArchiverOptions {
    /// The hot store.
    pub hot_store: DatabaseUrl,
    /// Producer databases, checked for unshipped events of a day.
    pub sources: Vec<(String, DatabaseUrl)>,
    /// Tuning.
    pub archiver: ArchiverConfig,
    /// Where the archive goes.
    pub object_store: ObjectStoreConfig,
}

/// Counters a caller can poll to show progress of a long run.
#[derive(Debug, Default)]
pub struct Progress {
    /// Rows read from the hot store.
    pub rows_read: Arc<AtomicU64>,
    /// Files uploaded and verified.
    pub files_verified: AtomicU64,
    /// Bytes uploaded.
    pub bytes_uploaded: AtomicU64,
}

/// How a day's archiving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This call committed the day.
    Committed,
    /// The day was already committed (nothing to do, or only publishing).
    AlreadyCommitted,
    /// This call committed a late file for the day.
    LateCommitted,
    /// There were no late rows to archive.
    NothingLate,
}

/// What one call did.
#[derive(Debug, Clone)]
pub struct DayReport {
    /// The day.
    pub day: NaiveDate,
    /// How it ended.
    pub outcome: Outcome,
    /// Rows committed by this call.
    pub rows: u64,
    /// Files committed by this call.
    pub files: u32,
    /// Parquet bytes committed by this call.
    pub bytes: u64,
    /// JSON payload bytes of those rows as stored in the hot store.
    pub payload_bytes: u64,
    /// Wall time of the call.
    pub elapsed: Duration,
}

impl DayReport {
    /// A report of `day` that committed nothing (yet).
    pub(crate) fn nothing(day: NaiveDate, outcome: Outcome) -> Self {
        Self {
            day,
            outcome,
            rows: 0,
            files: 0,
            bytes: 0,
            payload_bytes: 0,
            elapsed: Duration::ZERO,
        }
    }
}

/// Whether a day must also have passed its settle time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closure {
    /// The continuous archiver: day ended + settle + outbox clear.
    Settled,
    /// `strata archive --day`: day ended + outbox clear, settle ignored.
    Now,
}

/// One archiver process's handle on the hot store, the object store and
/// the lease.
pub struct Archiver {
    pub(crate) hot: Client,
    pub(crate) options: ArchiverOptions,
    pub(crate) store: ObjectStore,
    pub(crate) prefix: String,
    pub(crate) lease: Lease,
    pub(crate) progress: Arc<Progress>,
}

impl Archiver {
    /// Connects, builds the object store and takes the lease
    /// ([`ArchiveError::LeaseHeld`] when another archiver has it).
    pub async fn start(options: ArchiverOptions, holder: &str) -> Result<Self, ArchiveError> {
        let timeout = options.archiver.statement_timeout;
        let hot = connect(&options.hot_store, timeout).await?;
        let store = ObjectStore::from_config(&options.object_store).await?;
        let lease =
            catalog::acquire_lease(&hot, holder, options.archiver.lease_ttl, timeout).await?;
        metrics::IS_LEADER.set(1);
        tracing::info!(epoch = lease.epoch, holder, store = %store.describe(), "archiver lease acquired");
        Ok(Self {
            hot,
            prefix: options.object_store.prefix.clone(),
            options,
            store,
            lease,
            progress: Arc::new(Progress::default()),
        })
    }

    /// Whether its hot-store connection has closed (the server restarted
    /// or the network dropped it): every later call on it would fail, so
    /// the daemon starts over with a new connection and a new term.
    pub fn connection_closed(&self) -> bool {
        self.hot.is_closed()
    }

    /// The lease this archiver holds.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The object store.
    pub fn store(&self) -> &ObjectStore {
        &self.store
    }

    /// Live counters of the current run.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The bound of one database call.
    pub(crate) fn timeout(&self) -> Duration {
        self.options.archiver.statement_timeout
    }

    /// One pass of the continuous archiver: publish, archive settled days,
    /// archive late rows, drop expired partitions, collect garbage. Errors
    /// of one day are logged and counted; the pass goes on with the next.
    pub async fn pass(&mut self, cancel: &CancellationToken) -> Result<(), ArchiveError> {
        for status in catalog::all_days(&self.hot).await? {
            if status.needs_publish() {
                self.publish(status.day).await?;
            }
        }
        let (days, oldest_end) = self.pending_days().await?;
        metrics::DAYS_PENDING.set(days.len() as i64);
        let now = catalog::db_now(&self.hot).await?;
        metrics::LAG_SECONDS.set(oldest_end.map_or(0, |end| (now - end).num_seconds().max(0)));
        for day in days {
            if cancel.is_cancelled() {
                return Err(ArchiveError::Cancelled);
            }
            match self.archive_day(day, Closure::Settled, cancel).await {
                Ok(report) => log_report(&report),
                Err(err @ (ArchiveError::Fenced { .. } | ArchiveError::Cancelled)) => {
                    return Err(err)
                }
                Err(err) => {
                    if let Some((day, reason)) = err.not_archivable() {
                        tracing::info!(%day, reason, "day not archivable yet");
                        // Days are archived in order: later days wait for this one.
                        break;
                    }
                    metrics::ERRORS.with_label_values(&[err.label()]).inc();
                    tracing::error!(%day, error = %err, "archiving the day failed; will retry");
                }
            }
        }
        for day in catalog::days_with_late_rows(&self.hot).await? {
            if cancel.is_cancelled() {
                return Err(ArchiveError::Cancelled);
            }
            match self.archive_late(day, cancel).await {
                Ok(report) => log_report(&report),
                Err(err @ (ArchiveError::Fenced { .. } | ArchiveError::Cancelled)) => {
                    return Err(err)
                }
                Err(err) => {
                    metrics::ERRORS.with_label_values(&[err.label()]).inc();
                    tracing::error!(%day, error = %err, "archiving late rows failed; will retry");
                }
            }
        }
        self.drop_expired_partitions().await?;
        self.collect_garbage().await?;
        let (days, _) = self.pending_days().await?;
        metrics::DAYS_PENDING.set(days.len() as i64);
        Ok(())
    }
}

fn log_report(report: &DayReport) {
    if report.outcome == Outcome::Committed || report.outcome == Outcome::LateCommitted {
        tracing::info!(
            day = %report.day,
            outcome = ?report.outcome,
            rows = report.rows,
            files = report.files,
            bytes = report.bytes,
            seconds = report.elapsed.as_secs_f64(),
            "archived"
        );
    }
}
