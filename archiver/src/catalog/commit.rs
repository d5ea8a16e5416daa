//! The catalog writes of the commit protocol: sealing a day, the commit
//! transaction's statements (lock the day, record files, count the commit,
//! clear late rows the export saw), and recording a published manifest.

use std::time::Duration;

use chrono::NaiveDate;
use tokio_postgres::{Client, GenericClient};

use super::{parsed, DayState, FileOrigin};
use crate::error::ArchiveError;
use crate::pg::{bounded, column};

const SEAL_SQL: &str = "INSERT INTO strata.archive_days (day, state) VALUES ($1, 'sealed')
     ON CONFLICT (day) DO NOTHING";

/// Installs the trigger copying every later insert into the day's
/// partition to `strata.late_activity`.
const SEAL_PARTITION_SQL: &str = "SELECT strata.seal_day_partition($1)";

const NEXT_FILE_SEQ_SQL: &str =
    "SELECT coalesce(max(seq) + 1, 0) FROM strata.archive_files WHERE day = $1";

const LOCK_DAY_SQL: &str = "SELECT state FROM strata.archive_days WHERE day = $1 FOR UPDATE";

const RECORD_FILE_SQL: &str = "INSERT INTO strata.archive_files
        (day, object_key, origin, seq, rows, bytes, min_user_id, max_user_id,
         sha256, content_sha256, epoch)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// The day's export snapshot is kept from its `day` commit; late commits
/// add to the counts.
const RECORD_COMMIT_SQL: &str = "UPDATE strata.archive_days
        SET state = 'committed',
            export_snapshot = CASE WHEN $2 = 'day' THEN $3::text::pg_snapshot
                                   ELSE export_snapshot END,
            committed_at = now(),
            committed_epoch = $4,
            rows = rows + $5,
            bytes = bytes + $6,
            files = files + $7,
            version = version + 1
      WHERE day = $1";

const CLEAR_ARCHIVED_LATE_ROWS_SQL: &str = "DELETE FROM strata.late_activity
      WHERE day = $1 AND pg_visible_in_snapshot(xid, $2::text::pg_snapshot)";

const RECORD_MANIFEST_SQL: &str = "UPDATE strata.archive_days SET manifest_version = $2
      WHERE day = $1 AND manifest_version < $2";

/// `SET LOCAL lock_timeout` to the statement timeout, so that relays do not
/// queue long behind the seal's lock.
fn lock_timeout_sql(timeout: Duration) -> String {
    format!("SET LOCAL lock_timeout = '{}ms'", timeout.as_millis())
}

/// Seals `day`: its catalog row (`sealed`, unless it has one) and its
/// partition's late-event trigger, in one transaction. Waits for in-flight
/// writers of the partition (bounded by `timeout`).
pub(crate) async fn seal_day(
    client: &mut Client,
    day: NaiveDate,
    timeout: Duration,
) -> Result<(), ArchiveError> {
    let tx = bounded("begin seal", timeout, client.transaction()).await?;
    bounded("seal the day", timeout, tx.execute(SEAL_SQL, &[&day])).await?;
    bounded(
        "install the late-event trigger",
        timeout,
        tx.batch_execute(&lock_timeout_sql(timeout)),
    )
    .await?;
    bounded(
        "install the late-event trigger",
        timeout,
        tx.execute(SEAL_PARTITION_SQL, &[&day]),
    )
    .await?;
    bounded("commit seal", timeout, tx.commit()).await
}

/// The number the next file of `day` gets.
pub(crate) async fn next_file_seq(client: &Client, day: NaiveDate) -> Result<i32, ArchiveError> {
    let row = client
        .query_one(NEXT_FILE_SEQ_SQL, &[&day])
        .await
        .map_err(ArchiveError::db("read the day's files"))?;
    column(&row, 0, "the day's next file number")
}

/// Locks the catalog row of `day` until the transaction `tx` ends; its
/// state, or `None` without a row.
pub(crate) async fn lock_day_state(
    tx: &impl GenericClient,
    day: NaiveDate,
    timeout: Duration,
) -> Result<Option<DayState>, ArchiveError> {
    let row = bounded("lock the day", timeout, tx.query_opt(LOCK_DAY_SQL, &[&day])).await?;
    row.as_ref()
        .map(|r| parsed(r, 0, "the day's catalog state"))
        .transpose()
}

/// One verified file, as the catalog records it.
pub(crate) struct FileRecord<'a> {
    /// Its final object key.
    pub key: &'a str,
    /// Its number among the day's files.
    pub seq: i32,
    /// Rows.
    pub rows: i64,
    /// Size.
    pub bytes: i64,
    /// First user id.
    pub min_user_id: &'a str,
    /// Last user id.
    pub max_user_id: &'a str,
    /// SHA-256 of the bytes.
    pub sha256: &'a str,
    /// Content digest of the rows.
    pub content_sha256: &'a str,
}

/// Records one file of `day` in the commit transaction `tx`.
pub(crate) async fn record_file(
    tx: &impl GenericClient,
    day: NaiveDate,
    origin: FileOrigin,
    epoch: i64,
    file: &FileRecord<'_>,
    timeout: Duration,
) -> Result<(), ArchiveError> {
    bounded(
        "record a file",
        timeout,
        tx.execute(
            RECORD_FILE_SQL,
            &[
                &day,
                &file.key,
                &origin.as_str(),
                &file.seq,
                &file.rows,
                &file.bytes,
                &file.min_user_id,
                &file.max_user_id,
                &file.sha256,
                &file.content_sha256,
                &epoch,
            ],
        ),
    )
    .await?;
    Ok(())
}

/// Totals of one commit of a day, as the catalog adds them up.
pub(crate) struct CommitTotals {
    /// Rows of the commit's files.
    pub rows: i64,
    /// Bytes of the commit's files.
    pub bytes: i64,
    /// Number of files.
    pub files: i32,
}

/// Marks `day` committed by `epoch` in the commit transaction `tx`, adding
/// `totals`; a `day` commit also keeps its export `snapshot`.
pub(crate) async fn record_commit(
    tx: &impl GenericClient,
    day: NaiveDate,
    origin: FileOrigin,
    snapshot: &str,
    epoch: i64,
    totals: &CommitTotals,
    timeout: Duration,
) -> Result<(), ArchiveError> {
    bounded(
        "commit the day",
        timeout,
        tx.execute(
            RECORD_COMMIT_SQL,
            &[
                &day,
                &origin.as_str(),
                &snapshot,
                &epoch,
                &totals.rows,
                &totals.bytes,
                &totals.files,
            ],
        ),
    )
    .await?;
    Ok(())
}

/// Deletes the captured rows of `day` that `snapshot` saw (they are in the
/// archive now), in the commit transaction `tx`.
pub(crate) async fn clear_archived_late_rows(
    tx: &impl GenericClient,
    day: NaiveDate,
    snapshot: &str,
    timeout: Duration,
) -> Result<(), ArchiveError> {
    bounded(
        "clear archived late rows",
        timeout,
        tx.execute(CLEAR_ARCHIVED_LATE_ROWS_SQL, &[&day, &snapshot]),
    )
    .await?;
    Ok(())
}

/// Records that the manifest of `day` reflects `version` commits (never
/// lowering it).
pub(crate) async fn record_manifest(
    client: &Client,
    day: NaiveDate,
    version: i32,
    timeout: Duration,
) -> Result<(), ArchiveError> {
    bounded(
        "record the manifest",
        timeout,
        client.execute(RECORD_MANIFEST_SQL, &[&day, &version]),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seal_waits_for_locks_no_longer_than_a_statement() {
        assert_eq!(
            lock_timeout_sql(Duration::from_secs(30)),
            "SET LOCAL lock_timeout = '30000ms'"
        );
    }
}
