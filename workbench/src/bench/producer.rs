//! `strata bench producer`: what the outbox costs a business transaction.
//! 32 connections of durable transactions (update an account row, plus the
//! event) in these variants: no outbox; no outbox plus one round trip; the
//! SDK's insert without any notification (silent); with Strata's default
//! wake-up (debounced doorbell after commit); with NOTIFY inside every
//! transaction; the SDK's pipelined path (the insert sent with the
//! update, doorbell); and the SQL producer API (`strata_outbox.enqueue`,
//! silent), whose cost is read against the silent raw insert.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rand::Rng;
use serde_json::json;
use strata_producer::{Doorbell, Outbox};
use tokio_postgres::types::Type;
use tokio_util::sync::CancellationToken;

use super::env::BenchEnv;
use super::{CommonArgs, CHECKPOINT_SQL};
use crate::latency::percentile;
use crate::pg;
use crate::synth::Synth;

/// Empties the outbox between variants.
const EMPTY_OUTBOX_SQL: &str = "TRUNCATE strata_outbox.events";
/// The SQL producer API, as a service in another language calls it.
const ENQUEUE_FUNCTION_SQL: &str =
    "SELECT strata_outbox.enqueue($1, $2, $3::text::jsonb, $4, source => 'bench')";
/// The business table's one statement.
const UPDATE_ACCOUNT_SQL: &str = "UPDATE accounts SET balance = balance + 1 WHERE id = $1";

/// The business table: `ACCOUNTS` accounts at balance 0.
fn create_accounts_sql() -> String {
    format!(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL);
             INSERT INTO accounts SELECT g, 0 FROM generate_series(1, {ACCOUNTS}) g;"
    )
}

/// `strata bench producer` flags.
#[derive(Debug, Args)]
pub(super) struct ProducerArgs {
    /// Seconds per variant.
    #[arg(long, default_value = "10s", value_parser = strata_core::duration::parse)]
    duration: Duration,
    /// Client connections.
    #[arg(long, default_value_t = 32)]
    connections: u64,
    /// Rounds of the variants (interleaved; the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    NoOutbox,
    ExtraRoundTrip,
    Silent,
    Default,
    NotifyPerTx,
    Pipelined,
    SqlFunction,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::NoOutbox => "no outbox",
            Variant::ExtraRoundTrip => "no outbox + one round trip (SELECT 1)",
            Variant::Silent => "outbox, no notification (silent)",
            Variant::Default => "outbox, default wake-up (doorbell)",
            Variant::NotifyPerTx => "outbox, NOTIFY in every transaction",
            Variant::Pipelined => "outbox pipelined with the update (doorbell)",
            Variant::SqlFunction => "outbox via strata_outbox.enqueue (silent)",
        }
    }
}

const ACCOUNTS: i64 = 100_000;

/// Runs the scenario.
pub(super) async fn run(args: ProducerArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let env = BenchEnv::new(args.common.pg_url.as_deref(), &[]).await?;
    let url = env.fresh_database("bench_producer").await?;
    let mut admin = pg::connect(&url).await?;
    strata_migrations::OUTBOX.apply(&mut admin).await?;
    admin.batch_execute(&create_accounts_sql()).await?;
    admin.batch_execute("VACUUM ANALYZE accounts").await?;
    let variants = [
        Variant::NoOutbox,
        Variant::ExtraRoundTrip,
        Variant::Silent,
        Variant::Default,
        Variant::NotifyPerTx,
        Variant::Pipelined,
        Variant::SqlFunction,
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..args.rounds {
        for (i, variant) in variants.iter().enumerate() {
            if cancel.is_cancelled() {
                anyhow::bail!("cancelled");
            }
            admin.batch_execute(EMPTY_OUTBOX_SQL).await?;
            admin.batch_execute(CHECKPOINT_SQL).await?;
            let rate = run_variant(&url, *variant, &args, &cancel).await?;
            println!(
                "  round {} {:<40} {:>9.0} tx/s",
                round + 1,
                variant.label(),
                rate
            );
            rates[i].push(rate);
        }
    }
    let medians: Vec<f64> = rates.iter_mut().map(|r| percentile(r, 50.0)).collect();
    let (none, round_trip, silent, default, notify, pipelined, function) = (
        medians[0], medians[1], medians[2], medians[3], medians[4], medians[5], medians[6],
    );
    println!(
        "\nstrata bench producer: {} connections, {:.0}s per variant, {} round(s) ({})",
        args.connections,
        args.duration.as_secs_f64(),
        args.rounds,
        env.fsync_note
    );
    println!("  {:<40} {:>10} {:>12}", "variant", "tx/s", "vs no outbox");
    for (variant, rate) in variants.iter().zip(&medians) {
        println!(
            "  {:<40} {:>10.0} {:>11.2}x",
            variant.label(),
            rate,
            rate / none
        );
    }
    println!(
        "  default / silent = {:.2}x, NOTIFY-per-tx / silent = {:.2}x, pipelined / no outbox = {:.2}x, enqueue() / silent insert = {:.2}x",
        default / silent,
        notify / silent,
        pipelined / none,
        function / silent
    );
    if args.common.json {
        println!(
            "{}",
            json!({
                "scenario": "producer",
                "no_outbox_tx_per_s": none.round(),
                "silent_outbox_tx_per_s": silent.round(),
                "default_tx_per_s": default.round(),
                "notify_per_tx_tx_per_s": notify.round(),
                "no_outbox_plus_round_trip_tx_per_s": round_trip.round(),
                "pipelined_tx_per_s": pipelined.round(),
                "sql_function_tx_per_s": function.round(),
                "pipelined_vs_no_outbox": (pipelined / none * 100.0).round() / 100.0,
                "default_vs_no_outbox": (default / none * 100.0).round() / 100.0,
                "sql_function_vs_silent": (function / silent * 100.0).round() / 100.0,
                "default_vs_silent": (default / silent * 100.0).round() / 100.0,
                "silent_vs_no_outbox": (silent / none * 100.0).round() / 100.0,
                "connections": args.connections,
                "server": env.fsync_note,
            })
        );
    }
    Ok(())
}

async fn run_variant(
    url: &str,
    variant: Variant,
    args: &ProducerArgs,
    cancel: &CancellationToken,
) -> anyhow::Result<f64> {
    let stop = cancel.child_token();
    let doorbell = Doorbell::spawn_tokio_postgres(url, Duration::from_millis(5), stop.clone());
    let outbox = Outbox::new("bench")?.notify_in_transaction(variant == Variant::NotifyPerTx);
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        clients.push(pg::connect(url).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (index, mut client) in clients.into_iter().enumerate() {
        let (outbox, doorbell, done, stop) =
            (outbox.clone(), doorbell.clone(), done.clone(), stop.clone());
        let duration = args.duration;
        tasks.push(tokio::spawn(async move {
            let update = client.prepare(UPDATE_ACCOUNT_SQL).await?;
            let mut synth = Synth::new(ACCOUNTS as u64, 500 + index as u64);
            let mut rng = rand::thread_rng().gen::<u64>();
            while started.elapsed() < duration && !stop.is_cancelled() {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let account = (rng % ACCOUNTS as u64) as i64 + 1;
                let tx = client.transaction().await?;
                match variant {
                    Variant::NoOutbox => {
                        tx.execute(&update, &[&account]).await?;
                    }
                    Variant::ExtraRoundTrip => {
                        tx.execute(&update, &[&account]).await?;
                        tx.execute("SELECT 1", &[]).await?;
                    }
                    Variant::Pipelined => {
                        let event = synth.event_for(&Synth::user_id(account as u64));
                        outbox
                            .enqueue_pg_pipelined(&tx, &event, tx.execute(&update, &[&account]))
                            .await?;
                    }
                    Variant::SqlFunction => {
                        let event = synth.event_for(&Synth::user_id(account as u64));
                        let payload = event.payload.to_string();
                        tx.execute(&update, &[&account]).await?;
                        tx.execute_typed(
                            ENQUEUE_FUNCTION_SQL,
                            &[
                                (&event.user_id, Type::TEXT),
                                (&event.kind, Type::TEXT),
                                (&payload, Type::TEXT),
                                (&event.occurred_at, Type::TIMESTAMPTZ),
                            ],
                        )
                        .await?;
                    }
                    Variant::Silent | Variant::Default | Variant::NotifyPerTx => {
                        tx.execute(&update, &[&account]).await?;
                        let event = synth.event_for(&Synth::user_id(account as u64));
                        outbox.enqueue_pg(&tx, &event).await?;
                    }
                }
                tx.commit().await?;
                if matches!(variant, Variant::Default | Variant::Pipelined) {
                    doorbell.ring();
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    Ok(done.load(Ordering::Relaxed) as f64 / secs)
}
