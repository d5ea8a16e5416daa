//! `strata demo`: the embedded default. A private Postgres cluster in
//! `./.strata/`, a producer database and a hot store in it, the pipeline of
//! `strata run` (relay, archiver and history API in one process, handed in
//! by the binary), a synthetic producer writing through the SDK with live
//! progress, and the archiver rolling a few backfilled past days into
//! Parquet in `./.strata/archive/` (a local-directory object store).

mod report;
mod traffic;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use strata_core::config::{
    DatabaseUrl, HotStoreConfig, MetricsConfig, ObjectStoreConfig, ObjectStoreKind, Secret,
    SourceConfig,
};
use strata_core::Config;
use strata_embedded::{Cluster, ClusterOptions};
use strata_producer::{Doorbell, Outbox};
use strata_relay::ShipObserver;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::latency::{percentile, LatencyTracker};
use crate::pg;
use crate::synth::Synth;

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

/// What the demo watches in the pipeline it is handed.
pub struct Taps {
    /// Sees each batch's event ids at its hot commit (the demo's
    /// commit-to-visible latency).
    pub ship_observer: ShipObserver,
    /// Receives the history API's address once it listens.
    pub api_ready: oneshot::Sender<SocketAddr>,
}

/// Runs the demo. `pipeline` is `strata run`'s wiring (relay, archiver and
/// history API in one process, the first failure stopping all): called
/// once with the demo's configuration, its taps and a token that stops it.
pub async fn run<P, F>(
    args: DemoArgs,
    config: Config,
    cancel: CancellationToken,
    pipeline: P,
) -> anyhow::Result<()>
where
    P: FnOnce(Config, Taps, CancellationToken) -> F,
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
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
    let result = demo(&args, &config, &cluster, cancel.clone(), pipeline).await;
    if cancel.is_cancelled() {
        println!("\ninterrupted: stopping the private cluster");
        let mut cluster = cluster;
        tokio::task::spawn_blocking(move || cluster.stop()).await??;
    }
    result
}

/// The pipeline the demo started, and how to stop it.
struct RunningPipeline {
    task: JoinHandle<anyhow::Result<()>>,
    cancel: CancellationToken,
    /// Cancelled once the pipeline returned, on its own or when stopped.
    ended: CancellationToken,
}

impl RunningPipeline {
    fn start<P, F>(pipeline: P, config: Config, taps: Taps, cancel: &CancellationToken) -> Self
    where
        P: FnOnce(Config, Taps, CancellationToken) -> F,
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let cancel = cancel.child_token();
        let ended = CancellationToken::new();
        let running = pipeline(config, taps, cancel.clone());
        let on_end = ended.clone();
        let task = tokio::spawn(async move {
            let result = running.await;
            on_end.cancel();
            result
        });
        Self {
            task,
            cancel,
            ended,
        }
    }

    /// Whether the pipeline returned before it was asked to stop.
    fn has_ended(&self) -> bool {
        self.ended.is_cancelled()
    }

    /// Stops the pipeline; returns its first error.
    async fn stop(self) -> anyhow::Result<()> {
        self.cancel.cancel();
        self.task.await.context("pipeline task")?
    }
}

async fn demo<P, F>(
    args: &DemoArgs,
    config: &Config,
    cluster: &Cluster,
    cancel: CancellationToken,
    pipeline: P,
) -> anyhow::Result<()>
where
    P: FnOnce(Config, Taps, CancellationToken) -> F,
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let admin = pg::connect(&cluster.url("postgres")).await?;
    pg::recreate_database(&admin, SHOP_DB).await?;
    pg::recreate_database(&admin, HOT_DB).await?;
    let shop_url = cluster.url(SHOP_DB);
    let hot_url = cluster.url(HOT_DB);
    let mut shop = pg::connect(&shop_url).await?;
    let mut hot = pg::connect(&hot_url).await?;
    strata_migrations::OUTBOX.apply(&mut shop).await?;
    strata_migrations::STORE.apply(&mut hot).await?;
    traffic::create_business_table(&shop).await?;
    println!("  producer database: {SHOP_DB} (business table `accounts` + outbox)");
    println!("  hot store:         {HOT_DB} (strata.activity, partitioned by day)");

    // The configuration the pipeline runs with: the demo's databases and
    // shorter intervals, the rest as configured.
    let mut demo_config = config.clone();
    demo_config.relay.reconcile_interval = Duration::from_secs(2);
    demo_config.relay.poll_interval = Duration::from_secs(1);
    demo_config.sources = BTreeMap::from([(
        "shop".to_string(),
        SourceConfig {
            url: DatabaseUrl::new(shop_url.clone()),
        },
    )]);
    demo_config.hot_store = HotStoreConfig {
        url: Some(DatabaseUrl::new(hot_url.clone())),
        allow_unsafe_durability: false,
    };
    // The pipeline refuses to start without its metrics endpoint; the
    // demo goes on without it.
    match metrics_available(&config.metrics).await {
        Ok(Some(addr)) => println!("  metrics:           http://{addr}/metrics"),
        Ok(None) => {}
        Err(err) => {
            println!("  (metrics endpoint disabled: {err:#})");
            demo_config.metrics.listen = None;
        }
    }
    // The archiver, on the configured object store or ./.strata/archive.
    // The catalog is new (the hot store was just recreated), so is the
    // local archive: files of an earlier run would be orphans.
    let archive_dir = std::fs::canonicalize(&args.dir)
        .unwrap_or_else(|_| args.dir.clone())
        .join("archive");
    if demo_config.object_store.kind.is_none() {
        let _ = std::fs::remove_dir_all(&archive_dir);
        demo_config.object_store = ObjectStoreConfig {
            kind: Some(ObjectStoreKind::Local),
            local_dir: Some(archive_dir.clone()),
            ..ObjectStoreConfig::default()
        };
    }
    demo_config.archiver.interval = Duration::from_secs(2);
    let object_store = &demo_config.object_store;
    let local_archive = object_store.kind == Some(ObjectStoreKind::Local);
    let archive_location = if local_archive {
        (object_store.local_dir.as_deref())
            .map(|dir| dir.display().to_string())
            .unwrap_or_default()
    } else {
        format!("s3://{}/{}", object_store.bucket, object_store.prefix)
    };
    println!("  archive:           {archive_location} (Parquet, one folder per day)");
    // A fresh signing secret per demo run: tokens die with it.
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    demo_config.api.jwt_hs256_secrets = [("demo".to_string(), Secret::new(secret.clone()))].into();
    demo_config.api.page_token_keys = vec![Secret::new(format!("demo={secret}"))];
    if args.api_for.is_zero() {
        // Not offered to anyone: no port of the machine's is taken for it.
        demo_config.api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    }
    let backfilled = traffic::backfill(&shop_url, &Outbox::new("demo-backfill")?, args).await?;

    let tracker = LatencyTracker::shared();
    let observer_tracker = tracker.clone();
    let (api_ready, api_address) = oneshot::channel();
    let taps = Taps {
        ship_observer: Arc::new(move |_source: &str, ids: &[uuid::Uuid]| {
            observer_tracker.visible(ids)
        }),
        api_ready,
    };
    let pipeline = RunningPipeline::start(pipeline, demo_config.clone(), taps, &cancel);

    // Synthetic producer: 8 connections sharing the rate.
    let produced = Arc::new(AtomicU64::new(0));
    let producer_cancel = cancel.child_token();
    let doorbell = Doorbell::spawn_tokio_postgres(
        shop_url.as_str(),
        Duration::from_millis(5),
        producer_cancel.clone(),
    );
    let outbox = Outbox::new("demo-shop")?;
    let connections = 8u64;
    let mut producers = Vec::new();
    for index in 0..connections {
        let client = pg::connect(&shop_url).await?;
        let per_connection = (args.rate / connections).max(1);
        producers.push(tokio::spawn(traffic::produce(
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
            _ = pipeline.ended.cancelled() => break,
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
    if cancel.is_cancelled() || pipeline.has_ended() {
        return pipeline.stop().await;
    }
    report::show_archive(&hot, &backfilled, &cancel).await?;
    if local_archive {
        println!(
            "
Query the archive with DuckDB (pip install duckdb, or the duckdb CLI):"
        );
        println!(
            "  duckdb -c \"SELECT date, kind, count(*) FROM read_parquet('{archive_location}/activity/*/*.parquet', hive_partitioning = true) GROUP BY ALL ORDER BY ALL\""
        );
    }
    let user = report::show_hot_history(&hot).await?;
    if !args.api_for.is_zero() && !cancel.is_cancelled() {
        let Ok(address) = api_address.await else {
            pipeline.stop().await.context("start the history API")?;
            anyhow::bail!("the history API did not start");
        };
        let token = report::demo_token(&secret, &demo_config.api, &user)?;
        report::show_api_history(address, config.api.listen, &token, &user, &backfilled).await?;
        println!(
            "Serving for {} (Ctrl-C to stop sooner; --api-for 0 skips this).",
            strata_core::duration::format(args.api_for)
        );
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = pipeline.ended.cancelled() => {}
            _ = tokio::time::sleep(args.api_for) => {}
        }
    }
    pipeline.stop().await?;
    println!("\nThe cluster keeps running so you can look around:");
    println!("  {}", cluster.psql_command(HOT_DB));
    println!("  e.g. SELECT kind, count(*) FROM strata.activity GROUP BY 1 ORDER BY 2 DESC;");
    println!(
        "Stop it with: strata demo --stop   (or: cargo run --release -p strata-cli -- demo --stop)"
    );
    Ok(())
}

/// The metrics endpoint's address when it can be served (`None`: disabled
/// by the configuration); the error says why it cannot.
async fn metrics_available(config: &MetricsConfig) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = config.listen else {
        return Ok(None);
    };
    let probe = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind metrics endpoint {addr} (metrics.listen)"))?;
    drop(probe);
    Ok(Some(addr))
}
