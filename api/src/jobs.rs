//! Export jobs (`StartExport`/`GetExport`): rows in `strata.export_jobs`,
//! run by a worker in every API process. A job is claimed with a lease that
//! the runner renews; when a process dies its jobs are taken over once the
//! lease lapses and written again from the start (the file's key is the
//! job's, so the rerun replaces a partial upload: uploads are atomic
//! anyway). Job state therefore survives API restarts.
//!
//! The same worker deletes job files once `api.export_retention` has passed
//! since their job finished, and marks those jobs `expired`. Spool files are
//! created with mode 0600, and anew for each attempt.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::export::{self, ExportError, Format, JOB_LEASE, JOB_MAX_ATTEMPTS};
use crate::history::{HistoryReader, Query};
use crate::pool::Pool;
use strata_archiver::ObjectStore;

/// A job as stored.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its id.
    pub export_id: Uuid,
    /// Who started it.
    pub principal: String,
    /// Whose history.
    pub user_id: String,
    /// `pending`, `running`, `done`, `failed` or `expired` (done, and its
    /// file deleted after the retention).
    pub state: String,
    /// Where the file goes.
    pub object_key: String,
    /// Events written (so far).
    pub events: i64,
    /// Bytes written (so far).
    pub bytes: i64,
    /// Why it failed.
    pub error: String,
    /// When it finished (done or failed).
    pub finished_at: Option<DateTime<Utc>>,
}

impl Job {
    /// Whether its file is gone or about to go: marked expired, or done
    /// longer ago than `retention` (the sweep may not have run yet).
    pub fn is_expired(&self, retention: Duration, now: DateTime<Utc>) -> bool {
        match self.state.as_str() {
            STATE_EXPIRED => true,
            "done" => match (self.finished_at, chrono::Duration::from_std(retention)) {
                (Some(finished), Ok(retention)) => now - finished >= retention,
                _ => false,
            },
            _ => false,
        }
    }
}

/// The state of a done job whose file the retention sweep deleted.
pub const STATE_EXPIRED: &str = "expired";
/// How often each API process looks for expired export files, at most
/// (a retention shorter than twice this is swept every half retention).
pub const EXPIRE_INTERVAL: Duration = Duration::from_secs(60);
/// Most jobs one sweep expires (the rest wait for the next).
pub const EXPIRE_BATCH: i64 = 100;

/// What a new job exports.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Who starts it.
    pub principal: String,
    /// Whose history.
    pub user_id: String,
    /// Range start (inclusive).
    pub from: DateTime<Utc>,
    /// Range end (exclusive).
    pub to: DateTime<Utc>,
    /// Kinds filter (empty: all).
    pub kinds: Vec<String>,
    /// File format.
    pub format: Format,
}

const JOB_COLUMNS: &str =
    "export_id, principal, user_id, state, object_key, events, bytes, error, finished_at";

/// A job row; a value that does not decode is an error, not the panic of
/// `Row::get`.
fn job_from_row(row: &tokio_postgres::Row) -> Result<Job, tokio_postgres::Error> {
    Ok(Job {
        export_id: row.try_get(0)?,
        principal: row.try_get(1)?,
        user_id: row.try_get(2)?,
        state: row.try_get(3)?,
        object_key: row.try_get(4)?,
        events: row.try_get(5)?,
        bytes: row.try_get(6)?,
        error: row.try_get(7)?,
        finished_at: row.try_get(8)?,
    })
}

/// Records a new pending job, its file under `prefix`, unless its principal
/// already has `max_open` unfinished jobs (`None`). Count and insert run
/// under a per-principal transaction lock, so concurrent StartExport calls,
/// in any API process, cannot both pass the check.
pub async fn create(
    pool: &Pool,
    spec: &JobSpec,
    prefix: &str,
    max_open: u32,
) -> Result<Option<Job>, Box<dyn std::error::Error + Send + Sync>> {
    let id = Uuid::now_v7();
    let key = format!(
        "{}/{id}.{}",
        prefix.trim_end_matches('/'),
        spec.format.name()
    );
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('strata.export_jobs.' || $1, 0))",
        &[&spec.principal],
    )
    .await?;
    let open: i64 = tx
        .query_one(
            "SELECT count(*) FROM strata.export_jobs
              WHERE principal = $1 AND state IN ('pending', 'running')",
            &[&spec.principal],
        )
        .await?
        .try_get(0)?;
    if open >= i64::from(max_open) {
        return Ok(None);
    }
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO strata.export_jobs
                   (export_id, principal, user_id, range_from, range_to, kinds, format,
                    state, object_key)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)
                 RETURNING {JOB_COLUMNS}"
            ),
            &[
                &id,
                &spec.principal,
                &spec.user_id,
                &spec.from,
                &spec.to,
                &spec.kinds,
                &spec.format.name(),
                &key,
            ],
        )
        .await?;
    let job = job_from_row(&row)?;
    tx.commit().await?;
    Ok(Some(job))
}

/// One job by id.
pub async fn get(
    pool: &Pool,
    id: Uuid,
) -> Result<Option<Job>, Box<dyn std::error::Error + Send + Sync>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {JOB_COLUMNS} FROM strata.export_jobs WHERE export_id = $1"),
            &[&id],
        )
        .await?;
    Ok(row.as_ref().map(job_from_row).transpose()?)
}

/// Jobs of `principal` not finished yet (they count against its export
/// concurrency limit, in every API process).
pub async fn open_count(
    pool: &Pool,
    principal: &str,
) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT count(*) FROM strata.export_jobs
              WHERE principal = $1 AND state IN ('pending', 'running')",
            &[&principal],
        )
        .await?;
    Ok(u32::try_from(row.try_get::<_, i64>(0)?).unwrap_or(u32::MAX))
}

/// A new, empty spool file at `path`, readable and writable by this user
/// only (0600; the umask can only take bits away). Created anew: a file
/// left by a crashed attempt would keep its old mode if reopened, and
/// `create_new` (O_EXCL) refuses to follow a link planted at the path in
/// a shared temp dir.
async fn create_spool_file(path: &std::path::Path) -> std::io::Result<tokio::fs::File> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
}

fn spool_error(err: std::io::Error) -> ExportError {
    ExportError::Sink(format!("spool file: {err}"))
}

/// A job's spool file, renewing the job's lease as it grows.
struct FileSink<'a> {
    worker: &'a Worker,
    export_id: Uuid,
    file: tokio::fs::File,
    last_renewal: tokio::time::Instant,
}

impl export::Sink for FileSink<'_> {
    async fn accept(
        &mut self,
        chunk: Vec<u8>,
        so_far: export::ExportTotals,
    ) -> Result<bool, ExportError> {
        use tokio::io::AsyncWriteExt;
        self.file.write_all(&chunk).await.map_err(spool_error)?;
        if self.last_renewal.elapsed() > JOB_LEASE / 3 {
            self.last_renewal = tokio::time::Instant::now();
            self.worker.renew(self.export_id, so_far).await?;
        }
        Ok(true)
    }
}

/// What the worker needs.
pub struct Worker {
    /// Database (API role).
    pub pool: Pool,
    /// The history reader.
    pub reader: Arc<HistoryReader>,
    /// Where files go.
    pub store: ObjectStore,
    /// Wakes the worker when a job is created here.
    pub wake: Arc<Notify>,
    /// Scratch directory for files being written.
    pub spool_dir: std::path::PathBuf,
    /// Job files are deleted this long after their job finished.
    pub retention: Duration,
}

struct Claimed {
    export_id: Uuid,
    user_id: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    kinds: Vec<String>,
    format: String,
    object_key: String,
    attempts: i32,
}

impl Worker {
    /// Claims and runs jobs, and deletes expired job files, until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        tokio::join!(self.run_jobs(&cancel), self.run_expiry(&cancel));
    }

    /// Deletes expired job files every [`EXPIRE_INTERVAL`] (or half the
    /// retention, if shorter) until `cancel`.
    async fn run_expiry(&self, cancel: &CancellationToken) {
        loop {
            match self.expire().await {
                Ok(0) => {}
                Ok(expired) => tracing::info!(expired, "export jobs: expired files deleted"),
                Err(err) => {
                    tracing::warn!(error = %err, "export jobs: cannot expire old files");
                    crate::metrics::errors("export_expire");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(EXPIRE_INTERVAL.min(self.retention / 2).max(Duration::from_millis(100))) => {}
            }
        }
    }

    /// One sweep: deletes the files of up to [`EXPIRE_BATCH`] done jobs
    /// that finished more than `retention` ago and marks them expired;
    /// returns how many. No connection is held while files are deleted:
    /// the due jobs are read, the files deleted, then the jobs marked (only
    /// if still done). Sweepers in several API processes may delete the
    /// same file twice, which is harmless; GetExport refuses a done job past
    /// its retention by time alone, so the moment between delete and mark
    /// never hands out a URL to a deleted file. A file that cannot be
    /// deleted leaves its job done, for the next sweep.
    pub async fn expire(&self) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
        let retention = self.retention.as_secs_f64();
        let due: Vec<(Uuid, String)> = {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT export_id, object_key FROM strata.export_jobs
                      WHERE state = 'done'
                        AND finished_at < now() - make_interval(secs => $1)
                      ORDER BY finished_at
                      LIMIT $2",
                    &[&retention, &EXPIRE_BATCH],
                )
                .await?;
            let mut due = Vec::with_capacity(rows.len());
            for row in &rows {
                due.push((row.try_get(0)?, row.try_get(1)?));
            }
            due
        };
        let mut expired: Vec<Uuid> = Vec::with_capacity(due.len());
        for (id, key) in due {
            match self.store.delete(&key).await {
                Ok(()) => expired.push(id),
                Err(err) => {
                    tracing::warn!(export_id = %id, error = %err, "export jobs: cannot delete an expired file");
                    crate::metrics::errors("export_expire");
                }
            }
        }
        if expired.is_empty() {
            return Ok(0);
        }
        let client = self.pool.get().await?;
        let marked = client
            .execute(
                "UPDATE strata.export_jobs SET state = 'expired'
                  WHERE export_id = ANY($1) AND state = 'done'",
                &[&expired],
            )
            .await?;
        Ok(usize::try_from(marked).unwrap_or(usize::MAX))
    }

    /// Claims and runs jobs until `cancel`.
    async fn run_jobs(&self, cancel: &CancellationToken) {
        let mut backoff =
            strata_core::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match self.claim().await {
                Ok(Some(job)) => {
                    backoff.reset();
                    self.execute(job, cancel).await;
                    continue;
                }
                Ok(None) => backoff.reset(),
                Err(err) => {
                    tracing::warn!(error = %err, "export jobs: cannot claim");
                    crate::metrics::errors("export_claim");
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    async fn claim(&self) -> Result<Option<Claimed>, Box<dyn std::error::Error + Send + Sync>> {
        let client = self.pool.get().await?;
        let lease = JOB_LEASE.as_secs_f64();
        let row = client
            .query_opt(
                "UPDATE strata.export_jobs
                    SET state = 'running', attempts = attempts + 1,
                        lease_until = now() + make_interval(secs => $1)
                  WHERE export_id = (
                        SELECT export_id FROM strata.export_jobs
                         WHERE state IN ('pending', 'running')
                           AND (lease_until IS NULL OR lease_until < now())
                         ORDER BY created_at
                         FOR UPDATE SKIP LOCKED
                         LIMIT 1)
              RETURNING export_id, user_id, range_from, range_to, kinds, format,
                        object_key, attempts",
                &[&lease],
            )
            .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        Ok(Some(Claimed {
            export_id: r.try_get(0)?,
            user_id: r.try_get(1)?,
            from: r.try_get(2)?,
            to: r.try_get(3)?,
            kinds: r.try_get(4)?,
            format: r.try_get(5)?,
            object_key: r.try_get(6)?,
            attempts: r.try_get(7)?,
        }))
    }

    async fn execute(&self, job: Claimed, cancel: &CancellationToken) {
        let id = job.export_id;
        if job.attempts > JOB_MAX_ATTEMPTS {
            self.finish(id, "failed", 0, 0, "gave up after repeated failures")
                .await;
            return;
        }
        let Some(format) = Format::from_name(&job.format) else {
            self.finish(id, "failed", 0, 0, "unknown format").await;
            return;
        };
        let path = self
            .spool_dir
            .join(format!("strata-export-{id}.{}", job.format));
        let result = self.write(&job, format, &path, cancel).await;
        let _ = tokio::fs::remove_file(&path).await;
        match result {
            Ok(totals) => {
                self.finish(id, "done", totals.events, totals.bytes, "")
                    .await;
                crate::metrics::export_finished("job", totals.bytes);
                tracing::info!(export_id = %id, events = totals.events, bytes = totals.bytes, "export job done");
            }
            Err(ExportError::Cancelled) => {
                // Shutting down: the lease lapses and another process (or
                // this one, restarted) takes the job over.
                tracing::info!(export_id = %id, "export job interrupted by shutdown");
            }
            Err(err) => {
                tracing::warn!(export_id = %id, error = %err, "export job attempt failed");
                crate::metrics::errors("export_job");
                // Retried after the lease lapses, up to JOB_MAX_ATTEMPTS.
            }
        }
    }

    async fn write(
        &self,
        job: &Claimed,
        format: Format,
        path: &std::path::Path,
        cancel: &CancellationToken,
    ) -> Result<export::ExportTotals, ExportError> {
        use tokio::io::AsyncWriteExt;
        let file = create_spool_file(path).await.map_err(spool_error)?;
        let query = Query {
            user_id: job.user_id.clone(),
            from_micros: job.from.timestamp_micros(),
            to_micros: job.to.timestamp_micros(),
            kinds: job.kinds.clone(),
            descending: false,
            after: None,
            limit: export::EXPORT_PAGE,
        };
        let mut sink = FileSink {
            worker: self,
            export_id: job.export_id,
            file,
            last_renewal: tokio::time::Instant::now(),
        };
        let totals =
            export::run(&self.reader, &self.pool, query, format, cancel, &mut sink).await?;
        sink.file.flush().await.map_err(spool_error)?;
        sink.file.sync_all().await.map_err(spool_error)?;
        drop(sink);
        self.renew(job.export_id, totals).await?;
        self.store
            .put_file(&job.object_key, path)
            .await
            .map_err(|e| ExportError::Sink(e.to_string()))?;
        Ok(totals)
    }

    /// Extends the lease and records progress; fails when the job is no
    /// longer ours (lease lapsed and taken over).
    async fn renew(&self, id: Uuid, so_far: export::ExportTotals) -> Result<(), ExportError> {
        let client = self.pool.get().await?;
        let lease = JOB_LEASE.as_secs_f64();
        let updated = client
            .execute(
                "UPDATE strata.export_jobs
                    SET lease_until = now() + make_interval(secs => $2), events = $3, bytes = $4
                  WHERE export_id = $1 AND state = 'running'",
                &[&id, &lease, &(so_far.events as i64), &(so_far.bytes as i64)],
            )
            .await
            .map_err(|e| ExportError::Sink(format!("renew job lease: {e}")))?;
        if updated == 0 {
            return Err(ExportError::Sink("job is no longer running here".into()));
        }
        Ok(())
    }

    async fn finish(&self, id: Uuid, state: &str, events: u64, bytes: u64, error: &str) {
        let result = async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "UPDATE strata.export_jobs
                        SET state = $2, events = $3, bytes = $4, error = $5,
                            lease_until = NULL, finished_at = now()
                      WHERE export_id = $1",
                    &[&id, &state, &(events as i64), &(bytes as i64), &error],
                )
                .await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }
        .await;
        if let Err(err) = result {
            // The lease lapses and the job is run again: never lost.
            tracing::warn!(export_id = %id, error = %err, "cannot record export job result");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: &str, finished_ago: Option<chrono::Duration>, now: DateTime<Utc>) -> Job {
        Job {
            export_id: Uuid::nil(),
            principal: "p".into(),
            user_id: "u".into(),
            state: state.into(),
            object_key: "exports/x.csv".into(),
            events: 0,
            bytes: 0,
            error: String::new(),
            finished_at: finished_ago.map(|ago| now - ago),
        }
    }

    #[test]
    fn done_jobs_expire_after_the_retention() {
        let now = Utc::now();
        let day = Duration::from_secs(24 * 3600);
        let hours = chrono::Duration::hours;
        assert!(!job("done", Some(hours(23)), now).is_expired(day, now));
        assert!(job("done", Some(hours(24)), now).is_expired(day, now));
        assert!(job("done", Some(hours(25)), now).is_expired(day, now));
        assert!(job(STATE_EXPIRED, Some(hours(1)), now).is_expired(day, now));
        assert!(!job("done", None, now).is_expired(day, now));
        assert!(!job("failed", Some(hours(48)), now).is_expired(day, now));
        assert!(!job("running", None, now).is_expired(day, now));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn spool_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("strata-spool-test-{}.csv", Uuid::new_v4()));
        // A leftover of a crashed attempt, world-readable.
        std::fs::write(&path, b"old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let file = create_spool_file(&path).await.expect("spool file");
        drop(file);
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        let content = std::fs::read(&path).expect("read");
        let _ = std::fs::remove_file(&path);
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        assert!(content.is_empty());
    }
}
