//! The export-job worker of one API process: claims open jobs (a lease it
//! renews while the file grows), writes each to a spool file and uploads
//! it, and sweeps the files of jobs past their retention.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use strata_archive::ObjectStore;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    JobError, JobState, CANCELLED_DUE_SQL, CLAIM_SQL, DUE_SQL, EXPIRE_BATCH, EXPIRE_INTERVAL,
    FINISH_SQL, HOLD_SQL, MARK_EXPIRED_SQL, MARK_FILE_DELETED_SQL, RELEASE_CANCELLED_SQL,
    RENEW_SQL, STATE_SQL,
};
use crate::export::{self, ExportError, Format, JOB_LEASE, JOB_MAX_ATTEMPTS};
use crate::history::{HistoryReader, Query};
use crate::pool::Pool;

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
        self.file
            .write_all(&chunk)
            .await
            .map_err(ExportError::Spool)?;
        if self.last_renewal.elapsed() > JOB_LEASE / 3 {
            self.last_renewal = tokio::time::Instant::now();
            self.worker.renew(self.export_id, so_far).await?;
        }
        Ok(true)
    }
}

/// How often a running job's lease is checked and extended, whatever the
/// export produces: a cancelled job stops within this.
pub(super) const HOLD_INTERVAL: Duration = Duration::from_secs(5);

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
    /// Where job files go (`object_store.prefix` + `api.export_prefix`).
    pub export_prefix: String,
    /// Multipart uploads of job files left unfinished this long (a worker
    /// stopped mid-upload by a crash, a shutdown or a cancel) are aborted.
    pub abandoned_upload_after: Duration,
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
    pub async fn expire(&self) -> Result<usize, JobError> {
        let swept = self.sweep_cancelled().await?;
        if swept > 0 {
            tracing::info!(swept, "export jobs: cancelled jobs' files deleted");
        }
        // S3 bills the parts of an unfinished multipart upload until it is
        // aborted; the archiver's sweep covers only its staging prefix.
        let uploads = format!("{}/", self.export_prefix.trim_end_matches('/'));
        match self
            .store
            .abort_abandoned_uploads(&uploads, self.abandoned_upload_after)
            .await
        {
            Ok(0) => {}
            Ok(aborted) => {
                tracing::info!(aborted, "export jobs: abandoned multipart uploads aborted")
            }
            Err(err) => {
                tracing::warn!(error = %err, "export jobs: cannot list abandoned multipart uploads");
                crate::metrics::errors("export_expire");
            }
        }
        let retention = self.retention.as_secs_f64();
        let due: Vec<(Uuid, String)> = {
            let client = self.pool.get().await?;
            let rows = client.query(DUE_SQL, &[&retention, &EXPIRE_BATCH]).await?;
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
        let marked = client.execute(MARK_EXPIRED_SQL, &[&expired]).await?;
        Ok(usize::try_from(marked).unwrap_or(usize::MAX))
    }

    /// Deletes the files cancelled jobs may have left (a worker that
    /// crashed between upload and finish, or whose delete failed) once no
    /// worker holds them; deleting a key that was never written is
    /// harmless. Returns how many jobs it settled.
    async fn sweep_cancelled(&self) -> Result<usize, JobError> {
        let due: Vec<(Uuid, String)> = {
            let client = self.pool.get().await?;
            let rows = client.query(CANCELLED_DUE_SQL, &[&EXPIRE_BATCH]).await?;
            let mut due = Vec::with_capacity(rows.len());
            for row in &rows {
                due.push((row.try_get(0)?, row.try_get(1)?));
            }
            due
        };
        let mut deleted: Vec<Uuid> = Vec::with_capacity(due.len());
        for (id, key) in due {
            match self.store.delete(&key).await {
                Ok(()) => deleted.push(id),
                Err(err) if err.not_found() => deleted.push(id),
                Err(err) => {
                    tracing::warn!(export_id = %id, error = %err, "export jobs: cannot delete a cancelled job's file");
                    crate::metrics::errors("export_cancel");
                }
            }
        }
        if deleted.is_empty() {
            return Ok(0);
        }
        let client = self.pool.get().await?;
        let marked = client.execute(MARK_FILE_DELETED_SQL, &[&deleted]).await?;
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

    async fn claim(&self) -> Result<Option<Claimed>, JobError> {
        let client = self.pool.get().await?;
        let lease = JOB_LEASE.as_secs_f64();
        let row = client.query_opt(CLAIM_SQL, &[&lease]).await?;
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
            self.finish(
                id,
                JobState::Failed,
                0,
                0,
                "gave up after repeated failures",
            )
            .await;
            return;
        }
        let Some(format) = Format::from_name(&job.format) else {
            self.finish(id, JobState::Failed, 0, 0, "unknown format")
                .await;
            return;
        };
        let path = self
            .spool_dir
            .join(format!("strata-export-{id}.{}", job.format));
        // The lease is checked on a timer as well as with each chunk, so
        // a cancelled job stops within HOLD_INTERVAL even while a sparse
        // range or the upload produces no chunk (the write is dropped).
        crate::metrics::EXPORTS_RUNNING.inc();
        let result = tokio::select! {
            result = self.write(&job, format, &path, cancel) => result,
            stopped = self.hold(id) => Err(stopped),
        };
        crate::metrics::EXPORTS_RUNNING.dec();
        let _ = tokio::fs::remove_file(&path).await;
        match result {
            Ok(totals) => {
                if self
                    .finish(id, JobState::Done, totals.events, totals.bytes, "")
                    .await
                {
                    crate::metrics::export_finished("job", totals.bytes);
                    tracing::info!(export_id = %id, events = totals.events, bytes = totals.bytes, "export job done");
                } else {
                    self.discard_if_cancelled(id, &job.object_key).await;
                }
            }
            Err(ExportError::Cancelled) => {
                // Shutting down: the lease lapses and another process (or
                // this one, restarted) takes the job over.
                tracing::info!(export_id = %id, "export job interrupted by shutdown");
            }
            Err(ExportError::NotRunning) => {
                // CancelExport, or a lapsed lease taken over elsewhere.
                tracing::info!(export_id = %id, "export job stopped: cancelled or taken over");
                self.discard_if_cancelled(id, &job.object_key).await;
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
        let file = create_spool_file(path).await.map_err(ExportError::Spool)?;
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
        sink.file.flush().await.map_err(ExportError::Spool)?;
        sink.file.sync_all().await.map_err(ExportError::Spool)?;
        drop(sink);
        self.renew(job.export_id, totals).await?;
        self.store
            .put_file(&job.object_key, path)
            .await
            .map_err(ExportError::Upload)?;
        if let Some(pause) = strata_core::failpoint::pause("api.export_job.after_upload") {
            tokio::time::sleep(pause).await;
        }
        Ok(totals)
    }

    /// Extends the job's lease every [`HOLD_INTERVAL`] until it is no
    /// longer running (cancelled, or taken over after a lapse); a database
    /// that does not answer is retried (the lease may then lapse, and the
    /// job run again elsewhere: never lost).
    async fn hold(&self, id: Uuid) -> ExportError {
        let lease = JOB_LEASE.as_secs_f64();
        loop {
            tokio::time::sleep(HOLD_INTERVAL).await;
            let held = async {
                let client = self.pool.get().await?;
                Ok::<_, JobError>(client.execute(HOLD_SQL, &[&id, &lease]).await?)
            }
            .await;
            match held {
                Ok(0) => return ExportError::NotRunning,
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(export_id = %id, error = %err, "export jobs: cannot extend a lease");
                }
            }
        }
    }

    /// Extends the lease and records progress; fails when the job is no
    /// longer ours (lease lapsed and taken over).
    async fn renew(&self, id: Uuid, so_far: export::ExportTotals) -> Result<(), ExportError> {
        let client = self.pool.get().await?;
        let lease = JOB_LEASE.as_secs_f64();
        let updated = client
            .execute(
                RENEW_SQL,
                &[&id, &lease, &(so_far.events as i64), &(so_far.bytes as i64)],
            )
            .await
            .map_err(ExportError::Renew)?;
        if updated == 0 {
            return Err(ExportError::NotRunning);
        }
        Ok(())
    }

    /// Records a job's end; false when it was not recorded: the job no
    /// longer runs (cancelled, or ended by a worker that took it over), or
    /// the database could not be reached.
    async fn finish(
        &self,
        id: Uuid,
        state: JobState,
        events: u64,
        bytes: u64,
        error: &str,
    ) -> bool {
        let result = async {
            let client = self.pool.get().await?;
            client
                .execute(
                    FINISH_SQL,
                    &[
                        &id,
                        &state.as_str(),
                        &(events as i64),
                        &(bytes as i64),
                        &error,
                    ],
                )
                .await
                .map_err(JobError::from)
        }
        .await;
        match result {
            Ok(updated) => updated > 0,
            Err(err) => {
                // The lease lapses and the job is run again: never lost.
                tracing::warn!(export_id = %id, error = %err, "cannot record export job result");
                false
            }
        }
    }

    /// Deletes the file a job wrote when the job was cancelled while it
    /// was written (CancelExport promises no file is kept), and releases
    /// the job so it stops counting as open. A job taken over and finished
    /// by another worker keeps its file: the same key holds that worker's
    /// upload. What is not deleted here the sweep deletes.
    async fn discard_if_cancelled(&self, id: Uuid, key: &str) {
        let state = async {
            let client = self.pool.get().await?;
            let row = client.query_opt(STATE_SQL, &[&id]).await?;
            match row {
                Some(row) => Ok(Some(JobState::parse(row.try_get(0)?)?)),
                None => Ok::<_, JobError>(None),
            }
        }
        .await;
        match state {
            Ok(Some(JobState::Cancelled)) => {
                let deleted = match self.store.delete(key).await {
                    Ok(()) => {
                        tracing::info!(export_id = %id, "export job cancelled while written; file deleted");
                        true
                    }
                    Err(err) if err.not_found() => true,
                    Err(err) => {
                        tracing::warn!(export_id = %id, key, error = %err, "cannot delete a cancelled export's file");
                        crate::metrics::errors("export_cancel");
                        false
                    }
                };
                let released = async {
                    let client = self.pool.get().await?;
                    client
                        .execute(RELEASE_CANCELLED_SQL, &[&id, &deleted])
                        .await?;
                    Ok::<_, JobError>(())
                }
                .await;
                if let Err(err) = released {
                    // The lease lapses on its own.
                    tracing::warn!(export_id = %id, error = %err, "cannot release a cancelled export job");
                }
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(export_id = %id, error = %err, "cannot read a finished export job's state");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
