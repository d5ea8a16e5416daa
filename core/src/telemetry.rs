//! Prometheus text rendering of every metric registered in the process-wide
//! registry. Each crate registers its own metrics in its `metrics.rs`.

use std::sync::LazyLock;

use prometheus::{register_int_gauge_vec, Encoder, IntGaugeVec, TextEncoder};

/// `strata_build_info{version, role}` = 1: which version each process
/// runs, to join onto other series (`* on(instance) group_left(version)`).
static BUILD_INFO: LazyLock<Option<IntGaugeVec>> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "strata_build_info",
        "Always 1; labels: the strata version and the process role",
        &["version", "role"]
    )
    .ok()
});

/// Sets `strata_build_info` for this process's `role` (`relay`,
/// `archiver`, `api`, `run`).
pub fn register_build_info(role: &str) {
    if let Some(gauge) = BUILD_INFO.as_ref() {
        gauge
            .with_label_values(&[env!("CARGO_PKG_VERSION"), role])
            .set(1);
    }
}

/// The body of a `/metrics` scrape.
pub fn render_metrics() -> String {
    let mut buffer = Vec::new();
    let families = prometheus::gather();
    // Encoding into a Vec cannot fail for the text format except on
    // malformed families, which would be a programming error; report it
    // in-band rather than panicking in a scrape.
    if let Err(err) = TextEncoder::new().encode(&families, &mut buffer) {
        return format!("# error encoding metrics: {err}\n");
    }
    String::from_utf8_lossy(&buffer).into_owned()
}
