//! Configuration: defaults, then a TOML file, then `STRATA_*` environment
//! variables (`__` separates nesting: `STRATA_RELAY__BATCH_SIZE=500`), then
//! `--set key=value` flags. Field docs are the operator manual; see also
//! `config/strata.example.toml`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::duration::serde_text;
use crate::event::{EventLimits, DEFAULT_MAX_PAYLOAD_BYTES};

/// Top-level sections; only `STRATA_<SECTION>__...` variables are read as
/// configuration, so unrelated `STRATA_*` variables do not break start-up.
const SECTIONS: [&str; 8] = [
    "hot_store",
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

/// A Postgres connection URL whose password never reaches logs or `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL or key=value connection string.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, password included: pass it to a driver, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        if let Some(scheme_end) = url.find("://") {
            let rest = &url[scheme_end + 3..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            if let Some(at) = rest[..authority_end].rfind('@') {
                let userinfo = &rest[..at];
                if let Some(colon) = userinfo.find(':') {
                    return format!(
                        "{}{}:***{}",
                        &url[..scheme_end + 3],
                        &userinfo[..colon],
                        &rest[at..]
                    );
                }
            }
            return url.clone();
        }
        // key=value form: hide password=...
        url.split_whitespace()
            .map(|part| {
                if part.starts_with("password=") {
                    "password=***"
                } else {
                    part
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Everything `strata` reads at start-up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The hot store: the Postgres database holding `strata.activity`.
    pub hot_store: HotStoreConfig,
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

/// Where the hot store lives and how strict to be about its durability.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotStoreConfig {
    /// Connection URL, e.g. `postgres://strata@db:5432/strata`.
    pub url: Option<DatabaseUrl>,
    /// Start even when the hot store runs with `fsync=off`,
    /// `full_page_writes=off` or `synchronous_commit=off`. Every start with
    /// this set logs an error: a crash of such a server can lose events the
    /// relay already released from the outbox.
    pub allow_unsafe_durability: bool,
}

/// One producer database.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Connection URL of the producer database. When it equals the hot
    /// store's URL, each batch moves in a single transaction.
    pub url: DatabaseUrl,
}

/// Relay tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Rows claimed and shipped per batch.
    pub batch_size: usize,
    /// Concurrent shipping loops per source in one relay process.
    pub workers_per_source: usize,
    /// Safety-net poll when no notification arrives (lost NOTIFY, reconnects).
    #[serde(with = "serde_text")]
    pub poll_interval: Duration,
    /// Rows older than this are re-sent by the elected reconciler.
    #[serde(with = "serde_text")]
    pub reconcile_after: Duration,
    /// How often the reconciler runs its pass (resend, partitions, status).
    #[serde(with = "serde_text")]
    pub reconcile_interval: Duration,
    /// How often a follower tries to become the reconciler.
    #[serde(with = "serde_text")]
    pub election_interval: Duration,
    /// Days of hot partitions the reconciler creates ahead of today.
    pub partitions_ahead_days: u32,
    /// Outbox rows with a larger payload are dead-lettered.
    pub max_payload_bytes: usize,
    /// First retry delay after a fault; doubles up to `backoff_max`.
    #[serde(with = "serde_text")]
    pub backoff_initial: Duration,
    /// Longest retry delay.
    #[serde(with = "serde_text")]
    pub backoff_max: Duration,
    /// Upper bound on any single database call (connect, query, commit).
    #[serde(with = "serde_text")]
    pub statement_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            workers_per_source: 2,
            poll_interval: Duration::from_secs(2),
            reconcile_after: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(5),
            election_interval: Duration::from_secs(1),
            partitions_ahead_days: 3,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

impl RelayConfig {
    /// Event limits the relay enforces on outbox rows.
    pub fn limits(&self) -> EventLimits {
        EventLimits {
            max_payload_bytes: self.max_payload_bytes,
        }
    }
}

/// Archiver tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiverConfig {
    /// Wait this long after a UTC day ends before archiving it, so events
    /// still in flight (relay lag, clock skew between producers) land first.
    #[serde(with = "serde_text")]
    pub settle: Duration,
    /// Committed days stay in the hot store this many days after they end
    /// (fast reads, late events) before their partition is dropped.
    pub hot_retention_days: u32,
    /// How often the continuous archiver looks for work.
    #[serde(with = "serde_text")]
    pub interval: Duration,
    /// A new file starts at the first user boundary after this many rows,
    /// so one user's day always lives in one file.
    pub max_file_rows: u64,
    /// Rows per Parquet row group: small enough that a reader selecting one
    /// user skips most of a file, large enough to compress well.
    pub row_group_rows: usize,
    /// Where files are written before upload; the system temp dir if empty.
    pub spool_dir: String,
    /// The leader's lease; a leader that cannot renew within it (paused,
    /// partitioned) is replaced and fenced.
    #[serde(with = "serde_text")]
    pub lease_ttl: Duration,
    /// Uncommitted objects older than this are garbage-collected.
    #[serde(with = "serde_text")]
    pub orphan_grace: Duration,
    /// First retry delay after a fault; doubles up to `backoff_max`.
    #[serde(with = "serde_text")]
    pub backoff_initial: Duration,
    /// Longest retry delay.
    #[serde(with = "serde_text")]
    pub backoff_max: Duration,
    /// Upper bound on catalog and lease statements (not on a day's export).
    #[serde(with = "serde_text")]
    pub statement_timeout: Duration,
}

impl Default for ArchiverConfig {
    fn default() -> Self {
        Self {
            settle: Duration::from_secs(600),
            hot_retention_days: 3,
            interval: Duration::from_secs(30),
            max_file_rows: 2_000_000,
            row_group_rows: 2_048,
            spool_dir: String::new(),
            lease_ttl: Duration::from_secs(30),
            orphan_grace: Duration::from_secs(6 * 3600),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// The history API (`strata api`): listener, credentials, limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// gRPC listen address.
    pub listen: String,
    /// Database the API reads (default: `hot_store.url`). Give it a login
    /// that is a member of `db_role` only.
    pub database_url: Option<DatabaseUrl>,
    /// Role every API connection switches to (`SET ROLE`) before any
    /// query: read-only on activity, insert-only on the audit table
    /// (created by the store migrations). Empty: stay as the login user.
    pub db_role: String,
    /// Postgres connections the API keeps at most.
    pub pool_size: usize,
    /// Per-statement timeout on API connections.
    #[serde(with = "serde_text")]
    pub statement_timeout: Duration,
    /// Accepted JWT issuer (`iss`).
    pub jwt_issuer: String,
    /// Accepted JWT audience (`aud`).
    pub jwt_audience: String,
    /// HS256 verification secrets by key id (`kid` header). Tokens without
    /// a `kid` are tried against each.
    pub jwt_hs256_secrets: BTreeMap<String, Secret>,
    /// Public keys by key id: PEM files for RS256 (`rsa:<path>`), ES256
    /// (`ec:<path>`) or EdDSA (`ed25519:<path>`).
    pub jwt_public_keys: BTreeMap<String, String>,
    /// Clock skew tolerated on `exp`/`nbf`.
    #[serde(with = "serde_text")]
    pub jwt_leeway: Duration,
    /// Page-token signing keys as `id=secret`; the first signs, all verify
    /// (add a new key first, drop the old one after `page_token_ttl`).
    /// Empty: a random key per process (tokens die with it).
    pub page_token_keys: Vec<Secret>,
    /// How long a page token stays valid.
    #[serde(with = "serde_text")]
    pub page_token_ttl: Duration,
    /// Requests per second each principal may make (token bucket rate).
    pub rate_per_second: f64,
    /// Burst each principal may make above the rate.
    pub rate_burst: u32,
    /// Exports (streamed or jobs) each principal may run at once.
    pub max_concurrent_exports: u32,
    /// Key prefix for export job files in the object store.
    pub export_prefix: String,
    /// How long a presigned export URL stays valid.
    #[serde(with = "serde_text")]
    pub export_url_ttl: Duration,
    /// Serve TLS with this PEM certificate chain (with `tls_key_file`).
    pub tls_cert_file: String,
    /// The PEM private key for `tls_cert_file`.
    pub tls_key_file: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            database_url: None,
            db_role: "strata_api".into(),
            pool_size: 16,
            statement_timeout: Duration::from_secs(10),
            jwt_issuer: "strata".into(),
            jwt_audience: "strata-history".into(),
            jwt_hs256_secrets: BTreeMap::new(),
            jwt_public_keys: BTreeMap::new(),
            jwt_leeway: Duration::from_secs(30),
            page_token_keys: Vec::new(),
            page_token_ttl: Duration::from_secs(24 * 3600),
            rate_per_second: 50.0,
            rate_burst: 100,
            max_concurrent_exports: 2,
            export_prefix: "exports".into(),
            export_url_ttl: Duration::from_secs(60),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

/// A secret from configuration; never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: pass it to a client, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// The object store holding the archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectStoreConfig {
    /// `s3` (any S3-compatible endpoint) or `local` (a directory). No
    /// default: the archiver drops hot partitions once they are archived,
    /// so it must never archive somewhere the operator did not choose.
    pub kind: String,
    /// Bucket (`s3`).
    pub bucket: String,
    /// Key prefix inside the bucket (or directory); may be empty.
    pub prefix: String,
    /// Endpoint URL for S3-compatible servers; empty for AWS.
    pub endpoint: String,
    /// Region; empty means the AWS chain (`AWS_REGION`, profile), else `us-east-1`.
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most
    /// S3-compatible servers.
    pub path_style: bool,
    /// Static credentials; when empty, the standard AWS chain is used
    /// (environment, profile, web identity, instance metadata).
    pub access_key_id: String,
    /// Secret of `access_key_id`.
    pub secret_access_key: Secret,
    /// Directory (`local`).
    pub local_dir: String,
    /// Files larger than this are uploaded in parts.
    pub multipart_threshold_bytes: u64,
    /// Size of each part (S3 needs at least 5 MiB but for the last).
    pub part_size_bytes: u64,
    /// Multipart uploads left unfinished this long (a crashed archiver) are aborted.
    #[serde(with = "serde_text")]
    pub abandoned_upload_after: Duration,
    /// Upper bound on one request (one part, one GET).
    #[serde(with = "serde_text")]
    pub request_timeout: Duration,
}

impl Default for ObjectStoreConfig {
    fn default() -> Self {
        Self {
            kind: String::new(),
            bucket: String::new(),
            prefix: String::new(),
            endpoint: String::new(),
            region: String::new(),
            path_style: false,
            access_key_id: String::new(),
            secret_access_key: Secret::default(),
            local_dir: String::new(),
            multipart_threshold_bytes: 32 << 20,
            part_size_bytes: 16 << 20,
            abandoned_upload_after: Duration::from_secs(24 * 3600),
            request_timeout: Duration::from_secs(120),
        }
    }
}

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
    pub format: String,
    /// A `tracing` filter, e.g. `info,strata_relay=debug`; `RUST_LOG` wins.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "text".into(),
            filter: "info".into(),
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (if any), then `STRATA_*` variables, then
    /// `overrides` (`key=value` pairs with dotted keys), and validates.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Config, ConfigError> {
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
                }),
        );
        for pair in overrides {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| ConfigError::Parse(format!("--set {pair:?} is not key=value")))?;
            figment = figment.merge(Toml::string(&override_toml(key.trim(), value.trim())));
        }
        let config: Config = figment
            .extract()
            .map_err(|err| ConfigError::Parse(err.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        };
        let r = &self.relay;
        if r.batch_size == 0 || r.batch_size > 50_000 {
            return Err(invalid("relay.batch_size", "must be between 1 and 50000"));
        }
        if r.workers_per_source == 0 || r.workers_per_source > 64 {
            return Err(invalid(
                "relay.workers_per_source",
                "must be between 1 and 64",
            ));
        }
        for (key, value) in [
            ("relay.poll_interval", r.poll_interval),
            ("relay.reconcile_after", r.reconcile_after),
            ("relay.reconcile_interval", r.reconcile_interval),
            ("relay.election_interval", r.election_interval),
            ("relay.backoff_initial", r.backoff_initial),
            ("relay.backoff_max", r.backoff_max),
            ("relay.statement_timeout", r.statement_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        if r.backoff_max < r.backoff_initial {
            return Err(invalid(
                "relay.backoff_max",
                "must be at least relay.backoff_initial",
            ));
        }
        if r.max_payload_bytes == 0 {
            return Err(invalid("relay.max_payload_bytes", "must be positive"));
        }
        if r.partitions_ahead_days > 366 {
            return Err(invalid(
                "relay.partitions_ahead_days",
                "must be at most 366",
            ));
        }
        for (name, source) in &self.sources {
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
            if !valid_name {
                return Err(invalid(
                    &format!("sources.{name}"),
                    "name must be 1 to 64 of [A-Za-z0-9_-]",
                ));
            }
            if source.url.expose().is_empty() {
                return Err(invalid(&format!("sources.{name}.url"), "is required"));
            }
        }
        let a = &self.archiver;
        for (key, value) in [
            ("archiver.interval", a.interval),
            ("archiver.lease_ttl", a.lease_ttl),
            ("archiver.backoff_initial", a.backoff_initial),
            ("archiver.backoff_max", a.backoff_max),
            ("archiver.statement_timeout", a.statement_timeout),
            (
                "object_store.request_timeout",
                self.object_store.request_timeout,
            ),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        if a.max_file_rows == 0 {
            return Err(invalid("archiver.max_file_rows", "must be positive"));
        }
        if a.row_group_rows < 1024 || a.row_group_rows > 4_194_304 {
            return Err(invalid(
                "archiver.row_group_rows",
                "must be between 1024 and 4194304",
            ));
        }
        let o = &self.object_store;
        if o.part_size_bytes < 5 << 20 || o.part_size_bytes > 5 << 30 {
            return Err(invalid(
                "object_store.part_size_bytes",
                "must be between 5 MiB and 5 GiB (S3's limits)",
            ));
        }
        if !matches!(o.kind.as_str(), "" | "s3" | "local") {
            return Err(invalid("object_store.kind", "must be \"s3\" or \"local\""));
        }
        if o.kind == "s3" && o.bucket.is_empty() {
            return Err(invalid(
                "object_store.bucket",
                "is required when kind = \"s3\"",
            ));
        }
        if o.kind == "local" && o.local_dir.is_empty() {
            return Err(invalid(
                "object_store.local_dir",
                "is required when kind = \"local\"",
            ));
        }
        if o.prefix.starts_with('/') || o.prefix.contains("..") {
            return Err(invalid(
                "object_store.prefix",
                "must be relative and must not contain \"..\"",
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", "must be \"text\" or \"json\""));
        }
        let api = &self.api;
        if api.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "api.listen",
                "must be an address like 127.0.0.1:50051",
            ));
        }
        if api.pool_size == 0 || api.pool_size > 1000 {
            return Err(invalid("api.pool_size", "must be between 1 and 1000"));
        }
        for (key, value) in [
            ("api.statement_timeout", api.statement_timeout),
            ("api.page_token_ttl", api.page_token_ttl),
            ("api.export_url_ttl", api.export_url_ttl),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        if !(api.rate_per_second > 0.0 && api.rate_per_second.is_finite()) || api.rate_burst == 0 {
            return Err(invalid(
                "api.rate_per_second",
                "and api.rate_burst must be positive",
            ));
        }
        if api.max_concurrent_exports == 0 {
            return Err(invalid("api.max_concurrent_exports", "must be positive"));
        }
        if api.tls_cert_file.is_empty() != api.tls_key_file.is_empty() {
            return Err(invalid(
                "api.tls_cert_file",
                "and api.tls_key_file must be set together",
            ));
        }
        if api.export_prefix.is_empty()
            || api.export_prefix.starts_with('/')
            || api.export_prefix.contains("..")
        {
            return Err(invalid(
                "api.export_prefix",
                "must be a non-empty relative prefix without \"..\"",
            ));
        }
        self.metrics.listen_addr()?;
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
    pub struct Table;

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
    pub fn quote(value: &str) -> String {
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
}
