//! `strata archiver` (continuous) and `strata archive --day` (one day now,
//! with progress; `--verify` re-reads a committed day).

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use chrono::NaiveDate;
use strata_archiver::{ArchiveError, Archiver, ArchiverOptions, Closure, Outcome};
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
    if config.object_store.kind.is_empty() {
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

/// The archiver's options for given databases (the demo's own).
pub fn options_for(
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
    tracing::info!(hot_store = %options.hot_store, store = %config.object_store.kind, "starting archiver");
    let metrics = metrics_server::spawn(&config.metrics, cancel.clone()).await?;
    strata_archiver::run(options, cancel.clone()).await;
    cancel.cancel();
    if let Some(handle) = metrics {
        let _ = handle.await;
    }
    Ok(())
}

/// `strata archive --day D [--verify]`.
pub async fn run_once(
    args: ArchiveArgs,
    config: &Config,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let options = options(config)?;
    let mut archiver = start_waiting_for_lease(options, &cancel).await?;
    let keeper = archiver.keep_lease();
    let result = if args.verify {
        verify(&archiver, args.day).await
    } else {
        archive(&mut archiver, args.day, &cancel, &keeper.lost).await
    };
    keeper.stop().await;
    archiver.release().await;
    result
}

/// Takes the lease, waiting up to two lease ttls for it: long enough for
/// the lease of a crashed archiver to expire, not for a live one to stop.
async fn start_waiting_for_lease(
    options: ArchiverOptions,
    cancel: &CancellationToken,
) -> anyhow::Result<Archiver> {
    let holder = strata_archiver::archive::holder_id();
    let ttl = options.archiver.lease_ttl;
    let deadline = tokio::time::Instant::now() + ttl * 2;
    let mut told = false;
    loop {
        match Archiver::start(options.clone(), &holder).await {
            Ok(archiver) => return Ok(archiver),
            Err(ArchiveError::LeaseHeld { holder, until })
                if tokio::time::Instant::now() < deadline =>
            {
                if !told {
                    eprintln!("waiting for the archiver lease (held by {holder} until {until})");
                    told = true;
                }
                tokio::select! {
                    _ = cancel.cancelled() => anyhow::bail!("cancelled while waiting for the lease"),
                    _ = tokio::time::sleep(ttl / 6) => {}
                }
            }
            Err(err) => return Err(err).context("start the archiver"),
        }
    }
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

async fn archive(
    archiver: &mut Archiver,
    day: NaiveDate,
    cancel: &CancellationToken,
    lost: &CancellationToken,
) -> anyhow::Result<()> {
    let work = CancellationToken::new();
    let progress = archiver.progress();
    let watcher = {
        let work = work.clone();
        let cancel = cancel.clone();
        let lost = lost.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => { work.cancel(); return; }
                    _ = lost.cancelled() => { work.cancel(); return; }
                    _ = tick.tick() => eprintln!(
                        "  ... {} rows read, {} files verified, {:.1} MB uploaded",
                        progress.rows_read.load(Ordering::Relaxed),
                        progress.files_verified.load(Ordering::Relaxed),
                        progress.bytes_uploaded.load(Ordering::Relaxed) as f64 / 1e6
                    ),
                }
            }
        })
    };
    let result = archive_with_late(archiver, day, &work).await;
    watcher.abort();
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

async fn archive_with_late(
    archiver: &mut Archiver,
    day: NaiveDate,
    work: &CancellationToken,
) -> Result<
    (
        strata_archiver::DayReport,
        Option<strata_archiver::DayReport>,
    ),
    ArchiveError,
> {
    let report = archiver.archive_day(day, Closure::Now, work).await?;
    let late = if report.outcome == Outcome::AlreadyCommitted {
        Some(archiver.archive_late(day, work).await?)
    } else {
        None
    };
    Ok((report, late))
}
