//! The catalog in the hot store (`strata.archive_days`, `archive_files`,
//! `late_activity`), the archiver lease, and the outboxes' unshipped rows.
//! All SQL of the archiver lives in this module; its text columns are
//! typed here ([`DayState`], [`FileOrigin`]).
//!
//! - this file: reading days and files, the partitions, the clock and the
//!   outboxes;
//! - `states`: [`DayState`] and [`FileOrigin`];
//! - `lease`: acquiring, renewing, releasing and checking the lease;
//! - `export`: the export's session, snapshot, `SELECT`s and COPY;
//! - `commit`: the writes of the commit protocol (seal, commit, manifest);
//! - `retention`: dropping partitions and finding staged files still
//!   needed.

mod commit;
mod export;
mod lease;
mod retention;
mod states;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::{Client, GenericClient, Row};

pub(crate) use self::commit::{
    clear_archived_late_rows, lock_day_state, next_file_seq, record_commit, record_file,
    record_manifest, seal_day, CommitTotals, FileRecord,
};
pub(crate) use self::export::{
    begin_export, copy_out_sql, day_export_select, end_export, late_export_select,
};
pub(crate) use self::lease::fence;
pub use self::lease::{acquire_lease, release_lease, renew_lease, Lease};
pub(crate) use self::retention::{
    detach_partition, drop_partition, hot_partitions, late_rows_wait, newest_stream_commit,
    raise_stream_floor, record_partition_dropped, unpublished_keys,
};
pub use self::states::{DayState, FileOrigin, UnknownValue};
use crate::day::{day_end, day_start, partition_day};
use crate::error::ArchiveError;
use crate::pg::{bounded, column};

/// The columns of [`DayStatus`], in its order (a macro so that the SQL
/// texts using them stay constants).
macro_rules! day_columns {
    () => {
        "day, state, export_snapshot::text, rows, bytes, files, version, \
         manifest_version, partition_dropped_at"
    };
}

const DAY_STATUS_SQL: &str = concat!(
    "SELECT ",
    day_columns!(),
    " FROM strata.archive_days WHERE day = $1"
);

const ALL_DAYS_SQL: &str = concat!(
    "SELECT ",
    day_columns!(),
    " FROM strata.archive_days ORDER BY day"
);

const DAY_FILES_SQL: &str = "SELECT object_key, origin, seq, rows, bytes, min_user_id, max_user_id,
                                    sha256, content_sha256, epoch
                               FROM strata.archive_files WHERE day = $1 ORDER BY seq";

const PARTITION_DAYS_SQL: &str = "SELECT c.relname FROM pg_inherits i
                                    JOIN pg_class c ON c.oid = i.inhrelid
                                   WHERE i.inhparent = 'strata.activity'::regclass";

/// Days with captured rows the day's export did not see.
const DAYS_WITH_LATE_ROWS_SQL: &str = "SELECT DISTINCT l.day FROM strata.late_activity l
                                         JOIN strata.archive_days d
                                           ON d.day = l.day AND d.state = 'committed'
                                        WHERE NOT pg_visible_in_snapshot(l.xid, d.export_snapshot)
                                        ORDER BY 1";

const NOW_SQL: &str = "SELECT now()";

/// On a source database: its outbox's oldest unshipped event in a range.
const OLDEST_UNSHIPPED_SQL: &str = "SELECT min(occurred_at) FROM strata_outbox.events
                                     WHERE occurred_at >= $1 AND occurred_at < $2";

/// Where a day stands in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayStatus {
    /// The day.
    pub day: NaiveDate,
    /// Sealed or committed.
    pub state: DayState,
    /// Export snapshot (committed days).
    pub export_snapshot: Option<String>,
    /// Committed rows, all files.
    pub rows: i64,
    /// Committed bytes.
    pub bytes: i64,
    /// Committed files.
    pub files: i32,
    /// Commits so far.
    pub version: i32,
    /// Commits reflected in the manifest object.
    pub manifest_version: i32,
    /// When its partition was dropped.
    pub partition_dropped_at: Option<DateTime<Utc>>,
}

impl DayStatus {
    /// Committed, with a commit the manifest does not reflect yet: its
    /// files still wait for their final keys.
    pub fn needs_publish(&self) -> bool {
        self.state == DayState::Committed && self.manifest_version < self.version
    }

    /// Committed, and every commit is published.
    pub fn is_published(&self) -> bool {
        self.state == DayState::Committed && self.manifest_version >= self.version
    }
}

/// Text column `index` of `row` parsed into `T`; an unknown value is
/// [`ArchiveError::UnknownValue`].
fn parsed<T: FromStr<Err = UnknownValue>>(
    row: &Row,
    index: usize,
    context: &'static str,
) -> Result<T, ArchiveError> {
    let text: &str = column(row, index, context)?;
    text.parse()
        .map_err(|error| ArchiveError::UnknownValue { context, error })
}

fn status_from_row(row: &Row) -> Result<DayStatus, ArchiveError> {
    const CONTEXT: &str = "the archive catalog";
    Ok(DayStatus {
        day: column(row, 0, CONTEXT)?,
        state: parsed(row, 1, CONTEXT)?,
        export_snapshot: column(row, 2, CONTEXT)?,
        rows: column(row, 3, CONTEXT)?,
        bytes: column(row, 4, CONTEXT)?,
        files: column(row, 5, CONTEXT)?,
        version: column(row, 6, CONTEXT)?,
        manifest_version: column(row, 7, CONTEXT)?,
        partition_dropped_at: column(row, 8, CONTEXT)?,
    })
}

/// The catalog entry of `day`, if any.
pub async fn day_status(
    client: &impl GenericClient,
    day: NaiveDate,
) -> Result<Option<DayStatus>, ArchiveError> {
    let row = client
        .query_opt(DAY_STATUS_SQL, &[&day])
        .await
        .map_err(ArchiveError::db("read the archive catalog"))?;
    row.as_ref().map(status_from_row).transpose()
}

/// Every catalog entry.
pub async fn all_days(client: &Client) -> Result<Vec<DayStatus>, ArchiveError> {
    let rows = client
        .query(ALL_DAYS_SQL, &[])
        .await
        .map_err(ArchiveError::db("read the archive catalog"))?;
    rows.iter().map(status_from_row).collect()
}

/// One committed file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommittedFile {
    /// Object key.
    pub key: String,
    /// The day's export or a late file.
    pub origin: FileOrigin,
    /// Order among the day's files.
    pub seq: i32,
    /// Rows.
    pub rows: i64,
    /// Size.
    pub bytes: i64,
    /// First user id.
    pub min_user_id: String,
    /// Last user id.
    pub max_user_id: String,
    /// SHA-256 of the bytes.
    pub sha256: String,
    /// Content digest of the rows.
    pub content_sha256: String,
    /// Archiver epoch that committed it.
    pub epoch: i64,
}

/// The committed files of `day`, in order.
pub async fn day_files(
    client: &impl GenericClient,
    day: NaiveDate,
) -> Result<Vec<CommittedFile>, ArchiveError> {
    let rows = client
        .query(DAY_FILES_SQL, &[&day])
        .await
        .map_err(ArchiveError::db("read the archive catalog"))?;
    const CONTEXT: &str = "the archive catalog's files";
    rows.iter()
        .map(|r| -> Result<CommittedFile, ArchiveError> {
            Ok(CommittedFile {
                key: column(r, 0, CONTEXT)?,
                origin: parsed(r, 1, CONTEXT)?,
                seq: column(r, 2, CONTEXT)?,
                rows: column(r, 3, CONTEXT)?,
                bytes: column(r, 4, CONTEXT)?,
                min_user_id: column(r, 5, CONTEXT)?,
                max_user_id: column(r, 6, CONTEXT)?,
                sha256: column(r, 7, CONTEXT)?,
                content_sha256: column(r, 8, CONTEXT)?,
                epoch: column(r, 9, CONTEXT)?,
            })
        })
        .collect()
}

/// Days that have a hot partition.
pub async fn partition_days(client: &Client) -> Result<Vec<NaiveDate>, ArchiveError> {
    let rows = client
        .query(PARTITION_DAYS_SQL, &[])
        .await
        .map_err(ArchiveError::db("list hot partitions"))?;
    let mut days: Vec<NaiveDate> = Vec::new();
    for r in &rows {
        let name: &str = column(r, 0, "a hot partition's name")?;
        if let Some(day) = partition_day(name) {
            days.push(day);
        }
    }
    days.sort();
    Ok(days)
}

/// Days with captured rows still waiting for a late file.
pub async fn days_with_late_rows(client: &Client) -> Result<Vec<NaiveDate>, ArchiveError> {
    let rows = client
        .query(DAYS_WITH_LATE_ROWS_SQL, &[])
        .await
        .map_err(ArchiveError::db("list late rows"))?;
    rows.iter()
        .map(|r| column::<NaiveDate>(r, 0, "the days with late rows"))
        .collect()
}

/// The database's clock (the one the lease and settle rules use).
pub async fn db_now(client: &Client) -> Result<DateTime<Utc>, ArchiveError> {
    let row = client
        .query_one(NOW_SQL, &[])
        .await
        .map_err(ArchiveError::db("read the clock"))?;
    column(&row, 0, "the clock")
}

/// Oldest `occurred_at` among a source's unshipped outbox rows of `day`,
/// on a client of that source. Only the day's own rows count: rows of
/// earlier days are late rows of days already archived, and rows far
/// outside any day are dead-lettered by the relay. Bounding the scan also
/// keeps out an `occurred_at` that plain SQL can insert but chrono cannot
/// represent (`-infinity`, a date BC), which would not decode.
pub(crate) async fn oldest_unshipped(
    source: &Client,
    day: NaiveDate,
    timeout: Duration,
) -> Result<Option<DateTime<Utc>>, ArchiveError> {
    let (start, end) = (day_start(day), day_end(day));
    let row = bounded(
        "read the outbox",
        timeout,
        source.query_one(OLDEST_UNSHIPPED_SQL, &[&start, &end]),
    )
    .await?;
    column(&row, 0, "the outbox's oldest occurred_at")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: DayState, version: i32, manifest_version: i32) -> DayStatus {
        crate::test_support::status(
            crate::test_support::date("2025-03-04"),
            state,
            version,
            manifest_version,
        )
    }

    #[test]
    fn a_commit_the_manifest_lacks_needs_publishing() {
        assert!(status(DayState::Committed, 1, 0).needs_publish());
        assert!(status(DayState::Committed, 3, 2).needs_publish());
        assert!(!status(DayState::Committed, 2, 2).needs_publish());
        assert!(!status(DayState::Sealed, 0, 0).needs_publish());
        assert!(!status(DayState::Sealed, 1, 0).needs_publish());
    }

    #[test]
    fn only_a_committed_day_with_every_commit_in_its_manifest_is_published() {
        assert!(status(DayState::Committed, 2, 2).is_published());
        assert!(!status(DayState::Committed, 2, 1).is_published());
        assert!(!status(DayState::Sealed, 0, 0).is_published());
    }

    #[test]
    fn the_day_queries_name_the_status_columns_in_order() {
        assert!(DAY_STATUS_SQL.starts_with("SELECT day, state, export_snapshot::text, rows,"));
        assert!(DAY_STATUS_SQL.ends_with("FROM strata.archive_days WHERE day = $1"));
        assert!(ALL_DAYS_SQL.ends_with("FROM strata.archive_days ORDER BY day"));
    }
}
