//! `strata`: parse, load config, init telemetry, then run one subcommand
//! until it ends or a signal cancels it. No pipeline logic lives here.

mod api;
mod archive;
mod dead_letters;
mod metrics_server;
mod migrate;
mod pg;
mod pipeline;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strata_core::Config;
use strata_workbench::{bench, demo};
use tokio_util::sync::CancellationToken;

/// Strata: a durable, ordered, cheap-to-keep record of what users do.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
struct Cli {
    /// TOML configuration file (see config/strata.example.toml).
    #[arg(long, short = 'c', env = "STRATA_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Override one setting, e.g. `--set relay.batch_size=500` (repeatable).
    #[arg(long = "set", short = 's', value_name = "KEY=VALUE", global = true)]
    set: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the outbox migrations to every source and the store migrations
    /// to the hot store (idempotent; safe to run concurrently).
    Migrate,
    /// Ship outbox rows into the hot store until SIGTERM/Ctrl-C.
    Relay,
    /// Archive closed days into Parquet on the object store, continuously,
    /// until SIGTERM/Ctrl-C.
    Archiver,
    /// Serve the history API (gRPC) until SIGTERM/Ctrl-C.
    Api,
    /// Relay, archiver and history API in one process (small
    /// deployments), until SIGTERM/Ctrl-C; one failing stops all.
    Run,
    /// Print a bearer token for the API, signed with a configured HS256
    /// secret (for tests, the demo and small deployments).
    Token(api::TokenArgs),
    /// Archive one day now (with progress), or `--verify` a committed one.
    Archive(archive::ArchiveArgs),
    /// Inspect dead letters, or re-drive them into their source's outbox.
    DeadLetters(dead_letters::DeadLettersArgs),
    /// Everything on a private Postgres cluster with synthetic traffic.
    Demo(demo::DemoArgs),
    /// Benchmarks (see README).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), &cli.set) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("strata: {err}");
            return ExitCode::from(2);
        }
    };
    // The demo and the benchmarks print their own progress; keep the logs
    // to warnings there unless asked otherwise.
    let mut log = config.log.clone();
    if matches!(
        cli.command,
        Command::Demo(_) | Command::Bench(_) | Command::Token(_)
    ) && log.filter == "info"
    {
        log.filter = "warn".into();
    }
    telemetry::init(&log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("strata: start async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let cancel = CancellationToken::new();
        spawn_signal_handler(cancel.clone());
        run(cli.command, config, cancel).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("strata: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    match command {
        Command::Migrate => migrate::run(&config).await,
        Command::Relay => {
            let hot_store_url = config.hot_store_url()?;
            if config.sources.is_empty() {
                anyhow::bail!("invalid configuration: `sources` is empty; add at least one [sources.<name>] with a url");
            }
            tracing::info!(hot_store = %hot_store_url, sources = config.sources.len(), "starting relay");
            let metrics = metrics_server::spawn(&config.metrics, cancel.clone()).await?;
            let options = strata_relay::RelayOptions::new(
                config.relay.clone(),
                config.hot_store.clone(),
                config.sources.clone(),
            );
            strata_relay::run(options, cancel.clone())
                .await
                .context("run relay")?;
            cancel.cancel();
            if let Some(handle) = metrics {
                let _ = handle.await;
            }
            Ok(())
        }
        Command::Archiver => archive::run_daemon(&config, cancel).await,
        Command::Api => api::run(&config, cancel).await,
        Command::Run => pipeline::run(&config, None, None, cancel).await,
        Command::Token(args) => api::issue(args, &config),
        Command::Archive(args) => archive::run_once(args, &config, cancel).await,
        Command::DeadLetters(args) => dead_letters::run(args, &config).await,
        // The demo runs `strata run`'s own wiring on its databases.
        Command::Demo(args) => {
            demo::run(args, config, cancel, |config, taps, cancel| async move {
                pipeline::run(
                    &config,
                    Some(taps.ship_observer),
                    Some(taps.api_ready),
                    cancel,
                )
                .await
            })
            .await
        }
        Command::Bench(args) => bench::run(args, cancel).await,
    }
}

/// First SIGINT/SIGTERM cancels gracefully; a second exits at once.
fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(err) => {
                    tracing::error!(error = %err, "cannot install SIGTERM handler");
                    return;
                }
            };
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            if round == 0 {
                tracing::info!("shutting down (signal again to exit at once)");
                cancel.cancel();
            } else {
                eprintln!("strata: second signal, exiting now");
                std::process::exit(130);
            }
        }
    });
}
