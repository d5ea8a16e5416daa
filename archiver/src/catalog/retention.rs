//! Retention's SQL: the hot partitions (attached or half-detached), late
//! rows still waiting, detaching and dropping a partition, and the staged
//! files garbage collection must keep.

use chrono::NaiveDate;
use tokio_postgres::Client;

use crate::error::ArchiveError;
use crate::pg::column;

/// Every table shaped like a day's partition, attached or not: a detach
/// that a crash interrupted leaves it pending, a finished one leaves it
/// detached but not dropped.
const HOT_PARTITIONS_SQL: &str =
    "SELECT c.relname, i.inhrelid IS NOT NULL, coalesce(i.inhdetachpending, false)
       FROM pg_class c
       JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
      WHERE n.nspname = 'strata' AND c.relkind = 'r'
        AND c.relname ~ '^activity_[0-9]{8}$'";

const LATE_ROWS_WAIT_SQL: &str = "SELECT EXISTS (SELECT FROM strata.late_activity WHERE day = $1)";

const RECORD_PARTITION_DROPPED_SQL: &str =
    "UPDATE strata.archive_days SET partition_dropped_at = now() WHERE day = $1";

/// Staged files of committed days not yet published are still needed.
const UNPUBLISHED_KEYS_SQL: &str = "SELECT f.object_key FROM strata.archive_files f
       JOIN strata.archive_days d USING (day)
      WHERE d.manifest_version < d.version";

/// DETACH CONCURRENTLY never blocks the relays' inserts into other days; a
/// detach a crash interrupted is finalized.
fn detach_sql(name: &str, detach_pending: bool) -> String {
    if detach_pending {
        format!("ALTER TABLE strata.activity DETACH PARTITION strata.{name} FINALIZE")
    } else {
        format!("ALTER TABLE strata.activity DETACH PARTITION strata.{name} CONCURRENTLY")
    }
}

/// Looks each transaction of the table up in the log by its id, one
/// index probe each: at stale statistics ("empty") a join would scan the
/// whole log, or probe it once per transaction with a filter, so the
/// lookup is a LATERAL with LIMIT (never flattened into a join) under
/// `enable_seqscan = off`, for the one implicit transaction of the batch.
const NO_SEQSCAN: &str = "SET LOCAL enable_seqscan = off; ";

/// Positions of transactions that stored rows in the (detached) table
/// become unreadable with it: the stream's floor rises to the newest of
/// them and the log below it goes, before the rows do.
fn raise_stream_floor_sql(name: &str) -> String {
    format!(
        "{NO_SEQSCAN}WITH gone AS (\
             SELECT max(l.seq) AS seq \
               FROM (SELECT DISTINCT stream_txid AS txid FROM strata.{name} \
                      WHERE stream_txid IS NOT NULL) t \
              CROSS JOIN LATERAL (SELECT seq FROM strata.stream_log \
                                   WHERE txid = t.txid LIMIT 1) l), \
         raised AS (\
             UPDATE strata.stream_floor f SET floor = gone.seq FROM gone \
              WHERE gone.seq > f.floor RETURNING f.floor) \
         DELETE FROM strata.stream_log WHERE seq <= (SELECT floor FROM raised)"
    )
}

/// When the newest transaction with rows in the table was numbered (UTC
/// µs; a simple query, for the setting).
fn newest_stream_commit_sql(name: &str) -> String {
    format!(
        "{NO_SEQSCAN}SELECT (extract(epoch FROM max(l.committed_at)) * 1000000)::int8 \
           FROM (SELECT DISTINCT stream_txid AS txid FROM strata.{name} \
                  WHERE stream_txid IS NOT NULL) t \
          CROSS JOIN LATERAL (SELECT committed_at FROM strata.stream_log \
                               WHERE txid = t.txid LIMIT 1) l"
    )
}

fn drop_sql(name: &str) -> String {
    format!("DROP TABLE IF EXISTS strata.{name}")
}

/// A table named like a day's hot partition (`activity_YYYYMMDD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HotPartition {
    /// Its name (safe to inline: it matched `^activity_[0-9]{8}$`).
    pub name: String,
    /// Still a partition of `strata.activity`.
    pub attached: bool,
    /// A `DETACH ... CONCURRENTLY` was interrupted.
    pub detach_pending: bool,
}

/// The tables named like hot partitions, attached or not.
pub(crate) async fn hot_partitions(client: &Client) -> Result<Vec<HotPartition>, ArchiveError> {
    let rows = client
        .query(HOT_PARTITIONS_SQL, &[])
        .await
        .map_err(ArchiveError::db("list hot partitions"))?;
    rows.iter()
        .map(|r| -> Result<HotPartition, ArchiveError> {
            Ok(HotPartition {
                name: column(r, 0, "a hot partition")?,
                attached: column(r, 1, "a hot partition")?,
                detach_pending: column(r, 2, "a hot partition")?,
            })
        })
        .collect()
}

/// Whether captured rows of `day` wait in `strata.late_activity`.
pub(crate) async fn late_rows_wait(client: &Client, day: NaiveDate) -> Result<bool, ArchiveError> {
    let row = client
        .query_one(LATE_ROWS_WAIT_SQL, &[&day])
        .await
        .map_err(ArchiveError::db("check late rows"))?;
    column(&row, 0, "whether late rows wait")
}

/// Detaches `partition` (finalizing an interrupted detach).
pub(crate) async fn detach_partition(
    client: &Client,
    partition: &HotPartition,
) -> Result<(), ArchiveError> {
    let name = &partition.name;
    client
        .batch_execute(&detach_sql(name, partition.detach_pending))
        .await
        .map_err(ArchiveError::db(format!("detach {name}")))
}

/// When the newest transaction that stored rows in `partition` was
/// numbered (none: no numbered rows), so that a partition holding late
/// rows is kept until they are as old as the retention.
pub(crate) async fn newest_stream_commit(
    client: &Client,
    partition: &HotPartition,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ArchiveError> {
    let name = &partition.name;
    let messages = client
        .simple_query(&newest_stream_commit_sql(name))
        .await
        .map_err(ArchiveError::db(format!(
            "newest stream position in {name}"
        )))?;
    let Some(row) = messages.iter().find_map(|message| match message {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    }) else {
        return Ok(None);
    };
    // NULL: no numbered rows in the table.
    let Some(text) = row.try_get(0).map_err(ArchiveError::db(format!(
        "newest stream position in {name}"
    )))?
    else {
        return Ok(None);
    };
    text.parse::<i64>()
        .ok()
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map(Some)
        .ok_or_else(|| ArchiveError::UnknownValue {
            context: "the newest stream position of a partition",
            error: super::states::UnknownValue {
                column: "max(stream_log.committed_at)",
                value: text.to_string(),
            },
        })
}

/// Raises the subscription stream's floor over the positions of the rows
/// of `partition`: before it is detached (its rows leave
/// `strata.activity` then) and again before it is dropped (a late row may
/// have arrived in between), so a subscriber is told OUT_OF_RANGE rather
/// than skipping rows that went.
pub(crate) async fn raise_stream_floor(
    client: &Client,
    partition: &HotPartition,
) -> Result<(), ArchiveError> {
    let name = &partition.name;
    client
        .batch_execute(&raise_stream_floor_sql(name))
        .await
        .map_err(ArchiveError::db(format!(
            "raise the stream floor over {name}"
        )))
}

/// Drops the (detached) table of `partition`.
pub(crate) async fn drop_partition(
    client: &Client,
    partition: &HotPartition,
) -> Result<(), ArchiveError> {
    let name = &partition.name;
    client
        .batch_execute(&drop_sql(name))
        .await
        .map_err(ArchiveError::db(format!("drop {name}")))
}

/// Records in the catalog that the partition of `day` is gone.
pub(crate) async fn record_partition_dropped(
    client: &Client,
    day: NaiveDate,
) -> Result<(), ArchiveError> {
    client
        .execute(RECORD_PARTITION_DROPPED_SQL, &[&day])
        .await
        .map_err(ArchiveError::db("record the drop"))?;
    Ok(())
}

/// Final keys of the files of days whose last commit is not published yet.
pub(crate) async fn unpublished_keys(client: &Client) -> Result<Vec<String>, ArchiveError> {
    let rows = client
        .query(UNPUBLISHED_KEYS_SQL, &[])
        .await
        .map_err(ArchiveError::db("list unpublished files"))?;
    rows.iter()
        .map(|r| column::<String>(r, 0, "an unpublished file's key"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_detach_is_finalized_and_a_new_one_is_concurrent() {
        assert_eq!(
            detach_sql("activity_20250304", false),
            "ALTER TABLE strata.activity DETACH PARTITION strata.activity_20250304 CONCURRENTLY"
        );
        assert_eq!(
            detach_sql("activity_20250304", true),
            "ALTER TABLE strata.activity DETACH PARTITION strata.activity_20250304 FINALIZE"
        );
        assert_eq!(
            drop_sql("activity_20250304"),
            "DROP TABLE IF EXISTS strata.activity_20250304"
        );
    }
}
