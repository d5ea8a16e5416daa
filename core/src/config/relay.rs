//! The ingest path's sections: `hot_store` (where events land), `sources`
//! (the producer databases holding an outbox) and `relay` (how batches are
//! claimed, shipped and reconciled), each with its defaults and checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, DatabaseUrl};
use crate::duration::serde_text;
use crate::event::{
    EventLimits, DEFAULT_ACCEPT_FUTURE, DEFAULT_ACCEPT_PAST, DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_ACCEPT_WINDOW,
};

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

impl SourceConfig {
    /// Checks the source called `name` (its key in `sources`).
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
        if !valid_name {
            return Err(ConfigError::invalid(
                format!("sources.{name}"),
                "name must be 1 to 64 of [A-Za-z0-9_-]",
            ));
        }
        if self.url.expose().is_empty() {
            return Err(ConfigError::invalid(
                format!("sources.{name}.url"),
                "is required",
            ));
        }
        Ok(())
    }
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

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = ConfigError::invalid;
        if self.batch_size == 0 || self.batch_size > 50_000 {
            return Err(invalid("relay.batch_size", "must be between 1 and 50000"));
        }
        if self.workers_per_source == 0 || self.workers_per_source > 64 {
            return Err(invalid(
                "relay.workers_per_source",
                "must be between 1 and 64",
            ));
        }
        for (key, value) in [
            ("relay.poll_interval", self.poll_interval),
            ("relay.reconcile_after", self.reconcile_after),
            ("relay.reconcile_interval", self.reconcile_interval),
            ("relay.election_interval", self.election_interval),
            ("relay.backoff_initial", self.backoff_initial),
            ("relay.backoff_max", self.backoff_max),
            ("relay.statement_timeout", self.statement_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        if self.backoff_max < self.backoff_initial {
            return Err(invalid(
                "relay.backoff_max",
                "must be at least relay.backoff_initial",
            ));
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > 256 * 1024 * 1024 {
            return Err(invalid(
                "relay.max_payload_bytes",
                "must be between 1 and 268435456",
            ));
        }
        if self.batch_bytes == 0 {
            return Err(invalid("relay.batch_bytes", "must be positive"));
        }
        for (key, value) in [
            ("relay.accept_past", self.accept_past),
            ("relay.accept_future", self.accept_future),
        ] {
            if value > MAX_ACCEPT_WINDOW {
                return Err(invalid(key, "must be at most 36600d (100 years)"));
            }
        }
        if self.partitions_ahead_days > 366 {
            return Err(invalid(
                "relay.partitions_ahead_days",
                "must be at most 366",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn defaults_validate() {
        RelayConfig::default().validate().expect("valid");
    }

    #[test]
    fn relay_checks_name_the_key() {
        for (setting, key) in [
            ("relay.batch_size=50001", "relay.batch_size"),
            ("relay.workers_per_source=0", "relay.workers_per_source"),
            ("relay.election_interval=\"0s\"", "relay.election_interval"),
            ("relay.backoff_max=50ms", "relay.backoff_max"),
            ("relay.max_payload_bytes=0", "relay.max_payload_bytes"),
            ("relay.accept_past=36601d", "relay.accept_past"),
            (
                "relay.partitions_ahead_days=367",
                "relay.partitions_ahead_days",
            ),
        ] {
            let err = Config::load(None, &[setting.into()])
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{key}`")), "{setting}: {err}");
        }
    }

    #[test]
    fn sources_need_a_name_and_a_url() {
        let url = DatabaseUrl::new("postgres://h/db");
        let source = SourceConfig { url };
        source.validate("payments-eu_1").expect("valid");
        for name in ["", "bad name", &"x".repeat(65)] {
            let err = source.validate(name).unwrap_err().to_string();
            assert!(err.contains(&format!("`sources.{name}`")), "{err}");
        }
        let err = SourceConfig::default().validate("empty").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: `sources.empty.url` is required"
        );
    }
}
