//! `strata`: parse, load config, init telemetry, then run one subcommand
//! until it ends or a signal cancels it. No pipeline logic lives here.

mod api;
mod archive;
mod dead_letters;
mod metrics_server;
mod migrate;
mod pg;
mod pipeline;
mod readiness;
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
            let readiness = readiness::Readiness::relay(&config)?;
            let metrics =
                metrics_server::spawn(&config.metrics, "relay", readiness, cancel.clone()).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `strata` command line README.md shows (in code blocks, and
    /// in inline code as mentions), as `strata ...` or `cargo run --release -p strata-cli
    /// -- ...`) parses: a flag renamed or a value refused (`--api-for 0`
    /// once was) fails here, not in a new user's terminal. Synopsis lines
    /// (`[--x]`, `<arg>`, `...`) are not command lines and are skipped.
    #[test]
    fn readme_command_lines_parse() {
        let readme = include_str!("../../README.md");
        // (text, inline): inline code may name a command group
        // (`strata dead-letters`) rather than show a runnable line.
        let mut candidates: Vec<(&str, bool)> = Vec::new();
        let mut in_code = false;
        for line in readme.lines() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
            } else if in_code {
                candidates.push((line.split(" #").next().unwrap_or(""), false));
            } else {
                // Inline code: every other piece between backticks.
                candidates.extend(line.split('`').skip(1).step_by(2).map(|span| (span, true)));
            }
        }
        let mut checked = 0;
        for (candidate, inline) in candidates {
            let command = candidate.trim();
            let Some(args) = command
                .strip_prefix("cargo run --release -p strata-cli -- ")
                .or_else(|| command.strip_prefix("strata "))
            else {
                continue;
            };
            if ["[", "<", "...", "$", "|"].iter().any(|s| args.contains(s)) {
                continue;
            }
            parses(command, args, inline);
            checked += 1;
        }
        assert!(checked >= 15, "only {checked} command lines found");
        // The demo's flags as README lists them (in prose), and the `0`
        // it offers to skip the API.
        for args in [
            "demo --duration 15s --rate 400 --users 500 --backfill-days 3 --backfill-events 4000 --api-for 2m --dir .strata",
            "demo --api-for 0",
            "demo --api-for 10m",
        ] {
            parses(args, args, false);
        }
    }

    use clap::error::ErrorKind;

    fn parses(shown: &str, args: &str, may_name_a_group: bool) {
        let words = std::iter::once("strata").chain(args.split_whitespace());
        match Cli::try_parse_from(words) {
            Ok(_) => {}
            // A mention (`strata dead-letters`, `--row-group-rows`,
            // `--day D`) leaves values out or holds placeholders; an
            // unknown command or flag is still an error.
            Err(err)
                if may_name_a_group
                    && matches!(
                        err.kind(),
                        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                            | ErrorKind::MissingRequiredArgument
                            | ErrorKind::InvalidValue
                            | ErrorKind::ValueValidation
                    ) => {}
            Err(err) => panic!("README command line does not parse: {shown}\n{err}"),
        }
    }
}
