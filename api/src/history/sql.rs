//! The page and find statements (constant SQL: the request only binds
//! values) and the decoding of their rows into events and archive files.

use tokio_postgres::types::{FromSql, Type};

use super::ColdFile;
use crate::event::Event;
use crate::read_error::{decode, ReadError};

/// Column `index` of `row` as a `T`; [`ReadError::Decode`] instead of the
/// panic of `Row::get` when the value does not decode.
fn column<'a, T: FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    index: usize,
    context: &'static str,
) -> Result<T, ReadError> {
    row.try_get(index).map_err(decode(context))
}

/// A page statement's rows: its events, and its archive files in (day,
/// seq) order.
pub(super) fn split_rows(
    rows: &[tokio_postgres::Row],
) -> Result<(Vec<Event>, Vec<ColdFile>), ReadError> {
    const CONTEXT: &str = "an archive file of the catalog";
    let mut events = Vec::new();
    let mut files = Vec::new();
    for row in rows {
        match column::<Option<String>>(row, 7, CONTEXT)? {
            None => events.push(event_from_row(row)?),
            Some(key) => files.push(ColdFile {
                key,
                bytes: column::<i64>(row, 8, CONTEXT)?.max(0) as u64,
                day: column(row, 9, CONTEXT)?,
                seq: column(row, 10, CONTEXT)?,
            }),
        }
    }
    files.sort_by_key(|f| (f.day, f.seq));
    Ok((events, files))
}

/// One event of a page or find statement (its columns 0 to 6).
fn event_from_row(row: &tokio_postgres::Row) -> Result<Event, ReadError> {
    const CONTEXT: &str = "an event of the hot store";
    Ok(Event {
        user_id: column(row, 0, CONTEXT)?,
        occurred_at: column(row, 1, CONTEXT)?,
        event_id: column(row, 2, CONTEXT)?,
        kind: column(row, 3, CONTEXT)?,
        source: column(row, 4, CONTEXT)?,
        payload: column(row, 5, CONTEXT)?,
        ingested_at: column(row, 6, CONTEXT)?,
    })
}

/// The event columns of `strata.activity` and `strata.late_activity`, in
/// [`event_from_row`]'s order, for a table aliased `e`.
macro_rules! event_columns {
    () => {
        "e.user_id, (extract(epoch FROM e.occurred_at) * 1000000)::int8, e.event_id,
        e.kind, e.source, e.payload::text, (extract(epoch FROM e.ingested_at) * 1000000)::int8,
        NULL::text, NULL::int8, NULL::date, NULL::int4"
    };
}

/// The committed days between $8 and $9: served cold.
macro_rules! committed_days {
    () => {
        "(SELECT day FROM strata.archive_days
           WHERE state = 'committed' AND day BETWEEN $8 AND $9)"
    };
}

/// One page in one statement, so in one snapshot: the hot rows of days not
/// committed, the late rows of committed days, and the committed days'
/// archive files that may hold the user (their event columns NULL). $1 user,
/// $2/$3 range (prunes partitions), $4 kinds (empty: all), $5/$6 cursor
/// (exclusive), $7 limit, $8/$9 the range's first and last day.
macro_rules! page_sql {
    ($cmp:literal, $order:literal) => {
        concat!(
            "(SELECT ", event_columns!(), "
               FROM strata.activity e
              WHERE e.user_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3
                AND (cardinality($4::text[]) = 0 OR e.kind = ANY($4))
                AND (e.occurred_at, e.event_id) ", $cmp, " ($5, $6)
                AND NOT ((e.occurred_at AT TIME ZONE 'UTC')::date = ANY ", committed_days!(), ")
              ORDER BY ", $order, "
              LIMIT $7)
             UNION ALL
             (SELECT ", event_columns!(), "
               FROM strata.late_activity e
              WHERE e.user_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3
                AND (cardinality($4::text[]) = 0 OR e.kind = ANY($4))
                AND (e.occurred_at, e.event_id) ", $cmp, " ($5, $6)
                AND e.day = ANY ", committed_days!(), "
              ORDER BY ", $order, "
              LIMIT $7)
             UNION ALL
             SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, f.object_key, f.bytes, f.day, f.seq
               FROM strata.archive_files f
              WHERE f.day = ANY ", committed_days!(), "
                AND f.min_user_id <= $1 AND f.max_user_id >= $1"
        )
    };
}

pub(super) const PAGE_ASC: &str = page_sql!(">", "e.occurred_at, e.event_id");
pub(super) const PAGE_DESC: &str = page_sql!("<", "e.occurred_at DESC, e.event_id DESC");

/// The page statements' parameter types.
pub(super) const PAGE_TYPES: &[Type] = &[
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::TEXT_ARRAY,
    Type::TIMESTAMPTZ,
    Type::UUID,
    Type::INT8,
    Type::DATE,
    Type::DATE,
];

/// One event by id in one statement: the hot row when its day is not
/// committed, else the late row not archived yet; and the user's archive
/// files of committed days. $1 user, $2 event id.
pub(super) const FIND: &str = concat!(
    "(SELECT ",
    event_columns!(),
    "
       FROM strata.activity e
      WHERE e.user_id = $1 AND e.event_id = $2
        AND NOT EXISTS (SELECT FROM strata.archive_days d
                         WHERE d.day = (e.occurred_at AT TIME ZONE 'UTC')::date
                           AND d.state = 'committed')
     UNION ALL
     SELECT ",
    event_columns!(),
    "
       FROM strata.late_activity e
      WHERE e.user_id = $1 AND e.event_id = $2
        AND e.day IN (SELECT day FROM strata.archive_days WHERE state = 'committed')
      LIMIT 1)
     UNION ALL
     SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, f.object_key, f.bytes, f.day, f.seq
       FROM strata.archive_files f
       JOIN strata.archive_days d ON d.day = f.day AND d.state = 'committed'
      WHERE f.min_user_id <= $1 AND f.max_user_id >= $1"
);
