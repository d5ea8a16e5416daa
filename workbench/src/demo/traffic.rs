//! The demo's producers: the business table, past days backfilled through
//! the SDK (as a late-arriving import would write them), and live
//! business transactions that each update an account and enqueue an event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{NaiveDate, TimeDelta, Utc};
use rand::Rng;
use strata_producer::{Doorbell, Outbox};
use tokio_util::sync::CancellationToken;

use super::DemoArgs;
use crate::latency::LatencyTracker;
use crate::pg;
use crate::synth::Synth;

/// The demo's business table, in the producer database.
const CREATE_ACCOUNTS_SQL: &str =
    "CREATE TABLE accounts (user_id text PRIMARY KEY, balance numeric NOT NULL DEFAULT 0)";

/// The business half of each demo transaction.
const CREDIT_ACCOUNT_SQL: &str =
    "INSERT INTO accounts (user_id, balance) VALUES ($1, $2::float8::numeric) \
     ON CONFLICT (user_id) DO UPDATE SET balance = accounts.balance + excluded.balance";

/// Creates the business table the demo's transactions update.
pub(super) async fn create_business_table(shop: &tokio_postgres::Client) -> anyhow::Result<()> {
    shop.batch_execute(CREATE_ACCOUNTS_SQL)
        .await
        .context("create demo business table")
}

/// Writes `backfill_events` events for each of the last `backfill_days`
/// days through the SDK (as a late-arriving import would); returns the days.
pub(super) async fn backfill(
    shop_url: &str,
    outbox: &Outbox,
    args: &DemoArgs,
) -> anyhow::Result<Vec<NaiveDate>> {
    let mut client = pg::connect(shop_url).await?;
    let today = Utc::now().date_naive();
    let mut synth = Synth::new(args.users, 9_999);
    let mut rng = rand::thread_rng();
    let mut days = Vec::new();
    for back in (1..=i64::from(args.backfill_days)).rev() {
        let day = today - TimeDelta::days(back);
        let start = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
        let mut left = args.backfill_events;
        while left > 0 {
            let n = left.min(500);
            let events: Vec<_> = (0..n)
                .map(|_| {
                    let at = start + TimeDelta::microseconds(rng.gen_range(0..86_400_000_000));
                    synth.event().occurred_at(at)
                })
                .collect();
            let tx = client.transaction().await?;
            outbox.enqueue_many_pg(&tx, &events).await?;
            tx.commit().await?;
            left -= n;
        }
        days.push(day);
    }
    if !days.is_empty() {
        println!(
            "  backfilled {} events on each of {} past days (the archiver rolls them into Parquet)",
            args.backfill_events,
            days.len()
        );
    }
    Ok(days)
}

/// One producer connection: `per_second` business transactions (credit
/// or debit an account, enqueue the event, commit, ring the doorbell)
/// until `cancel`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn produce(
    mut client: tokio_postgres::Client,
    outbox: Outbox,
    doorbell: Doorbell,
    tracker: Arc<LatencyTracker>,
    produced: Arc<AtomicU64>,
    mut synth: Synth,
    per_second: u64,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !cancel.is_cancelled() {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let event = synth.event();
        let amount: f64 = event
            .payload
            .get("amount")
            .and_then(|a| a.as_str())
            .and_then(|a| a.parse().ok())
            .unwrap_or(0.0);
        let signed = if event.kind == "withdrawal" {
            -amount
        } else {
            amount
        };
        let result = async {
            let tx = client.transaction().await?;
            tx.execute(CREDIT_ACCOUNT_SQL, &[&event.user_id, &signed])
                .await?;
            let id = outbox.enqueue_pg(&tx, &event).await?;
            tracker.before_commit(id);
            match tx.commit().await {
                Ok(()) => Ok(id),
                Err(err) => {
                    tracker.abandoned(id);
                    Err(anyhow::Error::from(err))
                }
            }
        }
        .await;
        match result {
            Ok(id) => {
                tracker.committed(id);
                doorbell.ring();
                produced.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                tracing::warn!(error = %err, "demo producer transaction failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
