//! Postgres glue of the demo and the benchmarks: connect, and create
//! throwaway databases.

use std::time::Duration;

use anyhow::Context;
use strata_core::config::DatabaseUrl;
use tokio_postgres::Client;

/// `application_name` of the workbench's sessions.
const APPLICATION_NAME: &str = "strata-workbench";
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects (through `strata_pg`: keepalives, connect timeout) and drives
/// the connection in the background. The error names the redacted URL.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let url = DatabaseUrl::new(url);
    Ok(strata_pg::connect(&url, APPLICATION_NAME, CONNECT_TIMEOUT).await?)
}

/// Drops (if present) and creates database `name` through `admin`.
pub async fn recreate_database(admin: &Client, name: &str) -> anyhow::Result<()> {
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .with_context(|| format!("drop database {name}"))?;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .with_context(|| format!("create database {name}"))
}
