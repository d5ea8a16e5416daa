//! Export jobs (`StartExport`/`GetExport`): rows in `strata.export_jobs`,
//! run by a worker in every API process ([`Worker`], `worker.rs`). A job is
//! claimed with a lease that the runner renews; when a process dies (or
//! stalls past its lease) its jobs are taken over once the lease lapses
//! and written again from the start. Each claim is a numbered attempt: the
//! attempt fences every later statement of its worker, and uploads to a
//! key of its own (`attempt_key`), so a stalled worker that wakes up can
//! neither finish the job nor overwrite the file of the attempt that took
//! it over; it deletes what it uploaded. A done job's file is its last
//! attempt's, and the finishing attempt deletes the keys earlier attempts
//! may have left (the sweeps delete them all again). Job state
//! therefore survives API restarts.
//!
//! The same worker deletes job files once `api.export_retention` has passed
//! since their job finished, and marks those jobs `expired`. Spool files are
//! created with mode 0600, and anew for each attempt.
//!
//! **Invariant:** a principal never has more open (pending or running)
//! jobs than its limit: the count and the insert run under one
//! per-principal transaction lock. The `state` column is text; it is read
//! only through [`JobState::parse`], so a value this code does not know is
//! an error, never a guess.

mod worker;

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::export::Format;
use crate::pool::{Pool, PoolError};

pub use worker::Worker;

/// The columns of [`Job`], in `job_from_row`'s order.
macro_rules! job_columns {
    () => {
        "export_id, principal, user_id, state, object_key, events, bytes, error, finished_at, \
         range_from, range_to, kinds, format, created_at, request_id, file_attempt"
    };
}

/// Serialises the job creations of one principal, in every API process.
const LOCK_PRINCIPAL_SQL: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('strata.export_jobs.' || $1, 0))";
/// A principal's open jobs: pending, running, and cancelled while a
/// worker may still be on them (its lease not lapsed or released), so
/// starting and cancelling jobs in a loop cannot keep more workers busy
/// than the limit.
const COUNT_OPEN_SQL: &str = "SELECT count(*) FROM strata.export_jobs
              WHERE principal = $1
                AND (state IN ('pending', 'running')
                     OR (state = 'cancelled' AND lease_until > now()))";
/// A new pending job.
const INSERT_SQL: &str = concat!(
    "INSERT INTO strata.export_jobs
                   (export_id, principal, user_id, range_from, range_to, kinds, format,
                    state, object_key, request_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9)
                 RETURNING ",
    job_columns!()
);
/// The job a principal started with a request id (`export_jobs_request`).
const BY_REQUEST_SQL: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM strata.export_jobs WHERE principal = $1 AND request_id = $2"
);
/// A principal's jobs, newest first, after the cursor (`$2`, `$3`), at most
/// `$4`: an ordered index scan of `export_jobs_by_principal` from the
/// cursor that stops at the limit, also with stale statistics (checked with
/// `reltuples = 0` and generic plans). So are the two below.
const LIST_BY_PRINCIPAL_SQL: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM strata.export_jobs
     WHERE principal = $1
       AND (created_at, export_id) < ($2, $3)
     ORDER BY created_at DESC, export_id DESC
     LIMIT $4"
);
/// A principal's jobs of user `$2`, newest first, after the cursor (`$3`,
/// `$4`), at most `$5` (`export_jobs_by_principal_user`).
const LIST_BY_PRINCIPAL_USER_SQL: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM strata.export_jobs
     WHERE principal = $1 AND user_id = $2
       AND (created_at, export_id) < ($3, $4)
     ORDER BY created_at DESC, export_id DESC
     LIMIT $5"
);
/// Every principal's jobs of user `$1`, newest first, after the cursor
/// (`$2`, `$3`), at most `$4` (`export_jobs_by_user`).
const LIST_BY_USER_SQL: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM strata.export_jobs
     WHERE user_id = $1
       AND (created_at, export_id) < ($2, $3)
     ORDER BY created_at DESC, export_id DESC
     LIMIT $4"
);
/// Cancels a job that has not ended. A running job keeps its lease: its
/// worker stops at its next lease check and releases it
/// ([`RELEASE_CANCELLED_SQL`]); until then the job counts as open.
const CANCEL_SQL: &str = concat!(
    "UPDATE strata.export_jobs
        SET state = 'cancelled', finished_at = now()
      WHERE export_id = $1 AND state IN ('pending', 'running')
      RETURNING ",
    job_columns!()
);
/// One job by id.
const GET_SQL: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM strata.export_jobs WHERE export_id = $1"
);
/// Done jobs past their retention (`$1` seconds), oldest first, at most `$2`.
pub(crate) const DUE_SQL: &str = "SELECT export_id, object_key, attempts FROM strata.export_jobs
                      WHERE state = 'done'
                        AND finished_at < now() - make_interval(secs => $1)
                      ORDER BY finished_at
                      LIMIT $2";
/// Marks jobs whose files were deleted expired (only if still done).
pub(crate) const MARK_EXPIRED_SQL: &str = "UPDATE strata.export_jobs SET state = 'expired'
                  WHERE export_id = ANY($1) AND state = 'done'";
/// Claims the oldest open job whose lease lapsed, for `$1` seconds.
pub(crate) const CLAIM_SQL: &str = "UPDATE strata.export_jobs
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
                        object_key, attempts";
/// Extends a running job's lease (`$2` seconds), without progress: the
/// worker's lease check, on a timer. Like every statement a worker runs on
/// its job, it is fenced by the attempt it claimed (`$3`): a worker whose
/// lease lapsed and whose job was claimed again changes nothing.
pub(crate) const HOLD_SQL: &str = "UPDATE strata.export_jobs
                    SET lease_until = now() + make_interval(secs => $2)
                  WHERE export_id = $1 AND state = 'running' AND attempts = $3";
/// Extends the lease (`$2` seconds) of attempt `$3` while it uploads,
/// cancelled or not: the sweep must not delete a cancelled job's files
/// while a PUT of it may still land (the attempt deletes its file when
/// the upload ends).
pub(crate) const KEEP_SQL: &str = "UPDATE strata.export_jobs
                    SET lease_until = now() + make_interval(secs => $2)
                  WHERE export_id = $1 AND state IN ('running', 'cancelled') AND attempts = $3";
/// A cancelled job's worker (attempt `$3`) has stopped: the job no longer
/// counts as open; `$2` when every file its attempts may have uploaded is
/// deleted, else the sweep deletes them (again).
pub(crate) const RELEASE_CANCELLED_SQL: &str = "UPDATE strata.export_jobs
                    SET lease_until = NULL, file_deleted = $2
                  WHERE export_id = $1 AND state = 'cancelled' AND attempts = $3";
/// Cancelled and failed jobs no worker holds whose files (if any attempt
/// uploaded one) are not deleted yet, oldest first, at most `$1`
/// (`export_jobs_unswept`).
pub(crate) const UNSWEPT_SQL: &str =
    "SELECT export_id, object_key, attempts FROM strata.export_jobs
                      WHERE state IN ('cancelled', 'failed') AND NOT file_deleted
                        AND (lease_until IS NULL OR lease_until < now())
                      ORDER BY finished_at
                      LIMIT $1";
/// Records that cancelled or failed jobs' files are deleted, and that no
/// worker holds them (their leases lapsed: a worker that crashed never
/// released its job), so they leave `export_jobs_open_by_principal`.
pub(crate) const MARK_FILE_DELETED_SQL: &str = "UPDATE strata.export_jobs
                  SET file_deleted = true, lease_until = NULL
                  WHERE export_id = ANY($1) AND state IN ('cancelled', 'failed')";
/// Extends a running job's lease (`$2` seconds) and records its progress
/// (attempt `$5`).
pub(crate) const RENEW_SQL: &str = "UPDATE strata.export_jobs
                    SET lease_until = now() + make_interval(secs => $2), events = $3, bytes = $4
                  WHERE export_id = $1 AND state = 'running' AND attempts = $5";
/// Records a job's end by attempt `$6`: state `$2`, totals, error text;
/// only while that attempt runs (a cancelled job stays cancelled, a job
/// claimed again is not ours). A done job records the attempt whose file
/// it serves ([`Job::file_key`]).
pub(crate) const FINISH_SQL: &str = "UPDATE strata.export_jobs
                        SET state = $2, events = $3, bytes = $4, error = $5,
                            file_attempt = CASE WHEN $2 = 'done' THEN $6 END,
                            lease_until = NULL, finished_at = now()
                      WHERE export_id = $1 AND state = 'running' AND attempts = $6";
/// A job's state and the attempt whose file a done job serves.
pub(crate) const STATE_SQL: &str =
    "SELECT state, file_attempt FROM strata.export_jobs WHERE export_id = $1";

/// The key attempt `attempt` of a job uploads its file to: the job's own
/// key for the first, the same name with `.attempt-N` before the extension
/// for the next ones.
pub(crate) fn attempt_key(job_key: &str, attempt: i32) -> String {
    if attempt <= 1 {
        return job_key.to_owned();
    }
    let name_start = job_key.rfind('/').map_or(0, |slash| slash + 1);
    match job_key[name_start..].rfind('.') {
        Some(dot) => {
            let (stem, extension) = job_key.split_at(name_start + dot);
            format!("{stem}.attempt-{attempt}{extension}")
        }
        None => format!("{job_key}.attempt-{attempt}"),
    }
}

/// Every key the first `attempts` attempts of a job may have uploaded to.
pub(crate) fn attempt_keys(job_key: &str, attempts: i32) -> Vec<String> {
    (1..=attempts.clamp(1, crate::export::JOB_MAX_ATTEMPTS))
        .map(|attempt| attempt_key(job_key, attempt))
        .collect()
}

/// How often each API process looks for expired export files, at most
/// (a retention shorter than twice this is swept every half retention).
pub const EXPIRE_INTERVAL: Duration = Duration::from_secs(60);
/// Most jobs one sweep expires (the rest wait for the next).
pub const EXPIRE_BATCH: i64 = 100;

/// Where a job is (the `state` column, text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for a worker.
    Pending,
    /// Claimed by a worker (its lease may have lapsed).
    Running,
    /// Its file is in the object store.
    Done,
    /// Given up.
    Failed,
    /// Done, and its file deleted after the retention.
    Expired,
    /// Cancelled before it was done; no file is kept.
    Cancelled,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 6] = [
        JobState::Pending,
        JobState::Running,
        JobState::Done,
        JobState::Failed,
        JobState::Expired,
        JobState::Cancelled,
    ];

    /// The column's text.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Expired => "expired",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job is still to be (or being) written.
    pub fn is_open(self) -> bool {
        matches!(self, JobState::Pending | JobState::Running)
    }

    /// The state the column's `text` names.
    pub fn parse(text: &str) -> Result<Self, JobError> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| JobError::UnknownState(text.to_string()))
    }
}

/// Why the export jobs' table could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No database connection.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// A statement failed, or a value did not decode.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    /// A `state` this code does not know (a newer schema?).
    #[error("export job state {0:?} is not known")]
    UnknownState(String),
}

/// A job as stored.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its id.
    pub export_id: Uuid,
    /// Who started it.
    pub principal: String,
    /// Whose history.
    pub user_id: String,
    /// Where it is.
    pub state: JobState,
    /// Where the first attempt's file goes (see [`Job::file_key`]).
    pub object_key: String,
    /// Events written (so far).
    pub events: i64,
    /// Bytes written (so far).
    pub bytes: i64,
    /// Why it failed.
    pub error: String,
    /// When it finished (done, failed or cancelled).
    pub finished_at: Option<DateTime<Utc>>,
    /// Range start (inclusive).
    pub from: DateTime<Utc>,
    /// Range end (exclusive).
    pub to: DateTime<Utc>,
    /// Kinds filter (empty: all), sorted.
    pub kinds: Vec<String>,
    /// File format (the column's text).
    pub format: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The client's StartExport `request_id`.
    pub request_id: Option<Uuid>,
    /// The attempt whose file a done job serves (none: the first's, as
    /// every job finished before attempts had keys of their own).
    pub file_attempt: Option<i32>,
}

impl Job {
    /// Where a done job's file is: the key of the attempt that finished
    /// it.
    pub fn file_key(&self) -> String {
        attempt_key(&self.object_key, self.file_attempt.unwrap_or(1))
    }

    /// Whether its file is gone or about to go: marked expired, or done
    /// longer ago than `retention` (the sweep may not have run yet).
    pub fn is_expired(&self, retention: Duration, now: DateTime<Utc>) -> bool {
        match self.state {
            JobState::Expired => true,
            JobState::Done => match (self.finished_at, chrono::Duration::from_std(retention)) {
                (Some(finished), Ok(retention)) => now - finished >= retention,
                _ => false,
            },
            JobState::Pending | JobState::Running | JobState::Failed | JobState::Cancelled => false,
        }
    }

    /// When its file is (or was) deleted: `retention` after it finished,
    /// for a job that succeeded.
    pub fn expires_at(&self, retention: Duration) -> Option<DateTime<Utc>> {
        match self.state {
            JobState::Done | JobState::Expired => {
                let retention = chrono::Duration::from_std(retention).ok()?;
                self.finished_at?.checked_add_signed(retention)
            }
            _ => None,
        }
    }

    /// Whether it was created for exactly `spec` (the same user, range,
    /// kinds and format), so a retried StartExport may be answered with it.
    pub fn is_for(&self, spec: &JobSpec) -> bool {
        self.user_id == spec.user_id
            && self.from == spec.from
            && self.to == spec.to
            && self.kinds == spec.kinds
            && self.format == spec.format.name()
    }
}

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
    /// The client's idempotency key (AIP-155).
    pub request_id: Option<Uuid>,
}

/// What [`create`] did.
#[derive(Debug)]
pub enum Created {
    /// A new pending job.
    New(Job),
    /// The job this principal created earlier with the same request id and
    /// the same spec.
    Existing(Job),
    /// The request id was used earlier for another spec.
    RequestIdReused(Uuid),
    /// The principal already has its most unfinished jobs.
    OverLimit,
}

/// Where a ListExports page starts: after this job (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCursor {
    /// The last listed job's `created_at`.
    pub created_at: DateTime<Utc>,
    /// The last listed job's id.
    pub export_id: Uuid,
}

impl ListCursor {
    /// Before every job.
    pub fn start() -> Self {
        Self {
            created_at: DateTime::<Utc>::MAX_UTC,
            export_id: Uuid::max(),
        }
    }
}

/// Whose jobs [`list`] reads.
#[derive(Debug, Clone, Copy)]
pub enum Listing<'a> {
    /// The jobs `principal` started.
    Principal(&'a str),
    /// The jobs `principal` started exporting `user`'s history.
    PrincipalUser {
        /// Who started them.
        principal: &'a str,
        /// Whose history.
        user: &'a str,
    },
    /// Every principal's jobs exporting `user`'s history (support agents).
    User(&'a str),
}

/// What [`cancel`] did.
#[derive(Debug)]
pub enum Cancelled {
    /// Cancelled now, or earlier.
    Cancelled(Job),
    /// It had already ended otherwise.
    AlreadyEnded(Job),
}

/// A job row; a value that does not decode is an error, not the panic of
/// `Row::get`.
fn job_from_row(row: &tokio_postgres::Row) -> Result<Job, JobError> {
    Ok(Job {
        export_id: row.try_get(0)?,
        principal: row.try_get(1)?,
        user_id: row.try_get(2)?,
        state: JobState::parse(row.try_get(3)?)?,
        object_key: row.try_get(4)?,
        events: row.try_get(5)?,
        bytes: row.try_get(6)?,
        error: row.try_get(7)?,
        finished_at: row.try_get(8)?,
        from: row.try_get(9)?,
        to: row.try_get(10)?,
        kinds: row.try_get(11)?,
        format: row.try_get(12)?,
        created_at: row.try_get(13)?,
        request_id: row.try_get(14)?,
        file_attempt: row.try_get(15)?,
    })
}

/// Records a new pending job, its file under `prefix`, unless its principal
/// already has `max_open()` unfinished jobs, or answers a retry: a job the
/// principal created with the same request id. Lookup, count and insert run
/// under a per-principal transaction lock, so concurrent StartExport calls,
/// in any API process, can neither both pass the limit nor both create a
/// job for one request id; `max_open` is asked under the lock too (what this
/// process's streams leave), and [`reserve_stream`] takes the same lock.
pub async fn create(
    pool: &Pool,
    spec: &JobSpec,
    prefix: &str,
    max_open: impl FnOnce() -> u32,
) -> Result<Created, JobError> {
    let id = Uuid::now_v7();
    let key = format!(
        "{}/{id}.{}",
        prefix.trim_end_matches('/'),
        spec.format.name()
    );
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(LOCK_PRINCIPAL_SQL, &[&spec.principal]).await?;
    if let Some(request_id) = spec.request_id {
        if let Some(row) = tx
            .query_opt(BY_REQUEST_SQL, &[&spec.principal, &request_id])
            .await?
        {
            let job = job_from_row(&row)?;
            return Ok(if job.is_for(spec) {
                Created::Existing(job)
            } else {
                Created::RequestIdReused(request_id)
            });
        }
    }
    let open: i64 = tx
        .query_one(COUNT_OPEN_SQL, &[&spec.principal])
        .await?
        .try_get(0)?;
    if open >= i64::from(max_open()) {
        return Ok(Created::OverLimit);
    }
    let row = tx
        .query_one(
            INSERT_SQL,
            &[
                &id,
                &spec.principal,
                &spec.user_id,
                &spec.from,
                &spec.to,
                &spec.kinds,
                &spec.format.name(),
                &key,
                &spec.request_id,
            ],
        )
        .await?;
    let job = job_from_row(&row)?;
    tx.commit().await?;
    Ok(Created::New(job))
}

/// Up to `limit` jobs of `listing`, newest first, after `cursor`.
pub async fn list(
    pool: &Pool,
    listing: Listing<'_>,
    cursor: ListCursor,
    limit: usize,
) -> Result<Vec<Job>, JobError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let client = pool.get().await?;
    let rows = match listing {
        Listing::Principal(principal) => {
            client
                .query(
                    LIST_BY_PRINCIPAL_SQL,
                    &[&principal, &cursor.created_at, &cursor.export_id, &limit],
                )
                .await?
        }
        Listing::PrincipalUser { principal, user } => {
            client
                .query(
                    LIST_BY_PRINCIPAL_USER_SQL,
                    &[
                        &principal,
                        &user,
                        &cursor.created_at,
                        &cursor.export_id,
                        &limit,
                    ],
                )
                .await?
        }
        Listing::User(user) => {
            client
                .query(
                    LIST_BY_USER_SQL,
                    &[&user, &cursor.created_at, &cursor.export_id, &limit],
                )
                .await?
        }
    };
    rows.iter().map(job_from_row).collect()
}

/// Cancels `job` (read by the caller, who checked it may): a pending or
/// running job becomes cancelled; one that ended otherwise (perhaps while
/// the caller looked) is left as it is.
pub async fn cancel(pool: &Pool, job: Job) -> Result<Cancelled, JobError> {
    if !job.state.is_open() {
        return Ok(match job.state {
            JobState::Cancelled => Cancelled::Cancelled(job),
            _ => Cancelled::AlreadyEnded(job),
        });
    }
    let client = pool.get().await?;
    if let Some(row) = client.query_opt(CANCEL_SQL, &[&job.export_id]).await? {
        return Ok(Cancelled::Cancelled(job_from_row(&row)?));
    }
    // It ended between the read and the update.
    let row = client.query_one(GET_SQL, &[&job.export_id]).await?;
    let job = job_from_row(&row)?;
    Ok(match job.state {
        JobState::Cancelled => Cancelled::Cancelled(job),
        _ => Cancelled::AlreadyEnded(job),
    })
}

/// One job by id.
pub async fn get(pool: &Pool, id: Uuid) -> Result<Option<Job>, JobError> {
    let client = pool.get().await?;
    let row = client.query_opt(GET_SQL, &[&id]).await?;
    row.as_ref().map(job_from_row).transpose()
}

/// Runs `reserve` with the number of `principal`'s unfinished jobs (they
/// count against its export limit, in every API process), under the lock
/// [`create`] takes: a stream reserved here and a job created in this
/// process each see the other.
pub async fn reserve_stream<T>(
    pool: &Pool,
    principal: &str,
    reserve: impl FnOnce(u32) -> Option<T>,
) -> Result<Option<T>, JobError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(LOCK_PRINCIPAL_SQL, &[&principal]).await?;
    let row = tx.query_one(COUNT_OPEN_SQL, &[&principal]).await?;
    let open = u32::try_from(row.try_get::<_, i64>(0)?).unwrap_or(u32::MAX);
    let reserved = reserve(open);
    tx.commit().await?;
    Ok(reserved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState, finished_ago: Option<chrono::Duration>, now: DateTime<Utc>) -> Job {
        Job {
            export_id: Uuid::nil(),
            principal: "p".into(),
            user_id: "u".into(),
            state,
            object_key: "exports/x.csv".into(),
            events: 0,
            bytes: 0,
            error: String::new(),
            finished_at: finished_ago.map(|ago| now - ago),
            from: now,
            to: now,
            kinds: Vec::new(),
            format: "csv".into(),
            created_at: now,
            request_id: None,
            file_attempt: None,
        }
    }

    #[test]
    fn each_attempt_uploads_to_a_key_of_its_own() {
        assert_eq!(attempt_key("exports/x.csv", 1), "exports/x.csv");
        assert_eq!(attempt_key("exports/x.csv", 0), "exports/x.csv");
        assert_eq!(attempt_key("exports/x.csv", 2), "exports/x.attempt-2.csv");
        assert_eq!(attempt_key("a.b/x", 3), "a.b/x.attempt-3");
        assert_eq!(
            attempt_keys("p/x.jsonl", 3),
            ["p/x.jsonl", "p/x.attempt-2.jsonl", "p/x.attempt-3.jsonl"]
        );
        // A job given up after its last attempt wrote nothing more.
        assert_eq!(attempt_keys("p/x.jsonl", 99).len(), 3);
        let mut done = job(JobState::Done, None, Utc::now());
        assert_eq!(done.file_key(), "exports/x.csv");
        done.file_attempt = Some(2);
        assert_eq!(done.file_key(), "exports/x.attempt-2.csv");
    }

    #[test]
    fn done_jobs_expire_after_the_retention() {
        let now = Utc::now();
        let day = Duration::from_secs(24 * 3600);
        let hours = chrono::Duration::hours;
        assert!(!job(JobState::Done, Some(hours(23)), now).is_expired(day, now));
        assert!(job(JobState::Done, Some(hours(24)), now).is_expired(day, now));
        assert!(job(JobState::Done, Some(hours(25)), now).is_expired(day, now));
        assert!(job(JobState::Expired, Some(hours(1)), now).is_expired(day, now));
        assert!(!job(JobState::Done, None, now).is_expired(day, now));
        assert!(!job(JobState::Failed, Some(hours(48)), now).is_expired(day, now));
        assert!(!job(JobState::Running, None, now).is_expired(day, now));
    }

    #[test]
    fn states_read_back_as_written_and_unknown_ones_are_errors() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()).ok(), Some(state));
        }
        assert!(matches!(
            JobState::parse("archived"),
            Err(JobError::UnknownState(text)) if text == "archived"
        ));
    }

    #[test]
    fn states_quoted_in_the_sql_are_known() {
        for sql in [
            COUNT_OPEN_SQL,
            INSERT_SQL,
            DUE_SQL,
            MARK_EXPIRED_SQL,
            CLAIM_SQL,
            RENEW_SQL,
            LIST_BY_PRINCIPAL_SQL,
            CANCEL_SQL,
            FINISH_SQL,
            HOLD_SQL,
            RELEASE_CANCELLED_SQL,
            KEEP_SQL,
            UNSWEPT_SQL,
            MARK_FILE_DELETED_SQL,
        ] {
            for quoted in sql.split('\'').skip(1).step_by(2) {
                assert!(JobState::parse(quoted).is_ok(), "{quoted:?} in {sql}");
            }
        }
    }
}
