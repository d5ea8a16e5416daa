//! Postgres plumbing of the archiver, each piece in one place: opening a
//! session as `strata-archiver` (`connect`, through `strata_pg`: keepalives,
//! connect timeout), bounding a call by the statement timeout (`bounded`,
//! `strata_pg`'s), and decoding a column without the panic of `Row::get`
//! (`column`). `strata_pg`'s errors become [`ArchiveError`]s (`From`).

use std::time::Duration;

use strata_core::config::DatabaseUrl;
use tokio_postgres::types::FromSql;
use tokio_postgres::{Client, Row};

use crate::error::ArchiveError;

/// `application_name` of the archiver's sessions.
pub const APPLICATION_NAME: &str = "strata-archiver";

/// Connects to a database (the hot store or a source) with the archiver's
/// session settings, and drives the connection in a background task.
pub(crate) async fn connect(url: &DatabaseUrl, timeout: Duration) -> Result<Client, ArchiveError> {
    Ok(strata_pg::connect(url, APPLICATION_NAME, timeout).await?)
}

/// Runs `future` under `timeout`, naming `context` when it fails or expires.
pub(crate) async fn bounded<T>(
    context: &'static str,
    timeout: Duration,
    future: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, ArchiveError> {
    Ok(strata_pg::bounded(context, timeout, future).await?)
}

/// Column `index` of `row` as a `T`; [`ArchiveError::Decode`] naming
/// `context` when the value does not decode (a NULL, an infinite
/// timestamp, ...) instead of the panic of `Row::get`.
pub(crate) fn column<'a, T: FromSql<'a>>(
    row: &'a Row,
    index: usize,
    context: &'static str,
) -> Result<T, ArchiveError> {
    row.try_get(index).map_err(ArchiveError::decode(context))
}
