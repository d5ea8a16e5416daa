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
    attempt_key, attempt_keys, JobError, JobState, CLAIM_SQL, DUE_SQL, EXPIRE_BATCH,
    EXPIRE_INTERVAL, FINISH_SQL, HOLD_SQL, KEEP_SQL, MARK_EXPIRED_SQL, MARK_FILE_DELETED_SQL,
    RELEASE_CANCELLED_SQL, RENEW_SQL, STATE_SQL, UNSWEPT_SQL,
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
    attempt: i32,
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
            self.worker
                .renew(self.export_id, self.attempt, so_far)
                .await?;
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
        let swept = self.sweep_unfinished().await?;
        if swept > 0 {
            tracing::info!(
                swept,
                "export jobs: files of cancelled or failed jobs deleted"
            );
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
        let due = self
            .due_files(DUE_SQL, &[&retention, &EXPIRE_BATCH])
            .await?;
        let mut expired: Vec<Uuid> = Vec::with_capacity(due.len());
        for (id, keys) in due {
            if self.delete_all(id, &keys, "export_expire").await {
                expired.push(id);
            }
        }
        if expired.is_empty() {
            return Ok(0);
        }
        let client = self.pool.get().await?;
        let marked = client.execute(MARK_EXPIRED_SQL, &[&expired]).await?;
        Ok(usize::try_from(marked).unwrap_or(usize::MAX))
    }

    /// Deletes the files cancelled and failed jobs' attempts may have left
    /// (a worker that crashed between upload and finish, or whose delete
    /// failed) once no worker holds them; deleting a key that was never
    /// written is harmless. Returns how many jobs it settled.
    async fn sweep_unfinished(&self) -> Result<usize, JobError> {
        let due = self.due_files(UNSWEPT_SQL, &[&EXPIRE_BATCH]).await?;
        let mut deleted: Vec<Uuid> = Vec::with_capacity(due.len());
        for (id, keys) in due {
            if self.delete_all(id, &keys, "export_cancel").await {
                deleted.push(id);
            }
        }
        if deleted.is_empty() {
            return Ok(0);
        }
        let client = self.pool.get().await?;
        let marked = client.execute(MARK_FILE_DELETED_SQL, &[&deleted]).await?;
        Ok(usize::try_from(marked).unwrap_or(usize::MAX))
    }

    /// The jobs `sql` selects (`export_id, object_key, attempts`), each
    /// with every key its attempts may have uploaded to.
    async fn due_files(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<(Uuid, Vec<String>)>, JobError> {
        let client = self.pool.get().await?;
        let rows = client.query(sql, params).await?;
        let mut due = Vec::with_capacity(rows.len());
        for row in &rows {
            let key: String = row.try_get(1)?;
            due.push((row.try_get(0)?, attempt_keys(&key, row.try_get(2)?)));
        }
        Ok(due)
    }

    /// Deletes `keys` (a key never written is fine); false when one could
    /// not be deleted, counted as an error of `what`.
    async fn delete_all(&self, id: Uuid, keys: &[String], what: &'static str) -> bool {
        let mut all = true;
        for key in keys {
            match self.store.delete(key).await {
                Ok(()) => {}
                Err(err) if err.not_found() => {}
                Err(err) => {
                    tracing::warn!(export_id = %id, key, error = %err, "export jobs: cannot delete a job's file");
                    crate::metrics::errors(what);
                    all = false;
                }
            }
        }
        all
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
            // What earlier attempts left, the sweep deletes.
            self.finish(
                &job,
                JobState::Failed,
                0,
                0,
                "gave up after repeated failures",
            )
            .await;
            return;
        }
        let Some(format) = Format::from_name(&job.format) else {
            self.finish(&job, JobState::Failed, 0, 0, "unknown format")
                .await;
            return;
        };
        let path = self
            .spool_dir
            .join(format!("strata-export-{id}.{}", job.format));
        let key = attempt_key(&job.object_key, job.attempts);
        crate::metrics::EXPORTS_RUNNING.inc();
        let result = self.attempt(&job, format, &path, &key, cancel).await;
        crate::metrics::EXPORTS_RUNNING.dec();
        let _ = tokio::fs::remove_file(&path).await;
        match result {
            Ok(totals) => {
                if self
                    .finish(&job, JobState::Done, totals.events, totals.bytes, "")
                    .await
                {
                    crate::metrics::export_finished("job", totals.bytes);
                    tracing::info!(export_id = %id, attempt = job.attempts, events = totals.events, bytes = totals.bytes, "export job done");
                    self.delete_earlier_attempts(&job).await;
                } else {
                    self.discard(&job, &key).await;
                }
            }
            Err(ExportError::Cancelled) => {
                // Shutting down (before the upload): the lease lapses and
                // another process (or this one, restarted) takes the job
                // over.
                tracing::info!(export_id = %id, "export job interrupted by shutdown");
            }
            Err(ExportError::NotRunning) => {
                // CancelExport, or a lapsed lease taken over elsewhere.
                tracing::info!(export_id = %id, attempt = job.attempts, "export job stopped: cancelled or taken over");
                self.discard(&job, &key).await;
            }
            Err(err) => {
                tracing::warn!(export_id = %id, error = %err, "export job attempt failed");
                crate::metrics::errors("export_job");
                // Retried after the lease lapses, up to JOB_MAX_ATTEMPTS,
                // by a new attempt with a key of its own; a failed upload
                // may still have landed.
                self.discard(&job, &key).await;
            }
        }
    }

    /// One attempt: the job written to the spool file, then uploaded to
    /// `key`, while the lease is checked and extended on a timer
    /// ([`HOLD_INTERVAL`]), so a cancelled job stops within it even when a
    /// sparse range produces no chunk. Writing the spool file is dropped at
    /// once when the job is no longer this attempt's; the upload never is:
    /// a request dropped after its body was sent may still complete after
    /// the delete meant to remove it. So it runs to its end, its lease kept
    /// even if the job is cancelled meanwhile (the sweep waits), and the
    /// fenced finish tells whether the file is the job's or to be deleted.
    async fn attempt(
        &self,
        job: &Claimed,
        format: Format,
        path: &std::path::Path,
        key: &str,
        cancel: &CancellationToken,
    ) -> Result<export::ExportTotals, ExportError> {
        let hold = self.hold(job.export_id, job.attempts, HOLD_SQL);
        tokio::pin!(hold);
        let totals = tokio::select! {
            totals = self.spool(job, format, path, cancel) => totals?,
            stopped = &mut hold => return Err(stopped),
        };
        self.renew(job.export_id, job.attempts, totals).await?;
        let upload = async {
            self.store
                .put_file(key, path)
                .await
                .map_err(ExportError::Upload)?;
            if let Some(pause) = strata_core::failpoint::pause("api.export_job.after_upload") {
                tokio::time::sleep(pause).await;
            }
            Ok::<_, ExportError>(())
        };
        tokio::pin!(upload);
        let keep = self.hold(job.export_id, job.attempts, KEEP_SQL);
        tokio::pin!(keep);
        let mut kept = true;
        loop {
            tokio::select! {
                uploaded = &mut upload => break uploaded.map(|()| totals),
                // Claimed again: nothing left to keep.
                _ = &mut keep, if kept => kept = false,
            }
        }
    }

    /// Writes the job's file to the spool, renewing the lease as it grows.
    async fn spool(
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
            attempt: job.attempts,
            file,
            last_renewal: tokio::time::Instant::now(),
        };
        let totals =
            export::run(&self.reader, &self.pool, query, format, cancel, &mut sink).await?;
        sink.file.flush().await.map_err(ExportError::Spool)?;
        sink.file.sync_all().await.map_err(ExportError::Spool)?;
        Ok(totals)
    }

    /// Extends the lease of attempt `attempt` every [`HOLD_INTERVAL`] with
    /// `sql` (`HOLD_SQL`, or `KEEP_SQL` while uploading) until it changes no
    /// row (the job cancelled, or claimed again after a lapse); a database
    /// that does not answer is retried (the lease may then lapse, and the
    /// job run again elsewhere: never lost).
    async fn hold(&self, id: Uuid, attempt: i32, sql: &'static str) -> ExportError {
        let lease = JOB_LEASE.as_secs_f64();
        loop {
            tokio::time::sleep(HOLD_INTERVAL).await;
            let held = async {
                let client = self.pool.get().await?;
                Ok::<_, JobError>(client.execute(sql, &[&id, &lease, &attempt]).await?)
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
    /// longer this attempt's (cancelled, or its lease lapsed and the job
    /// was claimed again).
    async fn renew(
        &self,
        id: Uuid,
        attempt: i32,
        so_far: export::ExportTotals,
    ) -> Result<(), ExportError> {
        let client = self.pool.get().await?;
        let lease = JOB_LEASE.as_secs_f64();
        let updated = client
            .execute(
                RENEW_SQL,
                &[
                    &id,
                    &lease,
                    &(so_far.events as i64),
                    &(so_far.bytes as i64),
                    &attempt,
                ],
            )
            .await
            .map_err(ExportError::Renew)?;
        if updated == 0 {
            return Err(ExportError::NotRunning);
        }
        Ok(())
    }

    /// Records a job's end; false when it was not recorded: the job is no
    /// longer this attempt's (cancelled, or claimed again), or the database
    /// could not be reached.
    async fn finish(
        &self,
        job: &Claimed,
        state: JobState,
        events: u64,
        bytes: u64,
        error: &str,
    ) -> bool {
        let id = job.export_id;
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
                        &job.attempts,
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

    /// After the attempt that finished a job: deletes what earlier attempts
    /// of it may have uploaded (a worker that crashed between its upload
    /// and its finish). Best effort: an attempt still uploading deletes
    /// its own file when it finds the job no longer its.
    async fn delete_earlier_attempts(&self, job: &Claimed) {
        let earlier = attempt_keys(&job.object_key, job.attempts - 1);
        if job.attempts > 1 {
            self.delete_all(job.export_id, &earlier, "export_job").await;
        }
    }

    /// An attempt whose finish was not recorded deletes the file it may
    /// have uploaded (its key is its own: no other attempt's file is
    /// touched), unless the job is done with its file after all (the finish
    /// committed and only its answer was lost), and, when the job was
    /// cancelled, releases it so it stops counting as open (CancelExport
    /// promises no file is kept: what is not deleted here the sweep
    /// deletes, every attempt's key). When the job cannot be read nothing
    /// is deleted: the lease lapses and the job's next attempt or the sweep
    /// settles it.
    async fn discard(&self, job: &Claimed, key: &str) {
        let id = job.export_id;
        let state = async {
            let client = self.pool.get().await?;
            let row = client.query_opt(STATE_SQL, &[&id]).await?;
            match row {
                Some(row) => Ok(Some((
                    JobState::parse(row.try_get(0)?)?,
                    row.try_get::<_, Option<i32>>(1)?,
                ))),
                None => Ok::<_, JobError>(None),
            }
        }
        .await;
        let state = match state {
            Ok(Some((JobState::Done, Some(attempt)))) if attempt == job.attempts => {
                tracing::info!(export_id = %id, "export job done (its finish was recorded after all)");
                return;
            }
            Ok(Some((state, _))) => state,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(export_id = %id, error = %err, "cannot read an unfinished export job's state; its file is left to the job's next attempt or the sweep");
                return;
            }
        };
        let deleted = self
            .delete_all(id, &[key.to_owned()], "export_cancel")
            .await;
        if state != JobState::Cancelled {
            return;
        }
        if deleted {
            tracing::info!(export_id = %id, "export job cancelled while written; its file deleted");
        }
        // Earlier attempts' files are left to the sweep.
        let all_deleted = deleted && job.attempts == 1;
        let released = async {
            let client = self.pool.get().await?;
            client
                .execute(RELEASE_CANCELLED_SQL, &[&id, &all_deleted, &job.attempts])
                .await?;
            Ok::<_, JobError>(())
        }
        .await;
        if let Err(err) = released {
            // The lease lapses on its own.
            tracing::warn!(export_id = %id, error = %err, "cannot release a cancelled export job");
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
