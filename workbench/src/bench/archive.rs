//! `strata bench archive`: fill one day of the hot store, archive it to the
//! object store, against a sorted binary COPY-out of the same partition
//! (the ceiling: what reading the day costs before any Parquet work).

use std::time::Instant;

use anyhow::Context;
use chrono::{NaiveDate, TimeDelta, Utc};
use clap::Args;
use futures_util::{pin_mut, StreamExt};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use strata_archive::ObjectStore;
use strata_archiver::{Archiver, ArchiverOptions, Closure};
use strata_core::config::{
    ArchiverConfig, DatabaseUrl, ObjectStoreConfig, ObjectStoreKind, Secret,
};
use strata_relay::hot_copy::{self, HotRow};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::env::BenchEnv;
use super::{CommonArgs, CHECKPOINT_SQL, ENSURE_PARTITION_SQL};
use crate::pg;
use crate::synth::Synth;

/// Bytes of a relation, by name (the day's partition).
const TABLE_SIZE_SQL: &str = "SELECT pg_table_size($1::text::regclass)";

/// The hot partition of `day` (named by `strata.ensure_day_partition`).
fn partition_table(day: NaiveDate) -> String {
    format!("strata.activity_{}", day.format("%Y%m%d"))
}

/// Sets hint bits and statistics of `table`.
fn vacuum_analyze_sql(table: &str) -> String {
    format!("VACUUM (ANALYZE) {table}")
}

/// The sorted binary COPY-out of `select`.
fn copy_out_sql(select: &str) -> String {
    format!("COPY ({select}) TO STDOUT (FORMAT binary)")
}

/// `strata bench archive` flags.
#[derive(Debug, Args)]
pub(super) struct ArchiveArgs {
    /// Events in the day.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Distinct users (default: one per 25 events).
    #[arg(long)]
    users: Option<u64>,
    /// S3-compatible endpoint to archive to (e.g. a local moto server);
    /// without it the archive goes to a local directory.
    #[arg(long, env = "STRATA_BENCH_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// Bucket on `--s3-endpoint` (created when missing).
    #[arg(long, default_value = "strata-bench")]
    bucket: String,
    /// Timed COPY-out runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    copy_runs: usize,
    #[command(flatten)]
    common: CommonArgs,
}

/// Runs the scenario.
pub(super) async fn run(args: ArchiveArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let env = BenchEnv::new(args.common.pg_url.as_deref(), &[]).await?;
    let hot_url = env.fresh_database("bench_archive_hot").await?;
    let mut hot = pg::connect(&hot_url).await?;
    strata_migrations::STORE.apply(&mut hot).await?;
    let day = Utc::now().date_naive() - TimeDelta::days(2);
    hot.execute(ENSURE_PARTITION_SQL, &[&day]).await?;
    let users = args.users.unwrap_or((args.events / 25).max(1));

    println!(
        "filling {day} with {} events of {users} users (binary COPY) ...",
        args.events
    );
    let started = Instant::now();
    let raw_json_bytes = fill(&hot, day, args.events, users, &cancel).await?;
    let partition = partition_table(day);
    // Hint bits and statistics now, so neither measured read pays for them.
    hot.batch_execute(&vacuum_analyze_sql(&partition)).await?;
    hot.batch_execute(CHECKPOINT_SQL).await?;
    let table_bytes: i64 = hot
        .query_one(TABLE_SIZE_SQL, &[&partition])
        .await?
        .try_get(0)?;
    println!(
        "  filled in {:.1}s; raw JSON {:.1} MB, heap {:.1} MB",
        started.elapsed().as_secs_f64(),
        raw_json_bytes as f64 / 1e6,
        table_bytes as f64 / 1e6
    );

    // Ceiling: the archiver's exact query, as a sorted binary COPY-out.
    let select = format!(
        "SELECT {} FROM {partition} ORDER BY user_id, occurred_at, event_id",
        strata_archive::layout::COLUMNS.join(", ")
    );
    let mut copy_secs = Vec::new();
    for _ in 0..args.copy_runs.max(1) {
        copy_secs.push(copy_out(&hot, &select).await?);
    }
    let copy_secs = median(&mut copy_secs);

    let (object_store, store_note) =
        object_store(args.s3_endpoint.as_deref(), &args.bucket).await?;
    let spool = std::env::temp_dir().join(format!("strata-bench-spool-{}", std::process::id()));
    let options = ArchiverOptions {
        hot_store: DatabaseUrl::new(hot_url.clone()),
        sources: Vec::new(),
        archiver: ArchiverConfig {
            spool_dir: Some(spool.clone()),
            ..ArchiverConfig::default()
        },
        object_store,
    };
    reset_peak_rss();
    let rss_before = peak_rss_bytes();
    let mut archiver = Archiver::start(options, "bench").await?;
    let keeper = archiver.keep_lease();
    let work = keeper.lost.child_token();
    let result = tokio::select! {
        _ = cancel.cancelled() => Err(anyhow::anyhow!("cancelled")),
        result = archiver.archive_day(day, Closure::Now, &work) => result.map_err(anyhow::Error::from),
    };
    let peak_rss = peak_rss_bytes();
    keeper.stop().await;
    archiver.release().await;
    let report = result?;
    let _ = std::fs::remove_dir_all(&spool);
    anyhow::ensure!(
        report.rows == args.events,
        "archived {} rows, expected {}",
        report.rows,
        args.events
    );

    let n = args.events as f64;
    let archive_secs = report.elapsed.as_secs_f64();
    let rows_per_s = n / archive_secs;
    let copy_rate = n / copy_secs;
    let ratio = report.bytes as f64 / raw_json_bytes as f64;
    println!(
        "\nstrata bench archive: {} events, {} users, {} file(s) to {store_note} ({})",
        args.events, users, report.files, env.fsync_note
    );
    println!(
        "  {:<44} {:>12} {:>10} {:>10}",
        "path", "rows/s", "MB/s", "seconds"
    );
    println!(
        "  {:<44} {:>12.0} {:>10.1} {:>10.2}",
        "sorted binary COPY-out (ceiling, median)",
        copy_rate,
        raw_json_bytes as f64 / 1e6 / copy_secs,
        copy_secs
    );
    println!(
        "  {:<44} {:>12.0} {:>10.1} {:>10.2}",
        "strata archive (export+upload+verify+commit)",
        rows_per_s,
        raw_json_bytes as f64 / 1e6 / archive_secs,
        archive_secs
    );
    println!(
        "  archive / COPY-out = {:.2}x; Parquet {:.1} MB = {:.1}% of raw JSON {:.1} MB; peak RSS {:.0} MiB (before: {:.0} MiB)",
        rows_per_s / copy_rate,
        report.bytes as f64 / 1e6,
        ratio * 100.0,
        raw_json_bytes as f64 / 1e6,
        peak_rss as f64 / 1048576.0,
        rss_before as f64 / 1048576.0
    );
    println!("  (MB/s is raw JSON bytes per second)");
    if args.common.json {
        println!(
            "{}",
            json!({
                "scenario": "archive",
                "events": args.events,
                "users": users,
                "files": report.files,
                "rows_per_s": rows_per_s.round(),
                "mb_per_s": (raw_json_bytes as f64 / 1e6 / archive_secs * 10.0).round() / 10.0,
                "copy_out_rows_per_s": copy_rate.round(),
                "archive_vs_copy_out": (rows_per_s / copy_rate * 100.0).round() / 100.0,
                "parquet_bytes": report.bytes,
                "raw_json_bytes": raw_json_bytes,
                "parquet_vs_raw_json": (ratio * 1000.0).round() / 1000.0,
                "peak_rss_bytes": peak_rss,
                "object_store": store_note,
                "server": env.fsync_note,
            })
        );
    }
    Ok(())
}

/// The object store: `--s3-endpoint` (bucket created) or a temp directory.
pub(super) async fn object_store(
    s3_endpoint: Option<&str>,
    bucket: &str,
) -> anyhow::Result<(ObjectStoreConfig, String)> {
    let config = match s3_endpoint {
        Some(endpoint) => ObjectStoreConfig {
            kind: Some(ObjectStoreKind::S3),
            bucket: bucket.to_string(),
            prefix: format!("bench-{}", Uuid::new_v4().simple()),
            endpoint: Some(endpoint.to_string()),
            region: Some(std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into())),
            path_style: true,
            access_key_id: Some(
                std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into()),
            ),
            secret_access_key: Secret::new(
                std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".into()),
            ),
            ..ObjectStoreConfig::default()
        },
        None => ObjectStoreConfig {
            kind: Some(ObjectStoreKind::Local),
            local_dir: Some(
                std::env::temp_dir().join(format!("strata-bench-archive-{}", std::process::id())),
            ),
            ..ObjectStoreConfig::default()
        },
    };
    ObjectStore::from_config(&config)
        .await?
        .ensure_bucket()
        .await
        .context("create the benchmark bucket")?;
    let note = match s3_endpoint {
        Some(endpoint) => format!("s3://{bucket} at {endpoint}"),
        None => (config.local_dir.as_deref())
            .map(|dir| dir.display().to_string())
            .unwrap_or_default(),
    };
    Ok((config, note))
}

/// Writes `events` synthetic events of `day` straight into the hot store
/// (one binary COPY, the relay's own: `ingested_at` is the column's
/// default); returns their size as JSON lines (every column), the baseline
/// of the compression figure.
pub(super) async fn fill(
    hot: &tokio_postgres::Client,
    day: NaiveDate,
    events: u64,
    users: u64,
    cancel: &CancellationToken,
) -> anyhow::Result<u64> {
    let mut synth = Synth::new(users, 42);
    let mut rng = SmallRng::seed_from_u64(7);
    let start = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let ingested_at = Utc::now();
    let sink = hot.copy_in(hot_copy::COPY_SQL).await?;
    let writer = hot_copy::writer(sink);
    pin_mut!(writer);
    let mut raw = 0u64;
    let sources = ["accounts", "payments", "trading", "security"];
    for i in 0..events {
        if cancel.is_cancelled() {
            anyhow::bail!("cancelled");
        }
        let event = synth.event();
        let at = start + TimeDelta::microseconds(rng.gen_range(0..86_400_000_000));
        let id = Uuid::now_v7();
        let source = sources[(i % 4) as usize];
        let line = json!({
            "user_id": event.user_id,
            "occurred_at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "event_id": id,
            "kind": event.kind,
            "source": source,
            "payload": event.payload,
            "ingested_at": ingested_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        });
        raw += serde_json::to_string(&line)?.len() as u64 + 1;
        let row = HotRow {
            event_id: &id,
            user_id: &event.user_id,
            kind: &event.kind,
            occurred_at: &at,
            source,
            payload: &event.payload,
        };
        hot_copy::write_row(writer.as_mut(), &row).await?;
    }
    writer.finish().await?;
    Ok(raw)
}

/// Seconds to stream `select` out as binary COPY, discarding the bytes.
async fn copy_out(hot: &tokio_postgres::Client, select: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let stream = hot.copy_out(&copy_out_sql(select)).await?;
    pin_mut!(stream);
    let mut bytes = 0usize;
    while let Some(chunk) = stream.next().await {
        bytes += chunk?.len();
    }
    std::hint::black_box(bytes);
    Ok(started.elapsed().as_secs_f64())
}

/// The median of `values` (sorting them); NaN when empty.
pub(super) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Resets the kernel's peak-RSS mark (Linux), so the figure is the
/// archiver's own and not the fill's.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size of this process (`VmHWM`), in bytes.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
