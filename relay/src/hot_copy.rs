//! The binary COPY into `strata.activity`: its statement, its columns and
//! their types, and the writing of one row. The relay's fast path for large
//! batches (`hot_write.rs`) and the benchmarks that fill a hot store use
//! this one definition, so the columns and their wire types cannot drift
//! apart. `ingested_at` is not sent: the column's default stamps it.

use std::pin::Pin;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::CopyInSink;
use uuid::Uuid;

/// The statement that opens the COPY (see [`COLUMNS`] and [`TYPES`]).
pub const COPY_SQL: &str =
    "COPY strata.activity (event_id, user_id, kind, occurred_at, source, payload) \
     FROM STDIN (FORMAT binary)";

/// The last statement of every transaction that stored events: numbers
/// the transaction in `strata.stream_log` (the subscription position, see
/// `migrations/store/0009_stream.sql`) with how many events it stored ($1)
/// and the range of their `occurred_at` ($2, $3), and wakes the API's live
/// readers. The head's row lock it takes is held until the commit, so
/// numbers follow commit order; run it as late as possible, right before
/// COMMIT. Returns the number.
pub const STREAM_APPEND_SQL: &str = "WITH next AS (\
         UPDATE strata.stream_head SET head = head + 1 RETURNING head), \
     logged AS (\
         INSERT INTO strata.stream_log (seq, txid, events, first_at, last_at) \
         SELECT head, pg_current_xact_id(), $1::int4, $2::timestamptz, $3::timestamptz FROM next \
         RETURNING seq) \
     SELECT seq, pg_notify('strata_stream', seq::text) IS NULL AS quiet FROM logged";

/// The columns [`COPY_SQL`] names, in order.
pub const COLUMNS: [&str; 6] = [
    "event_id",
    "user_id",
    "kind",
    "occurred_at",
    "source",
    "payload",
];

/// The wire type of each of [`COLUMNS`].
pub const TYPES: [Type; 6] = [
    Type::UUID,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::JSONB,
];

/// One row of the COPY, borrowed from wherever the caller keeps it.
pub struct HotRow<'a> {
    /// The event's idempotency key.
    pub event_id: &'a Uuid,
    /// Whose history the event is part of.
    pub user_id: &'a str,
    /// What happened.
    pub kind: &'a str,
    /// When it happened (decides the day's partition).
    pub occurred_at: &'a DateTime<Utc>,
    /// The producing system.
    pub source: &'a str,
    /// The payload as jsonb: a `serde_json::Value`, or [`RawJsonb`] for
    /// text that already is jsonb's text form.
    pub payload: &'a (dyn ToSql + Sync),
}

/// A binary COPY writer for [`COPY_SQL`]'s sink.
pub fn writer(sink: CopyInSink<Bytes>) -> BinaryCopyInWriter {
    BinaryCopyInWriter::new(sink, &TYPES)
}

/// Writes one row through `writer` (made by [`writer`]).
pub async fn write_row(
    writer: Pin<&mut BinaryCopyInWriter>,
    row: &HotRow<'_>,
) -> Result<(), tokio_postgres::Error> {
    writer
        .write(&[
            row.event_id,
            &row.user_id,
            &row.kind,
            row.occurred_at,
            &row.source,
            row.payload,
        ])
        .await
}

/// A payload already in jsonb's text form, sent as binary jsonb (version
/// byte 1, then the text) without parsing it into a `serde_json::Value`.
#[derive(Debug)]
pub struct RawJsonb<'a>(pub &'a str);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_names_the_columns_in_order() {
        let listed = format!("strata.activity ({}) FROM STDIN", COLUMNS.join(", "));
        assert!(COPY_SQL.contains(&listed), "{COPY_SQL}");
        assert_eq!(COLUMNS.len(), TYPES.len());
    }
}
