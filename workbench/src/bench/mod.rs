//! `strata bench`: throughput and latency figures, each against a baseline
//! measured in the same run. Each scenario provisions a private, durable
//! Postgres cluster (fsync and synchronous_commit on) unless `--pg-url`
//! points at one. Prints a table; `--json` adds one JSON object as the
//! last line.

mod api;
mod archive;
mod drain;
mod duckdb;
mod env;
mod ingest;
mod producer;
mod subscribe;

use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

/// Creates the hot partition of the day `$1` (a function of the store's
/// migrations), before a scenario writes into it directly.
const ENSURE_PARTITION_SQL: &str = "SELECT strata.ensure_day_partition($1)";
/// Flushes dirty buffers before a timed section, so it does not pay for
/// the fill's.
const CHECKPOINT_SQL: &str = "CHECKPOINT";

/// `strata bench` flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// History API latency (hot, cold warm/cold cache), S3 GETs per page,
    /// export throughput, at two store sizes 10x apart; DuckDB baseline.
    Api(api::ApiArgs),
    /// Fill one day of the hot store, archive it to Parquet on the object
    /// store; a sorted binary COPY-out of the day as the ceiling.
    Archive(archive::ArchiveArgs),
    /// Pre-fill the outbox, time the relays draining it; COPY and logical
    /// replication as baselines.
    Drain(drain::DrainArgs),
    /// Producers at a fixed rate; commit-to-visible latency.
    Ingest(ingest::IngestArgs),
    /// Business-transaction throughput without/with the outbox and with
    /// each wake-up strategy.
    Producer(producer::ProducerArgs),
    /// Producers at a fixed rate with 1, 10 and 100 live subscribers:
    /// commit-to-delivered latency against commit-to-visible; the
    /// catch-up rate of one subscriber.
    Subscribe(subscribe::SubscribeArgs),
}

/// Flags every scenario shares.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Use this server (superuser URL without a database name, e.g.
    /// postgres://postgres@127.0.0.1:5432) instead of a private cluster.
    #[arg(long)]
    pg_url: Option<String>,
    /// Print one JSON object with every figure as the last line.
    #[arg(long)]
    json: bool,
}

/// Runs one scenario.
pub async fn run(args: BenchArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    match args.scenario {
        Scenario::Api(a) => api::run(a, cancel).await,
        Scenario::Archive(a) => archive::run(a, cancel).await,
        Scenario::Drain(a) => drain::run(a, cancel).await,
        Scenario::Ingest(a) => ingest::run(a, cancel).await,
        Scenario::Producer(a) => producer::run(a, cancel).await,
        Scenario::Subscribe(a) => subscribe::run(a, cancel).await,
    }
}
