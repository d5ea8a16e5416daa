//! `strata archiver` (continuous) and `strata archive --day` (one day now,
//! with progress; `--verify` re-reads a committed day): wiring only; the
//! lease's life cycle is `strata_archiver::LeasedArchiver`'s.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::NaiveDate;
use strata_archiver::{
    ArchiveError, Archiver, ArchiverOptions, Closure, LeasedArchiver, Outcome, Progress,
};
use strata_core::config::DatabaseUrl;
use strata_core::Config;
use tokio_util::sync::CancellationToken;

use crate::metrics_server;

/// Arguments of `strata archive`.
#[derive(Debug, clap::Args)]
pub struct ArchiveArgs {
    /// The UTC day, `YYYY-MM-DD`.
    #[arg(long, value_parser = parse_day)]
    day: NaiveDate,
    /// Re-read the committed day from the object store and check it
    /// against the catalog instead of archiving it.
    #[arg(long)]
    verify: bool,
}

fn parse_day(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("{text:?} is not a day; expected YYYY-MM-DD"))
}

/// Builds the archiver's options from the configuration.
pub fn options(config: &Config) -> anyhow::Result<ArchiverOptions> {
    let hot_store = config.hot_store_url()?.clone();
    if config.object_store.kind.is_none() {
        anyhow::bail!(
            "invalid configuration: `object_store.kind` is required for archiving (\"s3\" or \"local\")"
        );
    }
    let sources = config
        .sources
        .iter()
        .map(|(name, source)| (name.clone(), source.url.clone()))
        .collect();
    Ok(options_for(config, hot_store, sources))
}

/// The archiver's options for the given hot store and sources, the
/// archiver and object-store sections from `config` (for [`options`]).
fn options_for(
    config: &Config,
    hot_store: DatabaseUrl,
    sources: Vec<(String, DatabaseUrl)>,
) -> ArchiverOptions {
    ArchiverOptions {
        hot_store,
        sources,
        archiver: config.archiver.clone(),
        object_store: config.object_store.clone(),
    }
}

/// `strata archiver`.
pub async fn run_daemon(config: &Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let options = options(config)?;
    tracing::info!(hot_store = %options.hot_store, store = %config.object_store.kind.map_or("", |kind| kind.as_str()), "starting archiver");
    let readiness = crate::readiness::Readiness::archiver(config).await?;
    let metrics =
        metrics_server::spawn(&config.metrics, "archiver", readiness, cancel.clone()).await?;
    let result = match check_object_store(config, &cancel).await {
        Ok(()) => strata_archiver::run(options, cancel.clone())
            .await
            .context("the archiver could not start"),
        Err(err) => Err(err),
    };
    cancel.cancel();
    if let Some(handle) = metrics {
        let _ = handle.await;
    }
    result
}

/// Checks the object store's credentials, bucket and right to list before
/// the archiver starts: a wrong one exits with its error (naming the
/// bucket), unless `archiver.wait_for_object_store` is set, in which case
/// it is retried like a store that is down (until `cancel`).
pub async fn check_object_store(config: &Config, cancel: &CancellationToken) -> anyhow::Result<()> {
    let store = strata_archive::ObjectStore::from_config(&config.object_store)
        .await
        .context("configure the object store")?;
    let wait = config.archiver.wait_for_object_store;
    let mut backoff = strata_core::backoff::Backoff::new(
        config.archiver.backoff_initial,
        config.archiver.backoff_max,
    );
    loop {
        match store.probe(&config.object_store.prefix).await {
            Ok(()) => return Ok(()),
            Err(err) if !err.is_retryable() && !wait => {
                return Err(err).with_context(|| {
                    format!(
                        "object store {} is not usable (wrong credentials, bucket or permissions?); set archiver.wait_for_object_store = true to wait for it instead",
                        store.describe()
                    )
                });
            }
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(store = %store.describe(), error = %err, retry_in = ?delay, "object store not usable yet; waiting");
                tokio::select! {
                    _ = cancel.cancelled() => anyhow::bail!("cancelled while waiting for the object store"),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// `strata archive --day D [--verify]`.
pub async fn run_once(
    args: ArchiveArgs,
    config: &Config,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let options = options(config)?;
    let holder = strata_pg::holder_id();
    let told = |holder: &str, until: &str| {
        eprintln!("waiting for the archiver lease (held by {holder} until {until})");
    };
    let mut archiver = match LeasedArchiver::start_waiting(options, &holder, &cancel, told).await {
        Ok(archiver) => archiver,
        Err(ArchiveError::Cancelled) => anyhow::bail!("cancelled while waiting for the lease"),
        Err(err) => return Err(err).context("start the archiver"),
    };
    let result = if args.verify {
        verify(&archiver, args.day).await
    } else {
        archive(&mut archiver, args.day).await
    };
    archiver.release().await;
    result
}

async fn verify(archiver: &Archiver, day: NaiveDate) -> anyhow::Result<()> {
    let report = archiver.verify_day(day).await?;
    if report.problems.is_empty() {
        println!(
            "{day}: OK ({} files, {} rows match the catalog)",
            report.files, report.rows
        );
        Ok(())
    } else {
        for problem in &report.problems {
            println!("{day}: {problem}");
        }
        anyhow::bail!(
            "verification of {day} failed: {} problem(s)",
            report.problems.len()
        )
    }
}

async fn archive(archiver: &mut LeasedArchiver, day: NaiveDate) -> anyhow::Result<()> {
    let work = archiver.work().clone();
    let ticker = spawn_progress_ticker(archiver.progress(), work.clone());
    let result = archiver
        .archive_day_with_late(day, Closure::Now, &work)
        .await;
    ticker.abort();
    let (report, late) = result?;
    match report.outcome {
        Outcome::Committed => println!(
            "{day}: committed {} rows in {} file(s), {:.1} MB, in {:.1} s",
            report.rows,
            report.files,
            report.bytes as f64 / 1e6,
            report.elapsed.as_secs_f64()
        ),
        _ => println!("{day}: already committed"),
    }
    if let Some(late) = late.filter(|l| l.outcome == Outcome::LateCommitted) {
        println!(
            "{day}: committed {} late rows in {} file(s)",
            late.rows, late.files
        );
    }
    Ok(())
}

/// Prints the run's progress every two seconds until `work` stops.
fn spawn_progress_ticker(
    progress: Arc<Progress>,
    work: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = work.cancelled() => return,
                _ = tick.tick() => eprintln!(
                    "  ... {} rows read, {} files verified, {:.1} MB uploaded",
                    progress.rows_read.load(Ordering::Relaxed),
                    progress.files_verified.load(Ordering::Relaxed),
                    progress.bytes_uploaded.load(Ordering::Relaxed) as f64 / 1e6
                ),
            }
        }
    })
}
