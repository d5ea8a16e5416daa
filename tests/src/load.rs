//! Producer load for tests: business transactions that enqueue events
//! through the SDK, some rolled back, every outcome in the ledger.

use std::time::Duration;

use rand::Rng;
use serde_json::json;
use strata_producer::{Doorbell, NewEvent, Outbox};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::db::connect;
use crate::ledger::{Ledger, LedgerEvent, Outcome};

/// How to produce.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Concurrent producer connections.
    pub connections: usize,
    /// Fraction of transactions rolled back.
    pub rollback_ratio: f64,
    /// Events per transaction (1..=n).
    pub max_events_per_tx: usize,
    /// Pause between transactions of one connection.
    pub pause: Duration,
    /// NOTIFY inside each transaction (also in rolled-back ones).
    pub notify_in_transaction: bool,
    /// Ring a doorbell after each commit.
    pub doorbell: bool,
    /// Distinct users.
    pub users: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            connections: 4,
            rollback_ratio: 0.1,
            max_events_per_tx: 3,
            pause: Duration::from_millis(5),
            notify_in_transaction: false,
            doorbell: true,
            users: 40,
        }
    }
}

/// Starts producer tasks on `source_url`; they run until `cancel`.
pub async fn start(
    source_url: &str,
    ledger: Ledger,
    options: LoadOptions,
    cancel: CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let outbox = Outbox::new("test-load")?.notify_in_transaction(options.notify_in_transaction);
    let doorbell = if options.doorbell {
        Some(Doorbell::spawn_tokio_postgres(
            source_url,
            Duration::from_millis(5),
            cancel.clone(),
        ))
    } else {
        None
    };
    let mut tasks = Vec::new();
    for index in 0..options.connections {
        let url = source_url.to_string();
        let (ledger, outbox, doorbell, options, cancel) = (
            ledger.clone(),
            outbox.clone(),
            doorbell.clone(),
            options.clone(),
            cancel.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut client: Option<tokio_postgres::Client> = None;
            let mut seq = 0u64;
            while !cancel.is_cancelled() {
                let c = match &mut client {
                    Some(c) if !c.is_closed() => c,
                    _ => match connect(&url).await {
                        Ok(c) => client.insert(c),
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                seq += 1;
                let (events, rollback) = {
                    let mut rng = rand::thread_rng();
                    let n = rng.gen_range(1..=options.max_events_per_tx);
                    let events: Vec<NewEvent> = (0..n)
                        .map(|i| {
                            let user = rng.gen_range(0..options.users);
                            NewEvent::new(format!("user-{user}"), "deposit").payload(json!({
                                "producer": index, "seq": seq, "i": i,
                                "amount": format!("{}.{:02}", rng.gen_range(1..5000), rng.gen_range(0..100)),
                            }))
                        })
                        .collect();
                    (events, rng.gen_bool(options.rollback_ratio))
                };
                let prepared = match outbox.prepare(&events) {
                    Ok(p) => p,
                    Err(_) => continue,
                };
                // Enqueue the already-prepared events (ids fixed) so the
                // ledger knows them whatever happens next.
                let fixed: Vec<NewEvent> = prepared
                    .iter()
                    .zip(&events)
                    .map(|(p, e)| e.clone().event_id(p.event_id).occurred_at(p.occurred_at))
                    .collect();
                let ledger_events: Vec<LedgerEvent> = prepared.iter().map(LedgerEvent::from).collect();
                let (outcome, reconnect) = one_transaction(c, &outbox, &fixed, rollback).await;
                ledger.record(&ledger_events, outcome);
                if outcome == Outcome::Committed {
                    if let Some(bell) = &doorbell {
                        bell.ring();
                    }
                }
                if reconnect {
                    client = None;
                }
                tokio::time::sleep(options.pause).await;
            }
        }));
    }
    Ok(tasks)
}

/// One business transaction; returns its outcome and whether the
/// connection should be replaced.
async fn one_transaction(
    client: &mut tokio_postgres::Client,
    outbox: &Outbox,
    events: &[NewEvent],
    rollback: bool,
) -> (Outcome, bool) {
    let tx = match client.transaction().await {
        Ok(tx) => tx,
        Err(_) => return (Outcome::RolledBack, true),
    };
    if outbox.enqueue_many_pg(&tx, events).await.is_err() {
        return (Outcome::RolledBack, true);
    }
    if rollback {
        let _ = tx.rollback().await;
        return (Outcome::RolledBack, false);
    }
    match tx.commit().await {
        Ok(()) => (Outcome::Committed, false),
        // The answer to COMMIT was lost: it may or may not have happened.
        Err(_) => (Outcome::Unknown, true),
    }
}

/// Stops the load and waits for its tasks.
pub async fn stop(cancel: CancellationToken, tasks: Vec<JoinHandle<()>>) {
    cancel.cancel();
    for task in tasks {
        let _ = task.await;
    }
}
