//! `strata bench drain`: time relays draining a pre-filled outbox, against
//! a binary COPY of the same rows (the ceiling) and Postgres logical
//! replication of the same inserts (the native alternative).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use futures_util::pin_mut;
use serde_json::json;
use strata_core::config::{DatabaseUrl, HotStoreConfig, RelayConfig, SourceConfig};
use strata_producer::Outbox;
use strata_relay::hot_copy::{self, HotRow};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::env::BenchEnv;
use super::{CommonArgs, ENSURE_PARTITION_SQL};
use crate::pg;
use crate::synth::Synth;

/// Logical replication of the outbox's inserts, through a slot created
/// before the fill so that it retains them.
const CREATE_PUBLICATION_SQL: &str =
    "CREATE PUBLICATION bench_outbox FOR TABLE strata_outbox.events WITH (publish = 'insert')";
const CREATE_SLOT_SQL: &str =
    "SELECT pg_create_logical_replication_slot('bench_outbox_slot', 'pgoutput')";
const ENABLE_SUBSCRIPTION_SQL: &str = "ALTER SUBSCRIPTION bench_sub ENABLE";
const DROP_SUBSCRIPTION_SQL: &str = "ALTER SUBSCRIPTION bench_sub DISABLE; ALTER SUBSCRIPTION bench_sub SET (slot_name = NONE); DROP SUBSCRIPTION bench_sub";
const DROP_SLOT_SQL: &str = "SELECT pg_drop_replication_slot('bench_outbox_slot')";

/// The pre-filled outbox rows, for the COPY ceiling.
const OUTBOX_ROWS_SQL: &str =
    "SELECT event_id, user_id, kind, occurred_at, source, payload FROM strata_outbox.events";
/// Rows replicated to the subscriber so far.
const REPLICATED_COUNT_SQL: &str = "SELECT count(*) FROM strata_outbox.events";
/// Empties the hot store after the ceiling, before the relays run.
const EMPTY_HOT_SQL: &str = "TRUNCATE strata.activity; CHECKPOINT";
/// Rows in the hot store after the relays drained the outbox.
const HOT_COUNT_SQL: &str = "SELECT count(*) FROM strata.activity";

/// The subscriber's copy of the outbox table (the day and the next one as
/// one partition) and the disabled subscription to `src_url`.
fn subscriber_sql(day0: &str, day2: &str, src_url: &str) -> String {
    format!(
        "CREATE SCHEMA strata_outbox;
         CREATE TABLE strata_outbox.events (
             id bigint, event_id uuid NOT NULL, user_id text NOT NULL, kind text NOT NULL,
             occurred_at timestamptz NOT NULL, source text NOT NULL, payload jsonb NOT NULL,
             enqueued_at timestamptz NOT NULL,
             PRIMARY KEY (user_id, occurred_at, event_id)) PARTITION BY RANGE (occurred_at);
         CREATE TABLE strata_outbox.events_p PARTITION OF strata_outbox.events
             FOR VALUES FROM ('{day0} 00:00:00+00') TO ('{day2} 00:00:00+00');
         CREATE SUBSCRIPTION bench_sub CONNECTION '{src_url}' PUBLICATION bench_outbox
             WITH (create_slot = false, slot_name = 'bench_outbox_slot', enabled = false, copy_data = false);"
    )
}

/// `strata bench drain` flags.
#[derive(Debug, Args)]
pub(super) struct DrainArgs {
    /// Events to pre-fill (one per business transaction).
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Relay worker loops.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Rows per relay batch.
    #[arg(long, default_value_t = 2000)]
    batch_size: usize,
    #[command(flatten)]
    common: CommonArgs,
}

/// Runs the scenario.
pub(super) async fn run(args: DrainArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let env = BenchEnv::new(
        args.common.pg_url.as_deref(),
        &[
            ("wal_level", "logical"),
            ("max_wal_senders", "10"),
            ("max_replication_slots", "10"),
        ],
    )
    .await?;
    let src_url = env.fresh_database("bench_drain_src").await?;
    let hot_url = env.fresh_database("bench_drain_hot").await?;
    let sub_url = env.fresh_database("bench_drain_sub").await?;
    let mut src = pg::connect(&src_url).await?;
    let mut hot = pg::connect(&hot_url).await?;
    strata_migrations::OUTBOX.apply(&mut src).await?;
    strata_migrations::STORE.apply(&mut hot).await?;
    let today = Utc::now().date_naive();
    for day in [today, today.succ_opt().unwrap_or(today)] {
        hot.execute(ENSURE_PARTITION_SQL, &[&day]).await?;
    }

    // Logical replication, set up before the fill and left disabled: the
    // slot retains the inserts until the subscription is enabled.
    src.batch_execute(CREATE_PUBLICATION_SQL)
        .await
        .context("create publication")?;
    src.batch_execute(CREATE_SLOT_SQL)
        .await
        .context("create replication slot")?;
    let sub = pg::connect(&sub_url).await?;
    let day0 = today.format("%Y-%m-%d").to_string();
    let day2 = (today + chrono::Duration::days(2))
        .format("%Y-%m-%d")
        .to_string();
    sub.batch_execute(&subscriber_sql(&day0, &day2, &src_url))
        .await
        .context("create subscription")?;

    println!(
        "filling the outbox with {} events (one per transaction, 32 connections) ...",
        args.events
    );
    let fill_started = Instant::now();
    fill(&src_url, args.events, &cancel).await?;
    println!("  filled in {:.1}s", fill_started.elapsed().as_secs_f64());

    // Ceiling: binary COPY of the same rows into the same hot table.
    let rows = src.query(OUTBOX_ROWS_SQL, &[]).await?;
    let copy_started = Instant::now();
    {
        let tx = hot.transaction().await?;
        let sink = tx.copy_in(hot_copy::COPY_SQL).await?;
        let writer = hot_copy::writer(sink);
        pin_mut!(writer);
        for row in &rows {
            let id: Uuid = row.try_get(0)?;
            let at: DateTime<Utc> = row.try_get(3)?;
            let payload: serde_json::Value = row.try_get(5)?;
            let hot_row = HotRow {
                event_id: &id,
                user_id: row.try_get(1)?,
                kind: row.try_get(2)?,
                occurred_at: &at,
                source: row.try_get(4)?,
                payload: &payload,
            };
            hot_copy::write_row(writer.as_mut(), &hot_row).await?;
        }
        writer.finish().await?;
        tx.commit().await?;
    }
    let copy_secs = copy_started.elapsed().as_secs_f64();
    drop(rows);
    hot.batch_execute(EMPTY_HOT_SQL).await?;

    // The relays.
    let shipped = Arc::new(AtomicU64::new(0));
    let counter = shipped.clone();
    let mut sources = BTreeMap::new();
    sources.insert(
        "bench".to_string(),
        SourceConfig {
            url: DatabaseUrl::new(src_url.clone()),
        },
    );
    let relay_config = RelayConfig {
        batch_size: args.batch_size,
        workers_per_source: args.workers,
        ..RelayConfig::default()
    };
    let mut options = strata_relay::RelayOptions::new(
        relay_config,
        HotStoreConfig {
            url: Some(DatabaseUrl::new(hot_url.clone())),
            allow_unsafe_durability: false,
        },
        sources,
    );
    options.reconcile = false;
    options.observer = Some(Arc::new(move |_: &str, ids: &[Uuid]| {
        counter.fetch_add(ids.len() as u64, Ordering::Relaxed);
    }));
    let relay_cancel = cancel.child_token();
    let relay_started = Instant::now();
    let relay = tokio::spawn(strata_relay::run(options, relay_cancel.clone()));
    while shipped.load(Ordering::Relaxed) < args.events && !cancel.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let relay_secs = relay_started.elapsed().as_secs_f64();
    relay_cancel.cancel();
    relay.await?.context("relay")?;
    let in_hot: i64 = hot.query_one(HOT_COUNT_SQL, &[]).await?.try_get(0)?;
    anyhow::ensure!(
        in_hot as u64 == args.events,
        "hot store holds {in_hot} rows, expected {}",
        args.events
    );

    // Logical replication.
    let lr_started = Instant::now();
    sub.batch_execute(ENABLE_SUBSCRIPTION_SQL).await?;
    loop {
        let n: i64 = sub.query_one(REPLICATED_COUNT_SQL, &[]).await?.try_get(0)?;
        if n as u64 >= args.events || cancel.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lr_secs = lr_started.elapsed().as_secs_f64();
    sub.batch_execute(DROP_SUBSCRIPTION_SQL).await?;
    src.batch_execute(DROP_SLOT_SQL).await?;

    let n = args.events as f64;
    let relay_rate = n / relay_secs;
    let copy_rate = n / copy_secs;
    let lr_rate = n / lr_secs;
    println!(
        "\nstrata bench drain: {} events of ~0.5 KB ({})",
        args.events, env.fsync_note
    );
    println!("  {:<34} {:>12} {:>10}", "path", "events/s", "seconds");
    println!(
        "  {:<34} {:>12.0} {:>10.2}",
        "binary COPY into hot table (ceiling)", copy_rate, copy_secs
    );
    println!(
        "  {:<34} {:>12.0} {:>10.2}",
        "strata relay (durable commits)", relay_rate, relay_secs
    );
    println!(
        "  {:<34} {:>12.0} {:>10.2}",
        "logical replication (async apply)", lr_rate, lr_secs
    );
    println!(
        "  relay / COPY = {:.2}x, relay / logical replication = {:.2}x",
        relay_rate / copy_rate,
        relay_rate / lr_rate
    );
    if args.common.json {
        println!(
            "{}",
            json!({
                "scenario": "drain",
                "events": args.events,
                "relay_events_per_s": relay_rate.round(),
                "copy_events_per_s": copy_rate.round(),
                "logical_replication_events_per_s": lr_rate.round(),
                "relay_vs_copy": (relay_rate / copy_rate * 100.0).round() / 100.0,
                "relay_vs_logical_replication": (relay_rate / lr_rate * 100.0).round() / 100.0,
                "workers": args.workers,
                "batch_size": args.batch_size,
                "server": env.fsync_note,
            })
        );
    }
    Ok(())
}

/// `events` single-event transactions over 32 connections.
async fn fill(url: &str, events: u64, cancel: &CancellationToken) -> anyhow::Result<()> {
    let outbox = Outbox::new("bench")?;
    let connections = 32u64;
    let mut tasks = Vec::new();
    for index in 0..connections {
        let count = events / connections + u64::from(index < events % connections);
        let mut client = pg::connect(url).await?;
        let outbox = outbox.clone();
        let cancel = cancel.clone();
        tasks.push(tokio::spawn(async move {
            let mut synth = Synth::new(50_000, 1000 + index);
            for _ in 0..count {
                if cancel.is_cancelled() {
                    break;
                }
                let tx = client.transaction().await?;
                outbox.enqueue_pg(&tx, &synth.event()).await?;
                tx.commit().await?;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}
