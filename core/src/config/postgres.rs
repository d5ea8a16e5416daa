//! The `postgres` section: TLS settings for every Postgres session Strata
//! opens (hot store, sources, the API's pool), applied to each database URL
//! that does not set them itself, so one setting covers a fleet and a URL
//! can still differ. The names are libpq's, as are their meanings.

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use super::{empty_as_none, Config, DatabaseUrl};

/// Defaults for the TLS parameters of every database URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// `disable`, `allow`, `prefer` (libpq's default, and Strata's),
    /// `require`, `verify-ca` or `verify-full`.
    #[serde(deserialize_with = "empty_as_none")]
    pub sslmode: Option<SslMode>,
    /// PEM file of the CA certificates the server's certificate must chain
    /// to (`verify-ca`, `verify-full`, and `require` when set), or `system`
    /// for the operating system's roots.
    #[serde(deserialize_with = "empty_as_none")]
    pub sslrootcert: Option<String>,
    /// PEM client certificate (chain) presented to the server.
    #[serde(deserialize_with = "empty_as_none")]
    pub sslcert: Option<String>,
    /// PEM private key of `sslcert`.
    #[serde(deserialize_with = "empty_as_none")]
    pub sslkey: Option<String>,
}

impl PostgresConfig {
    /// `url` with each setting of this section added where the URL does
    /// not set it.
    pub fn apply_to(&self, url: &DatabaseUrl) -> DatabaseUrl {
        let mut url = url.clone();
        let settings = [
            (
                "sslmode",
                self.sslmode.map(|mode| mode.as_str().to_string()),
            ),
            ("sslrootcert", self.sslrootcert.clone()),
            ("sslcert", self.sslcert.clone()),
            ("sslkey", self.sslkey.clone()),
        ];
        for (key, value) in settings {
            if let Some(value) = value {
                url = url.with_default_param(key, &value);
            }
        }
        url
    }
}

impl Config {
    /// Applies the `postgres` section to every database URL of the
    /// configuration (see [`PostgresConfig::apply_to`]).
    pub(super) fn apply_postgres_defaults(&mut self) {
        let postgres = self.postgres.clone();
        if postgres == PostgresConfig::default() {
            return;
        }
        if let Some(url) = &mut self.hot_store.url {
            *url = postgres.apply_to(url);
        }
        if let Some(url) = &mut self.api.database_url {
            *url = postgres.apply_to(url);
        }
        for source in self.sources.values_mut() {
            source.url = postgres.apply_to(&source.url);
        }
    }
}

/// libpq's `sslmode`: whether a session uses TLS and what it checks of the
/// server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// libpq tries plaintext first; Strata (like tokio-postgres) tries TLS
    /// first and falls back to plaintext, as `prefer` does.
    Allow,
    /// TLS when the server offers it, else plaintext; no certificate check.
    Prefer,
    /// TLS or nothing; the certificate is checked only when a root
    /// certificate is configured (then as `verify-ca`).
    Require,
    /// TLS, and the server's certificate must chain to `sslrootcert`.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Every mode, in order of strength.
    pub const ALL: [SslMode; 6] = [
        Self::Disable,
        Self::Allow,
        Self::Prefer,
        Self::Require,
        Self::VerifyCa,
        Self::VerifyFull,
    ];

    /// The name libpq gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// The message for a value that is not a mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sslmode {0:?} is not one of disable, allow, prefer, require, verify-ca, verify-full")]
pub struct UnknownSslMode(pub String);

impl FromStr for SslMode {
    type Err = UnknownSslMode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|mode| mode.as_str() == text)
            .ok_or_else(|| UnknownSslMode(text.to_string()))
    }
}

impl<'de> Deserialize<'de> for SslMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(|err: UnknownSslMode| D::Error::custom(err.to_string()))
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_libpq_mode_parses_and_others_are_refused_naming_the_key() {
        for mode in SslMode::ALL {
            assert_eq!(mode.as_str().parse::<SslMode>(), Ok(mode));
        }
        let err =
            Config::load(None, &["postgres.sslmode=verify_full".into()]).expect_err("not a mode");
        let shown = err.to_string();
        assert!(shown.contains("postgres.sslmode"), "{shown}");
        assert!(shown.contains("verify-full"), "{shown}");
    }

    #[test]
    fn the_section_fills_in_what_each_url_leaves_out() {
        let config = Config::load(
            None,
            &[
                "hot_store.url=postgres://h/hot?sslmode=require".into(),
                "sources.a.url=host=h dbname=a".into(),
                "postgres.sslmode=verify-full".into(),
                "postgres.sslrootcert=/etc/strata/ca.pem".into(),
            ],
        )
        .expect("valid");
        let hot = config.hot_store.url.expect("set");
        assert_eq!(hot.param("sslmode").as_deref(), Some("require"));
        assert_eq!(
            hot.param("sslrootcert").as_deref(),
            Some("/etc/strata/ca.pem")
        );
        let source = &config.sources["a"].url;
        assert_eq!(source.param("sslmode").as_deref(), Some("verify-full"));
        assert_eq!(
            source.expose(),
            "host=h dbname=a sslmode='verify-full' sslrootcert='/etc/strata/ca.pem'"
        );
    }
}
