//! Opening a session: the URL parsed, the settings every Strata session
//! gets (a name in `pg_stat_activity`, TCP keepalives so a half-open peer
//! is noticed, a connect timeout), and the transport chosen (TLS as the
//! URL's libpq parameters say, see [`crate::tls`]).

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use strata_core::config::{DatabaseUrl, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, Config, Connection, Socket};

use crate::error::PgError;
use crate::tls::{HandshakeError, MakeRustls, RustlsStream, TlsSettings, TLS_PARAMETERS};

/// Idle time of a session's socket before the first TCP keepalive probe.
pub const KEEPALIVES_IDLE: Duration = Duration::from_secs(10);
/// Time between unanswered TCP keepalive probes.
pub const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered TCP keepalive probes after which the peer is considered gone.
pub const KEEPALIVES_RETRIES: u32 = 3;

/// The I/O half of a session, returned by [`connect_raw`]: it must be
/// polled (awaited, or its messages read with [`PgConnection::poll_message`])
/// for the [`Client`] to make progress. Opaque so that the transport
/// (plain TCP or TLS) stays this crate's choice.
#[must_use = "a connection does nothing unless it is polled"]
pub struct PgConnection {
    inner: Connection<Socket, RustlsStream>,
}

impl PgConnection {
    /// The next asynchronous message of the server (a notification, a
    /// notice, a parameter change), driving the connection meanwhile;
    /// `None` once the connection has closed.
    pub fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<AsyncMessage, tokio_postgres::Error>>> {
        self.inner.poll_message(cx)
    }
}

/// Drives the connection until it closes, dropping asynchronous messages.
impl Future for PgConnection {
    type Output = Result<(), tokio_postgres::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

impl std::fmt::Debug for PgConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnection").finish_non_exhaustive()
    }
}

/// Parses `url` and applies what every Strata session needs:
/// `application_name` (it replaces one given in the URL), TCP keepalives,
/// `timeout` as the connect timeout of each host tried, and the TLS
/// settings taken out of the URL (tokio-postgres refuses `verify-full`).
fn config(
    url: &DatabaseUrl,
    application_name: &str,
    timeout: Duration,
) -> Result<(Config, TlsSettings), PgError> {
    let (driver_url, tls_params) = url.take_params(&TLS_PARAMETERS);
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let tls =
        TlsSettings::from_params(&tls_params, home.as_deref()).map_err(|message| PgError::Tls {
            url: url.redacted(),
            message,
        })?;
    let mut config = Config::from_str(driver_url.expose()).map_err(|error| PgError::BadUrl {
        url: url.redacted(),
        error,
    })?;
    // The driver found an `sslmode` the URL split did not (a password
    // with an unescaped '/', '?' or '@' moves where the query seems to
    // start): refuse rather than connect with less than was asked for.
    if config.get_ssl_mode() != tokio_postgres::config::SslMode::Prefer
        && config.get_ssl_mode() != tls.driver_mode()
    {
        return Err(PgError::Tls {
            url: url.redacted(),
            message: "the URL's sslmode was not found where libpq reads it: percent-encode '/', '?' and '@' in the user name and password (%2F, %3F, %40)".into(),
        });
    }
    // libpq ignores sslmode on Unix sockets; the server would answer that
    // it does not support TLS there.
    let unix_only = config
        .get_hosts()
        .iter()
        .all(|host| !matches!(host, tokio_postgres::config::Host::Tcp(_)));
    let driver_mode = if unix_only && !config.get_hosts().is_empty() {
        tokio_postgres::config::SslMode::Disable
    } else {
        tls.driver_mode()
    };
    // tokio-postgres does TLS only with a host name to give the handshake,
    // and a URL with `hostaddr=` alone has none, so every server with TLS
    // would fail (and be retried). libpq does TLS there without a name:
    // use the address as the name, which only `verify-full` checks.
    let hostaddr_only = config.get_hosts().is_empty() && !config.get_hostaddrs().is_empty();
    if hostaddr_only && driver_mode != tokio_postgres::config::SslMode::Disable {
        if tls.mode == SslMode::VerifyFull {
            return Err(PgError::Tls {
                url: url.redacted(),
                message: format!(
                    "sslmode=verify-full checks the server certificate's host name, and this URL gives only hostaddr=: add host=<the name in the certificate> (hostaddr= then only picks the address){}",
                    if tls.root_is_system() {
                        "; sslrootcert=system always checks the name"
                    } else {
                        ", or use sslmode=verify-ca"
                    }
                ),
            });
        }
        for addr in config.get_hostaddrs().to_vec() {
            config.host(addr.to_string());
        }
    }
    config
        .application_name(application_name)
        .connect_timeout(timeout)
        .keepalives(true)
        .keepalives_idle(KEEPALIVES_IDLE)
        .keepalives_interval(KEEPALIVES_INTERVAL)
        .keepalives_retries(KEEPALIVES_RETRIES)
        .ssl_mode(driver_mode);
    Ok((config, tls))
}

/// Connects to `url` as `application_name` and drives the connection in a
/// background task (its end is logged at debug); the whole connect,
/// authentication included, is bounded by `timeout`.
pub async fn connect(
    url: &DatabaseUrl,
    application_name: &str,
    timeout: Duration,
) -> Result<Client, PgError> {
    let (client, connection) = connect_raw(url, application_name, timeout).await?;
    let name = application_name.to_string();
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(application_name = %name, error = %err, "connection closed");
        }
    });
    Ok(client)
}

/// Connects like [`connect`] but leaves the connection for the caller to
/// drive: for sessions that read asynchronous messages (LISTEN).
pub async fn connect_raw(
    url: &DatabaseUrl,
    application_name: &str,
    timeout: Duration,
) -> Result<(Client, PgConnection), PgError> {
    let (config, tls) = config(url, application_name, timeout)?;
    let connector: MakeRustls = tls.connector().map_err(|message| PgError::Tls {
        url: url.redacted(),
        message,
    })?;
    match tokio::time::timeout(timeout, config.connect(connector)).await {
        Ok(Ok((client, inner))) => Ok((client, PgConnection { inner })),
        Ok(Err(error)) => Err(connect_error(url, tls.mode, error)),
        Err(_) => Err(PgError::ConnectTimeout {
            url: url.redacted(),
            timeout,
        }),
    }
}

/// A failed connect, read for what the operator must fix: a certificate
/// the `sslmode` checks reject, or a server that refuses plaintext to a
/// client told not to use TLS, is a [`PgError::Tls`] (not retried);
/// anything else a [`PgError::Connect`].
fn connect_error(url: &DatabaseUrl, mode: SslMode, error: tokio_postgres::Error) -> PgError {
    let rejected = std::error::Error::source(&error)
        .and_then(|source| source.downcast_ref::<HandshakeError>())
        .filter(|handshake| handshake.certificate_rejected());
    if let Some(handshake) = rejected {
        return PgError::Tls {
            url: url.redacted(),
            message: handshake.to_string(),
        };
    }
    let refused_plaintext = error.as_db_error().filter(|db| {
        db.code() == &SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            && db.message().contains("no encryption")
    });
    match refused_plaintext {
        Some(db) if mode == SslMode::Disable => PgError::Tls {
            url: url.redacted(),
            message: format!(
                "the server refused a plaintext session ({}); if it accepts only TLS, which sslmode=disable forbids, set sslmode=verify-full (or require)",
                db.message()
            ),
        },
        _ => PgError::Connect {
            url: url.redacted(),
            error,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostaddr_alone_gets_a_host_name_for_tls_but_not_for_verify_full() {
        let url = DatabaseUrl::new("postgres://strata@/hot?hostaddr=10.0.0.7&sslmode=require");
        let (with_tls, _) = config(&url, "strata-test", Duration::from_secs(7)).expect("valid url");
        assert_eq!(
            with_tls.get_hosts(),
            [tokio_postgres::config::Host::Tcp("10.0.0.7".into())]
        );
        let plain = DatabaseUrl::new("postgres://strata@/hot?hostaddr=10.0.0.7&sslmode=disable");
        let (without, _) =
            config(&plain, "strata-test", Duration::from_secs(7)).expect("valid url");
        assert!(without.get_hosts().is_empty());
        let full = DatabaseUrl::new(
            "postgres://strata@/hot?hostaddr=10.0.0.7&sslmode=verify-full&sslrootcert=/dev/null",
        );
        let err = config(&full, "strata-test", Duration::from_secs(7)).expect_err("no name");
        assert!(
            matches!(&err, PgError::Tls { message, .. } if message.contains("host=") && message.contains("verify-ca")),
            "{err:?}"
        );
        // The system's roots only go with verify-full: not offered.
        let system =
            DatabaseUrl::new("postgres://strata@/hot?hostaddr=10.0.0.7&sslrootcert=system");
        let err = config(&system, "strata-test", Duration::from_secs(7)).expect_err("no name");
        assert!(
            matches!(&err, PgError::Tls { message, .. } if message.contains("host=") && !message.contains("verify-ca")),
            "{err:?}"
        );
    }

    #[test]
    fn every_session_gets_its_name_keepalives_and_connect_timeout() {
        let url = DatabaseUrl::new("postgres://strata@db.example/hot?application_name=other");
        let (config, _) = config(&url, "strata-test", Duration::from_secs(7)).expect("valid url");
        assert_eq!(config.get_application_name(), Some("strata-test"));
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(7)));
        assert!(config.get_keepalives());
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(10));
        assert_eq!(
            config.get_keepalives_interval(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(config.get_keepalives_retries(), Some(3));
    }

    #[test]
    fn a_bad_url_is_reported_without_its_password() {
        let url = DatabaseUrl::new("postgres://strata:hunter2@db.example:notaport/hot");
        let err = config(&url, "strata-test", Duration::from_secs(1))
            .map(|_| ())
            .expect_err("bad port");
        assert!(matches!(err, PgError::BadUrl { .. }), "{err:?}");
        assert!(!err.is_retryable());
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(std::error::Error::source(&err).is_none(), "{err:?}");
    }

    #[test]
    fn an_sslmode_the_split_missed_is_refused_and_unix_sockets_skip_tls() {
        // Unescaped '/' then '?' in the password: the driver still reads
        // `sslmode=require` after the '@'.
        let url = DatabaseUrl::new("postgres://u:a/b?c@db.example/hot?sslmode=require");
        let err = config(&url, "strata-test", Duration::from_secs(1))
            .map(|_| ())
            .expect_err("sslmode not taken out");
        assert!(matches!(err, PgError::Tls { .. }), "{err:?}");
        let url = DatabaseUrl::new(
            "host=/var/run/postgresql dbname=hot sslmode=verify-full sslrootcert=/ca.pem",
        );
        let (config, _) = config(&url, "strata-test", Duration::from_secs(1)).expect("valid");
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
    }

    #[test]
    fn every_libpq_sslmode_works_in_a_url() {
        for (mode, driver) in [
            ("disable", tokio_postgres::config::SslMode::Disable),
            ("allow", tokio_postgres::config::SslMode::Prefer),
            ("prefer", tokio_postgres::config::SslMode::Prefer),
            ("require", tokio_postgres::config::SslMode::Require),
            ("verify-ca", tokio_postgres::config::SslMode::Require),
            ("verify-full", tokio_postgres::config::SslMode::Require),
        ] {
            let url = DatabaseUrl::new(format!(
                "postgres://strata@db.example/hot?sslmode={mode}&sslrootcert=/etc/ca.pem"
            ));
            let (config, tls) = config(&url, "strata-test", Duration::from_secs(1))
                .unwrap_or_else(|err| panic!("{mode}: {err}"));
            assert_eq!(config.get_ssl_mode(), driver, "{mode}");
            assert_eq!(tls.mode.as_str(), mode);
        }
        let url = DatabaseUrl::new("postgres://strata:hunter2@db.example/hot?sslmode=verify_full");
        let err = config(&url, "strata-test", Duration::from_secs(1))
            .map(|_| ())
            .expect_err("unknown mode");
        assert!(matches!(err, PgError::Tls { .. }), "{err:?}");
        assert!(!err.is_retryable());
        let shown = err.to_string();
        assert!(
            shown.contains("verify_full") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
