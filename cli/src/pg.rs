//! Small Postgres helpers for the binary's own glue (`strata migrate`).

use std::time::Duration;

use strata_core::config::DatabaseUrl;
use tokio_postgres::Client;

/// `application_name` of the binary's own sessions.
const APPLICATION_NAME: &str = "strata-cli";
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects (through `strata_pg`: keepalives, connect timeout) and drives
/// the connection in the background. The error names the redacted URL.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let url = DatabaseUrl::new(url);
    Ok(strata_pg::connect(&url, APPLICATION_NAME, CONNECT_TIMEOUT).await?)
}
