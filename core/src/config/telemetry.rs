//! The telemetry sections: `metrics` (the Prometheus endpoint) and `log`
//! (the format and filter of log output), with their defaults and checks.

use std::fmt;
use std::net::SocketAddr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use super::ConfigError;

/// The Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address serving `GET /metrics`; empty string disables it.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

impl MetricsConfig {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr().map(|_| ())
    }

    /// The parsed listen address, `None` when disabled.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen
            .parse()
            .map(Some)
            .map_err(|err| ConfigError::Invalid {
                key: "metrics.listen".into(),
                message: format!("is not a socket address: {err}"),
            })
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info,strata_relay=debug`; `RUST_LOG` wins.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

/// The format of log lines: the value of `log.format`. Any other value
/// is refused while parsing with the message it always had (`must be
/// "text" or "json"`, naming the key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (`text`, the default).
    #[default]
    Text,
    /// One JSON object per line (`json`).
    Json,
}

impl LogFormat {
    /// The name as configured: `text` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match String::deserialize(deserializer)?.as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(D::Error::custom(r#"must be "text" or "json""#)),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn log_formats_parse_and_others_are_refused_naming_the_key() {
        let config = Config::load(None, &["log.format=json".into()]).expect("valid");
        assert_eq!(config.log.format, LogFormat::Json);
        let config = Config::load(None, &["log.format=\"text\"".into()]).expect("valid");
        assert_eq!(config.log.format, LogFormat::Text);
        for value in ["xml", "JSON", "\"\""] {
            let err = Config::load(None, &[format!("log.format={value}")])
                .unwrap_err()
                .to_string();
            assert!(err.contains("log.format"), "{err}");
            assert!(err.contains(r#"must be "text" or "json""#), "{err}");
            assert!(!err.contains("unknown variant"), "{err}");
        }
    }

    #[test]
    fn metrics_listen_is_an_address_or_empty() {
        let config = Config::load(None, &["metrics.listen=\"\"".into()]).expect("valid");
        assert_eq!(config.metrics.listen_addr().expect("valid"), None);
        let err = Config::load(None, &["metrics.listen=nowhere".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`metrics.listen`"), "{err}");
    }
}
