//! The archiver's Prometheus metrics, registered in the process-wide registry.

use std::sync::LazyLock;

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec,
    IntGauge,
};

use crate::catalog::FileOrigin;

fn must<T>(result: prometheus::Result<T>, name: &str) -> T {
    match result {
        Ok(metric) => metric,
        // Only a duplicate registration (a programming error) gets here.
        Err(err) => panic!("register metric {name}: {err}"),
    }
}

/// Closed days waiting for their archive (after the settle time).
pub static DAYS_PENDING: LazyLock<IntGauge> = LazyLock::new(|| {
    must(
        register_int_gauge!(
            "strata_archiver_days_pending",
            "Closed, settled days not yet committed to the archive"
        ),
        "days_pending",
    )
});

/// Age of the oldest day not yet archived, measured from its end.
pub static LAG_SECONDS: LazyLock<IntGauge> = LazyLock::new(|| {
    must(
        register_int_gauge!(
            "strata_archiver_lag_seconds",
            "Seconds since the end of the oldest day not yet committed (0 when none)"
        ),
        "lag_seconds",
    )
});

/// Rows committed to the archive.
pub static ROWS_ARCHIVED: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "strata_archiver_rows_total",
            "Rows committed to the archive (day and late files)"
        ),
        "rows",
    )
});

/// Rows read from the hot store by exports (committed or not).
pub static ROWS_EXPORTED: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "strata_archiver_rows_exported_total",
            "Rows read from the hot store by exports; rate() gives rows/s"
        ),
        "rows_exported",
    )
});

/// Bytes uploaded.
pub static BYTES_UPLOADED: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "strata_archiver_uploaded_bytes_total",
            "Parquet bytes uploaded to the object store"
        ),
        "bytes_uploaded",
    )
});

/// Days and late files committed.
pub static COMMITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "strata_archiver_commits_total",
            "Catalog commits, by origin (day or late)",
            &["origin"]
        ),
        "commits",
    )
});

/// Uploaded files that failed verification (never committed).
pub static VERIFICATION_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "strata_archiver_verification_failures_total",
            "Files whose read-back did not match the hot store (not committed), and committed files failing --verify"
        ),
        "verification_failures",
    )
});

/// Failed steps, by kind.
pub static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "strata_archiver_errors_total",
            "Archiver steps that failed, by error kind",
            &["kind"]
        ),
        "errors",
    )
});

/// Hot partitions dropped after retention.
pub static PARTITIONS_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    must(
        register_int_counter!(
            "strata_archiver_partitions_dropped_total",
            "Hot partitions dropped after their day was committed and retention passed"
        ),
        "partitions_dropped",
    )
});

/// 1 while this process holds the archiver lease.
pub static IS_LEADER: LazyLock<IntGauge> = LazyLock::new(|| {
    must(
        register_int_gauge!(
            "strata_archiver_is_leader",
            "1 while this process holds the archiver lease"
        ),
        "is_leader",
    )
});

/// Registers every archiver metric now, so `/metrics` shows them at zero
/// from the start (a counter that appears only on its first increment
/// breaks rate() and alerts on absence).
pub fn register() {
    LazyLock::force(&DAYS_PENDING);
    LazyLock::force(&LAG_SECONDS);
    LazyLock::force(&ROWS_ARCHIVED);
    LazyLock::force(&ROWS_EXPORTED);
    LazyLock::force(&BYTES_UPLOADED);
    for origin in FileOrigin::ALL {
        COMMITS.with_label_values(&[origin.as_str()]);
    }
    LazyLock::force(&VERIFICATION_FAILURES);
    LazyLock::force(&ERRORS);
    LazyLock::force(&PARTITIONS_DROPPED);
    LazyLock::force(&IS_LEADER);
}
