//! The baseline of `strata bench api`: the same cold pages answered by
//! DuckDB over a pyarrow dataset of the same Parquet files, the tool a user
//! would otherwise reach for. Runs `python` with pyarrow and duckdb; the
//! caller skips the figure when that fails.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use strata_core::config::ObjectStoreConfig;

/// The same cold pages answered by DuckDB over a pyarrow dataset of the
/// archive files (S3 or local), warm (the dataset opened once).
pub(super) async fn duckdb_baseline(
    python: &str,
    store: &ObjectStoreConfig,
    keys: &[String],
    users: &[String],
    from: i64,
    to: i64,
) -> anyhow::Result<Vec<f64>> {
    let program = r#"
import json, sys, time
import duckdb, pyarrow.dataset as ds, pyarrow.fs as pafs
cfg = json.loads(sys.stdin.read())
if cfg["kind"] == "s3":
    fs = pafs.S3FileSystem(endpoint_override=cfg["endpoint"], region="us-east-1", access_key=cfg["key"], secret_key=cfg["secret"], scheme="http")
    paths = [cfg["bucket"] + "/" + k for k in cfg["keys"]]
else:
    fs = pafs.LocalFileSystem()
    paths = [cfg["root"] + "/" + k for k in cfg["keys"]]
dataset = ds.dataset(paths, filesystem=fs, format="parquet")
con = duckdb.connect()
out = []
for user in cfg["users"]:
    t = time.perf_counter()
    table = dataset.to_table(filter=(ds.field("user_id") == user))
    con.register("t", table)
    rows = con.execute("SELECT * FROM t WHERE occurred_at >= to_timestamp(?) AND occurred_at < to_timestamp(?) ORDER BY occurred_at, event_id LIMIT 100", [cfg["from"], cfg["to"]]).to_arrow_table()
    con.unregister("t")
    out.append((time.perf_counter() - t) * 1000)
print(json.dumps(out))
"#;
    let cfg = json!({
        "kind": store.kind.map_or("", |kind| kind.as_str()),
        "endpoint": store.endpoint.as_deref().unwrap_or("").trim_start_matches("http://"),
        "bucket": store.bucket,
        "key": store.access_key_id.as_deref().unwrap_or(""),
        "secret": store.secret_access_key.expose(),
        "root": (store.local_dir.as_deref())
            .map(|dir| dir.display().to_string())
            .unwrap_or_default(),
        "keys": keys,
        "users": users.iter().take(50).collect::<Vec<_>>(),
        "from": from,
        "to": to,
    });
    let mut child = tokio::process::Command::new(python)
        .args(["-c", program])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("run {python}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        stdin.write_all(cfg.to_string().as_bytes()).await?;
    }
    let output = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
        .await
        .context("DuckDB baseline timed out")??;
    anyhow::ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .last()
            .unwrap_or("python failed")
    );
    let ms: Vec<f64> = serde_json::from_slice(&output.stdout)?;
    Ok(ms)
}
