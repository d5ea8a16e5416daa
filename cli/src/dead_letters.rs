//! `strata dead-letters list|requeue`: wiring for `strata_relay::dead_letters`.

use anyhow::Context;
use clap::{Args, Subcommand};
use strata_core::Config;
use strata_relay::dead_letters::{self, Selection};

/// Arguments of `strata dead-letters`.
#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    #[command(subcommand)]
    command: DeadLettersCommand,
}

#[derive(Debug, Subcommand)]
enum DeadLettersCommand {
    /// Count dead letters per source and reason, and list the oldest.
    List {
        #[command(flatten)]
        select: SelectArgs,
        /// How many to list.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Move intact dead letters of one source back into its outbox, for
    /// the relays to judge again (after widening the window, say).
    Requeue {
        #[command(flatten)]
        select: SelectArgs,
        /// Requeue every dead letter of the source (otherwise --reason or
        /// --outbox-id is required, so nothing is re-driven by accident).
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Args)]
struct SelectArgs {
    /// Only this source (required for requeue).
    #[arg(long)]
    source: Option<String>,
    /// Only this reason code, e.g. occurred_at_out_of_window.
    #[arg(long)]
    reason: Option<String>,
    /// Only these outbox ids (repeatable).
    #[arg(long = "outbox-id")]
    outbox_ids: Vec<i64>,
}

impl SelectArgs {
    fn selection(&self) -> Selection {
        Selection {
            source: self.source.clone(),
            reason: self.reason.clone(),
            outbox_ids: self.outbox_ids.clone(),
        }
    }
}

/// Runs the subcommand.
pub async fn run(args: DeadLettersArgs, config: &Config) -> anyhow::Result<()> {
    let hot_url = config.hot_store_url()?;
    let timeout = config.relay.statement_timeout;
    match args.command {
        DeadLettersCommand::List { select, limit } => {
            let (letters, summary) = dead_letters::list(
                hot_url,
                &select.selection(),
                limit.clamp(0, 10_000),
                timeout,
            )
            .await
            .context("list dead letters")?;
            if summary.is_empty() {
                println!("no dead letters");
                return Ok(());
            }
            println!(
                "{:<20} {:<28} {:>10} {:>12}",
                "source", "reason", "count", "not intact"
            );
            for count in &summary {
                println!(
                    "{:<20} {:<28} {:>10} {:>12}",
                    count.source_name, count.reason_code, count.count, count.not_intact
                );
            }
            println!();
            for letter in &letters {
                let size = letter
                    .payload_bytes
                    .map_or_else(|| "?".to_string(), |b| b.to_string());
                println!(
                    "{} #{} event {} user {:?} kind {:?} occurred_at {} payload {} bytes{}\n    {}: {} (at {})",
                    letter.source_name,
                    letter.outbox_id,
                    letter.event_id,
                    letter.user_id,
                    letter.kind,
                    letter.occurred_at,
                    size,
                    if letter.intact { "" } else { " (kept as a prefix: cannot be requeued)" },
                    letter.reason_code,
                    letter.reason,
                    letter.dead_lettered_at.to_rfc3339(),
                );
            }
            Ok(())
        }
        DeadLettersCommand::Requeue { select, all } => {
            let name = select
                .source
                .as_deref()
                .context("requeue needs --source <name>")?;
            if !all && select.reason.is_none() && select.outbox_ids.is_empty() {
                anyhow::bail!("requeue needs --reason, --outbox-id or --all");
            }
            let source = config
                .sources
                .get(name)
                .with_context(|| format!("no source named {name:?} in the configuration"))?;
            let report = dead_letters::requeue(hot_url, &source.url, &select.selection(), timeout)
                .await
                .context("requeue dead letters")?;
            println!(
                "requeued {} dead letter(s) into source {name}; {} left in place (not intact)",
                report.requeued, report.skipped_not_intact
            );
            Ok(())
        }
    }
}
