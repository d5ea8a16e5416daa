//! One batch: claim outbox rows, write them to the hot store, release them.
//!
//! Order of commits, the heart of guarantees G1/G2:
//! 1. a source transaction claims rows by deleting them (`claim.rs`: lock
//!    with `FOR UPDATE SKIP LOCKED`, then `DELETE ... RETURNING`): only
//!    committed rows are visible, whatever order their ids committed in,
//!    and the uncommitted delete locks them against other relays;
//! 2. the hot store commits the batch with `ON CONFLICT DO NOTHING`, so a
//!    batch shipped twice is stored once; its last statement before the
//!    commit numbers the transaction in the subscription stream
//!    (`hot_copy::STREAM_APPEND_SQL`), so numbers follow commit order;
//! 3. only then the source transaction commits, releasing the rows for good.
//!
//! A crash before 3 rolls the source transaction back (the connection dies
//! with the process): the rows are back in the outbox, and a later batch
//! re-ships them; those already in the hot store are dropped as duplicates.
//! When source and hot store are one database, all three happen in one
//! transaction. Deleting in the claim writes each outbox tuple once (a
//! separate lock then delete would write it twice).
//!
//! Every claimed row ends in exactly one place: the hot store, or
//! `strata.dead_letters` with a reason (rules broken, `occurred_at` outside
//! the window, payload too large, a conflicting duplicate of a stored key).
//! Step 2's writes (COPY or INSERT, dead letters) are `hot_write.rs`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use strata_core::event::EventLimits;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use crate::claim::{
    classify, ClaimedRow, Verdict, CLAIM_SQL, PAYLOAD_PREFIX_CHARS, STORED_SIZE_FACTOR,
    TEXT_PREFIX_CHARS,
};
use crate::error::{db, RelayError};
use crate::failpoint;
use crate::hot_write::{DeadColumns, HotColumns, HotConn, HotStatements};
use crate::metrics;
use crate::partition::PartitionCache;

/// Refreshes the outbox's statistics after a slow claim (see
/// `Shipper::analyze_outbox`).
const ANALYZE_OUTBOX_SQL: &str = "ANALYZE strata_outbox.events";

/// A claim slower than this is a sign of stale outbox statistics; the
/// relay then runs `ANALYZE` on the outbox (at most once a minute).
const SLOW_CLAIM: Duration = Duration::from_secs(1);
const ANALYZE_EVERY: Duration = Duration::from_secs(60);

/// Called with the event ids of each batch right after its hot commit
/// (the moment they became visible); used by benchmarks and the demo.
pub type ShipObserver = Arc<dyn Fn(&str, &[Uuid]) + Send + Sync>;

/// Test failpoint `hold_hot_transaction=sleep:5s`: the batch's hot
/// transaction stays open (rows written, not yet numbered in the stream)
/// while other relays commit theirs; awaited, so the runtime keeps going.
async fn hold_hot_transaction() {
    if let Some(pause) = failpoint::pause("hold_hot_transaction") {
        tokio::time::sleep(pause).await;
    }
}

/// Which rows a claim may take.
#[derive(Debug, Clone, Copy)]
pub enum ClaimFilter {
    /// Any unlocked row.
    Any,
    /// Only rows enqueued longer ago than this (the reconciler's resends).
    OlderThan(Duration),
}

/// A source connection with its statements. When the source is the hot
/// store's database, it also carries the hot statements.
pub(crate) struct SourceConn {
    client: Client,
    claim: Statement,
    same_database: Option<HotStatements>,
}

impl SourceConn {
    pub(crate) async fn new(
        client: Client,
        same_database: bool,
        timeout: Duration,
    ) -> Result<Self, RelayError> {
        let same_database = if same_database {
            Some(HotStatements::prepare(&client, timeout).await?)
        } else {
            None
        };
        Ok(Self {
            claim: db("prepare claim", timeout, client.prepare(CLAIM_SQL)).await?,
            client,
            same_database,
        })
    }
}

/// The batch size a loop uses: the configured one while batches succeed,
/// halved after each failure down to one row (so one hostile row ends up
/// alone, where it is dead-lettered or shipped without holding up the
/// rows behind it), doubled back after each success.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdaptiveLimit {
    configured: usize,
    current: usize,
    failing: bool,
}

impl AdaptiveLimit {
    pub(crate) fn new(configured: usize) -> Self {
        let configured = configured.max(1);
        Self {
            configured,
            current: configured,
            failing: false,
        }
    }

    /// Rows to claim next.
    pub(crate) fn rows(&self) -> usize {
        self.current
    }

    /// Whether the next batch is one row, after a failure.
    pub(crate) fn isolating(&self) -> bool {
        self.current == 1 && self.failing
    }

    pub(crate) fn succeeded(&mut self) {
        self.failing = false;
        self.current = self.current.saturating_mul(2).min(self.configured);
    }

    pub(crate) fn failed(&mut self) {
        self.failing = true;
        self.current = (self.current / 2).max(1);
    }
}

/// Ships batches of one source.
#[derive(Clone)]
pub(crate) struct Shipper {
    pub(crate) source_name: String,
    pub(crate) limits: EventLimits,
    /// A batch stops taking rows past this many payload bytes.
    pub(crate) batch_bytes: usize,
    pub(crate) timeout: Duration,
    pub(crate) partitions: PartitionCache,
    pub(crate) observer: Option<ShipObserver>,
    /// When this source's outbox was last analyzed after a slow claim.
    pub(crate) last_analyze: Arc<Mutex<Option<Instant>>>,
}

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Rows claimed (shipped + dead-lettered).
    pub claimed: usize,
    /// Rows written to the hot store (duplicates included).
    pub shipped: usize,
    /// Rows moved to the dead-letter table.
    pub dead_lettered: usize,
    /// The batch stopped at its row or byte limit: more rows may be waiting.
    pub full: bool,
}

impl Shipper {
    /// Claims up to `limit` rows and ships them. Returns what was done;
    /// `claimed == 0` means nothing (matching the filter) was waiting.
    /// `isolating`: batches have been failing and this one was cut down to
    /// one row; a row the hot store refuses is then dead-lettered.
    pub(crate) async fn ship_batch(
        &self,
        source: &mut SourceConn,
        hot: &mut HotConn,
        filter: ClaimFilter,
        limit: usize,
        isolating: bool,
    ) -> Result<BatchOutcome, RelayError> {
        let started = Instant::now();
        let timeout = self.timeout;
        let SourceConn {
            client: source_client,
            claim,
            same_database,
        } = source;
        let mut source_tx = db("begin claim", timeout, source_client.transaction()).await?;
        let min_age = match filter {
            ClaimFilter::Any => 0.0,
            ClaimFilter::OlderThan(age) => age.as_secs_f64().max(0.001),
        };
        let max_stored = (self.limits.max_payload_bytes as i64).saturating_mul(STORED_SIZE_FACTOR);
        let params: [&(dyn ToSql + Sync); 7] = [
            &(limit as i64),
            &(self.batch_bytes as i64),
            &(self.limits.max_payload_bytes as i64),
            &PAYLOAD_PREFIX_CHARS,
            &TEXT_PREFIX_CHARS,
            &min_age,
            &max_stored,
        ];
        let context = match filter {
            ClaimFilter::Any => "claim batch",
            ClaimFilter::OlderThan(_) => "claim stuck rows",
        };
        let rows = db(context, timeout, source_tx.query(&*claim, &params)).await?;
        let claim_elapsed = started.elapsed();
        if rows.is_empty() {
            db("end empty claim", timeout, source_tx.commit()).await?;
            return Ok(BatchOutcome::default());
        }
        failpoint::hit("after_claim");

        let claimed = rows.len();
        let now = Utc::now();
        let mut good = HotColumns::default();
        let mut dead = DeadColumns::default();
        let mut claimed_bytes: i64 = 0;
        let max_payload = self.limits.max_payload_bytes as i64;
        for row in &rows {
            let row = ClaimedRow::decode(row)?;
            claimed_bytes = claimed_bytes.saturating_add(row.budget_bytes.min(max_payload));
            match classify(&row, &self.limits, now) {
                Verdict::Ship(occurred_at) => good.push(row, occurred_at),
                Verdict::Refuse(reason) => dead.push(&self.source_name, row, &reason),
            }
        }
        drop(rows);

        self.partitions
            .ensure_for(&hot.client, &good.times, timeout)
            .await?;

        if let Some(statements) = same_database {
            // One transaction: claim (delete), insert, commit.
            let stored = self
                .write_hot(&mut source_tx, statements, &mut good, &mut dead, isolating)
                .await?;
            failpoint::hit("before_hot_commit");
            hold_hot_transaction().await;
            if stored > 0 {
                self.append_stream(&source_tx, statements, stored, &good)
                    .await?;
            }
            failpoint::hit("before_source_release");
            db("commit batch", timeout, source_tx.commit()).await?;
            self.observe(&good);
        } else {
            let mut hot_tx = db("begin hot batch", timeout, hot.client.transaction()).await?;
            let stored = self
                .write_hot(
                    &mut hot_tx,
                    &hot.statements,
                    &mut good,
                    &mut dead,
                    isolating,
                )
                .await?;
            failpoint::hit("before_hot_commit");
            hold_hot_transaction().await;
            if stored > 0 {
                self.append_stream(&hot_tx, &hot.statements, stored, &good)
                    .await?;
            }
            db("commit hot batch", timeout, hot_tx.commit()).await?;
            self.observe(&good);
            failpoint::hit("after_hot_commit");
            failpoint::hit("before_source_release");
            db("commit release", timeout, source_tx.commit()).await?;
        }

        let outcome = BatchOutcome {
            claimed,
            shipped: good.len(),
            dead_lettered: dead.outbox_ids.len(),
            full: claimed >= limit || claimed_bytes >= self.batch_bytes as i64,
        };
        let source = self.source_name.as_str();
        metrics::EVENTS_SHIPPED
            .with_label_values(&[source])
            .inc_by(outcome.shipped as u64);
        for code in &dead.codes {
            metrics::DEAD_LETTERED
                .with_label_values(&[source, code])
                .inc();
        }
        metrics::BATCHES.with_label_values(&[source]).inc();
        metrics::BATCH_ROWS
            .with_label_values(&[source])
            .observe(outcome.claimed as f64);
        metrics::BATCH_BYTES
            .with_label_values(&[source])
            .observe(claimed_bytes as f64);
        metrics::BATCH_SECONDS
            .with_label_values(&[source])
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(
            source,
            rows = outcome.claimed,
            bytes = claimed_bytes,
            dead = outcome.dead_lettered,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "batch shipped"
        );
        if claim_elapsed >= SLOW_CLAIM {
            self.analyze_outbox(source_client, claim_elapsed).await;
        }
        Ok(outcome)
    }

    /// Refreshes the outbox's statistics after a slow claim, at most once
    /// a minute per source and process. The claim's plan does not depend
    /// on them, but everything else the planner does on the source does;
    /// autovacuum never re-analyzes an outbox that stopped changing.
    /// Needs ownership of the table; a refusal is logged and ignored.
    async fn analyze_outbox(&self, client: &Client, claim_elapsed: Duration) {
        {
            let mut last = self
                .last_analyze
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if last.is_some_and(|at| at.elapsed() < ANALYZE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let source = self.source_name.as_str();
        tracing::info!(
            source,
            claim_ms = claim_elapsed.as_millis() as u64,
            "slow claim; analyzing the outbox"
        );
        match db(
            "analyze outbox",
            self.timeout,
            client.batch_execute(ANALYZE_OUTBOX_SQL),
        )
        .await
        {
            Ok(()) => metrics::OUTBOX_ANALYZED.with_label_values(&[source]).inc(),
            Err(err) => {
                tracing::warn!(source, error = %err, "cannot analyze the outbox (it needs the table's owner); schedule ANALYZE or tune autovacuum as README says");
            }
        }
    }

    fn observe(&self, good: &HotColumns) {
        if let Some(observer) = &self.observer {
            observer(&self.source_name, &good.ids());
        }
    }
}
