//! The telemetry sections: `metrics` (the Prometheus endpoint) and `log`
//! (the format and filter of log output), with their defaults and checks.

use std::fmt;
use std::net::SocketAddr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

/// The Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address serving `GET /metrics` and `GET /healthz` (an IP address
    /// and a port); empty string (`None`) disables it. Anything else is
    /// refused while parsing, naming the key.
    #[serde(deserialize_with = "optional_listen_address")]
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        }
    }
}

/// serde `deserialize_with` for `metrics.listen`: the text is read as a
/// string, as when the field was one; `""` is `None`, anything else is
/// parsed once here and refused with the message it always had (`is not a
/// socket address: ...`, naming the key).
fn optional_listen_address<'de, D>(deserializer: D) -> Result<Option<SocketAddr>, D::Error>
where
    D: Deserializer<'de>,
{
    match Option::<String>::deserialize(deserializer)? {
        None => Ok(None),
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|err| D::Error::custom(format!("is not a socket address: {err}"))),
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
        assert_eq!(
            Config::default().metrics.listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        let config = Config::load(None, &["metrics.listen=\"\"".into()]).expect("valid");
        assert_eq!(config.metrics.listen, None);
        let config = Config::load(None, &["metrics.listen=\"[::1]:0\"".into()]).expect("valid");
        assert_eq!(
            config.metrics.listen,
            Some(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 0)))
        );
        for value in ["nowhere", "localhost:9464"] {
            let err = Config::load(None, &[format!("metrics.listen={value}")])
                .unwrap_err()
                .to_string();
            assert!(err.contains("metrics.listen"), "{err}");
            assert!(err.contains("is not a socket address"), "{err}");
        }
    }
}
