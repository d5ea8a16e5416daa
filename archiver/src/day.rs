//! UTC days: the instants a day starts and ends, and the name of its hot
//! partition (`activity_YYYYMMDD`) both ways.

use chrono::{DateTime, NaiveDate, Utc};

/// Name of the hot partition of `day`.
pub fn partition_name(day: NaiveDate) -> String {
    format!("activity_{}", day.format("%Y%m%d"))
}

/// The day of a hot partition named `activity_YYYYMMDD`; `None` for any
/// other name.
pub fn partition_day(name: &str) -> Option<NaiveDate> {
    name.strip_prefix("activity_")
        .and_then(|digits| NaiveDate::parse_from_str(digits, "%Y%m%d").ok())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::date;

    #[test]
    fn a_day_spans_midnight_to_midnight_utc() {
        let day = date("2024-02-29");
        assert_eq!(day_start(day).to_rfc3339(), "2024-02-29T00:00:00+00:00");
        assert_eq!(day_end(day).to_rfc3339(), "2024-03-01T00:00:00+00:00");
        assert_eq!(day_end(day), day_start(date("2024-03-01")));
    }

    #[test]
    fn partition_names_round_trip() {
        let day = date("2025-01-07");
        assert_eq!(partition_name(day), "activity_20250107");
        assert_eq!(partition_day(&partition_name(day)), Some(day));
    }

    #[test]
    fn other_tables_are_not_partitions_of_a_day() {
        for name in [
            "activity",
            "activity_default",
            "activity_2025010",
            "activity_20251301",
            "late_activity",
            "archive_days",
        ] {
            assert_eq!(partition_day(name), None, "{name}");
        }
    }
}
