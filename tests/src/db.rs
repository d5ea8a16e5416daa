//! Fresh, migrated databases on the test cluster.

use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use strata_core::config::DatabaseUrl;
use tokio_postgres::Client;

/// `application_name` of the harness's own sessions.
const APPLICATION_NAME: &str = "strata-tests";
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Superuser URL (no database) of the test cluster.
pub fn base_url() -> anyhow::Result<String> {
    std::env::var("STRATA_TEST_PG_URL")
        .map(|u| u.trim_end_matches('/').to_string())
        .context("STRATA_TEST_PG_URL is not set: run the suite through scripts/test, which starts Postgres")
}

/// The URL of `url`'s database on the test cluster's streaming replica
/// (`STRATA_TEST_REPLICA_URL`, started by scripts/test).
pub fn replica_url(url: &str) -> anyhow::Result<String> {
    let replica = std::env::var("STRATA_TEST_REPLICA_URL")
        .context("STRATA_TEST_REPLICA_URL is not set: run the suite through scripts/test, which starts a replica")?;
    let database = url
        .rsplit_once('/')
        .map(|(_, name)| name)
        .context("a database URL ends with the database's name")?;
    Ok(format!("{}/{database}", replica.trim_end_matches('/')))
}

/// Connects (through `strata_pg`: keepalives, connect timeout) and drives
/// the connection in the background. The error names the redacted URL.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    Ok(strata_pg::connect(&DatabaseUrl::new(url), APPLICATION_NAME, CONNECT_TIMEOUT).await?)
}

/// Creates a database with a random name under `base`; returns its URL.
pub async fn create_database(base: &str, prefix: &str) -> anyhow::Result<String> {
    let name = format!("{prefix}_{:08x}", rand::thread_rng().gen::<u32>());
    let admin = connect(&format!("{base}/postgres")).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .with_context(|| format!("create database {name}"))?;
    Ok(format!("{base}/{name}"))
}

/// A producer database (outbox migrated) and a hot store (store migrated).
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// Producer database URL.
    pub source_url: String,
    /// Hot store URL.
    pub hot_url: String,
}

impl TestEnv {
    /// Two fresh databases on the test cluster.
    pub async fn new(name: &str) -> anyhow::Result<Self> {
        let base = base_url()?;
        let hot_url = create_database(&base, &format!("{name}_hot")).await?;
        let source_url = create_database(&base, &format!("{name}_src")).await?;
        Self::migrate(&source_url, &hot_url).await?;
        Ok(Self {
            source_url,
            hot_url,
        })
    }

    /// One fresh database that is both source and hot store.
    pub async fn same_database(name: &str) -> anyhow::Result<Self> {
        let base = base_url()?;
        let url = create_database(&base, name).await?;
        Self::migrate(&url, &url).await?;
        Ok(Self {
            source_url: url.clone(),
            hot_url: url,
        })
    }

    /// Given databases, migrated.
    pub async fn with_urls(source_url: String, hot_url: String) -> anyhow::Result<Self> {
        Self::migrate(&source_url, &hot_url).await?;
        Ok(Self {
            source_url,
            hot_url,
        })
    }

    async fn migrate(source_url: &str, hot_url: &str) -> anyhow::Result<()> {
        strata_migrations::STORE
            .apply(&mut connect(hot_url).await?)
            .await?;
        strata_migrations::OUTBOX
            .apply(&mut connect(source_url).await?)
            .await?;
        Ok(())
    }

    /// Client on the producer database.
    pub async fn source(&self) -> anyhow::Result<Client> {
        connect(&self.source_url).await
    }

    /// Client on the hot store.
    pub async fn hot(&self) -> anyhow::Result<Client> {
        connect(&self.hot_url).await
    }

    /// Rows left in the outbox.
    pub async fn outbox_len(&self) -> anyhow::Result<i64> {
        Ok(self
            .source()
            .await?
            .query_one("SELECT count(*) FROM strata_outbox.events", &[])
            .await?
            .get(0))
    }

    /// Rows in the hot store.
    pub async fn hot_len(&self) -> anyhow::Result<i64> {
        Ok(self
            .hot()
            .await?
            .query_one("SELECT count(*) FROM strata.activity", &[])
            .await?
            .get(0))
    }
}
