//! The relay's sessions: their names in `pg_stat_activity` and the
//! session settings of source and hot-store connections. Connecting itself
//! (URL, keepalives, connect timeout, transport) is `strata_pg`'s.

use std::time::Duration;

use strata_core::config::DatabaseUrl;
use strata_pg::PgConnection;
use tokio_postgres::Client;

use crate::error::RelayError;

/// `application_name` of the workers' sessions, for `pg_stat_activity`
/// (listeners and the reconciler have their own).
pub const WORKER_APPLICATION_NAME: &str = "strata-relay";

/// Connects and drives the connection in a background task.
pub(crate) async fn connect(
    url: &DatabaseUrl,
    application_name: &str,
    timeout: Duration,
) -> Result<Client, RelayError> {
    Ok(strata_pg::connect(url, application_name, timeout).await?)
}

/// Connects, leaving the connection for the caller to drive (LISTEN).
pub(crate) async fn connect_raw(
    url: &DatabaseUrl,
    application_name: &str,
    timeout: Duration,
) -> Result<(Client, PgConnection), RelayError> {
    Ok(strata_pg::connect_raw(url, application_name, timeout).await?)
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
