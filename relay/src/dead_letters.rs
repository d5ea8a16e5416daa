//! Inspecting and re-driving dead letters (`strata dead-letters`).
//!
//! A requeue moves an intact dead letter back into its source's outbox, with
//! its event_id, user_id, kind, occurred_at, source and payload unchanged,
//! for the relays to judge again (after the operator widened the window, or
//! fixed a limit). It spans two databases, so it is ordered to be safe at
//! any crash: the dead letters are locked, the outbox rows are committed,
//! then the dead letters are deleted. A crash in between leaves both; a
//! second requeue then enqueues the event again, which the hot store drops
//! as a duplicate (same key, same contents), so no event is stored twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use strata_core::config::DatabaseUrl;
use uuid::Uuid;

use crate::claim::PgTimestamp;
use crate::connect::connect;
use crate::error::{db, RelayError};

/// `application_name` of the dead-letter command's sessions.
const APPLICATION_NAME: &str = "strata-dead-letters";

/// Dead letters a requeue moves per round trip.
const REQUEUE_CHUNK: i64 = 500;

const LIST_SQL: &str = "SELECT source_name, outbox_id, event_id, left(user_id, 80), kind, \
         occurred_at, reason_code, reason, payload_bytes, intact, dead_lettered_at \
     FROM strata.dead_letters \
     WHERE ($1::text IS NULL OR source_name = $1) AND ($2::text IS NULL OR reason_code = $2) \
     ORDER BY dead_lettered_at, source_name, outbox_id LIMIT $3";

const SUMMARY_SQL: &str =
    "SELECT source_name, reason_code, count(*), count(*) FILTER (WHERE NOT intact) \
     FROM strata.dead_letters \
     WHERE ($1::text IS NULL OR source_name = $1) AND ($2::text IS NULL OR reason_code = $2) \
     GROUP BY 1, 2 ORDER BY 1, 2";

/// Dead letters of one source to requeue, a chunk at a time after the
/// cursor `($4, $5)`, and only those dead-lettered before the command
/// started (`$7`): a requeued row that comes back as a dead letter is not
/// requeued again by the same command. Conflicting duplicates only when
/// asked for by reason (they come back the same way).
const LOCK_SQL: &str =
    "SELECT outbox_id, event_id, user_id, kind, occurred_at, source, payload, intact \
     FROM strata.dead_letters \
     WHERE source_name = $1 \
       AND ($2::text IS NULL OR reason_code = $2) \
       AND ($2::text IS NOT NULL OR reason_code <> 'conflicting_duplicate') \
       AND (cardinality($3::bigint[]) = 0 OR outbox_id = ANY($3)) \
       AND (outbox_id, event_id) > ($4::int8, $5::uuid) \
       AND dead_lettered_at <= $7 \
     ORDER BY outbox_id, event_id LIMIT $6 FOR UPDATE SKIP LOCKED";

const ENQUEUE_SQL: &str = "INSERT INTO strata_outbox.events (event_id, user_id, kind, occurred_at, source, payload) \
     SELECT e, u, k, o, s, p::jsonb \
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[]) AS t(e, u, k, o, s, p)";

const DELETE_SQL: &str = "DELETE FROM strata.dead_letters \
     WHERE source_name = $1 AND (outbox_id, event_id) IN (SELECT * FROM unnest($2::bigint[], $3::uuid[]))";

/// Which dead letters a command applies to.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this source (required for a requeue).
    pub source: Option<String>,
    /// Only this reason code (`occurred_at_out_of_window`, ...).
    pub reason: Option<String>,
    /// Only these outbox ids (empty: any).
    pub outbox_ids: Vec<i64>,
}

/// One dead letter, as listed.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Source it came from.
    pub source_name: String,
    /// Its id in that source's outbox.
    pub outbox_id: i64,
    /// The producer's event id.
    pub event_id: Uuid,
    /// At most 80 characters of the user id.
    pub user_id: String,
    /// The kind (possibly a prefix).
    pub kind: String,
    /// `occurred_at`, printed (`infinity`, BC dates and all).
    pub occurred_at: String,
    /// Stable reason code.
    pub reason_code: String,
    /// Human-readable reason.
    pub reason: String,
    /// Size of the payload in the outbox (unknown for old dead letters).
    pub payload_bytes: Option<i64>,
    /// Whether the stored copy is the original (only those can be requeued).
    pub intact: bool,
    /// When it was dead-lettered.
    pub dead_lettered_at: DateTime<Utc>,
}

/// Dead letters per source and reason.
#[derive(Debug, Clone)]
pub struct ReasonCount {
    /// Source.
    pub source_name: String,
    /// Reason code.
    pub reason_code: String,
    /// How many.
    pub count: i64,
    /// How many of them are not intact (cannot be requeued).
    pub not_intact: i64,
}

/// What a requeue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequeueReport {
    /// Moved back into the outbox.
    pub requeued: u64,
    /// Left in place: their copy is a prefix or lossy (oversized payloads).
    pub skipped_not_intact: u64,
}

fn row_err(context: &'static str) -> impl Fn(tokio_postgres::Error) -> RelayError {
    RelayError::row(context)
}

/// Lists up to `limit` dead letters, oldest first, and counts per reason.
pub async fn list(
    hot_url: &DatabaseUrl,
    selection: &Selection,
    limit: i64,
    timeout: Duration,
) -> Result<(Vec<DeadLetter>, Vec<ReasonCount>), RelayError> {
    let client = connect(hot_url, APPLICATION_NAME, timeout).await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
        [&selection.source, &selection.reason];
    let summary = db(
        "count dead letters",
        timeout,
        client.query(SUMMARY_SQL, &params),
    )
    .await?
    .iter()
    .map(|row| {
        let read = row_err("count dead letters");
        Ok(ReasonCount {
            source_name: row.try_get(0).map_err(&read)?,
            reason_code: row.try_get(1).map_err(&read)?,
            count: row.try_get(2).map_err(&read)?,
            not_intact: row.try_get(3).map_err(&read)?,
        })
    })
    .collect::<Result<Vec<_>, RelayError>>()?;
    let rows = db(
        "list dead letters",
        timeout,
        client.query(LIST_SQL, &[&selection.source, &selection.reason, &limit]),
    )
    .await?;
    let mut letters = Vec::with_capacity(rows.len());
    for row in &rows {
        let read = row_err("list dead letters");
        let occurred_at: PgTimestamp = row.try_get(5).map_err(&read)?;
        letters.push(DeadLetter {
            source_name: row.try_get(0).map_err(&read)?,
            outbox_id: row.try_get(1).map_err(&read)?,
            event_id: row.try_get(2).map_err(&read)?,
            user_id: row.try_get(3).map_err(&read)?,
            kind: row.try_get(4).map_err(&read)?,
            occurred_at: occurred_at.describe(),
            reason_code: row.try_get(6).map_err(&read)?,
            reason: row.try_get(7).map_err(&read)?,
            payload_bytes: row.try_get(8).map_err(&read)?,
            intact: row.try_get(9).map_err(&read)?,
            dead_lettered_at: row.try_get(10).map_err(&read)?,
        });
    }
    Ok((letters, summary))
}

/// Moves the selected intact dead letters of one source back into its
/// outbox (see the module doc for why this is safe at any crash).
pub async fn requeue(
    hot_url: &DatabaseUrl,
    source_url: &DatabaseUrl,
    selection: &Selection,
    timeout: Duration,
) -> Result<RequeueReport, RelayError> {
    let source_name = selection
        .source
        .clone()
        .ok_or_else(|| RelayError::Config("a requeue needs --source".into()))?;
    let mut hot = connect(hot_url, APPLICATION_NAME, timeout).await?;
    let source = connect(source_url, APPLICATION_NAME, timeout).await?;
    // Outbox rows are deleted from the dead letters once committed here:
    // that commit must be durable whatever the database's default.
    db(
        "configure source session",
        timeout,
        source.batch_execute("SET synchronous_commit = on"),
    )
    .await?;
    let started: DateTime<Utc> = db(
        "read the clock",
        timeout,
        hot.query_one("SELECT now()", &[]),
    )
    .await?
    .try_get(0)
    .map_err(row_err("read the clock"))?;
    let mut report = RequeueReport::default();
    let mut after: (i64, Uuid) = (i64::MIN, Uuid::nil());
    loop {
        let tx = db("begin requeue", timeout, hot.transaction()).await?;
        let rows = db(
            "lock dead letters",
            timeout,
            tx.query(
                LOCK_SQL,
                &[
                    &source_name,
                    &selection.reason,
                    &selection.outbox_ids,
                    &after.0,
                    &after.1,
                    &REQUEUE_CHUNK,
                    &started,
                ],
            ),
        )
        .await?;
        if rows.is_empty() {
            db("end requeue", timeout, tx.commit()).await?;
            return Ok(report);
        }
        let read = row_err("lock dead letters");
        let mut outbox_ids = Vec::new();
        let (mut ids, mut users, mut kinds, mut times, mut sources, mut payloads) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for row in &rows {
            let outbox_id: i64 = row.try_get(0).map_err(&read)?;
            let event_id: Uuid = row.try_get(1).map_err(&read)?;
            after = after.max((outbox_id, event_id));
            if !row.try_get::<_, bool>(7).map_err(&read)? {
                report.skipped_not_intact += 1;
                continue;
            }
            outbox_ids.push(outbox_id);
            ids.push(event_id);
            users.push(row.try_get::<_, String>(2).map_err(&read)?);
            kinds.push(row.try_get::<_, String>(3).map_err(&read)?);
            times.push(row.try_get::<_, PgTimestamp>(4).map_err(&read)?);
            sources.push(row.try_get::<_, String>(5).map_err(&read)?);
            payloads.push(row.try_get::<_, String>(6).map_err(&read)?);
        }
        if !outbox_ids.is_empty() {
            db(
                "enqueue dead letters",
                timeout,
                source.execute(
                    ENQUEUE_SQL,
                    &[&ids, &users, &kinds, &times, &sources, &payloads],
                ),
            )
            .await?;
            // Wake idle relays now rather than at their next poll.
            db(
                "notify relays",
                timeout,
                source.batch_execute("NOTIFY strata_outbox"),
            )
            .await?;
            db(
                "delete requeued dead letters",
                timeout,
                tx.execute(DELETE_SQL, &[&source_name, &outbox_ids, &ids]),
            )
            .await?;
        }
        db("commit requeue", timeout, tx.commit()).await?;
        report.requeued += outbox_ids.len() as u64;
    }
}
