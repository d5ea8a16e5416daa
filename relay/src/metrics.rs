//! The relay's Prometheus metrics, registered in the process-wide registry.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge_vec, GaugeVec,
    HistogramVec, IntCounterVec, IntGaugeVec,
};

fn must<T>(result: prometheus::Result<T>, name: &str) -> T {
    match result {
        Ok(metric) => metric,
        // Only a duplicate registration (a programming error) gets here.
        Err(err) => panic!("register metric {name}: {err}"),
    }
}

/// Events written to the hot store (duplicates dropped there included).
pub static EVENTS_SHIPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "strata_relay_events_shipped_total",
            "Outbox rows shipped to the hot store and released",
            &["source"]
        ),
        "events_shipped",
    )
});

/// Batches committed.
pub static BATCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "strata_relay_batches_total",
            "Batches shipped and released",
            &["source"]
        ),
        "batches",
    )
});

/// Rows per batch.
pub static BATCH_ROWS: LazyLock<HistogramVec> = LazyLock::new(|| {
    must(
        register_histogram_vec!(
            "strata_relay_batch_rows",
            "Rows per shipped batch",
            &["source"],
            vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0]
        ),
        "batch_rows",
    )
});

/// Payload bytes per batch.
pub static BATCH_BYTES: LazyLock<HistogramVec> = LazyLock::new(|| {
    must(
        register_histogram_vec!(
            "strata_relay_batch_bytes",
            "Payload bytes per shipped batch as the claim counted them (small payloads at their stored size, oversized ones at the limit)",
            &["source"],
            prometheus::exponential_buckets(1024.0, 4.0, 9).unwrap_or_default()
        ),
        "batch_bytes",
    )
});

/// `ANALYZE` runs of the outbox after slow claims.
pub static OUTBOX_ANALYZED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "strata_relay_outbox_analyzed_total",
            "ANALYZE runs of the outbox after a claim slower than 1 s (stale statistics)",
            &["source"]
        ),
        "outbox_analyzed",
    )
});

/// Claim-to-release time of a batch.
pub static BATCH_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    must(
        register_histogram_vec!(
            "strata_relay_batch_seconds",
            "Time from claim to release of a batch",
            &["source"],
            vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]
        ),
        "batch_seconds",
    )
});

/// Age of the oldest row still in the outbox.
pub static OLDEST_UNSHIPPED_SECONDS: LazyLock<GaugeVec> = LazyLock::new(|| {
    must(
        prometheus::register_gauge_vec!(
            "strata_relay_oldest_unshipped_seconds",
            "Age of the oldest outbox row not yet released (0 when empty)",
            &["source"]
        ),
        "oldest_unshipped",
    )
});

/// Rows the reconciler re-sent.
pub static RECONCILER_RESENT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "strata_relay_reconciler_resent_total",
            "Rows older than reconcile_after shipped by the reconciler",
            &["source"]
        ),
        "resent",
    )
});

/// Poison rows moved to the dead-letter table.
pub static DEAD_LETTERED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "strata_relay_dead_lettered_total",
            "Outbox rows moved to strata.dead_letters, by reason code",
            &["source", "reason"]
        ),
        "dead_lettered",
    )
});

/// 1 while this process is the source's elected reconciler.
pub static RECONCILER_LEADER: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    must(
        register_int_gauge_vec!(
            "strata_relay_reconciler_leader",
            "1 while this relay is the elected reconciler of the source",
            &["source"]
        ),
        "leader",
    )
});

/// Faults, by the stage they hit.
pub static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "strata_relay_errors_total",
            "Faults met by the relay (all retried)",
            &["source", "stage"]
        ),
        "errors",
    )
});

/// Notifications received.
pub static NOTIFICATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "strata_relay_notifications_total",
            "NOTIFY strata_outbox messages received",
            &["source"]
        ),
        "notifications",
    )
});
