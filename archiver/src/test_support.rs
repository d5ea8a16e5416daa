//! Fixtures shared by the archiver's unit tests: dates, instants and
//! catalog rows written the way people read them.

use chrono::{DateTime, NaiveDate, Utc};

use crate::catalog::{DayState, DayStatus};

/// `2025-03-01` as a date.
pub(crate) fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("a date")
}

/// An RFC 3339 instant in UTC.
pub(crate) fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("an instant")
        .with_timezone(&Utc)
}

/// A catalog row of `day` in `state` with its commit and manifest versions.
pub(crate) fn status(
    day: NaiveDate,
    state: DayState,
    version: i32,
    manifest_version: i32,
) -> DayStatus {
    DayStatus {
        day,
        state,
        export_snapshot: None,
        rows: 0,
        bytes: 0,
        files: 0,
        version,
        manifest_version,
        partition_dropped_at: None,
    }
}
