//! Where a benchmark runs: a private durable cluster, or `--pg-url`.

use anyhow::Context;
use strata_embedded::{Cluster, ClusterOptions};

use crate::pg;

/// What the report says about the server's durability.
const SERVER_SETTINGS_SQL: &str =
    "SELECT current_setting('fsync'), current_setting('synchronous_commit'), \
            current_setting('wal_sync_method'), version()";

/// A server to create benchmark databases in.
pub(super) struct BenchEnv {
    base_url: String,
    _cluster: Option<Cluster>,
    _dir: Option<TempDir>,
    /// What the server's fsync does, for the report.
    pub fsync_note: String,
}

/// A folder removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl BenchEnv {
    /// Starts a private cluster (with `extra` settings) unless `pg_url`.
    pub(super) async fn new(pg_url: Option<&str>, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let (base_url, cluster, dir) = match pg_url {
            Some(url) => (url.trim_end_matches('/').to_string(), None, None),
            None => {
                let dir = std::env::temp_dir().join(format!("strata-bench-{}", std::process::id()));
                let mut options = ClusterOptions::new(&dir);
                for (k, v) in extra {
                    options = options.setting(k, v);
                }
                let cluster = tokio::task::spawn_blocking(move || Cluster::start(options))
                    .await?
                    .context("start private benchmark cluster")?;
                let url = cluster.url("postgres");
                let base = url.trim_end_matches("/postgres").to_string();
                (base, Some(cluster), Some(TempDir(dir)))
            }
        };
        let mut env = Self {
            base_url,
            _cluster: cluster,
            _dir: dir,
            fsync_note: String::new(),
        };
        let admin = pg::connect(&env.url("postgres")).await?;
        let row = admin.query_one(SERVER_SETTINGS_SQL, &[]).await?;
        let (fsync, sync_commit, method, version): (String, String, String, String) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        );
        env.fsync_note = format!(
            "fsync={fsync} synchronous_commit={sync_commit} wal_sync_method={method}; {}",
            version.split(" on ").next().unwrap_or(&version)
        );
        Ok(env)
    }

    /// URL of database `db`.
    pub(super) fn url(&self, db: &str) -> String {
        format!("{}/{db}", self.base_url)
    }

    /// A fresh database named `db`.
    pub(super) async fn fresh_database(&self, db: &str) -> anyhow::Result<String> {
        let admin = pg::connect(&self.url("postgres")).await?;
        pg::recreate_database(&admin, db).await?;
        Ok(self.url(db))
    }
}
