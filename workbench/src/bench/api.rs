//! `strata bench api`: ListActivity latency for a page of 100 from the hot
//! store and from the archive (warm and cold metadata cache), S3 requests
//! per cold page, export throughput, at two store sizes 10x apart; DuckDB
//! answering the same cold page from the same Parquet files (through
//! pyarrow) as the baseline a user would otherwise reach for.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::{NaiveDate, TimeDelta, Utc};
use clap::Args;
use serde_json::json;
use strata_api::auth::{issue_hs256, Claims, SCOPE_EXPORT, SCOPE_READ_ANY};
use strata_api::{ApiOptions, HistoryReader};
use strata_archive::ObjectStore;
use strata_archiver::catalog::{self, CommittedFile};
use strata_archiver::{Archiver, ArchiverOptions, Closure};
use strata_core::config::{ApiConfig, ArchiverConfig, DatabaseUrl, Secret};
use strata_proto::v1::history_service_client::HistoryServiceClient as HistoryClient;
use strata_proto::v1::{ExportActivityRequest, ListActivityRequest};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::archive::{fill, object_store};
use super::duckdb::duckdb_baseline;
use super::env::BenchEnv;
use super::{CommonArgs, CHECKPOINT_SQL, ENSURE_PARTITION_SQL};
use crate::latency::percentile;
use crate::pg;

/// The heavy user (about 2% of all events), for the export figure.
const ADD_HEAVY_USER_SQL: &str =
    "INSERT INTO strata.activity (event_id, user_id, kind, occurred_at, source, payload, ingested_at)
         SELECT gen_random_uuid(), 'bench-heavy', kind, occurred_at, source, payload, ingested_at
           FROM strata.activity WHERE random() < 0.02";

/// Fresh statistics after the fill.
const VACUUM_ANALYZE_SQL: &str = "VACUUM ANALYZE strata.activity";

/// Up to `$1` users other than the heavy one, in a stable pseudo-random
/// order.
const SAMPLE_USERS_SQL: &str = "SELECT user_id FROM (SELECT DISTINCT user_id FROM strata.activity
               WHERE user_id <> 'bench-heavy') u ORDER BY md5(user_id) LIMIT $1";

/// p50 and p99 of `samples`.
fn p50_p99(samples: &[f64]) -> (f64, f64) {
    let mut sorted = samples.to_vec();
    (percentile(&mut sorted, 50.0), percentile(&mut sorted, 99.0))
}

/// Every committed archive file, by day then sequence (the catalog's
/// order), read through the archiver's catalog.
async fn archive_files(hot: &tokio_postgres::Client) -> anyhow::Result<Vec<CommittedFile>> {
    let mut files = Vec::new();
    for day in catalog::all_days(hot).await? {
        files.extend(catalog::day_files(hot, day.day).await?);
    }
    Ok(files)
}

/// `strata bench api` flags.
#[derive(Debug, Args)]
pub(super) struct ApiArgs {
    /// Events in the smaller store; the second store has 10x as many.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Days of history (the last two stay hot, the others are archived).
    #[arg(long, default_value_t = 8)]
    days: u32,
    /// Average events per user over all days (a page reads one archive
    /// file per day it spans, so this sets the GETs per cold page).
    #[arg(long, default_value_t = 1600)]
    events_per_user: u64,
    /// Timed requests per figure.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Rows per archive row group (default: the archiver's); a cold page
    /// fetches about one row group's bytes per file.
    #[arg(long)]
    row_group_rows: Option<usize>,
    /// S3-compatible endpoint for the archive (e.g. a local moto server);
    /// without it the archive goes to a local directory.
    #[arg(long, env = "STRATA_BENCH_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// Bucket on `--s3-endpoint` (created when missing).
    #[arg(long, default_value = "strata-bench")]
    bucket: String,
    /// Python with pyarrow and duckdb for the baseline (skipped if absent).
    #[arg(long, env = "STRATA_BENCH_PYTHON", default_value = "python3")]
    python: String,
    #[command(flatten)]
    common: CommonArgs,
}

/// Figures of one store size.
#[derive(Debug, Clone, Default)]
struct Figures {
    events: u64,
    hot_p50: f64,
    hot_p99: f64,
    cold_warm_p50: f64,
    cold_warm_p99: f64,
    cold_cold_p50: f64,
    cold_cold_p99: f64,
    gets_per_warm_page: f64,
    gets_per_cold_page: f64,
    bytes_per_warm_page: f64,
    archive_bytes_per_event: f64,
    export_mb_per_s: f64,
    export_mb: f64,
    duckdb_p50: Option<f64>,
    duckdb_p99: Option<f64>,
}

/// Pages read, untimed, before each store's figures.
const WARM_UP_USERS: usize = 20;

/// Runs the scenario.
pub(super) async fn run(args: ApiArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let env = BenchEnv::new(args.common.pg_url.as_deref(), &[]).await?;
    let mut figures = Vec::new();
    for (i, events) in [args.events, args.events * 10].into_iter().enumerate() {
        figures.push(one_size(&args, &env, events, i, &cancel).await?);
    }
    let (small, large) = (&figures[0], &figures[1]);
    let growth = (large.hot_p99 / small.hot_p99).max(large.cold_warm_p99 / small.cold_warm_p99);
    println!(
        "\nstrata bench api: page of 100, {} requests per figure, {} days ({} archived) ({})",
        args.requests,
        args.days,
        args.days.saturating_sub(2),
        env.fsync_note
    );
    println!(
        "  {:>9} {:>15} {:>15} {:>15} {:>15} {:>9} {:>15} {:>10} {:>9}",
        "events",
        "hot p50/p99",
        "cold warm",
        "cold cold",
        "duckdb",
        "GETs/pg",
        "export MB/s",
        "KiB/page",
        "B/event"
    );
    for f in &figures {
        let duck = match (f.duckdb_p50, f.duckdb_p99) {
            (Some(a), Some(b)) => format!("{a:.1}/{b:.1}"),
            _ => "n/a".into(),
        };
        println!(
            "  {:>9} {:>15} {:>15} {:>15} {:>15} {:>9.2} {:>15.1} {:>10.0} {:>9.1}",
            f.events,
            format!("{:.2}/{:.2}", f.hot_p50, f.hot_p99),
            format!("{:.2}/{:.2}", f.cold_warm_p50, f.cold_warm_p99),
            format!("{:.2}/{:.2}", f.cold_cold_p50, f.cold_cold_p99),
            duck,
            f.gets_per_warm_page,
            f.export_mb_per_s,
            f.bytes_per_warm_page / 1024.0,
            f.archive_bytes_per_event
        );
    }
    println!(
        "  (ms; GETs per warm cold page; cold-cache pages {:.2} GETs; p99 growth at 10x = {growth:.2}x; DuckDB = pyarrow dataset scan + DuckDB query of the same files)",
        large.gets_per_cold_page
    );
    if args.common.json {
        let per_size: Vec<_> = figures
            .iter()
            .map(|f| {
                json!({
                    "events": f.events,
                    "hot_p50_ms": round2(f.hot_p50), "hot_p99_ms": round2(f.hot_p99),
                    "cold_warm_p50_ms": round2(f.cold_warm_p50), "cold_warm_p99_ms": round2(f.cold_warm_p99),
                    "cold_cold_p50_ms": round2(f.cold_cold_p50), "cold_cold_p99_ms": round2(f.cold_cold_p99),
                    "s3_gets_per_warm_cold_page": round2(f.gets_per_warm_page),
                    "s3_gets_per_cold_cold_page": round2(f.gets_per_cold_page),
                    "duckdb_p50_ms": f.duckdb_p50.map(round2), "duckdb_p99_ms": f.duckdb_p99.map(round2),
                    "export_mb_per_s": round2(f.export_mb_per_s),
                    "kib_per_warm_cold_page": round2(f.bytes_per_warm_page / 1024.0),
                    "archive_bytes_per_event": round2(f.archive_bytes_per_event),
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "scenario": "api",
                "events": large.events,
                "hot_p99_ms": round2(large.hot_p99),
                "cold_warm_p99_ms": round2(large.cold_warm_p99),
                "cold_cold_p99_ms": round2(large.cold_cold_p99),
                "s3_gets_per_warm_cold_page": round2(large.gets_per_warm_page),
                "duckdb_p99_ms": large.duckdb_p99.map(round2),
                "export_mb_per_s": round2(large.export_mb_per_s),
                "p99_growth_at_10x": round2(growth),
                "sizes": per_size,
                "server": env.fsync_note,
            })
        );
    }
    Ok(())
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

async fn one_size(
    args: &ApiArgs,
    env: &BenchEnv,
    events: u64,
    index: usize,
    cancel: &CancellationToken,
) -> anyhow::Result<Figures> {
    let hot_url = env.fresh_database(&format!("bench_api_{index}")).await?;
    let mut hot = pg::connect(&hot_url).await?;
    strata_migrations::STORE.apply(&mut hot).await?;
    let days = args.days.max(3);
    let users = (events / args.events_per_user.max(1)).max(1);
    let today = Utc::now().date_naive();
    let all_days: Vec<NaiveDate> = (1..=days)
        .rev()
        .map(|ago| today - TimeDelta::days(i64::from(ago)))
        .collect();
    let cold_days = &all_days[..all_days.len() - 2];
    println!("store of {events} events, {users} users, {days} days: filling ...");
    for day in &all_days {
        hot.execute(ENSURE_PARTITION_SQL, &[day]).await?;
        fill(&hot, *day, events / u64::from(days), users, cancel).await?;
    }
    // One heavy user (about 2% of all events) for the export figure.
    hot.batch_execute(ADD_HEAVY_USER_SQL).await?;
    hot.batch_execute(VACUUM_ANALYZE_SQL).await?;

    let (mut store_config, _) = object_store(args.s3_endpoint.as_deref(), &args.bucket).await?;
    store_config.prefix = format!("bench-api-{}", uuid::Uuid::new_v4().simple());
    let spool = std::env::temp_dir().join(format!("strata-bench-api-{}", std::process::id()));
    let mut archiver = Archiver::start(
        ArchiverOptions {
            hot_store: DatabaseUrl::new(hot_url.clone()),
            sources: Vec::new(),
            archiver: ArchiverConfig {
                spool_dir: Some(spool.clone()),
                row_group_rows: args
                    .row_group_rows
                    .unwrap_or(ArchiverConfig::default().row_group_rows),
                ..ArchiverConfig::default()
            },
            object_store: store_config.clone(),
        },
        "bench",
    )
    .await?;
    println!("  archiving {} days ...", cold_days.len());
    let keeper = archiver.keep_lease();
    for day in cold_days {
        archiver
            .archive_day(*day, Closure::Now, &keeper.lost)
            .await
            .with_context(|| format!("archive {day}"))?;
    }
    keeper.stop().await;
    archiver.release().await;
    let _ = std::fs::remove_dir_all(&spool);
    // The fill and the partition drops leave a checkpoint's worth of dirty
    // buffers; flush them now, not during the timed requests' commits.
    hot.batch_execute(CHECKPOINT_SQL).await?;

    // The API, in process, with a reader whose counters we can read.
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let api = ApiConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        jwt_hs256_secrets: [("bench".to_string(), Secret::new(secret.clone()))].into(),
        page_token_keys: vec![Secret::new(format!("bench={secret}"))],
        rate_per_second: 1e9,
        rate_burst: 1_000_000_000,
        ..ApiConfig::default()
    };
    let store = ObjectStore::from_config(&store_config).await?;
    let reader = Arc::new(HistoryReader::new(store, store_config.prefix.clone()));
    let api_cancel = cancel.child_token();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(strata_api::serve_with_reader(
        ApiOptions {
            api: api.clone(),
            hot_store_url: DatabaseUrl::new(hot_url.clone()),
            object_store: store_config.clone(),
        },
        Some(reader.clone()),
        api_cancel.clone(),
        Some(ready_tx),
    ));
    let address = ready_rx.await.context("the API did not start")?;
    let mut client = HistoryClient::connect(format!("http://{address}")).await?;
    let now = Utc::now().timestamp().max(0) as u64;
    let token = issue_hs256(
        "bench",
        &secret,
        &Claims {
            sub: "bench".into(),
            iss: api.jwt_issuer.clone(),
            aud: api.jwt_audience.clone(),
            exp: now + 3600,
            iat: Some(now),
            scope: format!("{SCOPE_READ_ANY} {SCOPE_EXPORT}"),
        },
    )?;

    let users = hot
        .query(SAMPLE_USERS_SQL, &[&(args.requests as i64)])
        .await?
        .iter()
        .map(|user| user.try_get(0))
        .collect::<Result<Vec<String>, _>>()?;
    // Every figure times `requests` pages, cycling through the users when
    // the store has fewer; a few pages first warm connections and
    // prepared statements, untimed.
    let sample: Vec<String> = users.iter().cycle().take(args.requests).cloned().collect();
    let warm_up: Vec<String> = users.iter().take(WARM_UP_USERS).cloned().collect();
    let files = archive_files(&hot).await?;
    let archive_bytes: f64 = files.iter().map(|file| file.bytes as f64).sum();
    let archive_rows: f64 = files.iter().map(|file| file.rows as f64).sum();
    let archive_bytes_per_event = archive_bytes / archive_rows.max(1.0);
    let ts = |day: NaiveDate| prost_types::Timestamp {
        seconds: day
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
            .timestamp(),
        nanos: 0,
    };
    let hot_from = ts(all_days[all_days.len() - 2]);
    let cold_from = ts(cold_days[0]);
    let cold_to = ts(all_days[all_days.len() - 2]);
    let page = |user: &str, from: prost_types::Timestamp, to: Option<prost_types::Timestamp>| {
        ListActivityRequest {
            user_id: user.to_string(),
            start_time: Some(from),
            end_time: to,
            page_size: 100,
            ..Default::default()
        }
    };

    let mut f = Figures {
        events,
        archive_bytes_per_event,
        ..Figures::default()
    };
    for (from, to) in [(hot_from, None), (cold_from, Some(cold_to))] {
        timed(
            &mut client,
            &token,
            warm_up.iter().map(|u| page(u, from, to)),
        )
        .await?;
    }
    let hot_ms = timed(
        &mut client,
        &token,
        sample.iter().map(|u| page(u, hot_from, None)),
    )
    .await?;
    (f.hot_p50, f.hot_p99) = p50_p99(&hot_ms);

    // Cold, cold cache: every request starts with no footer cached.
    let stats = reader.cold().stats();
    let gets_before = stats.gets.load(Ordering::Relaxed);
    let mut cold_cold = Vec::new();
    for user in &sample {
        reader.cold().clear_cache();
        cold_cold.extend(
            timed(
                &mut client,
                &token,
                std::iter::once(page(user, cold_from, Some(cold_to))),
            )
            .await?,
        );
    }
    f.gets_per_cold_page =
        (stats.gets.load(Ordering::Relaxed) - gets_before) as f64 / sample.len() as f64;
    (f.cold_cold_p50, f.cold_cold_p99) = p50_p99(&cold_cold);

    // Cold, warm cache: footers of every archived file cached first.
    let _ = timed(
        &mut client,
        &token,
        sample.iter().map(|u| page(u, cold_from, Some(cold_to))),
    )
    .await?;
    // Footers stay cached; decoded rows do not (they would make every
    // page of the warm-up a cache hit with no GET at all).
    reader.cold().clear_rows();
    let gets_before = stats.gets.load(Ordering::Relaxed);
    let bytes_before = stats.bytes.load(Ordering::Relaxed);
    let cold_warm = timed(
        &mut client,
        &token,
        sample.iter().map(|u| page(u, cold_from, Some(cold_to))),
    )
    .await?;
    f.gets_per_warm_page =
        (stats.gets.load(Ordering::Relaxed) - gets_before) as f64 / sample.len() as f64;
    f.bytes_per_warm_page =
        (stats.bytes.load(Ordering::Relaxed) - bytes_before) as f64 / sample.len() as f64;
    (f.cold_warm_p50, f.cold_warm_p99) = p50_p99(&cold_warm);

    // Export of the heavy user's whole history (hot and cold days).
    let started = Instant::now();
    let mut request = tonic::Request::new(ExportActivityRequest {
        user_id: "bench-heavy".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let mut stream = client.export_activity(request).await?.into_inner();
    let mut bytes = 0usize;
    while let Some(chunk) = stream.message().await? {
        bytes += chunk.data.len();
    }
    f.export_mb = bytes as f64 / 1e6;
    f.export_mb_per_s = f.export_mb / started.elapsed().as_secs_f64();

    // DuckDB over pyarrow, reading the same files.
    let keys: Vec<String> = files.into_iter().map(|file| file.key).collect();
    match duckdb_baseline(
        &args.python,
        &store_config,
        &keys,
        &sample,
        cold_from.seconds,
        cold_to.seconds,
    )
    .await
    {
        Ok(ms) if !ms.is_empty() => {
            let (p50, p99) = p50_p99(&ms);
            f.duckdb_p50 = Some(p50);
            f.duckdb_p99 = Some(p99);
        }
        Ok(_) => {}
        Err(err) => println!("  (DuckDB baseline skipped: {err:#})"),
    }
    api_cancel.cancel();
    let _ = server.await;
    println!(
        "  hot p99 {:.2} ms, cold warm p99 {:.2} ms, cold cold p99 {:.2} ms, {:.2} GETs/warm page, export {:.1} MB at {:.1} MB/s",
        f.hot_p99, f.cold_warm_p99, f.cold_cold_p99, f.gets_per_warm_page, f.export_mb, f.export_mb_per_s
    );
    Ok(f)
}

/// Milliseconds of each request, in order (failures abort the run).
async fn timed(
    client: &mut HistoryClient<Channel>,
    token: &str,
    requests: impl Iterator<Item = ListActivityRequest>,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for message in requests {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let started = Instant::now();
        let page = client.list_activity(request).await?.into_inner();
        out.push(started.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(page.events.len());
    }
    Ok(out)
}
