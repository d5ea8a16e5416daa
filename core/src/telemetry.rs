//! Prometheus text rendering of every metric registered in the process-wide
//! registry. Each crate registers its own metrics in its `metrics.rs`.

use prometheus::{Encoder, TextEncoder};

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
