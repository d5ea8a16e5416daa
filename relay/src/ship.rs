//! One batch: claim outbox rows, write them to the hot store, release them.
//!
//! Order of commits, the heart of guarantees G1/G2:
//! 1. a source transaction claims rows by deleting them (`claim.rs`: lock
//!    with `FOR UPDATE SKIP LOCKED`, then `DELETE ... RETURNING`): only
//!    committed rows are visible, whatever order their ids committed in,
//!    and the uncommitted delete locks them against other relays;
//! 2. the hot store commits the batch with `ON CONFLICT DO NOTHING`, so a
//!    batch shipped twice is stored once;
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

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use strata_core::event::{EventLimits, ValidationError};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, Statement, Transaction};
use uuid::Uuid;

use crate::claim::{
    classify, ClaimedRow, PgTimestamp, Verdict, CLAIM_SQL, PAYLOAD_PREFIX_CHARS,
    STORED_SIZE_FACTOR, TEXT_PREFIX_CHARS,
};
use crate::error::{db, RelayError};
use crate::failpoint;
use crate::metrics;
use crate::partition::PartitionCache;

const COPY_HOT_SQL: &str =
    "COPY strata.activity (event_id, user_id, kind, occurred_at, source, payload) \
     FROM STDIN (FORMAT binary)";

/// Batches at least this large are written with COPY; smaller ones with
/// one INSERT (fewer round trips matter more than bulk speed there).
const COPY_MIN_ROWS: usize = 256;

const COPY_HOT_TYPES: [Type; 6] = [
    Type::UUID,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::JSONB,
];

/// Fallback when the batch holds an event the hot store already has
/// (re-shipped after a crash, or re-enqueued by a producer).
const INSERT_HOT_SQL: &str = "INSERT INTO strata.activity (event_id, user_id, kind, occurred_at, source, payload) \
     SELECT e, u, k, o, s, p::jsonb \
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[]) AS t(e, u, k, o, s, p) \
     ON CONFLICT DO NOTHING";

/// Which of the batch's events (1-based positions) the hot store holds
/// under the same key with different contents: a producer that retried an
/// `event_id` with another payload. Run only when the insert skipped rows,
/// in a statement of its own so it sees rows other relays committed
/// while the insert waited on them.
const CONFLICTS_SQL: &str = "SELECT t.n FROM \
     unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[]) \
         WITH ORDINALITY AS t(e, u, k, o, s, p, n) \
     JOIN strata.activity a ON a.user_id = t.u AND a.occurred_at = t.o AND a.event_id = t.e \
     WHERE (a.kind, a.source, a.payload) IS DISTINCT FROM (t.k, t.s, t.p::jsonb)";

const INSERT_DEAD_SQL: &str = "INSERT INTO strata.dead_letters \
     (source_name, outbox_id, event_id, user_id, kind, occurred_at, source, payload, enqueued_at, \
      reason_code, reason, payload_bytes, intact) \
     SELECT $1, i, e, u, k, o, s, p, q, c, r, b, x \
     FROM unnest($2::bigint[], $3::uuid[], $4::text[], $5::text[], $6::timestamptz[], $7::text[], $8::text[], \
                 $9::timestamptz[], $10::text[], $11::text[], $12::bigint[], $13::bool[]) \
         AS t(i, e, u, k, o, s, p, q, c, r, b, x) \
     ON CONFLICT DO NOTHING";

/// A claim slower than this is a sign of stale outbox statistics; the
/// relay then runs `ANALYZE` on the outbox (at most once a minute).
const SLOW_CLAIM: Duration = Duration::from_secs(1);
const ANALYZE_EVERY: Duration = Duration::from_secs(60);

/// Called with the event ids of each batch right after its hot commit
/// (the moment they became visible); used by benchmarks and the demo.
pub type ShipObserver = Arc<dyn Fn(&str, &[Uuid]) + Send + Sync>;

/// Which rows a claim may take.
#[derive(Debug, Clone, Copy)]
pub enum ClaimFilter {
    /// Any unlocked row.
    Any,
    /// Only rows enqueued longer ago than this (the reconciler's resends).
    OlderThan(Duration),
}

/// Statements prepared on a connection that writes to the hot store.
pub(crate) struct HotStatements {
    insert_hot: Statement,
    conflicts: Statement,
    insert_dead: Statement,
}

impl HotStatements {
    pub(crate) async fn prepare(client: &Client, timeout: Duration) -> Result<Self, RelayError> {
        Ok(Self {
            insert_hot: db(
                "prepare hot insert",
                timeout,
                client.prepare(INSERT_HOT_SQL),
            )
            .await?,
            conflicts: db(
                "prepare conflict check",
                timeout,
                client.prepare(CONFLICTS_SQL),
            )
            .await?,
            insert_dead: db(
                "prepare dead-letter insert",
                timeout,
                client.prepare(INSERT_DEAD_SQL),
            )
            .await?,
        })
    }
}

/// A hot-store connection with its statements.
pub(crate) struct HotConn {
    pub(crate) client: Client,
    statements: HotStatements,
}

impl HotConn {
    pub(crate) async fn new(client: Client, timeout: Duration) -> Result<Self, RelayError> {
        let statements = HotStatements::prepare(&client, timeout).await?;
        Ok(Self { client, statements })
    }
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

/// Valid rows, with the columns `unnest` and COPY need borrowed from them
/// when written (no copy of the texts).
#[derive(Default)]
struct HotColumns {
    times: Vec<DateTime<Utc>>,
    /// The outbox row of each event, to write it and to dead-letter it if
    /// it conflicts.
    rows: Vec<ClaimedRow>,
}

impl HotColumns {
    fn push(&mut self, row: ClaimedRow, occurred_at: DateTime<Utc>) {
        self.times.push(occurred_at);
        self.rows.push(row);
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn ids(&self) -> Vec<Uuid> {
        self.rows.iter().map(|r| r.event_id).collect()
    }

    fn users(&self) -> Vec<&str> {
        self.rows.iter().map(|r| r.user_id.0.as_str()).collect()
    }

    fn kinds(&self) -> Vec<&str> {
        self.rows.iter().map(|r| r.kind.0.as_str()).collect()
    }

    fn sources(&self) -> Vec<&str> {
        self.rows.iter().map(|r| r.source.0.as_str()).collect()
    }

    fn payloads(&self) -> Vec<&str> {
        self.rows.iter().map(|r| r.payload.0.as_str()).collect()
    }

    /// Removes the events at `positions` (0-based, any order); returns
    /// their outbox rows.
    fn take(&mut self, positions: &[usize]) -> Vec<ClaimedRow> {
        let mut taken = Vec::with_capacity(positions.len());
        let mut sorted = positions.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        sorted.dedup();
        for position in sorted {
            if position < self.rows.len() {
                self.times.remove(position);
                taken.push(self.rows.remove(position));
            }
        }
        taken
    }
}

/// Refused rows as parallel arrays for `unnest`: the row as claimed (texts
/// possibly cut to a prefix), where it came from and why it was refused.
#[derive(Default)]
struct DeadColumns {
    outbox_ids: Vec<i64>,
    ids: Vec<Uuid>,
    users: Vec<String>,
    kinds: Vec<String>,
    times: Vec<PgTimestamp>,
    sources: Vec<String>,
    payloads: Vec<String>,
    enqueued: Vec<PgTimestamp>,
    codes: Vec<&'static str>,
    reasons: Vec<String>,
    payload_bytes: Vec<i64>,
    intact: Vec<bool>,
}

impl DeadColumns {
    fn push(&mut self, source_name: &str, row: ClaimedRow, reason: &ValidationError) {
        tracing::warn!(
            source = %source_name,
            outbox_id = row.outbox_id,
            event_id = %row.event_id,
            reason_code = reason.code(),
            reason = %reason,
            "dead-lettering outbox row"
        );
        self.outbox_ids.push(row.outbox_id);
        self.ids.push(row.event_id);
        self.intact.push(row.intact());
        self.users.push(row.user_id.0);
        self.kinds.push(row.kind.0);
        self.times.push(row.occurred_at);
        self.sources.push(row.source.0);
        self.payloads.push(row.payload.0);
        self.enqueued.push(row.enqueued_at);
        self.codes.push(reason.code());
        self.reasons.push(reason.to_string());
        self.payload_bytes.push(row.payload_bytes);
    }
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
            self.write_hot(&mut source_tx, statements, &mut good, &mut dead, isolating)
                .await?;
            failpoint::hit("before_hot_commit");
            failpoint::hit("before_source_release");
            db("commit batch", timeout, source_tx.commit()).await?;
            self.observe(&good);
        } else {
            let mut hot_tx = db("begin hot batch", timeout, hot.client.transaction()).await?;
            self.write_hot(
                &mut hot_tx,
                &hot.statements,
                &mut good,
                &mut dead,
                isolating,
            )
            .await?;
            failpoint::hit("before_hot_commit");
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
            client.batch_execute("ANALYZE strata_outbox.events"),
        )
        .await
        {
            Ok(()) => metrics::OUTBOX_ANALYZED.with_label_values(&[source]).inc(),
            Err(err) => {
                tracing::warn!(source, error = %err, "cannot analyze the outbox (it needs the table's owner); schedule ANALYZE or tune autovacuum as README says");
            }
        }
    }

    /// Writes the batch inside `tx`. Large batches (a backlog) go by binary
    /// COPY, the fast path; if the hot store already holds one of the
    /// events, the COPY is rolled back to a savepoint and the batch goes in
    /// with `INSERT ... ON CONFLICT DO NOTHING`. Small batches (live
    /// traffic) take that INSERT directly: one round trip instead of four.
    async fn write_hot(
        &self,
        tx: &mut Transaction<'_>,
        statements: &HotStatements,
        good: &mut HotColumns,
        dead: &mut DeadColumns,
        isolating: bool,
    ) -> Result<(), RelayError> {
        let timeout = self.timeout;
        if !good.is_empty() {
            let inserted = if isolating && good.len() == 1 {
                // A batch of one after failures: if the hot store refuses
                // the row itself, it becomes a dead letter instead of
                // failing every retry.
                self.insert_alone(tx, statements, good, dead).await
            } else {
                self.insert_events(tx, statements, good).await
            };
            let stored = match inserted {
                Ok(stored) => stored,
                // No partition for a row's day (dropped after archiving).
                Err(err) if err.is_missing_partition() => {
                    self.partitions.forget(&good.times);
                    return Err(RelayError::PartitionMissing);
                }
                Err(err) => return Err(err),
            };
            if stored < good.len() {
                self.dead_letter_conflicts(tx, statements, good, dead)
                    .await?;
            }
        }
        if !dead.outbox_ids.is_empty() {
            db(
                "insert dead letters",
                timeout,
                tx.execute(
                    &statements.insert_dead,
                    &[
                        &self.source_name,
                        &dead.outbox_ids,
                        &dead.ids,
                        &dead.users,
                        &dead.kinds,
                        &dead.times,
                        &dead.sources,
                        &dead.payloads,
                        &dead.enqueued,
                        &dead.codes,
                        &dead.reasons,
                        &dead.payload_bytes,
                        &dead.intact,
                    ],
                ),
            )
            .await?;
        }
        Ok(())
    }

    /// Tries the batch's one event under a savepoint; a refusal that is
    /// about the row's values (data exceptions, constraint violations other
    /// than the key, limits such as nesting depth) moves it to `dead` as
    /// `hot_store_rejected`. The row is kept whole: it can be requeued once
    /// the hot store accepts it. Other faults are returned as they are.
    async fn insert_alone(
        &self,
        tx: &mut Transaction<'_>,
        statements: &HotStatements,
        good: &mut HotColumns,
        dead: &mut DeadColumns,
    ) -> Result<usize, RelayError> {
        let timeout = self.timeout;
        let savepoint = db(
            "savepoint before insert",
            timeout,
            tx.savepoint("strata_one"),
        )
        .await?;
        let result = db(
            "insert hot row",
            timeout,
            savepoint.execute(
                &statements.insert_hot,
                &[
                    &good.ids(),
                    &good.users(),
                    &good.kinds(),
                    &good.times,
                    &good.sources(),
                    &good.payloads(),
                ],
            ),
        )
        .await;
        match result {
            Err(err) if err.is_row_rejection() => {
                db("roll back to savepoint", timeout, savepoint.rollback()).await?;
                let message = err.to_string();
                for row in good.take(&[0]) {
                    let reason = ValidationError::HotStoreRejected {
                        message: message.chars().take(300).collect(),
                    };
                    dead.push(&self.source_name, row, &reason);
                }
                Ok(0)
            }
            Ok(inserted) => {
                db("release savepoint", timeout, savepoint.commit()).await?;
                Ok(usize::try_from(inserted).unwrap_or(usize::MAX))
            }
            Err(err) => Err(err),
        }
    }

    /// Some events were not inserted because the hot store holds their key
    /// (user_id, occurred_at, event_id). Identical ones are re-shipments,
    /// dropped as G2 wants; different ones are a producer reusing an
    /// event_id for another event: the stored event stays, and the new one
    /// becomes a `conflicting_duplicate` dead letter instead of vanishing.
    async fn dead_letter_conflicts(
        &self,
        tx: &mut Transaction<'_>,
        statements: &HotStatements,
        good: &mut HotColumns,
        dead: &mut DeadColumns,
    ) -> Result<(), RelayError> {
        let rows = db(
            "check duplicates for conflicts",
            self.timeout,
            tx.query(
                &statements.conflicts,
                &[
                    &good.ids(),
                    &good.users(),
                    &good.kinds(),
                    &good.times,
                    &good.sources(),
                    &good.payloads(),
                ],
            ),
        )
        .await?;
        let mut positions = Vec::with_capacity(rows.len());
        for row in &rows {
            let ordinal: i64 = row.try_get(0).map_err(|source| RelayError::Row {
                context: "check duplicates for conflicts",
                source,
            })?;
            if let Some(position) = usize::try_from(ordinal).ok().and_then(|n| n.checked_sub(1)) {
                positions.push(position);
            }
        }
        for row in good.take(&positions) {
            let reason = ValidationError::ConflictingDuplicate {
                event_id: row.event_id.to_string(),
            };
            dead.push(&self.source_name, row, &reason);
        }
        Ok(())
    }

    /// COPY for large batches, unless it met a stored event; else INSERT.
    /// Returns how many events were stored.
    async fn insert_events(
        &self,
        tx: &mut Transaction<'_>,
        statements: &HotStatements,
        good: &HotColumns,
    ) -> Result<usize, RelayError> {
        if good.len() >= COPY_MIN_ROWS && self.copy_hot(tx, good).await? {
            return Ok(good.len());
        }
        let inserted = db(
            "insert hot batch",
            self.timeout,
            tx.execute(
                &statements.insert_hot,
                &[
                    &good.ids(),
                    &good.users(),
                    &good.kinds(),
                    &good.times,
                    &good.sources(),
                    &good.payloads(),
                ],
            ),
        )
        .await?;
        Ok(usize::try_from(inserted).unwrap_or(usize::MAX))
    }

    /// Binary COPY of the batch under a savepoint. `Ok(false)`: a row was
    /// already stored (23505) and the savepoint was rolled back.
    async fn copy_hot(
        &self,
        tx: &mut Transaction<'_>,
        good: &HotColumns,
    ) -> Result<bool, RelayError> {
        let timeout = self.timeout;
        let savepoint = db(
            "savepoint before copy",
            timeout,
            tx.savepoint("strata_copy"),
        )
        .await?;
        let copy = async {
            let sink = savepoint.copy_in(COPY_HOT_SQL).await?;
            let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &COPY_HOT_TYPES));
            for (time, row) in good.times.iter().zip(&good.rows) {
                writer
                    .as_mut()
                    .write(&[
                        &row.event_id,
                        &row.user_id.0,
                        &row.kind.0,
                        time,
                        &row.source.0,
                        &RawJsonb(&row.payload.0),
                    ])
                    .await?;
            }
            writer.finish().await
        };
        match db("copy hot batch", timeout, copy).await {
            Ok(_) => {
                db("release savepoint", timeout, savepoint.commit()).await?;
                Ok(true)
            }
            Err(err) if err.sqlstate() == Some("23505") => {
                tracing::debug!(source = %self.source_name, rows = good.len(), "batch holds events already stored; inserting with ON CONFLICT DO NOTHING");
                db("roll back to savepoint", timeout, savepoint.rollback()).await?;
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    fn observe(&self, good: &HotColumns) {
        if let Some(observer) = &self.observer {
            observer(&self.source_name, &good.ids());
        }
    }
}

/// A payload already in jsonb's text form, sent as binary jsonb (version
/// byte 1, then the text) without parsing it into a `serde_json::Value`.
#[derive(Debug)]
struct RawJsonb<'a>(&'a str);

impl ToSql for RawJsonb<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use bytes::BufMut;
        out.put_u8(1);
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}
