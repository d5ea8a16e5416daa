//! The hot-store write of one batch, inside the transaction `ship.rs`
//! opened: binary COPY for large batches (`hot_copy.rs`) under a savepoint,
//! falling back to `INSERT .. unnest .. ON CONFLICT DO NOTHING` when the
//! hot store already holds one of the events; conflicting duplicates and
//! refused rows become dead letters in the same transaction. Also the
//! statements a hot-store connection keeps prepared.
//!
//! The order of commits (hot store first, then the source's release) is
//! `ship.rs`'s; nothing here commits a transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use strata_core::event::ValidationError;
use tokio_postgres::{Client, Statement, Transaction};
use uuid::Uuid;

use crate::claim::{ClaimedRow, PgTimestamp};
use crate::error::{db, RelayError};
use crate::hot_copy::{self, HotRow, RawJsonb};
use crate::ship::Shipper;

/// Batches at least this large are written with COPY; smaller ones with
/// one INSERT (fewer round trips matter more than bulk speed there).
const COPY_MIN_ROWS: usize = 256;

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

/// Statements prepared on a connection that writes to the hot store.
pub(crate) struct HotStatements {
    insert_hot: Statement,
    stream_append: Statement,
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
            stream_append: db(
                "prepare stream append",
                timeout,
                client.prepare(hot_copy::STREAM_APPEND_SQL),
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
    pub(crate) statements: HotStatements,
}

impl HotConn {
    pub(crate) async fn new(client: Client, timeout: Duration) -> Result<Self, RelayError> {
        let statements = HotStatements::prepare(&client, timeout).await?;
        Ok(Self { client, statements })
    }
}

/// Valid rows, with the columns `unnest` and COPY need borrowed from them
/// when written (no copy of the texts).
#[derive(Default)]
pub(crate) struct HotColumns {
    pub(crate) times: Vec<DateTime<Utc>>,
    /// The outbox row of each event, to write it and to dead-letter it if
    /// it conflicts.
    rows: Vec<ClaimedRow>,
}

impl HotColumns {
    pub(crate) fn push(&mut self, row: ClaimedRow, occurred_at: DateTime<Utc>) {
        self.times.push(occurred_at);
        self.rows.push(row);
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(crate) fn ids(&self) -> Vec<Uuid> {
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
pub(crate) struct DeadColumns {
    pub(crate) outbox_ids: Vec<i64>,
    ids: Vec<Uuid>,
    users: Vec<String>,
    kinds: Vec<String>,
    times: Vec<PgTimestamp>,
    sources: Vec<String>,
    payloads: Vec<String>,
    enqueued: Vec<PgTimestamp>,
    pub(crate) codes: Vec<&'static str>,
    reasons: Vec<String>,
    payload_bytes: Vec<i64>,
    intact: Vec<bool>,
}

impl DeadColumns {
    pub(crate) fn push(&mut self, source_name: &str, row: ClaimedRow, reason: &ValidationError) {
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
    /// Numbers `tx` in the subscription stream; its last statement before
    /// COMMIT (the head's lock is held from here to the commit).
    pub(crate) async fn append_stream(
        &self,
        tx: &Transaction<'_>,
        statements: &HotStatements,
        stored: usize,
        good: &HotColumns,
    ) -> Result<i64, RelayError> {
        let events = i32::try_from(stored).unwrap_or(i32::MAX);
        // `stored > 0` means `good` has rows; the defaults never apply.
        let first = good.times.iter().min().copied().unwrap_or_default();
        let last = good.times.iter().max().copied().unwrap_or_default();
        let row = db(
            "append to the stream log",
            self.timeout,
            tx.query_one(&statements.stream_append, &[&events, &first, &last]),
        )
        .await?;
        row.try_get(0)
            .map_err(RelayError::row("append to the stream log"))
    }

    /// Writes the batch inside `tx`; returns how many events it stored
    /// (re-shipped ones the hot store already held are not counted). Large batches (a backlog) go by binary
    /// COPY, the fast path; if the hot store already holds one of the
    /// events, the COPY is rolled back to a savepoint and the batch goes in
    /// with `INSERT ... ON CONFLICT DO NOTHING`. Small batches (live
    /// traffic) take that INSERT directly: one round trip instead of four.
    pub(crate) async fn write_hot(
        &self,
        tx: &mut Transaction<'_>,
        statements: &HotStatements,
        good: &mut HotColumns,
        dead: &mut DeadColumns,
        isolating: bool,
    ) -> Result<usize, RelayError> {
        let timeout = self.timeout;
        let mut stored = 0;
        if !good.is_empty() {
            let inserted = if isolating && good.len() == 1 {
                // A batch of one after failures: if the hot store refuses
                // the row itself, it becomes a dead letter instead of
                // failing every retry.
                self.insert_alone(tx, statements, good, dead).await
            } else {
                self.insert_events(tx, statements, good).await
            };
            stored = match inserted {
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
        Ok(stored)
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
            let ordinal: i64 = row
                .try_get(0)
                .map_err(RelayError::row("check duplicates for conflicts"))?;
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
            let sink = savepoint.copy_in(hot_copy::COPY_SQL).await?;
            let mut writer = std::pin::pin!(hot_copy::writer(sink));
            for (time, row) in good.times.iter().zip(&good.rows) {
                let payload = RawJsonb(&row.payload.0);
                let hot_row = HotRow {
                    event_id: &row.event_id,
                    user_id: &row.user_id.0,
                    kind: &row.kind.0,
                    occurred_at: time,
                    source: &row.source.0,
                    payload: &payload,
                };
                hot_copy::write_row(writer.as_mut(), &hot_row).await?;
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
}
