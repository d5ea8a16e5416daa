//! The export's SQL: its session (REPEATABLE READ, read only, no statement
//! timeout) and snapshot, the `SELECT`s COPY runs for a day and for a
//! day's late rows, and the COPY around them. COPY takes no bind parameters, so the day's bounds and
//! the snapshot are inlined, and a snapshot is accepted only as
//! `pg_current_snapshot()` prints it.

use std::time::Duration;

use chrono::NaiveDate;
use strata_archive::layout;
use tokio_postgres::Client;

use crate::day::{day_end, day_start};
use crate::error::ArchiveError;
use crate::pg::{bounded, column};

/// The export may run long: no statement timeout, and one snapshot for all
/// of it.
const BEGIN_EXPORT_SQL: &str = "SET statement_timeout = 0;
     BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

const SNAPSHOT_SQL: &str = "SELECT pg_current_snapshot()::text";

const END_EXPORT_SQL: &str = "COMMIT";

/// The binary COPY out of an export `SELECT` ([`day_export_select`],
/// [`late_export_select`]), which takes the place of `{select}`.
const COPY_OUT_SQL: &str = "COPY ({select}) TO STDOUT (FORMAT binary)";

/// Opens the export's transaction on `client` (a connection of its own)
/// and returns its snapshot.
pub(crate) async fn begin_export(
    client: &Client,
    timeout: Duration,
) -> Result<String, ArchiveError> {
    bounded(
        "begin the export",
        timeout,
        client.batch_execute(BEGIN_EXPORT_SQL),
    )
    .await?;
    let row = bounded(
        "take the export snapshot",
        timeout,
        client.query_one(SNAPSHOT_SQL, &[]),
    )
    .await?;
    let snapshot: String = column(&row, 0, "the export snapshot")?;
    check_snapshot_literal(&snapshot)?;
    Ok(snapshot)
}

/// Ends the export's read-only transaction (nothing to keep; a failure is
/// ignored, the connection is dropped next).
pub(crate) async fn end_export(client: &Client) {
    let _ = client.batch_execute(END_EXPORT_SQL).await;
}

/// The rows of `day` in the hot store, read through the parent table and
/// bounded by the day (pruning keeps it a scan of one partition), sorted.
pub(crate) fn day_export_select(day: NaiveDate) -> String {
    format!(
        "SELECT {} FROM strata.activity \
         WHERE occurred_at >= '{}'::timestamptz AND occurred_at < '{}'::timestamptz \
         ORDER BY user_id, occurred_at, event_id",
        layout::COLUMNS.join(", "),
        day_start(day).format("%Y-%m-%d %H:%M:%S+00"),
        day_end(day).format("%Y-%m-%d %H:%M:%S+00"),
    )
}

/// The captured rows of `day` its export (`export_snapshot`) did not see,
/// sorted.
pub(crate) fn late_export_select(
    day: NaiveDate,
    export_snapshot: &str,
) -> Result<String, ArchiveError> {
    check_snapshot_literal(export_snapshot)?;
    Ok(format!(
        "SELECT {} FROM strata.late_activity
          WHERE day = '{}' AND NOT pg_visible_in_snapshot(xid, '{export_snapshot}'::pg_snapshot)
          ORDER BY user_id, occurred_at, event_id",
        layout::COLUMNS.join(", "),
        day.format("%Y-%m-%d")
    ))
}

/// The COPY statement that streams the rows of `select` (an export
/// `SELECT`) in Postgres's binary format.
pub(crate) fn copy_out_sql(select: &str) -> String {
    COPY_OUT_SQL.replacen("{select}", select, 1)
}

/// Snapshots are inlined into COPY (which takes no parameters): accept
/// only what `pg_current_snapshot()` prints.
pub(crate) fn check_snapshot_literal(snapshot: &str) -> Result<(), ArchiveError> {
    if !snapshot.is_empty()
        && snapshot
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b':' || b == b',')
    {
        Ok(())
    } else {
        Err(ArchiveError::BadSnapshot {
            text: snapshot.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 3, 4).expect("a date")
    }

    #[test]
    fn only_snapshot_text_is_inlined() {
        for ok in ["100:100:", "100:105:101,103", "1:1:"] {
            assert!(check_snapshot_literal(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1:2:' OR true --", "1:2:3 ", "1;2", "abc"] {
            let err = check_snapshot_literal(bad).expect_err(bad);
            assert!(
                matches!(err, ArchiveError::BadSnapshot { .. }),
                "{bad}: {err}"
            );
        }
        assert!(late_export_select(day(), "1:2:'x'").is_err());
    }

    #[test]
    fn the_day_select_is_bounded_by_the_day_and_sorted() {
        let select = day_export_select(day());
        assert!(select.contains("FROM strata.activity"), "{select}");
        assert!(select.contains("occurred_at >= '2025-03-04 00:00:00+00'::timestamptz"));
        assert!(select.contains("occurred_at < '2025-03-05 00:00:00+00'::timestamptz"));
        assert!(select.ends_with("ORDER BY user_id, occurred_at, event_id"));
    }

    #[test]
    fn the_copy_wraps_the_select_whole() {
        let select = day_export_select(day());
        assert_eq!(
            copy_out_sql(&select),
            format!("COPY ({select}) TO STDOUT (FORMAT binary)")
        );
    }

    #[test]
    fn the_late_select_skips_what_the_export_saw() {
        let select = late_export_select(day(), "10:20:12,15").expect("a snapshot");
        assert!(select.contains("FROM strata.late_activity"), "{select}");
        assert!(select.contains("day = '2025-03-04'"));
        assert!(select.contains("NOT pg_visible_in_snapshot(xid, '10:20:12,15'::pg_snapshot)"));
        assert!(select.ends_with("ORDER BY user_id, occurred_at, event_id"));
    }
}
