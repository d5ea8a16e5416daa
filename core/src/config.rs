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

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::duration::serde_text;
use crate::event::{
    EventLimits, DEFAULT_ACCEPT_FUTURE, DEFAULT_ACCEPT_PAST, DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_ACCEPT_WINDOW,
};

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

    /// The URL with every password replaced by `***`, in each form
    /// tokio-postgres and libpq accept: the userinfo of a `postgres://` or
    /// `postgresql://` URL (whatever the password holds: `/`, `@`, `:`,
    /// `?`, percent-escapes), `password=` and `sslpassword=` query
    /// parameters, and `password` / `sslpassword` in a key=value string
    /// (spaces around `=`, quoted values with `\'` inside).
    pub fn redacted(&self) -> String {
        let url = &self.0;
        match url.find("://") {
            Some(scheme_end)
                if scheme_end > 0
                    && url[..scheme_end]
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
            {
                redact_url(url, scheme_end + 3)
            }
            _ => redact_key_value(url),
        }
    }
}

/// Connection parameters holding a secret, as the drivers spell them
/// (case-sensitive: libpq does not accept `PASSWORD`).
const SECRET_PARAMETERS: [&str; 2] = ["password", "sslpassword"];

/// [`DatabaseUrl::redacted`] for a URL; `rest_start` is where the text
/// after `://` begins.
fn redact_url(url: &str, rest_start: usize) -> String {
    let (head, rest) = url.split_at(rest_start);
    // The userinfo ends at the last '@' before the query: a password may
    // hold '/', '@' and ':' (unescaped, tokio-postgres still ends it at
    // its first '@'; hiding up to the last one covers both readings).
    let query_start = rest.find('?').unwrap_or(rest.len());
    let at = rest[..query_start].rfind('@').or_else(|| {
        // No '@' before the first '?': a password may hold the '?'
        // itself (tokio-postgres takes everything up to the first '@').
        // An '@' after a '/' is in the path or the query, not userinfo.
        let first = rest.find('@')?;
        (!rest[..first].contains('/')).then_some(first)
    });
    let mut out = String::with_capacity(url.len());
    out.push_str(head);
    let after_userinfo = match at {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    match after_userinfo.find('?') {
        Some(q) => {
            out.push_str(&after_userinfo[..=q]);
            out.push_str(&redact_query(&after_userinfo[q + 1..]));
        }
        None => out.push_str(after_userinfo),
    }
    out
}

/// A URL query with the values of secret parameters replaced by `***`.
/// Keys are compared percent-decoded, as the drivers decode them.
fn redact_query(query: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut in_secret = false;
    for param in query.split('&') {
        match param.split_once('=') {
            Some((key, _)) if SECRET_PARAMETERS.contains(&percent_decode(key).as_str()) => {
                parts.push(format!("{key}=***"));
                in_secret = true;
            }
            Some(_) => {
                parts.push(param.to_string());
                in_secret = false;
            }
            // An unescaped '&' inside the secret: the rest is secret too.
            None if in_secret => {}
            None => parts.push(param.to_string()),
        }
    }
    parts.join("&")
}

/// `%XX` escapes decoded (invalid ones kept as they are).
fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = if bytes[i] == b'%' {
            match (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(high), Some(low)) => Some((high * 16 + low) as u8),
                _ => None,
            }
        } else {
            None
        };
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// [`DatabaseUrl::redacted`] for a key=value string, parsed the way
/// tokio-postgres and libpq parse it: `key`, optional spaces, `=`,
/// optional spaces, then a value that is either `'quoted'` (with `\'` and
/// `\\` escapes) or runs to the next whitespace (with `\` escapes).
fn redact_key_value(dsn: &str) -> String {
    fn skip_whitespace<'a>(rest: &'a str, out: &mut String) -> &'a str {
        let trimmed = rest.trim_start();
        out.push_str(&rest[..rest.len() - trimmed.len()]);
        trimmed
    }
    let mut out = String::with_capacity(dsn.len());
    let mut rest = dsn;
    loop {
        rest = skip_whitespace(rest, &mut out);
        if rest.is_empty() {
            return out;
        }
        let keyword_end = rest
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(rest.len());
        let keyword = &rest[..keyword_end];
        out.push_str(keyword);
        rest = &rest[keyword_end..];
        let before_equals = rest.trim_start();
        if !before_equals.starts_with('=') {
            // Not `key = value` (the driver refuses it); go on with the
            // next word. Progress is certain: the keyword was not empty,
            // since an empty one means `rest` starts with '='.
            continue;
        }
        rest = skip_whitespace(rest, &mut out);
        out.push('=');
        rest = skip_whitespace(&rest[1..], &mut out);
        let value_len = key_value_len(rest);
        if SECRET_PARAMETERS.contains(&keyword) {
            out.push_str("***");
        } else {
            out.push_str(&rest[..value_len]);
        }
        rest = &rest[value_len..];
    }
}

/// Length of the value at the start of `text`, quotes included; an
/// unterminated quoted value runs to the end.
fn key_value_len(text: &str) -> usize {
    let mut chars = text.char_indices();
    if text.starts_with('\'') {
        chars.next();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '\'' => return i + 1,
                _ => {}
            }
        }
    } else {
        while let Some((i, c)) = chars.next() {
            if c.is_whitespace() {
                return i;
            }
            if c == '\\' {
                chars.next();
            }
        }
    }
    text.len()
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
    /// Outbox rows with a larger payload are dead-lettered (with their size
    /// and a short prefix; the payload is never copied whole).
    pub max_payload_bytes: usize,
    /// A batch stops taking rows once their payloads add up to this many
    /// bytes (at least one row is always taken), so a backlog of large
    /// payloads is shipped in bounded pieces.
    pub batch_bytes: usize,
    /// Rows whose `occurred_at` lies further back than this are
    /// dead-lettered (`occurred_at_out_of_window`); widen it and re-drive
    /// them with `strata dead-letters requeue`. At most 100 years.
    #[serde(with = "serde_text")]
    pub accept_past: Duration,
    /// Rows whose `occurred_at` lies further ahead than this are
    /// dead-lettered, as for `accept_past`. At most 100 years.
    #[serde(with = "serde_text")]
    pub accept_future: Duration,
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
            batch_bytes: 16 * 1024 * 1024,
            accept_past: DEFAULT_ACCEPT_PAST,
            accept_future: DEFAULT_ACCEPT_FUTURE,
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
            accept_past: self.accept_past,
            accept_future: self.accept_future,
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
    /// Export job files are deleted this long after their job finished
    /// (by the job worker of every API process); `GetExport` then answers
    /// FAILED_PRECONDITION.
    #[serde(with = "serde_text")]
    pub export_retention: Duration,
    /// Every unary call ends by this deadline (DEADLINE_EXCEEDED), or by
    /// the client's own gRPC deadline when it is shorter.
    #[serde(with = "serde_text")]
    pub request_timeout: Duration,
    /// Calls one principal may have in flight at once; more are refused
    /// with RESOURCE_EXHAUSTED.
    pub max_calls_per_principal: u32,
    /// Calls the process serves at once, all principals together.
    pub max_calls_in_flight: u32,
    /// Calls of one principal reading the archive at once.
    pub max_cold_reads_per_principal: u32,
    /// Calls reading the archive at once, all principals together.
    pub max_cold_reads: u32,
    /// Calls per second one peer address may make, checked before
    /// authentication (token bucket rate).
    pub peer_rate_per_second: f64,
    /// Burst of `peer_rate_per_second`.
    pub peer_burst: u32,
    /// Refused calls of one peer audited one row each per second (token
    /// bucket); beyond it they are counted and written as one summary row
    /// per peer every `audit_summary_interval`.
    pub audit_refusals_per_second: f64,
    /// Burst of `audit_refusals_per_second`.
    pub audit_refusals_burst: u32,
    /// How often refusal summaries are written.
    #[serde(with = "serde_text")]
    pub audit_summary_interval: Duration,
    /// Archived days `GetEvent` searches for an id that is not a UUIDv7
    /// (most recent first); a UUIDv7 id is searched on its own day and
    /// the two around it.
    pub get_event_max_days: u32,
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
            export_retention: Duration::from_secs(24 * 3600),
            request_timeout: Duration::from_secs(10),
            max_calls_per_principal: 8,
            max_calls_in_flight: 256,
            max_cold_reads_per_principal: 2,
            max_cold_reads: 32,
            peer_rate_per_second: 1000.0,
            peer_burst: 2000,
            audit_refusals_per_second: 5.0,
            audit_refusals_burst: 50,
            audit_summary_interval: Duration::from_secs(10),
            get_event_max_days: 31,
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
                    SECTIONS.iter().any(|s| key.starts_with(s)) && !is_file_variable(&key)
                }),
        );
        for variable in file_variables(&env)? {
            let text = read_secret_file(&variable.describe(), &variable.path)?;
            figment = if variable.key == "api.page_token_keys" {
                let entries: Vec<String> = text
                    .lines()
                    .filter(|line| !line.trim().is_empty())
                    .map(str::to_string)
                    .collect();
                figment.merge(Serialized::default(&variable.key, entries))
            } else {
                figment.merge(Serialized::default(&variable.key, text))
            };
        }
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
        config.validate()?;
        Ok(config)
    }

    /// Replaces every secret setting given as `file:<path>` (in the file,
    /// a variable or a flag) by the content of the file at `path`, less one
    /// trailing newline: `hot_store.url`, `sources.<name>.url`,
    /// `api.database_url`, `api.jwt_hs256_secrets.<kid>`, each entry of
    /// `api.page_token_keys` and `object_store.secret_access_key`. A file
    /// that cannot be read is an error naming the setting and the path.
    pub fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
        if let Some(url) = &mut self.hot_store.url {
            resolve_file_value("hot_store.url", &mut url.0)?;
        }
        if let Some(url) = &mut self.api.database_url {
            resolve_file_value("api.database_url", &mut url.0)?;
        }
        for (name, source) in &mut self.sources {
            resolve_file_value(&format!("sources.{name}.url"), &mut source.url.0)?;
        }
        for (kid, secret) in &mut self.api.jwt_hs256_secrets {
            resolve_file_value(&format!("api.jwt_hs256_secrets.{kid}"), &mut secret.0)?;
        }
        for (i, entry) in self.api.page_token_keys.iter_mut().enumerate() {
            resolve_file_value(&format!("api.page_token_keys[{i}]"), &mut entry.0)?;
        }
        resolve_file_value(
            "object_store.secret_access_key",
            &mut self.object_store.secret_access_key.0,
        )?;
        Ok(())
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
        if r.max_payload_bytes == 0 || r.max_payload_bytes > 256 * 1024 * 1024 {
            return Err(invalid(
                "relay.max_payload_bytes",
                "must be between 1 and 268435456",
            ));
        }
        if r.batch_bytes == 0 {
            return Err(invalid("relay.batch_bytes", "must be positive"));
        }
        for (key, value) in [
            ("relay.accept_past", r.accept_past),
            ("relay.accept_future", r.accept_future),
        ] {
            if value > MAX_ACCEPT_WINDOW {
                return Err(invalid(key, "must be at most 36600d (100 years)"));
            }
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
            ("api.export_retention", api.export_retention),
            ("api.request_timeout", api.request_timeout),
            ("api.audit_summary_interval", api.audit_summary_interval),
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
        for (key, value) in [
            ("api.max_calls_per_principal", api.max_calls_per_principal),
            ("api.max_calls_in_flight", api.max_calls_in_flight),
            (
                "api.max_cold_reads_per_principal",
                api.max_cold_reads_per_principal,
            ),
            ("api.max_cold_reads", api.max_cold_reads),
            ("api.peer_burst", api.peer_burst),
            ("api.audit_refusals_burst", api.audit_refusals_burst),
            ("api.get_event_max_days", api.get_event_max_days),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        for (key, value) in [
            ("api.peer_rate_per_second", api.peer_rate_per_second),
            (
                "api.audit_refusals_per_second",
                api.audit_refusals_per_second,
            ),
        ] {
            if !(value > 0.0 && value.is_finite()) {
                return Err(invalid(key, "must be a positive number"));
            }
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

/// A setting's value that says where to read it: `file:/run/secrets/x`.
pub const FILE_PREFIX: &str = "file:";

/// Suffix of a variable naming a file that holds a setting's value.
const FILE_SUFFIX: &str = "_file";

/// The settings that may be read from a file (dotted, `*` for any map key).
const SECRET_SETTINGS: &str = "hot_store.url, sources.*.url, api.database_url, \
    api.jwt_hs256_secrets.*, api.page_token_keys, object_store.secret_access_key";

/// Whether the dotted, lowercase `key` names a secret setting.
fn is_secret_setting(key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|part| part.is_empty()) {
        return false;
    }
    matches!(
        parts.as_slice(),
        ["hot_store", "url"]
            | ["sources", _, "url"]
            | ["api", "database_url"]
            | ["api", "jwt_hs256_secrets", _]
            | ["api", "page_token_keys"]
            | ["object_store", "secret_access_key"]
    )
}

/// Whether the dotted, lowercase `key` is one of the schema's own settings
/// (`api.tls_cert_file` is, though it ends with `_file`).
fn is_plain_setting(key: &str) -> bool {
    let pointer = format!("/{}", key.replace('.', "/"));
    serde_json::to_value(Config::default())
        .map(|defaults| defaults.pointer(&pointer).is_some())
        .unwrap_or(false)
}

/// Whether the dotted, lowercase key of a `STRATA_*` variable names a file
/// to read a setting from (`hot_store.url_file`), rather than a setting.
fn is_file_variable(key: &str) -> bool {
    key.ends_with(FILE_SUFFIX) && !is_plain_setting(key)
}

/// A `STRATA_<SECTION>__<KEY>_FILE` variable.
#[derive(Debug)]
struct FileVariable {
    /// The variable's name, as set.
    name: String,
    /// The setting it fills, dotted and lowercase (`hot_store.url`).
    key: String,
    /// The file holding the value.
    path: std::path::PathBuf,
}

impl FileVariable {
    /// The setting and the variable, for errors.
    fn describe(&self) -> String {
        format!("{} (from {})", self.key, self.name)
    }
}

/// The `_FILE` variables among `env`, checked: each names a secret
/// setting that is not also set directly by its own variable.
fn file_variables(env: &[(String, OsString)]) -> Result<Vec<FileVariable>, ConfigError> {
    const PREFIX: &str = "strata_";
    let mut found = Vec::new();
    for (name, value) in env {
        let name = name.trim();
        let lower = name.to_ascii_lowercase();
        let Some(stripped) = lower.strip_prefix(PREFIX) else {
            continue;
        };
        // As figment's `split("__")` spells it.
        let dotted = stripped.replace("__", ".");
        if !SECTIONS.iter().any(|s| dotted.starts_with(s)) || !is_file_variable(&dotted) {
            continue;
        }
        let key = dotted[..dotted.len() - FILE_SUFFIX.len()].to_string();
        if !is_secret_setting(&key) {
            return Err(ConfigError::Invalid {
                key: name.to_string(),
                message: format!(
                    "names `{key}`, which cannot be read from a file: only secret \
                     settings can ({SECRET_SETTINGS})"
                ),
            });
        }
        // `dotted` ends with "_file", so `name` ends with "_FILE" (any case).
        let direct = &name[..name.len() - FILE_SUFFIX.len()];
        if env
            .iter()
            .any(|(other, _)| other.trim().eq_ignore_ascii_case(direct))
        {
            return Err(ConfigError::Invalid {
                key: name.to_string(),
                message: format!("and {direct} are both set; set only one of them"),
            });
        }
        found.push(FileVariable {
            name: name.to_string(),
            key,
            path: value.into(),
        });
    }
    Ok(found)
}

/// The secret in the file at `path`, less one trailing newline (`\n` or
/// `\r\n`). Errors name `setting` and the path, never the content.
fn read_secret_file(setting: &str, path: &Path) -> Result<String, ConfigError> {
    let mut text = std::fs::read_to_string(path).map_err(|err| ConfigError::Invalid {
        key: setting.to_string(),
        message: format!("cannot read the secret file {}: {err}", path.display()),
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// `value` replaced by the content of the file it names, when it is
/// `file:<path>`.
fn resolve_file_value(setting: &str, value: &mut String) -> Result<(), ConfigError> {
    if let Some(path) = value.strip_prefix(FILE_PREFIX) {
        *value = read_secret_file(setting, Path::new(path))?;
    }
    Ok(())
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

    /// `url` redacted, through `redacted()`, `Debug` and `Display`, shows
    /// neither `secret` nor any 4+ character piece of it, and still
    /// shows each of `kept`.
    fn assert_redacted(url: &str, secret: &str, kept: &[&str]) {
        let url = DatabaseUrl::new(url);
        for shown in [url.redacted(), format!("{url:?}"), url.to_string()] {
            assert!(!shown.contains(secret), "{shown:?} shows {secret:?}");
            for piece in secret
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|piece| piece.len() >= 4)
            {
                assert!(
                    !shown.contains(piece),
                    "{shown:?} shows {piece:?} of {secret:?}"
                );
            }
            assert!(shown.contains("***"), "{shown:?} hides nothing");
            for part in kept {
                assert!(shown.contains(part), "{shown:?} lost {part:?}");
            }
        }
    }

    #[test]
    fn redacts_url_userinfo_whatever_the_password_holds() {
        let odd = "Zx9-SECRET/with@odd:chars";
        assert_redacted(
            &format!("postgres://app:{odd}@db.internal:5432/strata"),
            odd,
            &["postgres://app:", "db.internal:5432/strata"],
        );
        assert_redacted(
            &format!("postgresql://app:{odd}@db.internal/strata?sslmode=require"),
            odd,
            &["postgresql://", "db.internal/strata", "sslmode=require"],
        );
        let escaped = "Zx9-SECRET%2Fescaped%40odd%3Achars";
        assert_redacted(
            &format!("postgres://app:{escaped}@db.internal/strata"),
            escaped,
            &["db.internal/strata"],
        );
        let question = "Zx9?QUESTION#mark";
        assert_redacted(
            &format!("postgres://app:{question}@db.internal/strata"),
            question,
            &["db.internal/strata"],
        );
        assert_redacted(
            "postgres://app:Zx9-MULTIHOST@db1.internal:5432,db2.internal:5433/strata",
            "Zx9-MULTIHOST",
            &["db1.internal:5432", "db2.internal:5433"],
        );
        assert_eq!(
            DatabaseUrl::new("postgres://u:pw@h/db").redacted(),
            "postgres://u:***@h/db"
        );
    }

    #[test]
    fn redacts_url_query_passwords() {
        assert_redacted(
            "postgres://db.internal/strata?user=app&password=Zx9-QUERY%2Fsecret&sslmode=require",
            "Zx9-QUERY%2Fsecret",
            &["db.internal/strata", "user=app", "sslmode=require"],
        );
        assert_redacted(
            "postgresql://app@db.internal/strata?sslpassword=Zx9-SSLQUERY&sslkey=/etc/k.pem",
            "Zx9-SSLQUERY",
            &["app@db.internal/strata", "sslkey=/etc/k.pem"],
        );
        assert_redacted(
            "postgres://db.internal/strata?pass%77ord=Zx9-ENCODEDKEY",
            "Zx9-ENCODEDKEY",
            &["db.internal/strata"],
        );
        assert_redacted(
            "postgres://db.internal/strata?password=Zx9-AMP&ERSAND&application_name=x",
            "Zx9-AMP&ERSAND",
            &["db.internal/strata", "application_name=x"],
        );
        let both = "postgres://app:Zx9-USERINFO@db.internal/strata?password=Zx9-QUERYTOO";
        assert_redacted(both, "Zx9-USERINFO", &["db.internal/strata"]);
        assert_redacted(both, "Zx9-QUERYTOO", &["db.internal/strata"]);
        assert_eq!(
            DatabaseUrl::new("postgres://h/db?application_name=a@b&password=x").redacted(),
            "postgres://h/db?application_name=a@b&password=***"
        );
    }

    #[test]
    fn redacts_key_value_passwords() {
        let odd = "Zx9-SECRET/with@odd:chars";
        assert_redacted(
            &format!("host=db.internal password={odd} user=app"),
            odd,
            &["host=db.internal", "user=app"],
        );
        assert_redacted(
            "host=db.internal password = Zx9-SPACED user=app dbname=strata",
            "Zx9-SPACED",
            &["host=db.internal", "user=app", "dbname=strata"],
        );
        let quoted = r"'Zx9 QUOTED \' with spaces'";
        assert_redacted(
            &format!("host=db.internal password={quoted} user=app"),
            quoted,
            &["host=db.internal", "user=app"],
        );
        assert_redacted(
            r"host=db.internal password=Zx9\ ESCAPED\ spaces user=app",
            r"Zx9\ ESCAPED\ spaces",
            &["host=db.internal", "user=app"],
        );
        assert_redacted(
            "host=db.internal sslpassword='Zx9-SSLKV' sslkey=/etc/k.pem",
            "Zx9-SSLKV",
            &["host=db.internal", "sslkey=/etc/k.pem"],
        );
        assert_redacted(
            "password=Zx9-FIRST\thost=db.internal",
            "Zx9-FIRST",
            &["host=db.internal"],
        );
        assert_eq!(
            DatabaseUrl::new("host=h password='a b' user=u").redacted(),
            "host=h password=*** user=u"
        );
        assert_eq!(
            DatabaseUrl::new("host=h user=u").redacted(),
            "host=h user=u"
        );
        assert_eq!(
            DatabaseUrl::new("postgres://u@h/db").redacted(),
            "postgres://u@h/db"
        );
    }

    fn secret_file(content: &[u8]) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(content).expect("write the temp file");
        file
    }

    fn file_value(file: &tempfile::NamedTempFile) -> String {
        format!("file:{}", file.path().display())
    }

    #[test]
    fn file_values_are_read_from_files() {
        let hot = secret_file(b"postgres://u:Zx9-HOT@db.internal/strata\n");
        let source = secret_file(b"postgres://u:Zx9-SOURCE@db.internal/src");
        let database = secret_file(b"host=db.internal password=Zx9-API\n");
        let jwt = secret_file(b"Zx9-JWT-secret\n\n");
        let page_key = secret_file(b"k1=Zx9-page-token-key\n");
        let aws = secret_file(b"Zx9-AWS\r\n");
        let toml = secret_file(
            format!(
                "[hot_store]\nurl = \"{}\"\n[sources.filetest]\nurl = \"{}\"\n",
                file_value(&hot),
                file_value(&source)
            )
            .as_bytes(),
        );
        let config = Config::load(
            Some(toml.path()),
            &[
                format!("api.database_url={}", file_value(&database)),
                format!("api.jwt_hs256_secrets.k1={}", file_value(&jwt)),
                format!(
                    "api.page_token_keys=[\"{}\", \"k0=inline\"]",
                    file_value(&page_key)
                ),
                format!("object_store.secret_access_key={}", file_value(&aws)),
            ],
        )
        .expect("valid");
        assert_eq!(
            config.hot_store_url().expect("set").expose(),
            "postgres://u:Zx9-HOT@db.internal/strata"
        );
        assert_eq!(
            config.sources["filetest"].url.expose(),
            "postgres://u:Zx9-SOURCE@db.internal/src"
        );
        assert_eq!(
            config.api.database_url.as_ref().expect("set").expose(),
            "host=db.internal password=Zx9-API"
        );
        // One trailing newline goes, not more.
        assert_eq!(
            config.api.jwt_hs256_secrets["k1"].expose(),
            "Zx9-JWT-secret\n"
        );
        let keys: Vec<&str> = config
            .api
            .page_token_keys
            .iter()
            .map(Secret::expose)
            .collect();
        assert_eq!(keys, ["k1=Zx9-page-token-key", "k0=inline"]);
        assert_eq!(config.object_store.secret_access_key.expose(), "Zx9-AWS");
    }

    #[test]
    fn unreadable_secret_files_name_the_setting_and_path_never_the_content() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("no-such-secret");
        let err = Config::load(
            None,
            &[format!(
                "api.jwt_hs256_secrets.k9=file:{}",
                missing.display()
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("api.jwt_hs256_secrets.k9"), "{err}");
        assert!(err.contains(&missing.display().to_string()), "{err}");

        let not_utf8 = secret_file(b"Zx9-NOT-UTF8-\xff\xfe");
        let err = Config::load(None, &[format!("hot_store.url={}", file_value(&not_utf8))])
            .unwrap_err()
            .to_string();
        assert!(err.contains("hot_store.url"), "{err}");
        assert!(
            err.contains(&not_utf8.path().display().to_string()),
            "{err}"
        );
        assert!(!err.contains("Zx9"), "{err}");

        let err = Config::load(
            None,
            &[format!("sources.dirtest.url=file:{}", dir.path().display())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sources.dirtest.url"), "{err}");
    }

    /// A synthetic environment for [`Config::load_with_env`]: tests never
    /// set `_FILE` variables in the process, where concurrently running
    /// tests would see them.
    fn env(pairs: &[(&str, &Path)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(name, value)| (OsString::from(name), value.as_os_str().to_os_string()))
            .collect()
    }

    #[test]
    fn file_variables_fill_secret_settings() {
        let hot = secret_file(b"postgres://u:Zx9-HOT-ENV@db.internal/strata\n");
        let source = secret_file(b"postgres://u:Zx9-SOURCE-ENV@db.internal/src\n");
        let database = secret_file(b"postgres://api:Zx9-API-ENV@db.internal/strata\n");
        let jwt = secret_file(b"Zx9-JWT-ENV\n");
        let page_keys = secret_file(b"k2=Zx9-new\n\nk1=Zx9-old\n");
        let aws = secret_file(b"Zx9-AWS-ENV\n");
        let config = Config::load_with_env(
            None,
            &[],
            env(&[
                ("STRATA_HOT_STORE__URL_FILE", hot.path()),
                ("STRATA_SOURCES__FILEVAR__URL_FILE", source.path()),
                ("STRATA_API__DATABASE_URL_FILE", database.path()),
                ("STRATA_API__JWT_HS256_SECRETS__K7_FILE", jwt.path()),
                ("STRATA_API__PAGE_TOKEN_KEYS_FILE", page_keys.path()),
                ("STRATA_OBJECT_STORE__SECRET_ACCESS_KEY_FILE", aws.path()),
                // A setting of its own whose name ends in _FILE: not a file
                // variable (and, being synthetic, not read by figment).
                (
                    "STRATA_API__TLS_CERT_FILE",
                    Path::new("/etc/strata/cert.pem"),
                ),
                ("STRATA_CONFIG_FILE", Path::new("/not/a/setting")),
                ("UNRELATED_FILE", Path::new("/nowhere")),
            ]),
        )
        .expect("valid");
        assert_eq!(
            config.hot_store_url().expect("set").expose(),
            "postgres://u:Zx9-HOT-ENV@db.internal/strata"
        );
        assert_eq!(
            config.sources["filevar"].url.expose(),
            "postgres://u:Zx9-SOURCE-ENV@db.internal/src"
        );
        assert_eq!(
            config.api.database_url.as_ref().expect("set").expose(),
            "postgres://api:Zx9-API-ENV@db.internal/strata"
        );
        assert_eq!(config.api.jwt_hs256_secrets["k7"].expose(), "Zx9-JWT-ENV");
        let keys: Vec<&str> = config
            .api
            .page_token_keys
            .iter()
            .map(Secret::expose)
            .collect();
        assert_eq!(keys, ["k2=Zx9-new", "k1=Zx9-old"]);
        assert_eq!(
            config.object_store.secret_access_key.expose(),
            "Zx9-AWS-ENV"
        );

        // `--set` still wins over the environment.
        let config = Config::load_with_env(
            None,
            &["api.jwt_hs256_secrets.k7=from-the-flag".into()],
            env(&[("STRATA_API__JWT_HS256_SECRETS__K7_FILE", jwt.path())]),
        )
        .expect("valid");
        assert_eq!(config.api.jwt_hs256_secrets["k7"].expose(), "from-the-flag");
    }

    #[test]
    fn bad_file_variables_are_named() {
        let file = secret_file(b"500\n");
        for name in [
            "STRATA_RELAY__BATCH_SIZE_FILE",
            "STRATA_API__NO_SUCH_FILE",
            "STRATA_LOG__FORMAT_FILE",
        ] {
            let err = Config::load_with_env(None, &[], env(&[(name, file.path())]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{err}");
        }

        let err = Config::load_with_env(
            None,
            &[],
            env(&[
                ("STRATA_API__JWT_HS256_SECRETS__K8", Path::new("direct")),
                ("STRATA_API__JWT_HS256_SECRETS__K8_FILE", file.path()),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("STRATA_API__JWT_HS256_SECRETS__K8_FILE"),
            "{err}"
        );

        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("hot_url");
        let err = Config::load_with_env(
            None,
            &[],
            env(&[("STRATA_HOT_STORE__URL_FILE", missing.as_path())]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("hot_store.url"), "{err}");
        assert!(err.contains("STRATA_HOT_STORE__URL_FILE"), "{err}");
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }

    #[test]
    fn file_variable_names() {
        assert!(is_file_variable("hot_store.url_file"));
        assert!(is_file_variable("sources.x.url_file"));
        assert!(!is_file_variable("api.tls_cert_file"));
        assert!(!is_file_variable("api.tls_key_file"));
        assert!(!is_file_variable("hot_store.url"));
        assert!(is_secret_setting("api.jwt_hs256_secrets.k1"));
        assert!(!is_secret_setting("api.jwt_hs256_secrets"));
        assert!(!is_secret_setting("sources..url"));
        assert!(!is_secret_setting("relay.batch_size"));
    }

    #[test]
    fn export_retention_must_be_positive() {
        assert_eq!(
            Config::default().api.export_retention,
            Duration::from_secs(24 * 3600)
        );
        let err = Config::load(None, &["api.export_retention=\"0s\"".into()]).unwrap_err();
        assert!(err.to_string().contains("api.export_retention"), "{err}");
        let config = Config::load(None, &["api.export_retention=90m".into()]).expect("valid");
        assert_eq!(config.api.export_retention, Duration::from_secs(5400));
    }
}
