//! Small Postgres helpers for the binary's own glue (migrate, demo, bench).

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

/// Connects and drives the connection in the background.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connect to {}", strata_core::config::DatabaseUrl::new(url)))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "connection closed");
        }
    });
    Ok(client)
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
