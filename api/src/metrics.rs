//! The API's Prometheus metrics, registered in the process-wide registry.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, HistogramVec,
    IntCounterVec, IntGauge,
};

fn must<T>(result: prometheus::Result<T>, name: &str) -> T {
    match result {
        Ok(metric) => metric,
        // Only a duplicate registration (a programming error) gets here.
        Err(err) => panic!("register metric {name}: {err}"),
    }
}

/// Calls by method and gRPC status code.
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "strata_api_requests_total",
            "API calls by method and status code (OK, INVALID_ARGUMENT, ...)",
            &["method", "code"]
        ),
        "requests",
    )
});

/// Call latency by method (streams: until the handler returns the stream).
pub static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    must(
        register_histogram_vec!(
            "strata_api_request_seconds",
            "API call latency by method",
            &["method"],
            vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]
        ),
        "latency",
    )
});

/// Exports running in this process (streams and jobs).
pub static EXPORTS_RUNNING: LazyLock<IntGauge> = LazyLock::new(|| {
    must(
        register_int_gauge!(
            "strata_api_exports_running",
            "Exports running in this process: streams, and jobs its worker is writing"
        ),
        "exports_running",
    )
});

/// Bytes exported, by kind (stream, job).
pub static EXPORT_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "strata_api_export_bytes_total",
            "Bytes written by finished exports",
            &["kind"]
        ),
        "export_bytes",
    )
});

/// Errors by stage.
pub static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "strata_api_errors_total",
            "Internal errors by stage (audit, read, export_job, ...)",
            &["stage"]
        ),
        "errors",
    )
});

/// Ranged GETs of archive files (metadata and data).
pub static COLD_GETS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    must(
        prometheus::register_int_counter!(
            "strata_api_cold_gets_total",
            "Ranged GETs of archive files by the API (footers and data)"
        ),
        "cold_gets",
    )
});

/// Bytes fetched from archive files.
pub static COLD_BYTES: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    must(
        prometheus::register_int_counter!(
            "strata_api_cold_bytes_total",
            "Bytes fetched from archive files by the API"
        ),
        "cold_bytes",
    )
});

/// Calls refused before any expensive work, by cap.
pub static REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "strata_api_refused_total",
            "Calls refused with RESOURCE_EXHAUSTED before any work, by cap (peer_rate, principal_rate, calls_per_principal, calls_total, cold_reads_per_principal, cold_reads_total)",
            &["cap"]
        ),
        "refused",
    )
});

/// Refused calls written as part of a summary row instead of one row each.
pub static AUDIT_SUMMARIZED: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    must(
        prometheus::register_int_counter!(
            "strata_api_audit_summarized_total",
            "Refused calls recorded in per-peer audit summary rows instead of one row each"
        ),
        "audit_summarized",
    )
});

/// Calls that ran out of their deadline.
pub static DEADLINES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "strata_api_deadline_exceeded_total",
            "Calls ended by api.request_timeout or the client's deadline",
            &["method"]
        ),
        "deadlines",
    )
});

/// Registers every metric so it shows (at zero) before anything happens.
pub fn register() {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&LATENCY);
    LazyLock::force(&EXPORTS_RUNNING);
    LazyLock::force(&EXPORT_BYTES);
    LazyLock::force(&ERRORS);
    LazyLock::force(&COLD_GETS);
    LazyLock::force(&COLD_BYTES);
    LazyLock::force(&REFUSED);
    LazyLock::force(&AUDIT_SUMMARIZED);
    LazyLock::force(&DEADLINES);
}

/// Counts a call of `method` answered with `code`, and its latency from
/// `started`.
pub fn call_finished(method: &str, code: tonic::Code, started: Instant) {
    REQUESTS
        .with_label_values(&[method, crate::error::code_name(code)])
        .inc();
    LATENCY
        .with_label_values(&[method])
        .observe(started.elapsed().as_secs_f64());
}

/// Counts an internal error at `stage`.
pub fn errors(stage: &str) {
    ERRORS.with_label_values(&[stage]).inc();
}

/// Counts a finished export.
pub fn export_finished(kind: &str, bytes: u64) {
    EXPORT_BYTES.with_label_values(&[kind]).inc_by(bytes);
}

/// Subscriptions open in this process.
pub static SUBSCRIBERS: LazyLock<IntGauge> = LazyLock::new(|| {
    must(
        register_int_gauge!(
            "strata_api_subscribers",
            "Subscribe streams open in this process"
        ),
        "subscribers",
    )
});

/// Events delivered to subscribers, by mode (catch_up, live).
pub static SUBSCRIPTION_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "strata_api_subscription_events_total",
            "Events delivered to subscribers, by how they were read (catch_up, live)",
            &["mode"]
        ),
        "subscription_events",
    )
});

/// Live subscribers that fell behind their buffer and went back to
/// reading the store.
pub static SUBSCRIPTION_FELL_BEHIND: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    must(
        prometheus::register_int_counter!(
            "strata_api_subscription_fell_behind_total",
            "Live subscribers dropped to catch-up because they did not keep up with their buffer"
        ),
        "subscription_fell_behind",
    )
});

/// How far each subscription is behind the newest commit, in
/// transactions, by subscription (its request id; removed when it ends).
pub static SUBSCRIPTION_LAG_TRANSACTIONS: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    must(
        prometheus::register_int_gauge_vec!(
            "strata_api_subscription_lag_transactions",
            "Relay transactions committed after a subscription's position, by subscription",
            &["subscription"]
        ),
        "subscription_lag_transactions",
    )
});

/// How old each subscription's position is, in seconds: now minus the
/// commit time of the newest transaction it delivered, by subscription.
pub static SUBSCRIPTION_LAG_SECONDS: LazyLock<prometheus::GaugeVec> = LazyLock::new(|| {
    must(
        prometheus::register_gauge_vec!(
            "strata_api_subscription_lag_seconds",
            "Seconds between now and the commit of a subscription's position, while it is behind",
            &["subscription"]
        ),
        "subscription_lag_seconds",
    )
});

/// Statements the live feeds ran (one per filter and wake-up, or more
/// pages when much was committed).
pub static FEED_READS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    must(
        prometheus::register_int_counter!(
            "strata_api_feed_reads_total",
            "Reads of the live feeds shared by subscriptions with the same filter"
        ),
        "feed_reads",
    )
});

/// Consumer group members served by this process, by group.
pub static GROUP_MEMBERS: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    must(
        prometheus::register_int_gauge_vec!(
            "strata_api_group_members",
            "Consumer group members connected to this process, by group",
            &["group"]
        ),
        "group_members",
    )
});

/// Buckets claimed by members (a member joining, leaving or dying moves
/// some), by group.
pub static GROUP_BUCKET_CLAIMS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    must(
        register_int_counter_vec!(
            "strata_api_group_bucket_claims_total",
            "Buckets a consumer group member of this process claimed, by group",
            &["group"]
        ),
        "group_bucket_claims",
    )
});

/// Events delivered to this process's group members and not yet
/// acknowledged, by group.
pub static GROUP_UNACKNOWLEDGED: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    must(
        prometheus::register_int_gauge_vec!(
            "strata_api_group_unacknowledged_events",
            "Events delivered to consumer group members of this process and not yet acknowledged, by group",
            &["group"]
        ),
        "group_unacknowledged",
    )
});

/// Relay transactions committed after the oldest acknowledged position
/// among the buckets this process's members hold, by group.
pub static GROUP_LAG_TRANSACTIONS: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    must(
        prometheus::register_int_gauge_vec!(
            "strata_api_group_lag_transactions",
            "Relay transactions committed after the oldest acknowledged position of a consumer group's buckets held in this process, by group",
            &["group"]
        ),
        "group_lag_transactions",
    )
});

/// Removes `group`'s series once no member of it is served here.
pub fn forget_group(group: &str) {
    let labels = [group];
    let _ = GROUP_MEMBERS.remove_label_values(&labels);
    let _ = GROUP_BUCKET_CLAIMS.remove_label_values(&labels);
    let _ = GROUP_UNACKNOWLEDGED.remove_label_values(&labels);
    let _ = GROUP_LAG_TRANSACTIONS.remove_label_values(&labels);
}
