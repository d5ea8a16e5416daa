//! Opening a session: the URL parsed, the settings every Strata session
//! gets (a name in `pg_stat_activity`, TCP keepalives so a half-open peer
//! is noticed, a connect timeout), and the transport chosen.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use strata_core::config::DatabaseUrl;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{AsyncMessage, Client, Config, Connection, NoTls, Socket};

use crate::error::PgError;

/// Idle time of a session's socket before the first TCP keepalive probe.
pub const KEEPALIVES_IDLE: Duration = Duration::from_secs(10);
/// Time between unanswered TCP keepalive probes.
pub const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered TCP keepalive probes after which the peer is considered gone.
pub const KEEPALIVES_RETRIES: u32 = 3;

/// The I/O half of a session, returned by [`connect_raw`]: it must be
/// polled (awaited, or its messages read with [`PgConnection::poll_message`])
/// for the [`Client`] to make progress. Opaque so that the transport (plain
/// TCP today, TLS later) stays this crate's choice.
#[must_use = "a connection does nothing unless it is polled"]
pub struct PgConnection {
    inner: Connection<Socket, NoTlsStream>,
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
/// `application_name` (it replaces one given in the URL), TCP keepalives and
/// `timeout` as the connect timeout of each host tried.
fn config(url: &DatabaseUrl, application_name: &str, timeout: Duration) -> Result<Config, PgError> {
    let mut config = Config::from_str(url.expose()).map_err(|error| PgError::BadUrl {
        url: url.redacted(),
        error,
    })?;
    config
        .application_name(application_name)
        .connect_timeout(timeout)
        .keepalives(true)
        .keepalives_idle(KEEPALIVES_IDLE)
        .keepalives_interval(KEEPALIVES_INTERVAL)
        .keepalives_retries(KEEPALIVES_RETRIES);
    Ok(config)
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
    let config = config(url, application_name, timeout)?;
    match tokio::time::timeout(timeout, config.connect(NoTls)).await {
        Ok(Ok((client, inner))) => Ok((client, PgConnection { inner })),
        Ok(Err(error)) => Err(PgError::Connect {
            url: url.redacted(),
            error,
        }),
        Err(_) => Err(PgError::ConnectTimeout {
            url: url.redacted(),
            timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_session_gets_its_name_keepalives_and_connect_timeout() {
        let url = DatabaseUrl::new("postgres://strata@db.example/hot?application_name=other");
        let config = config(&url, "strata-test", Duration::from_secs(7)).expect("valid url");
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
        let err = config(&url, "strata-test", Duration::from_secs(1)).expect_err("bad port");
        assert!(matches!(err, PgError::BadUrl { .. }), "{err:?}");
        assert!(!err.is_retryable());
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(std::error::Error::source(&err).is_none(), "{err:?}");
    }
}
