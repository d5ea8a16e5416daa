//! `strata bench ingest`: producers at a fixed rate (one event per
//! business transaction, 32 connections), relays shipping live;
//! commit-to-hot-visible latency.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use strata_core::config::{DatabaseUrl, HotStoreConfig, RelayConfig, SourceConfig};
use strata_producer::{Doorbell, Outbox};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::env::BenchEnv;
use super::CommonArgs;
use crate::latency::{percentile, LatencyTracker};
use crate::pg;
use crate::synth::Synth;

/// `strata bench ingest` flags.
#[derive(Debug, Args)]
pub(super) struct IngestArgs {
    /// Target events per second (all producers together).
    #[arg(long, default_value_t = 4000)]
    rate: u64,
    /// How long to produce.
    #[arg(long, default_value = "30s", value_parser = strata_core::duration::parse)]
    duration: Duration,
    /// Producer connections.
    #[arg(long, default_value_t = 32)]
    connections: u64,
    /// Relay processes (in-process instances) shipping concurrently.
    #[arg(long, default_value_t = 2)]
    relays: usize,
    #[command(flatten)]
    common: CommonArgs,
}

/// Runs the scenario.
pub(super) async fn run(args: IngestArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let env = BenchEnv::new(args.common.pg_url.as_deref(), &[]).await?;
    let src_url = env.fresh_database("bench_ingest_src").await?;
    let hot_url = env.fresh_database("bench_ingest_hot").await?;
    strata_migrations::OUTBOX
        .apply(&mut pg::connect(&src_url).await?)
        .await?;
    strata_migrations::STORE
        .apply(&mut pg::connect(&hot_url).await?)
        .await?;

    let tracker = LatencyTracker::shared();
    let relay_cancel = cancel.child_token();
    let relays = start_relays(&src_url, &hot_url, args.relays, &tracker, &relay_cancel);
    // Let the relays connect and the reconciler create partitions.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let producer_cancel = cancel.child_token();
    let produced = produce(
        &src_url,
        Rate {
            events_per_second: args.rate,
            connections: args.connections,
            duration: args.duration,
        },
        tracker.clone(),
        None,
        producer_cancel.clone(),
    )
    .await?;
    let (total, produce_secs) = (produced.committed, produced.seconds);
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    while tracker.visible_count() < total && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    producer_cancel.cancel();
    relay_cancel.cancel();
    for relay in relays {
        relay.await??;
    }
    let mut samples = tracker.take_samples();
    let (p50, p99, max) = (
        percentile(&mut samples, 50.0),
        percentile(&mut samples, 99.0),
        percentile(&mut samples, 100.0),
    );
    let achieved = total as f64 / produce_secs;
    println!(
        "\nstrata bench ingest: target {} ev/s for {:.0}s, {} connections, {} relays ({})",
        args.rate,
        args.duration.as_secs_f64(),
        args.connections,
        args.relays,
        env.fsync_note
    );
    println!(
        "  achieved rate       {:>10.0} ev/s ({} committed, {} failed)",
        achieved, total, produced.failed
    );
    println!(
        "  visible in hot      {:>10} events ({} latency samples)",
        tracker.visible_count(),
        samples.len()
    );
    println!("  commit->visible p50 {:>10.1} ms", p50);
    println!("  commit->visible p99 {:>10.1} ms", p99);
    println!("  commit->visible max {:>10.1} ms", max);
    if args.common.json {
        println!(
            "{}",
            json!({
                "scenario": "ingest",
                "target_rate": args.rate,
                "achieved_rate": achieved.round(),
                "events": total,
                "latency_ms": {"p50": round1(p50), "p99": round1(p99), "max": round1(max)},
                "server": env.fsync_note,
            })
        );
    }
    Ok(())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// How producers run: `events_per_second` over `connections`, one event
/// per business transaction, for `duration`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rate {
    pub(super) events_per_second: u64,
    pub(super) connections: u64,
    pub(super) duration: Duration,
}

/// What producers did.
#[derive(Debug, Clone, Copy)]
pub(super) struct Produced {
    pub(super) committed: u64,
    pub(super) failed: u64,
    pub(super) seconds: f64,
}

/// Called with each event's id right after its transaction committed.
pub(super) type OnCommit = Arc<dyn Fn(Uuid) + Send + Sync>;

/// Runs producers on `src_url` at `rate` (synthetic events, a doorbell
/// rung after each commit); every commit noted in `tracker` and passed to
/// `on_commit`. Returns when `rate.duration` is over or on `cancel`.
pub(super) async fn produce(
    src_url: &str,
    rate: Rate,
    tracker: Arc<LatencyTracker>,
    on_commit: Option<OnCommit>,
    cancel: CancellationToken,
) -> anyhow::Result<Produced> {
    let doorbell =
        Doorbell::spawn_tokio_postgres(src_url, Duration::from_millis(5), cancel.clone());
    let outbox = Outbox::new("bench")?;
    let committed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let per_connection = rate.events_per_second as f64 / rate.connections as f64;
    let mut producers = Vec::new();
    let started = Instant::now();
    for index in 0..rate.connections {
        let mut client = pg::connect(src_url).await?;
        let (outbox, doorbell, tracker) = (outbox.clone(), doorbell.clone(), tracker.clone());
        let (committed, failed) = (committed.clone(), failed.clone());
        let on_commit = on_commit.clone();
        let cancel = cancel.clone();
        let duration = rate.duration;
        producers.push(tokio::spawn(async move {
            let mut synth = Synth::new(100_000, 7000 + index);
            let interval = Duration::from_secs_f64(1.0 / per_connection);
            // Stagger connections across one interval.
            let first = started + interval.mul_f64(index as f64 / 32.0);
            let mut tick = tokio::time::interval_at(first.into(), interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while !cancel.is_cancelled() && started.elapsed() < duration {
                tick.tick().await;
                let result = async {
                    let tx = client.transaction().await?;
                    let id = outbox.enqueue_pg(&tx, &synth.event()).await?;
                    tracker.before_commit(id);
                    if let Err(err) = tx.commit().await {
                        tracker.abandoned(id);
                        return Err(anyhow::Error::from(err));
                    }
                    tracker.committed(id);
                    if let Some(on_commit) = &on_commit {
                        on_commit(id);
                    }
                    Ok(())
                }
                .await;
                match result {
                    Ok(()) => {
                        doorbell.ring();
                        committed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for producer in producers {
        producer.await?;
    }
    Ok(Produced {
        committed: committed.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Starts `count` in-process relays shipping `src_url` ("bench") into
/// `hot_url`, each batch's commit noted in `tracker`.
pub(super) fn start_relays(
    src_url: &str,
    hot_url: &str,
    count: usize,
    tracker: &Arc<LatencyTracker>,
    cancel: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<Result<(), strata_relay::RelayError>>> {
    let mut sources = BTreeMap::new();
    sources.insert(
        "bench".to_string(),
        SourceConfig {
            url: DatabaseUrl::new(src_url.to_string()),
        },
    );
    let mut options = strata_relay::RelayOptions::new(
        RelayConfig::default(),
        HotStoreConfig {
            url: Some(DatabaseUrl::new(hot_url.to_string())),
            allow_unsafe_durability: false,
        },
        sources,
    );
    let observer = tracker.clone();
    options.observer = Some(Arc::new(move |_: &str, ids: &[Uuid]| observer.visible(ids)));
    (0..count)
        .map(|_| tokio::spawn(strata_relay::run(options.clone(), cancel.clone())))
        .collect()
}
