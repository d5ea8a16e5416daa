//! `strata demo`: the embedded default. A private Postgres cluster in
//! `./.strata/`, a producer database and a hot store in it, relays, a
//! synthetic producer writing through the SDK with live progress, and the
//! archiver rolling a few backfilled past days into Parquet in
//! `./.strata/archive/` (a local-directory object store).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{NaiveDate, TimeDelta, Utc};
use clap::Args;
use rand::Rng;
use strata_core::config::{DatabaseUrl, HotStoreConfig, ObjectStoreConfig, Secret, SourceConfig};
use strata_core::Config;
use strata_embedded::{Cluster, ClusterOptions};
use strata_producer::{Doorbell, Outbox};
use tokio_util::sync::CancellationToken;

use crate::bench::latency::{percentile, LatencyTracker};
use crate::synth::Synth;
use crate::{metrics_server, pg};

const SHOP_DB: &str = "strata_demo_shop";
const HOT_DB: &str = "strata_demo_hot";

/// `strata demo` flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder holding the private Postgres cluster.
    #[arg(long, default_value = ".strata")]
    dir: PathBuf,
    /// How long to produce synthetic traffic.
    #[arg(long, default_value = "15s", value_parser = strata_core::duration::parse)]
    duration: Duration,
    /// Synthetic events per second.
    #[arg(long, default_value_t = 400)]
    rate: u64,
    /// Number of synthetic users.
    #[arg(long, default_value_t = 500)]
    users: u64,
    /// Past days of synthetic activity to backfill (and archive).
    #[arg(long, default_value_t = 3)]
    backfill_days: u32,
    /// Events per backfilled day.
    #[arg(long, default_value_t = 4000)]
    backfill_events: u64,
    /// How long to serve the history API at the end (0: skip it).
    #[arg(long, default_value = "2m", value_parser = strata_core::duration::parse)]
    api_for: Duration,
    /// Stop the demo's Postgres cluster (left running for inspection) and exit.
    #[arg(long)]
    stop: bool,
}

/// Runs the demo.
pub async fn run(args: DemoArgs, config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let root = args.dir.join("postgres");
    let mut options = ClusterOptions::new(&root);
    options.keep_running = true;
    if args.stop {
        let mut cluster = tokio::task::spawn_blocking(move || Cluster::start(options)).await??;
        tokio::task::spawn_blocking(move || cluster.stop()).await??;
        println!("stopped the demo cluster in {}", root.display());
        return Ok(());
    }
    println!(
        "strata demo: starting a private Postgres cluster in {} ...",
        root.display()
    );
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(options))
        .await?
        .context("start the private Postgres cluster")?;
    let result = demo(&args, &config, &cluster, cancel.clone()).await;
    if cancel.is_cancelled() {
        println!("\ninterrupted: stopping the private cluster");
        let mut cluster = cluster;
        tokio::task::spawn_blocking(move || cluster.stop()).await??;
    }
    result
}

async fn demo(
    args: &DemoArgs,
    config: &Config,
    cluster: &Cluster,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let admin = pg::connect(&cluster.url("postgres")).await?;
    pg::recreate_database(&admin, SHOP_DB).await?;
    pg::recreate_database(&admin, HOT_DB).await?;
    let shop_url = cluster.url(SHOP_DB);
    let hot_url = cluster.url(HOT_DB);
    let mut shop = pg::connect(&shop_url).await?;
    let mut hot = pg::connect(&hot_url).await?;
    strata_migrations::OUTBOX.apply(&mut shop).await?;
    strata_migrations::STORE.apply(&mut hot).await?;
    shop.batch_execute(
        "CREATE TABLE accounts (user_id text PRIMARY KEY, balance numeric NOT NULL DEFAULT 0)",
    )
    .await
    .context("create demo business table")?;
    println!("  producer database: {SHOP_DB} (business table `accounts` + outbox)");
    println!("  hot store:         {HOT_DB} (strata.activity, partitioned by day)");

    let tracker = LatencyTracker::shared();
    let mut relay_config = config.relay.clone();
    relay_config.reconcile_interval = Duration::from_secs(2);
    relay_config.poll_interval = Duration::from_secs(1);
    let mut sources = BTreeMap::new();
    sources.insert(
        "shop".to_string(),
        SourceConfig {
            url: DatabaseUrl::new(shop_url.clone()),
        },
    );
    let mut relay_options = strata_relay::RelayOptions::new(
        relay_config,
        HotStoreConfig {
            url: Some(DatabaseUrl::new(hot_url.clone())),
            allow_unsafe_durability: false,
        },
        sources,
    );
    let observer_tracker = tracker.clone();
    relay_options.observer = Some(Arc::new(move |_source: &str, ids: &[uuid::Uuid]| {
        observer_tracker.visible(ids)
    }));
    let relay_cancel = cancel.child_token();
    let metrics = match metrics_server::spawn(&config.metrics, relay_cancel.clone()).await {
        Ok(handle) => handle,
        Err(err) => {
            println!("  (metrics endpoint disabled: {err:#})");
            None
        }
    };
    if metrics.is_some() {
        println!(
            "  metrics:           http://{}/metrics",
            config.metrics.listen
        );
    }
    // The archiver, on the configured object store or ./.strata/archive.
    // The catalog is new (the hot store was just recreated), so is the
    // local archive: files of an earlier run would be orphans.
    let archive_dir = std::fs::canonicalize(&args.dir)
        .unwrap_or_else(|_| args.dir.clone())
        .join("archive");
    let mut archiver_options = crate::archive::options_for(
        config,
        DatabaseUrl::new(hot_url.clone()),
        vec![("shop".to_string(), DatabaseUrl::new(shop_url.clone()))],
    );
    if archiver_options.object_store.kind.is_empty() {
        let _ = std::fs::remove_dir_all(&archive_dir);
        archiver_options.object_store = ObjectStoreConfig {
            kind: "local".into(),
            local_dir: archive_dir.display().to_string(),
            ..ObjectStoreConfig::default()
        };
    }
    archiver_options.archiver.interval = Duration::from_secs(2);
    let local_archive = archiver_options.object_store.kind == "local";
    let archive_location = if local_archive {
        archiver_options.object_store.local_dir.clone()
    } else {
        format!(
            "s3://{}/{}",
            archiver_options.object_store.bucket, archiver_options.object_store.prefix
        )
    };
    println!("  archive:           {archive_location} (Parquet, one folder per day)");
    let backfilled = backfill(&shop_url, &outbox_for_backfill()?, args).await?;
    let object_store = archiver_options.object_store.clone();
    let archiver_cancel = cancel.child_token();
    let archiver = tokio::spawn(strata_archiver::run(
        archiver_options,
        archiver_cancel.clone(),
    ));

    let relays: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(strata_relay::run(
                relay_options.clone(),
                relay_cancel.clone(),
            ))
        })
        .collect();

    // Synthetic producer: 8 connections sharing the rate.
    let produced = Arc::new(AtomicU64::new(0));
    let producer_cancel = cancel.child_token();
    let doorbell = Doorbell::spawn_tokio_postgres(
        shop_url.parse()?,
        Duration::from_millis(5),
        producer_cancel.clone(),
    );
    let outbox = Outbox::new("demo-shop")?;
    let connections = 8u64;
    let mut producers = Vec::new();
    for index in 0..connections {
        let client = pg::connect(&shop_url).await?;
        let per_connection = (args.rate / connections).max(1);
        producers.push(tokio::spawn(produce(
            client,
            outbox.clone(),
            doorbell.clone(),
            tracker.clone(),
            produced.clone(),
            Synth::new(args.users, index + 1),
            per_connection,
            producer_cancel.clone(),
        )));
    }

    println!(
        "\nproducing ~{} events/s for {}s through the SDK (Ctrl-C stops everything)\n",
        args.rate,
        args.duration.as_secs()
    );
    println!(
        "{:>6} {:>10} {:>10} {:>8} {:>10} {:>10}",
        "t(s)", "produced", "shipped", "lag", "p50(ms)", "p99(ms)"
    );
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut draining_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let elapsed = started.elapsed();
        if elapsed >= args.duration && draining_since.is_none() {
            producer_cancel.cancel();
            draining_since = Some(Instant::now());
        }
        let mut samples = tracker.take_samples();
        let p50 = percentile(&mut samples, 50.0);
        let p99 = percentile(&mut samples, 99.0);
        let made = produced.load(Ordering::Relaxed);
        let shipped = tracker.visible_count();
        println!(
            "{:>6} {:>10} {:>10} {:>8} {:>10.1} {:>10.1}",
            elapsed.as_secs(),
            made,
            shipped,
            made.saturating_sub(shipped),
            p50,
            p99
        );
        if let Some(since) = draining_since {
            if shipped >= made || since.elapsed() > Duration::from_secs(15) {
                break;
            }
        }
    }
    producer_cancel.cancel();
    for producer in producers {
        let _ = producer.await;
    }
    relay_cancel.cancel();
    for relay in relays {
        if let Ok(Err(err)) = relay.await {
            println!("relay ended with an error: {err}");
        }
    }
    if let Some(handle) = metrics {
        let _ = handle.await;
    }
    if cancel.is_cancelled() {
        archiver_cancel.cancel();
        let _ = archiver.await;
        return Ok(());
    }
    show_archive(&hot, &backfilled, &cancel).await?;
    archiver_cancel.cancel();
    let _ = archiver.await;
    if local_archive {
        println!(
            "
Query the archive with DuckDB (pip install duckdb, or the duckdb CLI):"
        );
        println!(
            "  duckdb -c \"SELECT date, kind, count(*) FROM read_parquet('{archive_location}/activity/*/*.parquet', hive_partitioning = true) GROUP BY ALL ORDER BY ALL\""
        );
    }

    let row = hot
        .query_one(
            "SELECT user_id, count(*) FROM strata.activity GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1",
            &[],
        )
        .await
        .context("pick a sample user")?;
    let user: String = row.get(0);
    let total: i64 = hot
        .query_one("SELECT count(*) FROM strata.activity", &[])
        .await?
        .get(0);
    println!(
        "\n{total} events in the hot store. History of {user}, in (occurred_at, event_id) order:\n"
    );
    let rows = hot
        .query(
            "SELECT to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), kind, \
                    payload->>'ip', coalesce(payload->>'amount' || ' ' || (payload->>'currency'), ''), \
                    payload->'geo'->>'city' \
             FROM strata.activity WHERE user_id = $1 ORDER BY occurred_at, event_id LIMIT 25",
            &[&user],
        )
        .await?;
    println!(
        "  {:<27} {:<16} {:<16} {:<16} city",
        "occurred_at (UTC)", "kind", "ip", "amount"
    );
    for row in rows {
        let at: String = row.get(0);
        let kind: String = row.get(1);
        let ip: Option<String> = row.get(2);
        let amount: String = row.get(3);
        let city: Option<String> = row.get(4);
        println!(
            "  {:<27} {:<16} {:<16} {:<16} {}",
            at,
            kind,
            ip.unwrap_or_default(),
            amount,
            city.unwrap_or_default()
        );
    }
    if !args.api_for.is_zero() && !cancel.is_cancelled() {
        serve_api(
            config,
            &hot_url,
            object_store,
            &user,
            &backfilled,
            args.api_for,
            &cancel,
        )
        .await?;
    }
    println!("\nThe cluster keeps running so you can look around:");
    println!("  {}", cluster.psql_command(HOT_DB));
    println!("  e.g. SELECT kind, count(*) FROM strata.activity GROUP BY 1 ORDER BY 2 DESC;");
    println!(
        "Stop it with: strata demo --stop   (or: cargo run --release -p strata-cli -- demo --stop)"
    );
    Ok(())
}

fn outbox_for_backfill() -> anyhow::Result<Outbox> {
    Ok(Outbox::new("demo-backfill")?)
}

/// Writes `backfill_events` events for each of the last `backfill_days`
/// days through the SDK (as a late-arriving import would); returns the days.
async fn backfill(
    shop_url: &str,
    outbox: &Outbox,
    args: &DemoArgs,
) -> anyhow::Result<Vec<NaiveDate>> {
    let mut client = pg::connect(shop_url).await?;
    let today = Utc::now().date_naive();
    let mut synth = Synth::new(args.users, 9_999);
    let mut rng = rand::thread_rng();
    let mut days = Vec::new();
    for back in (1..=i64::from(args.backfill_days)).rev() {
        let day = today - TimeDelta::days(back);
        let start = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
        let mut left = args.backfill_events;
        while left > 0 {
            let n = left.min(500);
            let events: Vec<_> = (0..n)
                .map(|_| {
                    let at = start + TimeDelta::microseconds(rng.gen_range(0..86_400_000_000));
                    synth.event().occurred_at(at)
                })
                .collect();
            let tx = client.transaction().await?;
            outbox.enqueue_many_pg(&tx, &events).await?;
            tx.commit().await?;
            left -= n;
        }
        days.push(day);
    }
    if !days.is_empty() {
        println!(
            "  backfilled {} events on each of {} past days (the archiver rolls them into Parquet)",
            args.backfill_events,
            days.len()
        );
    }
    Ok(days)
}

/// Waits (up to a minute) for the backfilled days to be committed and
/// published, then lists the archive's catalog.
async fn show_archive(
    hot: &tokio_postgres::Client,
    days: &[NaiveDate],
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    if days.is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: i64 = hot
            .query_one(
                "SELECT count(*) FROM strata.archive_days
                  WHERE day = ANY($1) AND state = 'committed' AND manifest_version >= version",
                &[&days],
            )
            .await?
            .get(0);
        if done as usize >= days.len() || Instant::now() >= deadline || cancel.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rows = hot
        .query(
            "SELECT day::text, state, rows, files, bytes, coalesce(to_char(committed_at, 'HH24:MI:SS'), '')
               FROM strata.archive_days ORDER BY day",
            &[],
        )
        .await?;
    println!(
        "
Archive catalog (strata.archive_days):"
    );
    println!(
        "  {:<12} {:<10} {:>8} {:>6} {:>10} committed",
        "day", "state", "rows", "files", "bytes"
    );
    for row in rows {
        let (day, state, n, files, bytes, at): (String, String, i64, i32, i64, String) = (
            row.get(0),
            row.get(1),
            row.get(2),
            row.get(3),
            row.get(4),
            row.get(5),
        );
        println!("  {day:<12} {state:<10} {n:>8} {files:>6} {bytes:>10} {at}");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn produce(
    mut client: tokio_postgres::Client,
    outbox: Outbox,
    doorbell: Doorbell,
    tracker: Arc<LatencyTracker>,
    produced: Arc<AtomicU64>,
    mut synth: Synth,
    per_second: u64,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !cancel.is_cancelled() {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let event = synth.event();
        let amount: f64 = event
            .payload
            .get("amount")
            .and_then(|a| a.as_str())
            .and_then(|a| a.parse().ok())
            .unwrap_or(0.0);
        let signed = if event.kind == "withdrawal" {
            -amount
        } else {
            amount
        };
        let result = async {
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO accounts (user_id, balance) VALUES ($1, $2::float8::numeric) \
                 ON CONFLICT (user_id) DO UPDATE SET balance = accounts.balance + excluded.balance",
                &[&event.user_id, &signed],
            )
            .await?;
            let id = outbox.enqueue_pg(&tx, &event).await?;
            tracker.before_commit(id);
            match tx.commit().await {
                Ok(()) => Ok(id),
                Err(err) => {
                    tracker.abandoned(id);
                    Err(anyhow::Error::from(err))
                }
            }
        }
        .await;
        match result {
            Ok(id) => {
                tracker.committed(id);
                doorbell.ring();
                produced.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                tracing::warn!(error = %err, "demo producer transaction failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Starts the history API on the demo's stores, reads `user`'s history
/// through it (across archived and hot days), prints ready-to-paste
/// grpcurl and Python commands, and serves for `serve_for`.
async fn serve_api(
    config: &Config,
    hot_url: &str,
    object_store: ObjectStoreConfig,
    user: &str,
    archived_days: &[NaiveDate],
    serve_for: Duration,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    use strata_proto::v1::history_client::HistoryClient;
    use strata_proto::v1::ListActivityRequest;

    let mut api = config.api.clone();
    // A fresh signing secret per demo run: tokens die with it.
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    api.jwt_hs256_secrets = [("demo".to_string(), Secret::new(secret.clone()))].into();
    api.page_token_keys = vec![Secret::new(format!("demo={secret}"))];
    let listen = api.listen.clone();
    let options = strata_api::ApiOptions {
        api: api.clone(),
        hot_store_url: DatabaseUrl::new(hot_url),
        object_store,
    };
    let api_cancel = cancel.child_token();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(strata_api::serve(
        options,
        api_cancel.clone(),
        Some(ready_tx),
    ));
    let address = match ready_rx.await {
        Ok(address) => address,
        Err(_) => {
            let result = server.await.context("API task")?;
            result.context("start the history API")?;
            anyhow::bail!("the history API did not start");
        }
    };
    let now = Utc::now().timestamp().max(0) as u64;
    let token = strata_api::auth::issue_hs256(
        "demo",
        &secret,
        &strata_api::auth::Claims {
            sub: user.to_string(),
            iss: api.jwt_issuer.clone(),
            aud: api.jwt_audience.clone(),
            exp: now + 3600,
            iat: Some(now),
            scope: strata_api::auth::SCOPE_EXPORT.to_string(),
        },
    )
    .context("sign the demo token")?;

    // Read the whole history through the API, as a client would.
    let mut client = HistoryClient::connect(format!("http://{address}"))
        .await
        .context("connect to the history API")?;
    let (mut events, mut cold, mut pages, mut page_token) = (0usize, 0usize, 0usize, String::new());
    loop {
        let mut request = tonic::Request::new(ListActivityRequest {
            page_size: 100,
            page_token: page_token.clone(),
            ..Default::default()
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().context("token header")?,
        );
        let page = client
            .list_activity(request)
            .await
            .context("ListActivity")?
            .into_inner();
        pages += 1;
        events += page.events.len();
        cold += page
            .events
            .iter()
            .filter(|e| {
                e.occurred_at
                    .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                    .is_some_and(|t| archived_days.contains(&t.date_naive()))
            })
            .count();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    println!(
        "\nHistory API on {address} ({listen} in config): read {user}'s whole history in {pages} pages: {events} events, {cold} of them from archived days (Parquet)."
    );
    println!("\nCall it yourself (token valid 1 h, for {user} only):");
    println!(
        "  grpcurl -plaintext -H 'authorization: Bearer {token}' -d '{{\"page_size\": 5}}' {address} strata.v1.History/ListActivity"
    );
    println!("  python3 -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. strata/v1/history.proto  # pip install grpcio-tools");
    println!(
        "  python3 -c \"import grpc; from strata.v1 import history_pb2 as p, history_pb2_grpc as g; s = g.HistoryStub(grpc.insecure_channel('{address}')); print(s.ListActivity(p.ListActivityRequest(page_size=5), metadata=[('authorization', 'Bearer {token}')]))\""
    );
    println!(
        "Serving for {} (Ctrl-C to stop sooner; --api-for 0 skips this).",
        strata_core::duration::format(serve_for)
    );
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(serve_for) => {}
    }
    api_cancel.cancel();
    server.await.context("API task")?.context("history API")?;
    Ok(())
}
