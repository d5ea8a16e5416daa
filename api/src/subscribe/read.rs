//! The one statement every subscription read runs (catch-up pages and the
//! live feeds alike): the events after a position, in position order,
//! matching a filter, with the bounds that make the answer safe to act on.
//!
//! It reads a bounded range of transactions (at most [`SCAN_TRANSACTIONS`]
//! after the cursor), so a filter that matches nothing still costs a
//! bounded amount per statement; in the same snapshot it returns the
//! newest transaction number visible in that range (everything up to it
//! is visible: the log is a prefix, see `migrations/store/0009_stream.sql`)
//! and the stream's floor.

use tokio_postgres::types::Type;

use super::filter::Filter;
use super::position::{Position, RowKey};
use crate::event::Event;
use crate::pool::PreparedStatements;
use crate::read_error::{db, decode, ReadError};

/// Settings of the subscriptions' sessions: the read statement's plan is
/// made once per session (generic), possibly while statistics are stale
/// or say "empty" (a new install, a log that grew since the last ANALYZE),
/// when a sequential scan of the log or of a partition looks cheapest and
/// would then run on every read. Every table the statement reads has the
/// index it needs, so sequential scans are ruled out instead. That makes
/// every plan look expensive, which would trigger JIT compilation (seconds
/// per read over a month of partitions): off.
/// Parallel workers are off too: a read is a few index probes per
/// transaction, and a generic plan made after a large fill may otherwise
/// start workers on every statement (measured: catch-up ran at a third of
/// its speed).
pub const SESSION_SETTINGS: &str =
    "SET enable_seqscan = off; SET jit = off; SET max_parallel_workers_per_gather = 0;";

/// Transactions one statement looks at, at most.
pub const SCAN_TRANSACTIONS: i64 = 1000;
/// Events a read aims at: it covers whole transactions up to this many
/// (at least one transaction), and returns at most twice as many, so a
/// transaction up to twice this size is read once, not once per page
/// (see [`page`]; one more row is fetched to tell a transaction of
/// exactly twice this size from a larger one).
pub const PAGE_EVENTS: i64 = 1000;

/// $1/$3/$4/$5 the cursor (seq; key or NULL for the whole transaction),
/// $2 the last transaction to look at, $6..$11 the filter, $12 the events
/// to aim at, $16 the most to return plus one, $13..$15 a consumer group's split
/// (the key's payload path or NULL for the user id, the bucket count or
/// NULL for no buckets, the buckets to return or NULL for all): the read
/// covers whole transactions from the first one not yet delivered (the
/// cursor's own when it stands inside it) while their `events` add up to
/// at most $12, and always that first one, so its work is bounded
/// whatever the filter keeps and a transaction is not read again for
/// the rows a previous page left of it (only one larger than $16 is read
/// in several pages, by key); each transaction's rows are looked up only
/// in the partitions of its `occurred_at` range. Times are sent as
/// timestamps (binary), not converted to numbers in SQL (numeric
/// arithmetic, three per row, was a tenth of a read's cost).
const READ_SQL: &str = "WITH scanned AS MATERIALIZED (
    SELECT seq, txid, events, first_at, last_at, committed_at,
           sum(events) OVER (ORDER BY seq) - events AS before
      FROM strata.stream_log
     WHERE seq >= $1 AND seq <= $2 AND (seq > $1 OR $3::text IS NOT NULL)),
bound AS (
    SELECT (SELECT max(seq) FROM scanned) AS visible,
           (SELECT max(seq) FROM scanned WHERE before = 0 OR before + events <= $12) AS window_end,
           (SELECT floor FROM strata.stream_floor) AS floor)
SELECT b.visible, b.window_end, b.floor, e.seq, e.user_id, e.occurred_at, e.event_id, e.kind,
       e.source, e.payload, e.ingested_at, e.committed_at, e.bucket
  FROM bound b
  LEFT JOIN LATERAL (
    SELECT l.seq, a.user_id,
           a.occurred_at, a.event_id, a.kind, a.source, a.payload::text AS payload,
           a.ingested_at, l.committed_at,
           CASE WHEN $14::int4 IS NOT NULL THEN
             strata.stream_bucket(CASE WHEN $13::text[] IS NULL THEN a.user_id
                                       ELSE coalesce(a.payload #>> $13::text[], '') END, $14::int4)
           END AS bucket
      FROM scanned l
      JOIN strata.activity a ON a.stream_txid = l.txid
                            AND a.occurred_at BETWEEN l.first_at AND l.last_at
     WHERE l.seq <= b.window_end AND a.stream_txid IS NOT NULL
       AND (l.seq > $1 OR ($3::text IS NOT NULL AND (a.user_id, a.occurred_at, a.event_id)
            > ($3::text COLLATE \"C\", 'epoch'::timestamptz + $4::int8 * interval '1 microsecond', $5::uuid)))
       AND ($6::text[] IS NULL OR a.kind = ANY ($6::text[]))
       AND ($7::text[] IS NULL OR a.source = ANY ($7::text[]))
       AND ($8::text[] IS NULL OR a.user_id = ANY ($8::text[]))
       AND ($9::text IS NULL OR a.payload @> $9::text::jsonb)
       AND ($10::text IS NULL OR jsonb_path_match(a.payload, $10::text::jsonpath, $11::text::jsonb, true))
       AND ($15::int4[] IS NULL
            OR strata.stream_bucket(CASE WHEN $13::text[] IS NULL THEN a.user_id
                                         ELSE coalesce(a.payload #>> $13::text[], '') END, $14::int4)
               = ANY ($15::int4[]))
     ORDER BY l.seq, a.user_id, a.occurred_at, a.event_id
     LIMIT $16) e ON true
 ORDER BY e.seq, e.user_id, e.occurred_at, e.event_id";

const READ_TYPES: [Type; 16] = [
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::UUID,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT_ARRAY,
    Type::INT4,
    Type::INT4_ARRAY,
    Type::INT8,
];

/// Where a subscription starts: the newest transaction number, the first
/// one numbered at or after $1 by the database's clock (found through the
/// `committed_at` index; the clock grows with the numbers unless it is
/// stepped back), and the floor, in one snapshot.
const START_SQL: &str = "SELECT (SELECT head FROM strata.stream_head),
       (SELECT seq FROM strata.stream_log WHERE committed_at >= $1 ORDER BY committed_at, seq LIMIT 1),
       (SELECT floor FROM strata.stream_floor),
       (SELECT committed_at <= $1 FROM strata.stream_log WHERE seq = (SELECT floor + 1 FROM strata.stream_floor))";

/// An event and the transaction that stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRow {
    /// The commit sequence of its transaction.
    pub seq: i64,
    /// When that transaction was numbered (UTC µs; just before its commit).
    pub committed_at: i64,
    /// The event.
    pub event: Event,
    /// Its bucket when read for a consumer group ([`Split`]).
    pub bucket: Option<i32>,
}

/// A consumer group's share of the stream: events are split into
/// `buckets` by the hash of a partition key (`strata.stream_bucket`), and
/// a read returns those of the `owned` buckets, each with its bucket.
#[derive(Debug, Clone, Copy)]
pub struct Split<'a> {
    /// The key's payload path; `None`: the user id.
    pub key_path: Option<&'a [String]>,
    /// How many buckets the group has.
    pub buckets: i32,
    /// The buckets to read.
    pub owned: &'a [i32],
}

impl StreamRow {
    /// Whether the row comes after `cursor` (as `position() > cursor`,
    /// without building the position).
    pub fn is_after(&self, cursor: &Position) -> bool {
        match self.seq.cmp(&cursor.seq) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => cursor.key.as_ref().is_some_and(|key| {
                (
                    self.event.user_id.as_str(),
                    self.event.occurred_at,
                    self.event.event_id,
                ) > (key.user_id.as_str(), key.occurred_at, key.event_id)
            }),
        }
    }

    /// The row's position.
    pub fn position(&self) -> Position {
        Position {
            seq: self.seq,
            key: Some(RowKey {
                user_id: self.event.user_id.clone(),
                occurred_at: self.event.occurred_at,
                event_id: self.event.event_id,
            }),
        }
    }
}

/// What one read found.
#[derive(Debug, Clone)]
pub struct Page {
    /// Matching events after the cursor, in position order.
    pub events: Vec<StreamRow>,
    /// How far the read accounts for: the last event when the page is
    /// full, else the last transaction of the window it read (filtered-out
    /// events included), else the cursor.
    pub after: Position,
    /// Nothing after `after` was visible.
    pub at_end: bool,
    /// The stream's floor: positions at or below it are gone.
    pub floor: i64,
}

fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    index: usize,
) -> Result<T, ReadError> {
    const CONTEXT: &str = "a subscription read";
    row.try_get(index).map_err(decode(CONTEXT))
}

/// A timestamp column as UTC microseconds.
fn timestamp_micros(row: &tokio_postgres::Row, index: usize) -> Result<i64, ReadError> {
    Ok(column::<chrono::DateTime<chrono::Utc>>(row, index)?.timestamp_micros())
}

/// The events after `cursor` that match `filter` (and are in `split`'s
/// buckets when given): whole transactions of about `limit` events (see
/// [`PAGE_EVENTS`]), at most twice that many.
pub async fn page(
    client: &mut impl PreparedStatements,
    filter: &Filter,
    cursor: &Position,
    limit: i64,
    split: Option<Split<'_>>,
) -> Result<Page, ReadError> {
    let statement = client
        .prepared(READ_SQL, &READ_TYPES)
        .await
        .map_err(db("prepare the subscription read"))?;
    let upper = cursor.seq.saturating_add(SCAN_TRANSACTIONS);
    let (user, micros, id) = match &cursor.key {
        Some(key) => (
            Some(key.user_id.as_str()),
            Some(key.occurred_at),
            Some(key.event_id),
        ),
        None => (None, None, None),
    };
    let key_path = split.and_then(|split| split.key_path);
    let buckets = split.map(|split| split.buckets);
    let owned = split.map(|split| split.owned);
    let most = limit.saturating_mul(2);
    // One row more than returned: a cut transaction shows as a row too many.
    let fetch = most.saturating_add(1);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 16] = [
        &cursor.seq,
        &upper,
        &user,
        &micros,
        &id,
        &filter.kinds,
        &filter.sources,
        &filter.users,
        &filter.contains,
        &filter.path_predicate,
        &filter.path_variables,
        &limit,
        &key_path,
        &buckets,
        &owned,
        &fetch,
    ];
    // Bounded by the session's statement_timeout (see `pool.rs`).
    let rows = client
        .client()
        .query(&statement, &params)
        .await
        .map_err(db("the subscription read"))?;
    let Some(first) = rows.first() else {
        return Err(ReadError::Unexpected("the subscription read"));
    };
    let visible: Option<i64> = column(first, 0)?;
    let window_end: Option<i64> = column(first, 1)?;
    let floor: i64 = column(first, 2)?;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let Some(seq) = column::<Option<i64>>(row, 3)? else {
            continue;
        };
        events.push(StreamRow {
            seq,
            committed_at: timestamp_micros(row, 11)?,
            event: Event {
                user_id: column(row, 4)?,
                occurred_at: timestamp_micros(row, 5)?,
                event_id: column(row, 6)?,
                kind: column(row, 7)?,
                source: column(row, 8)?,
                payload: column(row, 9)?,
                ingested_at: timestamp_micros(row, 10)?,
            },
            bucket: column(row, 12)?,
        });
    }
    // Only a transaction larger than `most` on its own can be cut short:
    // the page then ends inside it, at its `most`-th row.
    let full = events.len() as i64 > most;
    if full {
        events.truncate(usize::try_from(most).unwrap_or(usize::MAX));
    }
    let (after, at_end) = match (events.last(), window_end) {
        (Some(last), _) if full => (last.position(), false),
        (_, Some(end)) => {
            let after = Position::after_transaction(end).max(cursor.clone());
            // The end when the window reached the newest visible number
            // and that one is short of the scan's bound.
            let at_end = Some(end) == visible && end < upper;
            (after, at_end)
        }
        (_, None) => (cursor.clone(), true),
    };
    Ok(Page {
        events,
        after,
        at_end,
        floor,
    })
}

/// Where a subscription starting now, or at a time, begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The newest transaction number handed out.
    pub head: i64,
    /// The first transaction committed at or after the time asked for.
    pub first_at: Option<i64>,
    /// The floor.
    pub floor: i64,
    /// Whether the oldest transaction kept committed at or before the time
    /// asked for (`None`: none kept), so nothing after it is gone.
    pub oldest_kept_before: Option<bool>,
}

impl Start {
    /// The transaction a start at the time looked up comes after;
    /// `Err(floor)` when that time is older than the stream still holds.
    pub fn before_time(&self) -> Result<i64, i64> {
        if self.floor > 0 && self.oldest_kept_before == Some(false) {
            return Err(self.floor);
        }
        Ok(self.first_at.map_or(self.head, |first| first - 1))
    }
}

/// An event as the stream sends it.
pub fn stream_event(row: &StreamRow) -> strata_proto::v1::StreamEvent {
    strata_proto::v1::StreamEvent {
        event: Some(crate::convert::to_proto(&row.event)),
        commit_sequence: row.seq,
    }
}

/// Rows in their wire form, for responses that may share them. Their
/// payloads (most of a row's size) move into the encoding: the rows are
/// left as positions, so a page is held once in memory, not twice.
pub fn into_wire(rows: &mut [StreamRow]) -> strata_proto::wire::EncodedEvents {
    let events: Vec<strata_proto::v1::StreamEvent> = rows
        .iter_mut()
        .map(|row| {
            let payload = std::mem::take(&mut row.event.payload);
            let mut event = stream_event(row);
            if let Some(event) = event.event.as_mut() {
                event.payload_json = payload;
            }
            event
        })
        .collect();
    strata_proto::wire::EncodedEvents::encode(&events)
}

/// The stream's bounds as seen now, with `at` (UTC µs) looked up.
pub async fn start(
    client: &mut impl PreparedStatements,
    at_micros: i64,
) -> Result<Start, ReadError> {
    const TYPES: [Type; 1] = [Type::TIMESTAMPTZ];
    let statement = client
        .prepared(START_SQL, &TYPES)
        .await
        .map_err(db("prepare the subscription start"))?;
    let at = crate::event::timestamp(at_micros);
    let row = client
        .client()
        .query_one(&statement, &[&at])
        .await
        .map_err(db("the subscription start"))?;
    Ok(Start {
        head: column(&row, 0)?,
        first_at: column(&row, 1)?,
        floor: column(&row, 2)?,
        oldest_kept_before: column(&row, 3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn row(seq: i64, user: &str, micros: i64, id: u128) -> StreamRow {
        StreamRow {
            seq,
            committed_at: 0,
            event: Event {
                user_id: user.into(),
                occurred_at: micros,
                event_id: Uuid::from_u128(id),
                kind: "k".into(),
                source: "s".into(),
                payload: "{}".into(),
                ingested_at: 0,
            },
            bucket: None,
        }
    }

    #[test]
    fn is_after_agrees_with_comparing_positions() {
        let rows = [
            row(4, "b", 5, 1),
            row(5, "a", 9, 1),
            row(5, "b", 1, 1),
            row(5, "b", 1, 2),
            row(5, "é", 0, 0),
            row(6, "a", 0, 0),
        ];
        let mut cursors = vec![
            Position::after_transaction(4),
            Position::after_transaction(5),
        ];
        cursors.extend(rows.iter().map(StreamRow::position));
        for cursor in &cursors {
            for candidate in &rows {
                assert_eq!(
                    candidate.is_after(cursor),
                    candidate.position() > *cursor,
                    "{candidate:?} after {cursor:?}"
                );
            }
        }
    }
}
