//! Installs the process's tracing subscriber (only the binary does this).

use strata_core::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Text or JSON logs to stderr; `RUST_LOG` overrides `log.filter`.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}
