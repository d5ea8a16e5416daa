//! Opening Postgres connections with the relay's session settings.

use std::str::FromStr;
use std::time::Duration;

use strata_core::config::DatabaseUrl;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Config, Connection, NoTls, Socket};

use crate::error::RelayError;

/// `application_name` of the workers' sessions, for `pg_stat_activity`
/// (listeners and the reconciler have their own).
pub const WORKER_APPLICATION_NAME: &str = "strata-relay";

/// Parses a URL and applies what every relay session needs: a name in
/// `pg_stat_activity`, and TCP keepalives so a half-open peer is noticed.
pub(crate) fn config(
    url: &DatabaseUrl,
    application_name: &str,
    timeout: Duration,
) -> Result<Config, RelayError> {
    let mut config = Config::from_str(url.expose()).map_err(|source| RelayError::BadUrl {
        what: url.redacted(),
        source,
    })?;
    config
        .application_name(application_name)
        .connect_timeout(timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3);
    Ok(config)
}

/// Connects and drives the connection in a background task.
pub(crate) async fn connect(
    url: &DatabaseUrl,
    application_name: &str,
    timeout: Duration,
) -> Result<Client, RelayError> {
    let (client, connection) = connect_raw(url, application_name, timeout).await?;
    let name = application_name.to_string();
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(application_name = %name, error = %err, "connection closed");
        }
    });
    Ok(client)
}

/// Connects, leaving the connection for the caller to drive (LISTEN).
pub(crate) async fn connect_raw(
    url: &DatabaseUrl,
    application_name: &str,
    timeout: Duration,
) -> Result<(Client, Connection<Socket, NoTlsStream>), RelayError> {
    let config = config(url, application_name, timeout)?;
    match tokio::time::timeout(timeout, config.connect(NoTls)).await {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(source)) => Err(RelayError::Database {
            context: "connect",
            source,
        }),
        Err(_) => Err(RelayError::Timeout { context: "connect" }),
    }
}

/// Session settings for a connection that claims outbox rows: a stuck
/// claim (a paused relay) is rolled back by the server after
/// `idle_in_transaction`, releasing its rows to other relays. With
/// `enable_seqscan = off` the claim walks the outbox's primary key and stops
/// after its LIMIT whatever the statistics say: after a crash restart or a
/// vacuum of an empty outbox, `reltuples = 0` made the planner sort the
/// whole backlog (or worse) on every claim. Nothing else runs on these
/// sessions that would want a sequential scan.
pub(crate) async fn prepare_source_session(
    client: &Client,
    statement_timeout: Duration,
    idle_in_transaction: Duration,
) -> Result<(), RelayError> {
    crate::error::db(
        "configure source session",
        statement_timeout,
        client.batch_execute(&format!(
            "SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}; SET synchronous_commit = on; SET enable_seqscan = off",
            statement_timeout.as_millis(),
            idle_in_transaction.as_millis()
        )),
    )
    .await
}

/// Session settings for a hot-store connection: durable commits whatever
/// the role's default, bounded statements.
pub(crate) async fn prepare_hot_session(
    client: &Client,
    statement_timeout: Duration,
) -> Result<(), RelayError> {
    crate::error::db(
        "configure hot store session",
        statement_timeout,
        client.batch_execute(&format!(
            "SET statement_timeout = {}; SET synchronous_commit = on",
            statement_timeout.as_millis()
        )),
    )
    .await
}
