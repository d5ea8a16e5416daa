//! The `api` section: the history API's listener, credentials and limits,
//! with its defaults and checks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use super::{empty_as_none, ConfigError, DatabaseUrl, Secret};
use crate::duration::serde_text;

/// The history API (`strata api`): listener, credentials, limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// gRPC listen address: an IP address and a port (`127.0.0.1:50051`,
    /// `[::1]:50051`), no host name. Anything else is refused while
    /// parsing, naming the key.
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// Database the API reads (default: `hot_store.url`). Give it a login
    /// that is a member of `db_role` only.
    pub database_url: Option<DatabaseUrl>,
    /// Role every API connection switches to (`SET ROLE`) before any
    /// query: read-only on activity, insert-only on the audit table
    /// (created by the store migrations). Unset (or `""`): stay as the
    /// login user.
    #[serde(deserialize_with = "empty_as_none")]
    pub db_role: Option<String>,
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
    /// EXPORT_STATE_EXPIRED, without a URL.
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
    /// Database subscriptions read (catch-up and live): a streaming
    /// replica of the hot store, to keep their load off the primary
    /// (default: `database_url`). Wake-ups still come from the primary.
    pub subscribe_database_url: Option<DatabaseUrl>,
    /// Postgres connections subscriptions use at most, apart from the
    /// history reads' `pool_size`, so that subscribers never take the
    /// connections history reads need.
    pub subscribe_pool_size: usize,
    /// Subscriptions one principal may hold open in this process.
    pub max_subscriptions_per_principal: u32,
    /// Subscriptions this process serves at once, all principals together.
    pub max_subscriptions: u32,
    /// Live subscribers also look for new commits this often, in case a
    /// wake-up (NOTIFY) was missed.
    #[serde(with = "serde_text")]
    pub subscribe_poll_interval: Duration,
    /// A consumer group member whose process stops renewing its buckets'
    /// leases for this long is taken for dead: its buckets go to the
    /// other members (leases are renewed every second).
    #[serde(with = "serde_text")]
    pub group_session_timeout: Duration,
    /// A group member that keeps a delivery unacknowledged this long is
    /// dropped from the group (ACK_TIMEOUT) and what it did not
    /// acknowledge is delivered again.
    #[serde(with = "serde_text")]
    pub group_ack_timeout: Duration,
    /// Serve TLS with this PEM certificate chain (with `tls_key_file`);
    /// unset (or `""`): plaintext.
    #[serde(deserialize_with = "empty_as_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key for `tls_cert_file`.
    #[serde(deserialize_with = "empty_as_none")]
    pub tls_key_file: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: None,
            db_role: Some("strata_api".into()),
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
            subscribe_database_url: None,
            subscribe_pool_size: 4,
            max_subscriptions_per_principal: 16,
            max_subscriptions: 256,
            subscribe_poll_interval: Duration::from_millis(500),
            group_session_timeout: Duration::from_secs(5),
            group_ack_timeout: Duration::from_secs(30),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl ApiConfig {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = ConfigError::invalid;
        if self.pool_size == 0 || self.pool_size > 1000 {
            return Err(invalid("api.pool_size", "must be between 1 and 1000"));
        }
        if self.subscribe_pool_size == 0 || self.subscribe_pool_size > 1000 {
            return Err(invalid(
                "api.subscribe_pool_size",
                "must be between 1 and 1000",
            ));
        }
        for (key, value) in [
            ("api.statement_timeout", self.statement_timeout),
            ("api.page_token_ttl", self.page_token_ttl),
            ("api.export_url_ttl", self.export_url_ttl),
            ("api.export_retention", self.export_retention),
            ("api.request_timeout", self.request_timeout),
            ("api.audit_summary_interval", self.audit_summary_interval),
            ("api.subscribe_poll_interval", self.subscribe_poll_interval),
            ("api.group_ack_timeout", self.group_ack_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        if self.group_session_timeout < Duration::from_secs(3) {
            return Err(invalid(
                "api.group_session_timeout",
                "must be at least 3s (leases are renewed every second)",
            ));
        }
        if !(self.rate_per_second > 0.0 && self.rate_per_second.is_finite()) || self.rate_burst == 0
        {
            return Err(invalid(
                "api.rate_per_second",
                "and api.rate_burst must be positive",
            ));
        }
        if self.max_concurrent_exports == 0 {
            return Err(invalid("api.max_concurrent_exports", "must be positive"));
        }
        for (key, value) in [
            ("api.max_calls_per_principal", self.max_calls_per_principal),
            ("api.max_calls_in_flight", self.max_calls_in_flight),
            (
                "api.max_cold_reads_per_principal",
                self.max_cold_reads_per_principal,
            ),
            ("api.max_cold_reads", self.max_cold_reads),
            ("api.peer_burst", self.peer_burst),
            ("api.audit_refusals_burst", self.audit_refusals_burst),
            ("api.get_event_max_days", self.get_event_max_days),
            (
                "api.max_subscriptions_per_principal",
                self.max_subscriptions_per_principal,
            ),
            ("api.max_subscriptions", self.max_subscriptions),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        for (key, value) in [
            ("api.peer_rate_per_second", self.peer_rate_per_second),
            (
                "api.audit_refusals_per_second",
                self.audit_refusals_per_second,
            ),
        ] {
            if !(value > 0.0 && value.is_finite()) {
                return Err(invalid(key, "must be a positive number"));
            }
        }
        if self.tls_cert_file.is_none() != self.tls_key_file.is_none() {
            return Err(invalid(
                "api.tls_cert_file",
                "and api.tls_key_file must be set together",
            ));
        }
        if self.export_prefix.is_empty()
            || self.export_prefix.starts_with('/')
            || self.export_prefix.contains("..")
        {
            return Err(invalid(
                "api.export_prefix",
                "must be a non-empty relative prefix without \"..\"",
            ));
        }
        Ok(())
    }
}

/// serde `deserialize_with` for `api.listen`: the text is read as a
/// string, as when the field was one, and parsed once here; anything but
/// an address is refused with the message it always had, naming the key.
fn listen_address<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    String::deserialize(deserializer)?
        .parse()
        .map_err(|_| D::Error::custom("must be an address like 127.0.0.1:50051"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn defaults_validate() {
        ApiConfig::default().validate().expect("valid");
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

    #[test]
    fn tls_files_are_set_together() {
        let config = Config::load(
            None,
            &[
                "api.tls_cert_file=/etc/strata/cert.pem".into(),
                "api.tls_key_file=/etc/strata/key.pem".into(),
            ],
        )
        .expect("valid");
        assert_eq!(
            config.api.tls_cert_file,
            Some(PathBuf::from("/etc/strata/cert.pem"))
        );
        assert_eq!(
            config.api.tls_key_file,
            Some(PathBuf::from("/etc/strata/key.pem"))
        );
        for settings in [
            [
                "api.tls_cert_file=/etc/strata/cert.pem",
                "api.tls_key_file=",
            ],
            [
                "api.tls_cert_file=\"\"",
                "api.tls_key_file=/etc/strata/key.pem",
            ],
        ] {
            let settings: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
            let err = Config::load(None, &settings).unwrap_err().to_string();
            assert!(err.contains("`api.tls_cert_file`"), "{err}");
        }
    }

    #[test]
    fn api_checks_name_the_key() {
        for (setting, key) in [
            ("api.pool_size=0", "api.pool_size"),
            ("api.rate_burst=0", "api.rate_per_second"),
            ("api.max_cold_reads=0", "api.max_cold_reads"),
            ("api.peer_rate_per_second=0.0", "api.peer_rate_per_second"),
            ("api.export_prefix=../x", "api.export_prefix"),
        ] {
            let err = Config::load(None, &[setting.into()])
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{key}`")), "{setting}: {err}");
        }
    }

    #[test]
    fn listen_is_an_address_parsed_once() {
        for (value, address) in [
            ("127.0.0.1:50051", "127.0.0.1:50051"),
            ("\"0.0.0.0:0\"", "0.0.0.0:0"),
            ("\"[::1]:0\"", "[::1]:0"),
        ] {
            let config = Config::load(None, &[format!("api.listen={value}")]).expect("valid");
            assert_eq!(config.api.listen.to_string(), address);
        }
        for value in ["localhost", "localhost:50051", "\"\"", "127.0.0.1"] {
            let err = Config::load(None, &[format!("api.listen={value}")])
                .unwrap_err()
                .to_string();
            assert!(err.contains("api.listen"), "{value}: {err}");
            assert!(
                err.contains("must be an address like 127.0.0.1:50051"),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn db_role_empty_means_the_login_user() {
        assert_eq!(Config::default().api.db_role.as_deref(), Some("strata_api"));
        let config = Config::load(None, &["api.db_role=\"\"".into()]).expect("valid");
        assert_eq!(config.api.db_role, None);
        let config = Config::load(None, &["api.db_role=reader".into()]).expect("valid");
        assert_eq!(config.api.db_role.as_deref(), Some("reader"));
    }
}
