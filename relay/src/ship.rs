//! One batch: claim outbox rows, write them to the hot store, release them.
//!
//! Order of commits, the heart of guarantees G1/G2:
//! 1. a source transaction claims rows by deleting them
//!    (`DELETE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING`):
//!    only committed rows are visible, whatever order their ids committed
//!    in, and the uncommitted delete locks them against other relays;
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use strata_core::event::{validate_row, validate_source, EventLimits};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, Statement, Transaction};
use uuid::Uuid;

use crate::error::{db, RelayError};
use crate::failpoint;
use crate::metrics;
use crate::partition::PartitionCache;

const CLAIM_SQL: &str = "DELETE FROM strata_outbox.events WHERE id IN ( \
         SELECT id FROM strata_outbox.events ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
     RETURNING id, event_id, user_id, kind, occurred_at, source, payload::text, enqueued_at";

const CLAIM_OLDER_SQL: &str = "DELETE FROM strata_outbox.events WHERE id IN ( \
         SELECT id FROM strata_outbox.events \
         WHERE enqueued_at < now() - make_interval(secs => $2) \
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
     RETURNING id, event_id, user_id, kind, occurred_at, source, payload::text, enqueued_at";

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

const INSERT_DEAD_SQL: &str = "INSERT INTO strata.dead_letters \
     (source_name, outbox_id, event_id, user_id, kind, occurred_at, source, payload, enqueued_at, reason_code, reason) \
     SELECT $1, i, e, u, k, o, s, p, q, c, r \
     FROM unnest($2::bigint[], $3::uuid[], $4::text[], $5::text[], $6::timestamptz[], $7::text[], $8::text[], \
                 $9::timestamptz[], $10::text[], $11::text[]) AS t(i, e, u, k, o, s, p, q, c, r) \
     ON CONFLICT DO NOTHING";

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
    claim_older: Statement,
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
            claim_older: db("prepare claim", timeout, client.prepare(CLAIM_OLDER_SQL)).await?,
            client,
            same_database,
        })
    }
}

/// Ships batches of one source.
#[derive(Clone)]
pub(crate) struct Shipper {
    pub(crate) source_name: String,
    pub(crate) limits: EventLimits,
    pub(crate) timeout: Duration,
    pub(crate) partitions: PartitionCache,
    pub(crate) observer: Option<ShipObserver>,
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
}

/// Valid rows as parallel arrays for `unnest`.
#[derive(Default)]
struct HotColumns {
    ids: Vec<Uuid>,
    users: Vec<String>,
    kinds: Vec<String>,
    times: Vec<DateTime<Utc>>,
    sources: Vec<String>,
    payloads: Vec<String>,
}

/// Poison rows as parallel arrays for `unnest`: the event columns plus
/// where each row came from and why it was refused.
#[derive(Default)]
struct DeadColumns {
    event: HotColumns,
    outbox_ids: Vec<i64>,
    enqueued: Vec<DateTime<Utc>>,
    codes: Vec<String>,
    reasons: Vec<String>,
}

impl HotColumns {
    fn push(
        &mut self,
        event_id: Uuid,
        user_id: String,
        kind: String,
        occurred_at: DateTime<Utc>,
        source: String,
        payload: String,
    ) {
        self.ids.push(event_id);
        self.users.push(user_id);
        self.kinds.push(kind);
        self.times.push(occurred_at);
        self.sources.push(source);
        self.payloads.push(payload);
    }
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    index: usize,
) -> Result<T, RelayError> {
    row.try_get(index).map_err(|source| RelayError::Row {
        context: "claim",
        source,
    })
}

impl Shipper {
    /// Claims up to `limit` rows and ships them. Returns what was done;
    /// `claimed == 0` means nothing (matching the filter) was waiting.
    pub(crate) async fn ship_batch(
        &self,
        source: &mut SourceConn,
        hot: &mut HotConn,
        filter: ClaimFilter,
        limit: usize,
    ) -> Result<BatchOutcome, RelayError> {
        let started = Instant::now();
        let timeout = self.timeout;
        let SourceConn {
            client: source_client,
            claim,
            claim_older,
            same_database,
        } = source;
        let mut source_tx = db("begin claim", timeout, source_client.transaction()).await?;
        let limit = limit as i64;
        let rows = match filter {
            ClaimFilter::Any => {
                db("claim batch", timeout, source_tx.query(&*claim, &[&limit])).await?
            }
            ClaimFilter::OlderThan(age) => {
                let seconds = age.as_secs_f64();
                db(
                    "claim stuck rows",
                    timeout,
                    source_tx.query(&*claim_older, &[&limit, &seconds]),
                )
                .await?
            }
        };
        if rows.is_empty() {
            db("end empty claim", timeout, source_tx.commit()).await?;
            return Ok(BatchOutcome::default());
        }
        failpoint::hit("after_claim");

        let claimed = rows.len();
        let mut good = HotColumns::default();
        let mut dead = DeadColumns::default();
        for row in &rows {
            let outbox_id: i64 = get(row, 0)?;
            let event_id: Uuid = get(row, 1)?;
            let user_id: String = get(row, 2)?;
            let kind: String = get(row, 3)?;
            let occurred_at: DateTime<Utc> = get(row, 4)?;
            let event_source: String = get(row, 5)?;
            let payload: String = get(row, 6)?;
            let verdict = validate_source(&event_source)
                .and_then(|()| validate_row(&user_id, &kind, &payload, &self.limits));
            match verdict {
                Ok(()) => good.push(event_id, user_id, kind, occurred_at, event_source, payload),
                Err(reason) => {
                    tracing::warn!(source = %self.source_name, outbox_id, %event_id, reason = %reason, "dead-lettering poison outbox row");
                    dead.event
                        .push(event_id, user_id, kind, occurred_at, event_source, payload);
                    dead.outbox_ids.push(outbox_id);
                    dead.enqueued.push(get(row, 7)?);
                    dead.codes.push(reason.code().to_string());
                    dead.reasons.push(reason.to_string());
                }
            }
        }
        drop(rows);

        self.partitions
            .ensure_for(&hot.client, &good.times, timeout)
            .await?;

        let outcome = BatchOutcome {
            claimed,
            shipped: good.ids.len(),
            dead_lettered: dead.outbox_ids.len(),
        };

        if let Some(statements) = same_database {
            // One transaction: claim (delete), insert, commit.
            self.write_hot(&mut source_tx, statements, &good, &dead)
                .await?;
            failpoint::hit("before_hot_commit");
            failpoint::hit("before_source_release");
            db("commit batch", timeout, source_tx.commit()).await?;
            self.observe(&good.ids);
        } else {
            let mut hot_tx = db("begin hot batch", timeout, hot.client.transaction()).await?;
            self.write_hot(&mut hot_tx, &hot.statements, &good, &dead)
                .await?;
            failpoint::hit("before_hot_commit");
            db("commit hot batch", timeout, hot_tx.commit()).await?;
            self.observe(&good.ids);
            failpoint::hit("after_hot_commit");
            failpoint::hit("before_source_release");
            db("commit release", timeout, source_tx.commit()).await?;
        }

        let source = self.source_name.as_str();
        metrics::EVENTS_SHIPPED
            .with_label_values(&[source])
            .inc_by(outcome.shipped as u64);
        metrics::DEAD_LETTERED
            .with_label_values(&[source])
            .inc_by(outcome.dead_lettered as u64);
        metrics::BATCHES.with_label_values(&[source]).inc();
        metrics::BATCH_ROWS
            .with_label_values(&[source])
            .observe(outcome.claimed as f64);
        metrics::BATCH_SECONDS
            .with_label_values(&[source])
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(
            source,
            rows = outcome.claimed,
            dead = outcome.dead_lettered,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "batch shipped"
        );
        Ok(outcome)
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
        good: &HotColumns,
        dead: &DeadColumns,
    ) -> Result<(), RelayError> {
        let timeout = self.timeout;
        if !good.ids.is_empty() {
            let result = self.insert_events(tx, statements, good).await;
            if let Err(err) = result {
                // 23514: no partition for a row's day (dropped after archiving).
                if err.sqlstate() == Some("23514") {
                    self.partitions.forget(&good.times);
                    return Err(RelayError::PartitionMissing);
                }
                return Err(err);
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
                        &dead.event.ids,
                        &dead.event.users,
                        &dead.event.kinds,
                        &dead.event.times,
                        &dead.event.sources,
                        &dead.event.payloads,
                        &dead.enqueued,
                        &dead.codes,
                        &dead.reasons,
                    ],
                ),
            )
            .await?;
        }
        Ok(())
    }

    /// COPY for large batches, unless it met a stored event; else INSERT.
    async fn insert_events(
        &self,
        tx: &mut Transaction<'_>,
        statements: &HotStatements,
        good: &HotColumns,
    ) -> Result<(), RelayError> {
        if good.ids.len() >= COPY_MIN_ROWS && self.copy_hot(tx, good).await? {
            return Ok(());
        }
        db(
            "insert hot batch",
            self.timeout,
            tx.execute(
                &statements.insert_hot,
                &[
                    &good.ids,
                    &good.users,
                    &good.kinds,
                    &good.times,
                    &good.sources,
                    &good.payloads,
                ],
            ),
        )
        .await
        .map(|_| ())
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
            for i in 0..good.ids.len() {
                writer
                    .as_mut()
                    .write(&[
                        &good.ids[i],
                        &good.users[i],
                        &good.kinds[i],
                        &good.times[i],
                        &good.sources[i],
                        &RawJsonb(&good.payloads[i]),
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
                tracing::debug!(source = %self.source_name, rows = good.ids.len(), "batch holds events already stored; inserting with ON CONFLICT DO NOTHING");
                db("roll back to savepoint", timeout, savepoint.rollback()).await?;
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    fn observe(&self, ids: &[Uuid]) {
        if let Some(observer) = &self.observer {
            observer(&self.source_name, ids);
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
