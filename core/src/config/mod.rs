//! Configuration: defaults, then a TOML file, then `STRATA_*` environment
//! variables (`__` separates nesting: `STRATA_RELAY__BATCH_SIZE=500`), then
//! `--set key=value` flags. Field docs are the operator manual; see also
//! `config/strata.example.toml`.
//!
//! Secret settings (database URLs, JWT and page-token keys, the object
//! store's secret key) may instead name a file holding the value, so it
//! need not sit in the command line or the environment: the value
//! `file:/run/secrets/x`, or the variable `STRATA_<SECTION>__<KEY>_FILE`
//! (`STRATA_HOT_STORE__URL_FILE=/run/secrets/hot_url`).
//!
//! This module holds [`Config`], the layering and [`ConfigError`]; each
//! section's struct, defaults and checks live beside it: `relay` (the hot
//! store, the sources, the relay), `archiver` (the archiver and the object
//! store), `api`, `postgres` (TLS of every database session), `telemetry`
//! (metrics and logs), `url_params` (single parameters of a database URL); `secret` the secret
//! values and `secret_file` secrets read from files.

mod api;
mod archiver;
mod postgres;
mod relay;
mod secret;
mod secret_file;
mod telemetry;
mod url_params;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::IntoDeserializer;
use serde::{Deserialize, Deserializer, Serialize};

pub use api::ApiConfig;
pub use archiver::{ArchiverConfig, ObjectStoreConfig, ObjectStoreKind};
pub use postgres::{PostgresConfig, SslMode, UnknownSslMode};
pub use relay::{HotStoreConfig, RelayConfig, SourceConfig};
pub use secret::{DatabaseUrl, Secret};
pub use secret_file::FILE_PREFIX;
pub use telemetry::{LogConfig, LogFormat, MetricsConfig};

/// Top-level sections; only `STRATA_<SECTION>__...` variables are read as
/// configuration, so unrelated `STRATA_*` variables do not break start-up.
const SECTIONS: [&str; 9] = [
    "hot_store",
    "postgres",
    "api",
    "sources",
    "relay",
    "archiver",
    "object_store",
    "metrics",
    "log",
];

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, environment or flags could not be parsed into the schema.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value parsed but is not acceptable.
    #[error("invalid configuration: `{key}` {message}")]
    Invalid {
        /// Dotted path of the offending key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    /// [`ConfigError::Invalid`] for the dotted `key`.
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Everything `strata` reads at start-up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The hot store: the Postgres database holding `strata.activity`.
    pub hot_store: HotStoreConfig,
    /// TLS settings for every database URL that does not set its own.
    pub postgres: PostgresConfig,
    /// Producer databases holding an outbox, by name. The name labels
    /// metrics and logs and keys the reconciler election.
    pub sources: BTreeMap<String, SourceConfig>,
    /// How relays ship and reconcile.
    pub relay: RelayConfig,
    /// How closed days are rolled into Parquet.
    pub archiver: ArchiverConfig,
    /// Where the archive lives.
    pub object_store: ObjectStoreConfig,
    /// The history API.
    pub api: ApiConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Logging.
    pub log: LogConfig,
}

impl Config {
    /// Loads defaults, then `file` (if any), then `STRATA_*` variables, then
    /// `overrides` (`key=value` pairs with dotted keys), and validates.
    ///
    /// Secrets may come from files instead (see [`Config::resolve_secret_files`]
    /// and `STRATA_<SECTION>__<KEY>_FILE` below), so that they need not sit
    /// in a process's command line or environment.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Config, ConfigError> {
        Self::load_with_env(file, overrides, std::env::vars_os())
    }

    /// [`Config::load`], with the `STRATA_<SECTION>__<KEY>_FILE` variables
    /// taken from `env` (the process environment in [`Config::load`]; the
    /// other `STRATA_*` variables always come from the process
    /// environment). A `_FILE` variable names a file whose content (less
    /// one trailing newline) is the value of the secret setting `<KEY>`,
    /// at the environment's place in the layering (`--set` still wins);
    /// for `api.page_token_keys` each non-empty line is one entry.
    pub fn load_with_env(
        file: Option<&Path>,
        overrides: &[String],
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, OsString)> = env
            .into_iter()
            .map(|(key, value)| (key.to_string_lossy().into_owned(), value))
            .collect();
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Parse(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(
            Env::prefixed("STRATA_")
                .split("__")
                // Keys reach the filter before lowercasing.
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    SECTIONS.iter().any(|s| key.starts_with(s))
                        && !secret_file::is_file_variable(&key)
                }),
        );
        figment = secret_file::merge_file_variables(figment, &env)?;
        for pair in overrides {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| ConfigError::Parse(format!("--set {pair:?} is not key=value")))?;
            figment = figment.merge(Toml::string(&override_toml(key.trim(), value.trim())));
        }
        let mut config: Config = figment
            .extract()
            .map_err(|err| ConfigError::Parse(err.to_string()))?;
        config.resolve_secret_files()?;
        config.apply_postgres_defaults();
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense: each section's own
    /// checks, in the order of the sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.relay.validate()?;
        for (name, source) in &self.sources {
            source.validate(name)?;
        }
        self.archiver.validate()?;
        self.object_store.validate()?;
        self.api.validate()?;
        Ok(())
    }

    /// The hot store URL, or an error naming the key when it is missing.
    pub fn hot_store_url(&self) -> Result<&DatabaseUrl, ConfigError> {
        self.hot_store.url.as_ref().ok_or(ConfigError::Invalid {
            key: "hot_store.url".into(),
            message: "is required (set it in the config file or STRATA_HOT_STORE__URL)".into(),
        })
    }
}

/// serde `deserialize_with` for optional settings whose empty string means
/// "not set" (`tls_cert_file = ""`): the text is read as a string, as for a
/// `String` field, then `""` is `None` and anything else is parsed as `T`
/// (a path, a string, a lowercase enum name).
pub(crate) fn empty_as_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    match Option::<String>::deserialize(deserializer)? {
        None => Ok(None),
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => {
            T::deserialize(IntoDeserializer::<D::Error>::into_deserializer(text)).map(Some)
        }
    }
}

/// `key=value` as a TOML document; bare values that are not TOML literals
/// are taken as strings, so `--set hot_store.url=postgres://...` works.
fn override_toml(key: &str, value: &str) -> String {
    let candidate = format!("{key} = {value}");
    if candidate.parse::<toml_value::Table>().is_ok() {
        candidate
    } else {
        format!("{key} = {}", toml_value::quote(value))
    }
}

/// The bits of TOML syntax `override_toml` needs, without another crate.
mod toml_value {
    /// Stand-in "table" type: parse succeeds when figment's TOML parser
    /// accepts the document.
    pub(super) struct Table;

    impl std::str::FromStr for Table {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            use figment::providers::{Format, Toml};
            figment::Figment::from(Toml::string(s))
                .extract::<figment::value::Dict>()
                .map(|_| Table)
                .map_err(|_| ())
        }
    }

    /// A TOML basic string.
    pub(super) fn quote(value: &str) -> String {
        let mut out = String::from("\"");
        for c in value.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate().expect("defaults are valid");
    }

    #[test]
    fn overrides_name_the_bad_key() {
        let err = Config::load(None, &["relay.batch_size=0".into()]).unwrap_err();
        assert!(err.to_string().contains("relay.batch_size"), "{err}");
        let err = Config::load(None, &["relay.poll_interval=\"3 parsecs\"".into()]).unwrap_err();
        assert!(err.to_string().contains("poll_interval"), "{err}");
        let err = Config::load(None, &["relay.no_such_key=1".into()]).unwrap_err();
        assert!(err.to_string().contains("no_such_key"), "{err}");
    }

    #[test]
    fn environment_variables_nest_with_double_underscore() {
        // Only this test touches these variables.
        std::env::set_var("STRATA_SOURCES__ENVTEST__URL", "postgres://e/src");
        std::env::set_var("STRATA_RELAY__WORKERS_PER_SOURCE", "3");
        std::env::set_var("STRATA_UNRELATED_THING", "ignored");
        let config = Config::load(None, &[]).expect("valid");
        std::env::remove_var("STRATA_SOURCES__ENVTEST__URL");
        std::env::remove_var("STRATA_RELAY__WORKERS_PER_SOURCE");
        std::env::remove_var("STRATA_UNRELATED_THING");
        assert_eq!(config.relay.workers_per_source, 3);
        assert_eq!(config.sources["envtest"].url.expose(), "postgres://e/src");
    }

    #[test]
    fn override_strings_and_numbers() {
        let config = Config::load(
            None,
            &[
                "hot_store.url=postgres://u:pw@h/db".into(),
                "relay.batch_size=77".into(),
                "relay.poll_interval=250ms".into(),
            ],
        )
        .expect("valid");
        assert_eq!(config.relay.batch_size, 77);
        assert_eq!(config.relay.poll_interval, Duration::from_millis(250));
        let url = config.hot_store.url.expect("set");
        assert_eq!(url.redacted(), "postgres://u:***@h/db");
        assert!(!format!("{url:?}").contains("pw"));
    }

    #[test]
    fn example_config_loads_with_empty_values_as_unset() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/strata.example.toml");
        let config = Config::load(Some(&path), &[]).expect("example config is valid");
        assert_eq!(config.object_store.kind, Some(ObjectStoreKind::S3));
        assert_eq!(config.log.format, LogFormat::Text);
        // `""` in the example means "not set".
        assert_eq!(config.archiver.spool_dir, None);
        assert_eq!(config.object_store.endpoint, None);
        assert_eq!(config.object_store.region, None);
        assert_eq!(config.object_store.access_key_id, None);
        assert_eq!(config.object_store.local_dir, None);
        assert_eq!(config.api.tls_cert_file, None);
        assert_eq!(config.api.tls_key_file, None);
    }

    #[test]
    fn empty_strings_mean_unset() {
        let config = Config::load(
            None,
            &[
                "object_store.kind=\"\"".into(),
                "object_store.region=".into(),
                "api.tls_cert_file=\"\"".into(),
                "api.tls_key_file=".into(),
            ],
        )
        .expect("valid");
        assert_eq!(config.object_store.kind, None);
        assert_eq!(config.object_store.region, None);
        assert_eq!(config.api.tls_cert_file, None);

        let config = Config::load(
            None,
            &[
                "archiver.spool_dir=/var/spool/strata".into(),
                "object_store.region=eu-west-1".into(),
            ],
        )
        .expect("valid");
        assert_eq!(
            config.archiver.spool_dir,
            Some(PathBuf::from("/var/spool/strata"))
        );
        assert_eq!(config.object_store.region.as_deref(), Some("eu-west-1"));
    }
}
