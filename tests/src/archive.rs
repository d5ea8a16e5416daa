//! The archive side of the harness: the S3 server the test command started
//! (`STRATA_TEST_S3_ENDPOINT`, moto) or one a test runs itself, a bucket
//! per test, archiver settings, and two readers of what was archived: the
//! project's own and an independent one (pyarrow + DuckDB, from PyPI).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use chrono::NaiveDate;
use rand::Rng;
use strata_archive::{read_rows, ArchivedRow, ObjectStore};
use strata_core::config::{ObjectStoreConfig, ObjectStoreKind, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::Client;

use crate::db::TestEnv;
use crate::process::{log_dir, StrataProcess};

/// Endpoint of the S3 server the test command started.
pub fn s3_endpoint() -> anyhow::Result<String> {
    std::env::var("STRATA_TEST_S3_ENDPOINT").context(
        "STRATA_TEST_S3_ENDPOINT is not set: run the suite through scripts/test, which starts the S3 server",
    )
}

/// Creates `bucket` (moto needs no signature for this).
pub async fn create_bucket(endpoint: &str, bucket: &str) -> anyhow::Result<()> {
    let authority = endpoint
        .strip_prefix("http://")
        .context("the test S3 endpoint must be http://host:port")?
        .trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("connect to the S3 server at {authority}"))?;
    let request = format!(
        "PUT /{bucket} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    anyhow::ensure!(
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
        "create bucket {bucket}: {}",
        response.lines().next().unwrap_or("no response")
    );
    Ok(())
}

/// A bucket of its own on an S3 server.
#[derive(Debug, Clone)]
pub struct S3Target {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// Key prefix inside the bucket.
    pub prefix: String,
}

impl S3Target {
    /// A fresh bucket named after the test on the suite's S3 server.
    pub async fn new(name: &str) -> anyhow::Result<Self> {
        Self::on(&s3_endpoint()?, name).await
    }

    /// A fresh bucket on the server at `endpoint`.
    pub async fn on(endpoint: &str, name: &str) -> anyhow::Result<Self> {
        let bucket = format!(
            "{}-{:08x}",
            name.replace('_', "-").to_ascii_lowercase(),
            rand::thread_rng().gen::<u32>()
        );
        create_bucket(endpoint, &bucket).await?;
        Ok(Self {
            endpoint: endpoint.to_string(),
            bucket,
            prefix: "strata".into(),
        })
    }

    /// The `object_store.*` settings pointing at this bucket.
    pub fn settings(&self) -> Vec<(String, String)> {
        [
            ("object_store.kind", "s3"),
            ("object_store.bucket", &self.bucket),
            ("object_store.prefix", &self.prefix),
            ("object_store.endpoint", &self.endpoint),
            ("object_store.region", "us-east-1"),
            ("object_store.path_style", "true"),
            ("object_store.access_key_id", "test"),
            ("object_store.secret_access_key", "test"),
            ("object_store.request_timeout", "10s"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The same as a config value, for in-process readers.
    pub fn config(&self) -> ObjectStoreConfig {
        ObjectStoreConfig {
            kind: Some(ObjectStoreKind::S3),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            path_style: true,
            access_key_id: Some("test".into()),
            secret_access_key: Secret::new("test"),
            ..ObjectStoreConfig::default()
        }
    }

    /// A client of the bucket.
    pub async fn store(&self) -> anyhow::Result<ObjectStore> {
        Ok(ObjectStore::from_config(&self.config()).await?)
    }
}

/// Archiver settings for tests: no settle time, fast passes, a short
/// lease, short backoff; plus `target`'s bucket and `extra` overrides.
pub fn archiver_settings(target: &S3Target, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = [
        ("archiver.settle", "0s"),
        ("archiver.interval", "300ms"),
        ("archiver.lease_ttl", "3s"),
        ("archiver.backoff_initial", "100ms"),
        ("archiver.backoff_max", "1s"),
        ("archiver.statement_timeout", "10s"),
        ("archiver.orphan_grace", "0s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    settings.extend(target.settings());
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    settings
}

fn as_refs(settings: &[(String, String)]) -> Vec<(&str, &str)> {
    settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Starts `strata archiver` (continuous) against `env` and `target`.
pub fn spawn_archiver(
    env: &TestEnv,
    target: &S3Target,
    name: &str,
    extra: &[(&str, &str)],
    failpoints: Option<&str>,
) -> anyhow::Result<StrataProcess> {
    let settings = archiver_settings(target, extra);
    StrataProcess::spawn_command(env, &["archiver"], name, &as_refs(&settings), failpoints)
}

/// Runs `strata archive <args>` to its end; returns whether it succeeded
/// and its output.
pub async fn run_archive(
    env: &TestEnv,
    target: &S3Target,
    args: &[&str],
    extra: &[(&str, &str)],
    failpoints: Option<&str>,
) -> anyhow::Result<(bool, String)> {
    let settings = archiver_settings(target, extra);
    let mut full_args = vec!["archive"];
    full_args.extend_from_slice(args);
    let mut process =
        StrataProcess::spawn_command(env, &full_args, "archive", &as_refs(&settings), failpoints)?;
    let status = process
        .wait_exit(Duration::from_secs(120))
        .await
        .context("strata archive did not finish within 120 s")?;
    let output = std::fs::read_to_string(&process.log_path).unwrap_or_default();
    Ok((status.success(), output))
}

/// The columns of an archived row, selected from the hot store. The
/// harness reads the hot store its own way on purpose, not through the
/// API's statements (`api/src/history/sql.rs`): the archive and the API are
/// checked against an oracle that shares no code with them.
const HOT_COLUMNS: &str = "user_id, (extract(epoch FROM occurred_at) * 1000000)::int8, event_id,
     kind, source, payload::text, (extract(epoch FROM ingested_at) * 1000000)::int8";

fn archived_row(row: &tokio_postgres::Row) -> ArchivedRow {
    ArchivedRow {
        user_id: row.get(0),
        occurred_at: row.get(1),
        event_id: row.get(2),
        kind: row.get(3),
        source: row.get(4),
        payload: row.get(5),
        ingested_at: row.get(6),
    }
}

/// The hot store's rows of `day` in archive order.
pub async fn hot_rows(hot: &Client, day: NaiveDate) -> anyhow::Result<Vec<ArchivedRow>> {
    let rows = hot
        .query(
            &format!(
                "SELECT {HOT_COLUMNS} FROM strata.activity
                  WHERE occurred_at >= $1::date AND occurred_at < $1::date + 1
                  ORDER BY user_id, occurred_at, event_id"
            ),
            &[&day],
        )
        .await?;
    Ok(rows.iter().map(archived_row).collect())
}

/// What the catalog says of a day.
#[derive(Debug, Clone)]
pub struct DayCatalog {
    /// `sealed` or `committed`.
    pub state: String,
    /// Commits of the day (the first plus one per late file).
    pub version: i32,
    /// Rows over all files.
    pub rows: i64,
    /// Whether the hot partition was dropped.
    pub partition_dropped: bool,
    /// Whether the final keys and the manifest reflect the last commit.
    pub published: bool,
    /// `(object_key, origin, seq, rows, epoch)` by seq.
    pub files: Vec<(String, String, i32, i64, i64)>,
}

/// The catalog entry of `day`, if any.
pub async fn day_catalog(hot: &Client, day: NaiveDate) -> anyhow::Result<Option<DayCatalog>> {
    let Some(row) = hot
        .query_opt(
            "SELECT state, version, rows, partition_dropped_at IS NOT NULL,
                    manifest_version >= version
               FROM strata.archive_days WHERE day = $1",
            &[&day],
        )
        .await?
    else {
        return Ok(None);
    };
    let files = hot
        .query(
            "SELECT object_key, origin, seq, rows, epoch FROM strata.archive_files
              WHERE day = $1 ORDER BY seq",
            &[&day],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    Ok(Some(DayCatalog {
        state: row.get(0),
        version: row.get(1),
        rows: row.get(2),
        partition_dropped: row.get(3),
        published: row.get(4),
        files,
    }))
}

/// Every row of `day`'s committed files, read by the project's own reader
/// from the object store, in file (seq) then row order.
pub async fn archived_rows(
    hot: &Client,
    target: &S3Target,
    day: NaiveDate,
) -> anyhow::Result<Vec<ArchivedRow>> {
    let catalog = day_catalog(hot, day)
        .await?
        .with_context(|| format!("{day} has no catalog entry"))?;
    let store = target.store().await?;
    let scratch = tempfile::Builder::new()
        .prefix("strata-test-read")
        .tempdir()?;
    let mut rows = Vec::new();
    for (key, ..) in &catalog.files {
        let local = scratch.path().join(key.replace('/', "_"));
        store.get_to_file(key, &local).await?;
        rows.extend(read_rows(&local)?);
        let _ = std::fs::remove_file(&local);
    }
    Ok(rows)
}

/// What the independent reader (tests/py/read_archive.py) saw of a day.
#[derive(Debug, Clone)]
pub struct IndependentRead {
    /// Rows, ordered by DuckDB on (user_id, occurred_at, event_id).
    pub rows: Vec<ArchivedRow>,
    /// Data files under the day's directory.
    pub files: usize,
    /// Whether every file is sorted by (user_id, occurred_at, event_id).
    pub files_sorted: bool,
    /// Whether the users of different files are disjoint.
    pub users_disjoint: bool,
    /// Whether every column chunk carries min/max statistics.
    pub statistics: bool,
    /// Whether every file has a page (column/offset) index.
    pub page_index: bool,
    /// Compression codecs seen.
    pub codecs: Vec<String>,
    /// The manifest's file count.
    pub manifest_files: usize,
}

/// Reads `day` with pyarrow's S3 filesystem and DuckDB, independently of
/// Strata's code.
pub async fn python_read(target: &S3Target, day: NaiveDate) -> anyhow::Result<IndependentRead> {
    let python = std::env::var("STRATA_TEST_PYTHON")
        .context("STRATA_TEST_PYTHON is not set: run the suite through scripts/test")?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/read_archive.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .args([
            &target.endpoint,
            &target.bucket,
            &target.prefix,
            &day.format("%Y-%m-%d").to_string(),
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .await
        .context("run tests/py/read_archive.py")?;
    anyhow::ensure!(
        output.status.success(),
        "read_archive.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&output.stdout)
        .context("read_archive.py printed something other than JSON")?;
    let field = |name: &str| value.get(name).cloned().unwrap_or_default();
    Ok(IndependentRead {
        rows: rows_of(&value)?,
        files: field("files").as_u64().unwrap_or_default() as usize,
        files_sorted: field("files_sorted").as_bool().unwrap_or_default(),
        users_disjoint: field("users_disjoint").as_bool().unwrap_or_default(),
        statistics: field("statistics").as_bool().unwrap_or_default(),
        page_index: field("page_index").as_bool().unwrap_or_default(),
        codecs: field("codecs")
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.as_str().map(String::from))
            .collect(),
        manifest_files: field("manifest_files").as_u64().unwrap_or_default() as usize,
    })
}

/// The `rows` an independent reader printed: arrays of (user_id,
/// occurred_at µs, event_id text, kind, source, payload, ingested_at µs).
fn rows_of(value: &serde_json::Value) -> anyhow::Result<Vec<ArchivedRow>> {
    let mut rows = Vec::new();
    for row in value["rows"].as_array().cloned().unwrap_or_default() {
        let text = |i: usize| row[i].as_str().unwrap_or_default().to_string();
        rows.push(ArchivedRow {
            user_id: text(0),
            occurred_at: row[1].as_i64().context("occurred_at")?,
            event_id: text(2).parse().context("event_id")?,
            kind: text(3),
            source: text(4),
            payload: text(5),
            ingested_at: row[6].as_i64().context("ingested_at")?,
        });
    }
    Ok(rows)
}

/// Copies `day`'s archive files from `target` under `root`, keyed as on
/// the store less the prefix (`root/activity/date=YYYY-MM-DD/part-...`):
/// the layout a local archive has, for readers that cannot reach S3 here
/// (Spark's S3 connector is not installable from PyPI).
pub async fn download_day(target: &S3Target, day: NaiveDate, root: &Path) -> anyhow::Result<usize> {
    let store = target.store().await?;
    let prefix = format!("{}/", target.prefix);
    let mut files = 0;
    for object in store
        .list(&strata_archive::layout::day_dir(&target.prefix, day))
        .await?
    {
        if !object.key.ends_with(".parquet") {
            continue;
        }
        let relative = object.key.strip_prefix(&prefix).unwrap_or(&object.key);
        let local = root.join(relative);
        if let Some(parent) = local.parent() {
            std::fs::create_dir_all(parent)?;
        }
        store.get_to_file(&object.key, &local).await?;
        files += 1;
    }
    Ok(files)
}

/// Reads `day` under `root` (holding `activity/`) with PySpark
/// (tests/py/read_archive_spark.py), as README tells Spark users to:
/// partition discovery, `WHERE date = ...`. Rows in (user_id, occurred_at,
/// event_id) order.
pub async fn spark_read(root: &Path, day: NaiveDate) -> anyhow::Result<Vec<ArchivedRow>> {
    let python = std::env::var("STRATA_TEST_PYTHON")
        .context("STRATA_TEST_PYTHON is not set: run the suite through scripts/test")?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/read_archive_spark.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .arg(root)
        .arg(day.format("%Y-%m-%d").to_string())
        .output()
        .await
        .context("run tests/py/read_archive_spark.py")?;
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "read_archive_spark.py printed no JSON: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    anyhow::ensure!(
        output.status.success(),
        "Spark could not read the day: {value}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    rows_of(&value)
}

/// Runs Python `code` with boto3 client `c` and bucket name `B` bound to
/// `target` (for what Strata's own store API does not do, such as
/// starting a multipart upload and leaving it); returns stdout, trimmed.
pub async fn boto3(target: &S3Target, code: &str) -> anyhow::Result<String> {
    let python = std::env::var("STRATA_TEST_PYTHON")
        .context("STRATA_TEST_PYTHON is not set: run the suite through scripts/test")?;
    let program = format!(
        "import boto3\nc = boto3.client('s3', endpoint_url={:?}, region_name='us-east-1', \
         aws_access_key_id='test', aws_secret_access_key='test')\nB = {:?}\n{code}",
        target.endpoint, target.bucket
    );
    let output = tokio::process::Command::new(python)
        .args(["-c", &program])
        .output()
        .await
        .context("run python")?;
    anyhow::ensure!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// An S3 server (moto) of a test's own, to stop and restart.
pub struct MotoServer {
    child: Option<Child>,
    port: u16,
}

impl MotoServer {
    /// Starts moto on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut server = Self { child: None, port };
        server.restart().await?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its state, in memory, is gone).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and waits until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let bin = std::env::var("STRATA_TEST_MOTO_BIN")
            .context("STRATA_TEST_MOTO_BIN is not set: run the suite through scripts/test")?;
        let log = std::fs::File::create(log_dir().join(format!("moto-{}.log", self.port)))?;
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start moto_server")?;
        self.child = Some(child);
        let up = crate::wait_until(Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
        })
        .await;
        anyhow::ensure!(up, "moto_server did not start on port {}", self.port);
        Ok(())
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}
