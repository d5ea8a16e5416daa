//! Archiving one day, a late file, publishing, retention and garbage
//! collection: the steps the continuous archiver and `strata archive` run.
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

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use strata_core::backoff::Backoff;
use strata_core::config::{ArchiverConfig, DatabaseUrl, ObjectStoreConfig};
use strata_core::failpoint;
use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

use crate::catalog::{self, bounded, column, Lease};
use crate::error::ArchiveError;
use crate::export::{self, ExportPlan, SpoolFile};
use crate::layout;
use crate::metrics;
use crate::store::ObjectStore;

/// `application_name` of the archiver's sessions.
pub const APPLICATION_NAME: &str = "strata-archiver";

/// Tries of one object-store call before the attempt fails (the day is
/// retried later as a whole).
const STORE_ATTEMPTS: u32 = 8;

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

/// What `verify_day` found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The day.
    pub day: NaiveDate,
    /// Files read back.
    pub files: usize,
    /// Rows decoded.
    pub rows: u64,
    /// Mismatches; empty when the archive is intact.
    pub problems: Vec<String>,
}

/// Whether a day must also have passed its settle time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closure {
    /// The continuous archiver: day ended + settle + outbox clear.
    Settled,
    /// `strata archive --day`: day ended + outbox clear, settle ignored.
    Now,
}

/// A verified file in staging, ready to commit.
struct Staged {
    spool: SpoolFile,
    seq: i32,
    final_key: String,
}

/// The task renewing an archiver's lease.
pub struct LeaseKeeper {
    /// Fires when the lease is lost.
    pub lost: CancellationToken,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    /// Stops renewing and waits until no renewal is in flight.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// One archiver process's handle on the hot store, the object store and
/// the lease.
pub struct Archiver {
    hot: Client,
    options: ArchiverOptions,
    store: ObjectStore,
    prefix: String,
    lease: Lease,
    progress: Arc<Progress>,
}

/// Connects to the hot store with the archiver's session settings.
pub async fn connect(url: &DatabaseUrl, timeout: Duration) -> Result<Client, ArchiveError> {
    use std::str::FromStr;
    let mut config =
        tokio_postgres::Config::from_str(url.expose()).map_err(|e| ArchiveError::Db {
            context: format!("parse {}", url.redacted()),
            source: e,
        })?;
    config
        .application_name(APPLICATION_NAME)
        .connect_timeout(timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3);
    let context = format!("connect to {}", url.redacted());
    let (client, connection) = bounded(&context, timeout, config.connect(NoTls)).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "archiver connection closed");
        }
    });
    Ok(client)
}

/// A holder id unique to this process: host, pid and a random suffix.
pub fn holder_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
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

    /// Keeps the lease alive from its own connection until the keeper is
    /// stopped; its `lost` token fires when the lease is lost (taken over,
    /// or not renewed within its ttl), so in-flight work stops early.
    /// Fencing at commit is what makes a lost lease safe; this only saves
    /// work.
    pub fn keep_lease(&self) -> LeaseKeeper {
        let lost = CancellationToken::new();
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let lease = self.lease.clone();
        let url = self.options.hot_store.clone();
        let config = self.options.archiver.clone();
        let lost_out = lost.clone();
        let task = tokio::spawn(async move {
            let every = config.lease_ttl / 3;
            let mut last_renewed = Instant::now();
            let mut client: Option<Client> = None;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if client.as_ref().is_none_or(Client::is_closed) {
                    client = connect(&url, config.statement_timeout).await.ok();
                }
                let result = match &client {
                    Some(c) => {
                        catalog::renew_lease(c, &lease, config.lease_ttl, config.statement_timeout)
                            .await
                    }
                    None => Err(ArchiveError::Cancelled),
                };
                match result {
                    Ok(()) => last_renewed = Instant::now(),
                    Err(ArchiveError::Fenced { epoch }) => {
                        tracing::warn!(epoch, "archiver lease taken over by another archiver");
                        metrics::IS_LEADER.set(0);
                        lost.cancel();
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "could not renew the archiver lease");
                        if last_renewed.elapsed() >= config.lease_ttl {
                            metrics::IS_LEADER.set(0);
                            lost.cancel();
                            return;
                        }
                    }
                }
            }
        });
        LeaseKeeper {
            lost: lost_out,
            stop,
            task,
        }
    }

    /// Gives the lease up (stop its keeper first, or a renewal in flight
    /// could outlive the release).
    pub async fn release(self) {
        catalog::release_lease(
            &self.hot,
            &self.lease,
            self.options.archiver.statement_timeout,
        )
        .await;
        metrics::IS_LEADER.set(0);
    }

    fn timeout(&self) -> Duration {
        self.options.archiver.statement_timeout
    }

    /// Archives `day` if it is not committed yet (and finishes its
    /// publication if a crash interrupted it).
    pub async fn archive_day(
        &mut self,
        day: NaiveDate,
        closure: Closure,
        cancel: &CancellationToken,
    ) -> Result<DayReport, ArchiveError> {
        let started = Instant::now();
        let mut report = DayReport {
            day,
            outcome: Outcome::AlreadyCommitted,
            rows: 0,
            files: 0,
            bytes: 0,
            payload_bytes: 0,
            elapsed: Duration::ZERO,
        };
        if let Some(status) = catalog::day_status(&self.hot, day).await? {
            if status.state == "committed" {
                self.publish(day).await?;
                report.elapsed = started.elapsed();
                return Ok(report);
            }
        }
        self.check_closed(day, closure).await?;
        self.seal(day).await?;
        // The day is read through the parent table, bounded by the day,
        // inside the export's snapshot: whether the partition exists is
        // decided by that snapshot too. (Checking for the partition first
        // lost events: a back-dated event could create it between the check
        // and the snapshot, the seal trigger captured it as late, the
        // export read nothing, and the commit deleted the capture as
        // archived.) Pruning keeps this a scan of one partition.
        failpoint::hit("archiver.before_export_snapshot");
        let select = format!(
            "SELECT {} FROM strata.activity \
             WHERE occurred_at >= '{}'::timestamptz AND occurred_at < '{}'::timestamptz \
             ORDER BY user_id, occurred_at, event_id",
            layout::COLUMNS.join(", "),
            day_start(day).format("%Y-%m-%d %H:%M:%S+00"),
            day_end(day).format("%Y-%m-%d %H:%M:%S+00"),
        );
        let (snapshot, staged, totals) = self.export_and_stage(day, 0, select, cancel).await?;
        failpoint::hit("archiver.before_commit");
        if cancel.is_cancelled() {
            return Err(ArchiveError::Cancelled);
        }
        let committed = self.commit(day, "day", &snapshot, &staged).await?;
        failpoint::hit("archiver.after_commit");
        if committed {
            report.outcome = Outcome::Committed;
            report.rows = totals.rows;
            report.payload_bytes = totals.payload_bytes;
            report.files = staged.len() as u32;
            report.bytes = staged.iter().map(|s| s.spool.bytes).sum();
        }
        self.publish(day).await?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Archives the rows that reached `day` after its export, as one more
    /// file (G6).
    pub async fn archive_late(
        &mut self,
        day: NaiveDate,
        cancel: &CancellationToken,
    ) -> Result<DayReport, ArchiveError> {
        let started = Instant::now();
        let status = catalog::day_status(&self.hot, day)
            .await?
            .filter(|s| s.state == "committed")
            .ok_or(ArchiveError::NotCommitted(day))?;
        let export_snapshot = status
            .export_snapshot
            .ok_or_else(|| ArchiveError::NotCommitted(day))?;
        check_snapshot_literal(&export_snapshot)?;
        let row = self
            .hot
            .query_one(
                "SELECT coalesce(max(seq) + 1, 0) FROM strata.archive_files WHERE day = $1",
                &[&day],
            )
            .await
            .map_err(ArchiveError::db("read the day's files"))?;
        let next_seq: i32 = column(&row, 0, "the day's next file number")?;
        let select = format!(
            "SELECT {} FROM strata.late_activity
              WHERE day = '{}' AND NOT pg_visible_in_snapshot(xid, '{export_snapshot}'::pg_snapshot)
              ORDER BY user_id, occurred_at, event_id",
            layout::COLUMNS.join(", "),
            day.format("%Y-%m-%d")
        );
        let (snapshot, staged, totals) =
            self.export_and_stage(day, next_seq, select, cancel).await?;
        let mut report = DayReport {
            day,
            outcome: Outcome::NothingLate,
            rows: 0,
            files: 0,
            bytes: 0,
            payload_bytes: 0,
            elapsed: Duration::ZERO,
        };
        if staged.is_empty() {
            report.elapsed = started.elapsed();
            return Ok(report);
        }
        failpoint::hit("archiver.before_commit");
        if cancel.is_cancelled() {
            return Err(ArchiveError::Cancelled);
        }
        if self.commit(day, "late", &snapshot, &staged).await? {
            report.outcome = Outcome::LateCommitted;
            report.rows = totals.rows;
            report.payload_bytes = totals.payload_bytes;
            report.files = staged.len() as u32;
            report.bytes = staged.iter().map(|s| s.spool.bytes).sum();
        }
        failpoint::hit("archiver.after_commit");
        self.publish(day).await?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// The closure rule: the day has ended (and settled, for
    /// [`Closure::Settled`]), and no source's outbox holds an unshipped
    /// event that occurred during the day. (Unshipped events of earlier
    /// days do not hold it: those of archived days become late rows.)
    async fn check_closed(&self, day: NaiveDate, closure: Closure) -> Result<(), ArchiveError> {
        let now = catalog::db_now(&self.hot).await?;
        let end = day_end(day);
        if now < end {
            return Err(ArchiveError::NotArchivable {
                day,
                reason: format!("it has not ended yet (ends {end})"),
            });
        }
        let settle = TimeDelta::from_std(self.options.archiver.settle).unwrap_or(TimeDelta::MAX);
        if closure == Closure::Settled && now < end + settle {
            return Err(ArchiveError::NotArchivable {
                day,
                reason: format!("it settles until {}", end + settle),
            });
        }
        for (name, url) in &self.options.sources {
            let oldest = oldest_unshipped(url, day, self.timeout())
                .await
                .map_err(|err| ArchiveError::NotArchivable {
                    day,
                    reason: format!("cannot check source {name:?} for unshipped events: {err}"),
                })?;
            if let Some(oldest) = oldest {
                return Err(ArchiveError::NotArchivable {
                    day,
                    reason: format!(
                        "source {name:?} still holds unshipped events (oldest occurred at {oldest})"
                    ),
                });
            }
        }
        Ok(())
    }

    async fn seal(&mut self, day: NaiveDate) -> Result<(), ArchiveError> {
        let timeout = self.timeout();
        let tx = bounded("begin seal", timeout, self.hot.transaction()).await?;
        bounded(
            "seal the day",
            timeout,
            tx.execute(
                "INSERT INTO strata.archive_days (day, state) VALUES ($1, 'sealed')
                 ON CONFLICT (day) DO NOTHING",
                &[&day],
            ),
        )
        .await?;
        // Waits for in-flight writers of the partition (bounded by the
        // statement timeout; lock_timeout keeps relays from queueing long
        // behind us).
        bounded(
            "install the late-event trigger",
            timeout,
            tx.batch_execute(&format!(
                "SET LOCAL lock_timeout = '{}ms'",
                timeout.as_millis()
            )),
        )
        .await?;
        bounded(
            "install the late-event trigger",
            timeout,
            tx.execute("SELECT strata.seal_day_partition($1)", &[&day]),
        )
        .await?;
        bounded("commit seal", timeout, tx.commit()).await
    }

    /// Exports `select` under a fresh snapshot; uploads and verifies each
    /// file as it is finished. Returns the snapshot and the staged files.
    async fn export_and_stage(
        &self,
        day: NaiveDate,
        first_seq: i32,
        select: String,
        cancel: &CancellationToken,
    ) -> Result<(String, Vec<Staged>, export::ExportTotals), ArchiveError> {
        let spool_root = if self.options.archiver.spool_dir.is_empty() {
            std::env::temp_dir()
        } else {
            PathBuf::from(&self.options.archiver.spool_dir)
        };
        std::fs::create_dir_all(&spool_root).map_err(ArchiveError::spool(&spool_root))?;
        let spool = tempfile::Builder::new()
            .prefix("strata-archive-")
            .tempdir_in(&spool_root)
            .map_err(ArchiveError::spool(&spool_root))?;
        let client = connect(&self.options.hot_store, self.timeout()).await?;
        bounded(
            "begin the export",
            self.timeout(),
            client.batch_execute(
                "SET statement_timeout = 0;
                 BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            ),
        )
        .await?;
        let row = bounded(
            "take the export snapshot",
            self.timeout(),
            client.query_one("SELECT pg_current_snapshot()::text", &[]),
        )
        .await?;
        let snapshot: String = column(&row, 0, "the export snapshot")?;
        check_snapshot_literal(&snapshot)?;
        let attempt = format!("e{}-{:08x}", self.lease.epoch, rand::random::<u32>());
        let plan = ExportPlan {
            select,
            spool_dir: spool.path().to_path_buf(),
            max_file_rows: self.options.archiver.max_file_rows,
            properties: layout::writer_properties(self.options.archiver.row_group_rows),
            rows_read: self.progress.rows_read.clone(),
        };
        let (files_tx, mut files_rx) = mpsc::channel::<SpoolFile>(1);
        let exporting = export::export(&client, plan, files_tx);
        let staging = async {
            let mut staged = Vec::new();
            while let Some(file) = files_rx.recv().await {
                let seq = first_seq + file.index as i32;
                let final_key = layout::data_key(&self.prefix, day, seq as u32, &attempt);
                self.stage(&file, &final_key, cancel).await?;
                staged.push(Staged {
                    spool: file,
                    seq,
                    final_key,
                });
            }
            Ok::<_, ArchiveError>(staged)
        };
        let (exported, staged) = tokio::select! {
            _ = cancel.cancelled() => return Err(ArchiveError::Cancelled),
            results = async { tokio::join!(exporting, staging) } => results,
        };
        // An upload failure stops the export early: report it, not the
        // "uploader stopped" it causes.
        let staged = staged?;
        let totals = exported?;
        metrics::ROWS_EXPORTED.inc_by(totals.rows);
        let _ = client.batch_execute("COMMIT").await;
        Ok((snapshot, staged, totals))
    }

    /// Uploads one spool file to staging and verifies the upload.
    async fn stage(
        &self,
        file: &SpoolFile,
        final_key: &str,
        cancel: &CancellationToken,
    ) -> Result<(), ArchiveError> {
        failpoint::hit("archiver.after_local_write");
        inject_upload_faults(&file.path)?;
        let staging = layout::staging_key(&self.prefix, final_key);
        let uploaded = self
            .with_retries("upload", cancel, || {
                self.store.put_file(&staging, &file.path)
            })
            .await?;
        metrics::BYTES_UPLOADED.inc_by(uploaded);
        self.progress
            .bytes_uploaded
            .fetch_add(uploaded, Ordering::Relaxed);
        failpoint::hit("archiver.after_upload");
        let check = self.read_back(&staging, &file.path, cancel).await;
        let problem = match check {
            Ok(check) if check.rows != file.rows => Some(format!(
                "{} rows read back, {} written",
                check.rows, file.rows
            )),
            Ok(check) if check.sha256 != file.sha256 => {
                Some("bytes differ from the file written (SHA-256 mismatch)".to_string())
            }
            Ok(check) if check.content_sha256 != file.content_sha256 => {
                Some("rows differ from the hot store's (content digest mismatch)".to_string())
            }
            Ok(_) => None,
            Err(ArchiveError::Parquet(message)) => Some(format!("unreadable: {message}")),
            Err(err) => return Err(err),
        };
        if let Some(message) = problem {
            metrics::VERIFICATION_FAILURES.inc();
            let _ = self.store.delete(&staging).await;
            return Err(ArchiveError::Verification {
                key: staging,
                message,
            });
        }
        let _ = std::fs::remove_file(&file.path);
        self.progress.files_verified.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Downloads `key` next to `near` and reads it completely.
    async fn read_back(
        &self,
        key: &str,
        near: &std::path::Path,
        cancel: &CancellationToken,
    ) -> Result<export::FileCheck, ArchiveError> {
        let download = near.with_extension("download");
        self.with_retries("download", cancel, || {
            self.store.get_to_file(key, &download)
        })
        .await?;
        let path = download.clone();
        let check = tokio::task::spawn_blocking(move || export::check_file(&path))
            .await
            .map_err(|e| ArchiveError::Parquet(format!("reader thread: {e}")))?;
        let _ = std::fs::remove_file(&download);
        check
    }

    async fn with_retries<T, F, Fut>(
        &self,
        what: &str,
        cancel: &CancellationToken,
        mut call: F,
    ) -> Result<T, ArchiveError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::store::StoreError>>,
    {
        let config = &self.options.archiver;
        let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(err) if err.not_found || attempt >= STORE_ATTEMPTS => return Err(err.into()),
                Err(err) => {
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
    }

    /// The commit point. Returns false when the day was committed by
    /// another attempt meanwhile (this attempt's files stay garbage).
    async fn commit(
        &mut self,
        day: NaiveDate,
        origin: &str,
        snapshot: &str,
        staged: &[Staged],
    ) -> Result<bool, ArchiveError> {
        let timeout = self.timeout();
        let lease = self.lease.clone();
        let tx = bounded("begin commit", timeout, self.hot.transaction()).await?;
        catalog::fence(&tx, &lease).await?;
        let row = bounded(
            "lock the day",
            timeout,
            tx.query_opt(
                "SELECT state FROM strata.archive_days WHERE day = $1 FOR UPDATE",
                &[&day],
            ),
        )
        .await?;
        let state: Option<String> = row
            .as_ref()
            .map(|r| column::<String>(r, 0, "the day's catalog state"))
            .transpose()?;
        let expected = if origin == "day" {
            "sealed"
        } else {
            "committed"
        };
        if state.as_deref() != Some(expected) {
            tracing::warn!(%day, ?state, origin, "day changed under this attempt; not committing");
            return Ok(false);
        }
        let mut rows = 0i64;
        let mut bytes = 0i64;
        for file in staged {
            let s = &file.spool;
            rows += s.rows as i64;
            bytes += s.bytes as i64;
            bounded(
                "record a file",
                timeout,
                tx.execute(
                    "INSERT INTO strata.archive_files
                        (day, object_key, origin, seq, rows, bytes, min_user_id, max_user_id,
                         sha256, content_sha256, epoch)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    &[
                        &day,
                        &file.final_key,
                        &origin,
                        &file.seq,
                        &(s.rows as i64),
                        &(s.bytes as i64),
                        &s.min_user_id,
                        &s.max_user_id,
                        &s.sha256,
                        &s.content_sha256,
                        &lease.epoch,
                    ],
                ),
            )
            .await?;
        }
        bounded(
            "commit the day",
            timeout,
            tx.execute(
                "UPDATE strata.archive_days
                    SET state = 'committed',
                        export_snapshot = CASE WHEN $2 = 'day' THEN $3::text::pg_snapshot
                                               ELSE export_snapshot END,
                        committed_at = now(),
                        committed_epoch = $4,
                        rows = rows + $5,
                        bytes = bytes + $6,
                        files = files + $7,
                        version = version + 1
                  WHERE day = $1",
                &[
                    &day,
                    &origin,
                    &snapshot,
                    &lease.epoch,
                    &rows,
                    &bytes,
                    &(staged.len() as i32),
                ],
            ),
        )
        .await?;
        // Captured rows this export saw are in the archive now.
        bounded(
            "clear archived late rows",
            timeout,
            tx.execute(
                "DELETE FROM strata.late_activity
                  WHERE day = $1 AND pg_visible_in_snapshot(xid, $2::text::pg_snapshot)",
                &[&day, &snapshot],
            ),
        )
        .await?;
        bounded("commit", timeout, tx.commit()).await?;
        metrics::ROWS_ARCHIVED.inc_by(rows as u64);
        metrics::COMMITS.with_label_values(&[origin]).inc();
        tracing::info!(%day, origin, rows, bytes, files = staged.len(), epoch = lease.epoch, "archive commit");
        Ok(true)
    }

    /// Makes a committed day readable by datalake engines: every catalog
    /// file at its final key, and the manifest. Idempotent.
    pub async fn publish(&mut self, day: NaiveDate) -> Result<(), ArchiveError> {
        let Some(status) = catalog::day_status(&self.hot, day).await? else {
            return Ok(());
        };
        if status.state != "committed" || status.manifest_version >= status.version {
            return Ok(());
        }
        let files = catalog::day_files(&self.hot, day).await?;
        let never = CancellationToken::new();
        for file in &files {
            let staging = layout::staging_key(&self.prefix, &file.key);
            match self.store.size(&file.key).await {
                Ok(size) if size == file.bytes as u64 => {}
                Ok(size) => {
                    return Err(ArchiveError::Verification {
                        key: file.key.clone(),
                        message: format!(
                            "{size} bytes at the final key, catalog says {}",
                            file.bytes
                        ),
                    })
                }
                Err(err) if err.not_found => {
                    self.with_retries("copy", &never, || self.store.copy(&staging, &file.key))
                        .await?;
                    let size = self.store.size(&file.key).await?;
                    if size != file.bytes as u64 {
                        return Err(ArchiveError::Verification {
                            key: file.key.clone(),
                            message: format!("copy has {size} bytes, catalog says {}", file.bytes),
                        });
                    }
                }
                Err(err) => return Err(err.into()),
            }
            let _ = self.store.delete(&staging).await;
        }
        let manifest = serde_json::json!({
            "format": "strata-archive-manifest/1",
            "day": day.format("%Y-%m-%d").to_string(),
            "version": status.version,
            "rows": status.rows,
            "bytes": status.bytes,
            "files": files,
        });
        let body = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| ArchiveError::Parquet(format!("manifest: {e}")))?;
        let manifest_key = layout::manifest_key(&self.prefix, day);
        // A former leader must not overwrite a newer manifest; this leaves
        // a window of one PUT (see README, known limits).
        catalog::fence(&self.hot, &self.lease).await?;
        self.with_retries("put manifest", &never, || {
            self.store.put_bytes(&manifest_key, body.clone())
        })
        .await?;
        bounded(
            "record the manifest",
            self.timeout(),
            self.hot.execute(
                "UPDATE strata.archive_days SET manifest_version = $2
                  WHERE day = $1 AND manifest_version < $2",
                &[&day, &status.version],
            ),
        )
        .await?;
        Ok(())
    }

    /// Re-reads every committed file of `day` from the object store and
    /// checks it against the catalog.
    pub async fn verify_day(&self, day: NaiveDate) -> Result<VerifyReport, ArchiveError> {
        let status = catalog::day_status(&self.hot, day)
            .await?
            .filter(|s| s.state == "committed")
            .ok_or(ArchiveError::NotCommitted(day))?;
        let files = catalog::day_files(&self.hot, day).await?;
        let scratch = tempfile::tempdir().map_err(ArchiveError::spool(&std::env::temp_dir()))?;
        let never = CancellationToken::new();
        let mut report = VerifyReport {
            day,
            files: files.len(),
            rows: 0,
            problems: Vec::new(),
        };
        for file in &files {
            let local = scratch.path().join(format!("{}.parquet", file.seq));
            match self.read_back(&file.key, &local, &never).await {
                Ok(check) => {
                    report.rows += check.rows;
                    if check.rows != file.rows as u64 {
                        report.problems.push(format!(
                            "{}: {} rows, catalog says {}",
                            file.key, check.rows, file.rows
                        ));
                    }
                    if check.sha256 != file.sha256 {
                        report
                            .problems
                            .push(format!("{}: SHA-256 differs from the catalog", file.key));
                    }
                    if check.content_sha256 != file.content_sha256 {
                        report.problems.push(format!(
                            "{}: content digest differs from the catalog",
                            file.key
                        ));
                    }
                }
                Err(ArchiveError::Parquet(message)) => {
                    report
                        .problems
                        .push(format!("{}: unreadable: {message}", file.key));
                }
                Err(ArchiveError::Store(err)) => {
                    report.problems.push(format!("{}: {err}", file.key));
                }
                Err(err) => return Err(err),
            }
        }
        if report.rows != status.rows as u64 {
            report.problems.push(format!(
                "files hold {} rows, the day's catalog entry says {}",
                report.rows, status.rows
            ));
        }
        if !report.problems.is_empty() {
            metrics::VERIFICATION_FAILURES.inc();
        }
        Ok(report)
    }

    /// Drops hot partitions of days that are committed, published, older
    /// than the retention, and have no late rows waiting. Returns the days.
    pub async fn drop_expired_partitions(&mut self) -> Result<Vec<NaiveDate>, ArchiveError> {
        let now = catalog::db_now(&self.hot).await?;
        let retention = TimeDelta::days(i64::from(self.options.archiver.hot_retention_days));
        let rows = self
            .hot
            .query(
                "SELECT c.relname, i.inhrelid IS NOT NULL, coalesce(i.inhdetachpending, false)
                   FROM pg_class c
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
                  WHERE n.nspname = 'strata' AND c.relkind = 'r'
                    AND c.relname ~ '^activity_[0-9]{8}$'",
                &[],
            )
            .await
            .map_err(ArchiveError::db("list hot partitions"))?;
        let mut dropped = Vec::new();
        for row in rows {
            let name: String = column(&row, 0, "a hot partition")?;
            let attached: bool = column(&row, 1, "a hot partition")?;
            let detach_pending: bool = column(&row, 2, "a hot partition")?;
            let Some(day) = name
                .strip_prefix("activity_")
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y%m%d").ok())
            else {
                continue;
            };
            if day_end(day) + retention > now {
                continue;
            }
            let Some(status) = catalog::day_status(&self.hot, day).await? else {
                continue;
            };
            let late = self
                .hot
                .query_one(
                    "SELECT EXISTS (SELECT FROM strata.late_activity WHERE day = $1)",
                    &[&day],
                )
                .await
                .map_err(ArchiveError::db("check late rows"))?;
            let waiting: bool = column(&late, 0, "whether late rows wait")?;
            if status.state != "committed" || status.manifest_version < status.version || waiting {
                continue;
            }
            failpoint::hit("archiver.before_drop");
            // DETACH CONCURRENTLY never blocks the relays' inserts into
            // other days; a detach a crash interrupted is finalized.
            let detach = if detach_pending {
                format!("ALTER TABLE strata.activity DETACH PARTITION strata.{name} FINALIZE")
            } else {
                format!("ALTER TABLE strata.activity DETACH PARTITION strata.{name} CONCURRENTLY")
            };
            if attached {
                self.hot
                    .batch_execute(&detach)
                    .await
                    .map_err(ArchiveError::db(format!("detach {name}")))?;
            }
            self.hot
                .batch_execute(&format!("DROP TABLE IF EXISTS strata.{name}"))
                .await
                .map_err(ArchiveError::db(format!("drop {name}")))?;
            self.hot
                .execute(
                    "UPDATE strata.archive_days SET partition_dropped_at = now() WHERE day = $1",
                    &[&day],
                )
                .await
                .map_err(ArchiveError::db("record the drop"))?;
            metrics::PARTITIONS_DROPPED.inc();
            tracing::info!(%day, partition = %name, "hot partition dropped after retention");
            dropped.push(day);
        }
        Ok(dropped)
    }

    /// Deletes staged objects no commit needs any more (older than
    /// `orphan_grace`) and aborts abandoned multipart uploads.
    pub async fn collect_garbage(&self) -> Result<usize, ArchiveError> {
        let grace = self.options.archiver.orphan_grace;
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        // Staged files of committed days not yet published are still needed.
        let unpublished = self
            .hot
            .query(
                "SELECT f.object_key FROM strata.archive_files f
                   JOIN strata.archive_days d USING (day)
                  WHERE d.manifest_version < d.version",
                &[],
            )
            .await
            .map_err(ArchiveError::db("list unpublished files"))?;
        let mut needed: Vec<String> = Vec::with_capacity(unpublished.len());
        for r in &unpublished {
            let key: &str = column(r, 0, "an unpublished file's key")?;
            needed.push(layout::staging_key(&self.prefix, key));
        }
        let staging = layout::staging_dir(&self.prefix);
        let mut deleted = 0;
        for object in self.store.list(&staging).await? {
            let old = object.last_modified.is_some_and(|t| t < cutoff);
            if old && !needed.contains(&object.key) {
                self.store.delete(&object.key).await?;
                deleted += 1;
            }
        }
        let aborted = self
            .store
            .abort_abandoned_uploads(&staging, self.options.object_store.abandoned_upload_after)
            .await?;
        if deleted + aborted > 0 {
            tracing::info!(deleted, aborted, "archive garbage collected");
        }
        Ok(deleted + aborted)
    }

    /// Days a continuous archiver should archive now, oldest first, and the
    /// oldest unarchived day's end (for the lag metric).
    pub async fn pending_days(
        &self,
    ) -> Result<(Vec<NaiveDate>, Option<DateTime<Utc>>), ArchiveError> {
        let now = catalog::db_now(&self.hot).await?;
        let settle = TimeDelta::from_std(self.options.archiver.settle).unwrap_or(TimeDelta::MAX);
        let catalog_days = catalog::all_days(&self.hot).await?;
        let mut days: Vec<NaiveDate> = catalog::partition_days(&self.hot)
            .await?
            .into_iter()
            .chain(
                catalog_days
                    .iter()
                    .filter(|s| s.state == "sealed")
                    .map(|s| s.day),
            )
            .filter(|day| {
                !catalog_days
                    .iter()
                    .any(|s| s.day == *day && s.state == "committed")
            })
            .filter(|day| day_end(*day) <= now)
            .collect();
        days.sort();
        days.dedup();
        let oldest_end = days.first().map(|d| day_end(*d));
        days.retain(|day| day_end(*day) + settle <= now);
        Ok((days, oldest_end))
    }

    /// One pass of the continuous archiver: publish, archive settled days,
    /// archive late rows, drop expired partitions, collect garbage. Errors
    /// of one day are logged and counted; the pass goes on with the next.
    pub async fn pass(&mut self, cancel: &CancellationToken) -> Result<(), ArchiveError> {
        for status in catalog::all_days(&self.hot).await? {
            if status.state == "committed" && status.manifest_version < status.version {
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
                Err(ArchiveError::NotArchivable { day, reason }) => {
                    tracing::info!(%day, reason, "day not archivable yet");
                    // Days are archived in order: later days wait for this one.
                    break;
                }
                Err(err @ (ArchiveError::Fenced { .. } | ArchiveError::Cancelled)) => {
                    return Err(err)
                }
                Err(err) => {
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

/// Name of the hot partition of `day`.
pub fn partition_name(day: NaiveDate) -> String {
    format!("activity_{}", day.format("%Y%m%d"))
}

/// The instant `day` (UTC) starts.
pub fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// The instant `day` (UTC) ends.
pub fn day_end(day: NaiveDate) -> DateTime<Utc> {
    let next = day.succ_opt().unwrap_or(day);
    next.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// Oldest `occurred_at` among a source's unshipped outbox rows of `day`.
/// Only the day's own rows count: rows of earlier days are late rows of
/// days already archived, and rows far outside any day are dead-lettered
/// by the relay. Bounding the scan also keeps out an `occurred_at` that
/// plain SQL can insert but chrono cannot represent (`-infinity`, a date
/// BC), which would not decode.
async fn oldest_unshipped(
    url: &DatabaseUrl,
    day: NaiveDate,
    timeout: Duration,
) -> Result<Option<DateTime<Utc>>, ArchiveError> {
    let client = connect(url, timeout).await?;
    let (start, end) = (day_start(day), day_end(day));
    let row = bounded(
        "read the outbox",
        timeout,
        client.query_one(
            "SELECT min(occurred_at) FROM strata_outbox.events
              WHERE occurred_at >= $1 AND occurred_at < $2",
            &[&start, &end],
        ),
    )
    .await?;
    column(&row, 0, "the outbox's oldest occurred_at")
}

/// Snapshots are inlined into COPY (which takes no parameters): accept
/// only what `pg_current_snapshot()` prints.
fn check_snapshot_literal(snapshot: &str) -> Result<(), ArchiveError> {
    if !snapshot.is_empty()
        && snapshot
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b':' || b == b',')
    {
        Ok(())
    } else {
        Err(ArchiveError::Parquet(format!(
            "unexpected snapshot text {snapshot:?}"
        )))
    }
}

/// Test-only faults between writing a file and uploading it.
fn inject_upload_faults(path: &std::path::Path) -> Result<(), ArchiveError> {
    if failpoint::fires("archiver.truncate_upload") {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(ArchiveError::spool(path))?;
        let len = file.metadata().map_err(ArchiveError::spool(path))?.len();
        file.set_len(len / 2).map_err(ArchiveError::spool(path))?;
        eprintln!("strata: failpoint archiver.truncate_upload fired");
    }
    if failpoint::fires("archiver.corrupt_upload") {
        let mut bytes = std::fs::read(path).map_err(ArchiveError::spool(path))?;
        let middle = bytes.len() / 2;
        if let Some(byte) = bytes.get_mut(middle) {
            *byte ^= 0x5a;
        }
        std::fs::write(path, bytes).map_err(ArchiveError::spool(path))?;
        eprintln!("strata: failpoint archiver.corrupt_upload fired");
    }
    Ok(())
}
