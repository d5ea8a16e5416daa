//! The archive's rows: borrowed from a decoded batch ([`RowRef`]), owned
//! ([`ArchivedRow`], what a reader of the archive gets back), and their
//! Arrow batches of [`layout::schema`](crate::layout::schema) both ways.
//!
//! [`extend_rows`] is the one conversion of archive data into owned rows:
//! the history API's ranged reader, [`read_rows`] and the tests all go
//! through it.

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;

use crate::layout::COLUMNS;

/// Rows per batch when [`read_rows`] decodes a whole file.
const READ_BATCH_ROWS: usize = 8192;

/// Archive data that does not decode into rows. Messages show their cause
/// (callers keep only the text, `to_string()`), so no cause is also the
/// `source()`: `{err:#}` would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// A batch whose column count is not that of the schema.
    #[error("expected {expected} columns, found {found}")]
    ColumnCount {
        /// Columns of the schema.
        expected: usize,
        /// Columns of the batch.
        found: usize,
    },
    /// A text column of another type.
    #[error("column {column} is {found}, not Utf8")]
    NotText {
        /// The column.
        column: &'static str,
        /// Its type in the batch.
        found: String,
    },
    /// A timestamp or id column of another type.
    #[error("column {column} is not {expected}")]
    ColumnType {
        /// The column.
        column: &'static str,
        /// The type the schema gives it.
        expected: &'static str,
    },
    /// A null in a column that allows none (none does).
    #[error("unexpected null")]
    Null,
    /// An `event_id` value that is not 16 bytes wide.
    #[error("event_id is not 16 bytes")]
    EventIdWidth,
    /// An `event_id` text that is not a UUID in canonical form.
    #[error("event_id {found:?} is not a lowercase hyphenated UUID")]
    EventIdText {
        /// The text (at most 64 characters of it).
        found: String,
    },
    /// The Parquet file cannot be read.
    #[error("parquet: {0}")]
    Parquet(parquet::errors::ParquetError),
    /// A batch of the Parquet file cannot be decoded.
    #[error("parquet: {0}")]
    Arrow(arrow_schema::ArrowError),
    /// The local file cannot be opened.
    #[error("read {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
}

impl From<parquet::errors::ParquetError> for FormatError {
    fn from(err: parquet::errors::ParquetError) -> Self {
        Self::Parquet(err)
    }
}

impl From<arrow_schema::ArrowError> for FormatError {
    fn from(err: arrow_schema::ArrowError) -> Self {
        Self::Arrow(err)
    }
}

/// One archived row, borrowed from wherever it was decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRef<'a> {
    /// The user.
    pub user_id: &'a str,
    /// UTC microseconds since the epoch.
    pub occurred_at: i64,
    /// The event id's 16 bytes.
    pub event_id: [u8; 16],
    /// Event kind.
    pub kind: &'a str,
    /// Producing service.
    pub source: &'a str,
    /// JSON text as Postgres prints jsonb.
    pub payload: &'a str,
    /// UTC microseconds since the epoch.
    pub ingested_at: i64,
}

/// One archived row, owned: what a reader of the archive gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedRow {
    /// The user.
    pub user_id: String,
    /// UTC microseconds since the epoch.
    pub occurred_at: i64,
    /// The event id.
    pub event_id: uuid::Uuid,
    /// Event kind.
    pub kind: String,
    /// Producing service.
    pub source: String,
    /// JSON text as Postgres prints jsonb.
    pub payload: String,
    /// UTC microseconds since the epoch.
    pub ingested_at: i64,
}

impl From<&RowRef<'_>> for ArchivedRow {
    fn from(row: &RowRef<'_>) -> Self {
        Self {
            user_id: row.user_id.to_string(),
            occurred_at: row.occurred_at,
            event_id: uuid::Uuid::from_bytes(row.event_id),
            kind: row.kind.to_string(),
            source: row.source.to_string(),
            payload: row.payload.to_string(),
            ingested_at: row.ingested_at,
        }
    }
}

/// Accumulates rows into an Arrow batch.
pub struct BatchBuilder {
    user_id: StringBuilder,
    occurred_at: TimestampMicrosecondBuilder,
    event_id: StringBuilder,
    kind: StringBuilder,
    source: StringBuilder,
    payload: StringBuilder,
    ingested_at: TimestampMicrosecondBuilder,
    len: usize,
    schema: SchemaRef,
}

impl BatchBuilder {
    /// An empty builder sized for `capacity` rows.
    pub fn new(schema: SchemaRef, capacity: usize) -> Self {
        Self {
            user_id: StringBuilder::with_capacity(capacity, capacity * 16),
            occurred_at: TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            event_id: StringBuilder::with_capacity(capacity, capacity * 36),
            kind: StringBuilder::with_capacity(capacity, capacity * 16),
            source: StringBuilder::with_capacity(capacity, capacity * 8),
            payload: StringBuilder::with_capacity(capacity, capacity * 512),
            ingested_at: TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            len: 0,
            schema,
        }
    }

    /// Appends one row.
    pub fn push(&mut self, row: &RowRef<'_>) {
        self.user_id.append_value(row.user_id);
        self.occurred_at.append_value(row.occurred_at);
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        self.event_id.append_value(
            uuid::Uuid::from_bytes(row.event_id)
                .hyphenated()
                .encode_lower(&mut text),
        );
        self.kind.append_value(row.kind);
        self.source.append_value(row.source);
        self.payload.append_value(row.payload);
        self.ingested_at.append_value(row.ingested_at);
        self.len += 1;
    }

    /// Rows buffered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no row is buffered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffered rows as a batch; the builder is empty afterwards.
    pub fn finish(&mut self) -> Result<RecordBatch, arrow_schema::ArrowError> {
        self.len = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.user_id.finish()),
            Arc::new(self.occurred_at.finish()),
            Arc::new(self.event_id.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.payload.finish()),
            Arc::new(self.ingested_at.finish()),
        ];
        RecordBatch::try_new(self.schema.clone(), columns)
    }
}

/// Calls `visit` for every row of `batch` (a batch of
/// [`layout::schema`](crate::layout::schema)), in batch order, borrowing
/// from the batch.
pub fn for_each_row(
    batch: &RecordBatch,
    mut visit: impl FnMut(&RowRef<'_>),
) -> Result<(), FormatError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMicrosecondType;
    if batch.num_columns() != COLUMNS.len() {
        return Err(FormatError::ColumnCount {
            expected: COLUMNS.len(),
            found: batch.num_columns(),
        });
    }
    let text = |i: usize| {
        batch
            .column(i)
            .as_string_opt::<i32>()
            .ok_or_else(|| FormatError::NotText {
                column: COLUMNS[i],
                found: batch.column(i).data_type().to_string(),
            })
    };
    let micros = |i: usize| {
        batch
            .column(i)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or(FormatError::ColumnType {
                column: COLUMNS[i],
                expected: "timestamp(us)",
            })
    };
    let user_id = text(0)?;
    let occurred_at = micros(1)?;
    // Text since Spark-readable archives; 16 bytes (the Parquet UUID
    // type) in files written before.
    let event_ids = match batch.column(2).as_string_opt::<i32>() {
        Some(texts) => EventIds::Text(texts),
        None => EventIds::Bytes(batch.column(2).as_fixed_size_binary_opt().ok_or(
            FormatError::ColumnType {
                column: "event_id",
                expected: "UUID text or fixed_size_binary(16)",
            },
        )?),
    };
    let kind = text(3)?;
    let source = text(4)?;
    let payload = text(5)?;
    let ingested_at = micros(6)?;
    for column in batch.columns() {
        if column.null_count() > 0 {
            return Err(FormatError::Null);
        }
    }
    for i in 0..batch.num_rows() {
        let id = event_ids.value(i)?;
        visit(&RowRef {
            user_id: user_id.value(i),
            occurred_at: occurred_at.value(i),
            event_id: id,
            kind: kind.value(i),
            source: source.value(i),
            payload: payload.value(i),
            ingested_at: ingested_at.value(i),
        });
    }
    Ok(())
}

/// The `event_id` column in either encoding archives have used.
enum EventIds<'a> {
    Text(&'a arrow_array::StringArray),
    Bytes(&'a arrow_array::FixedSizeBinaryArray),
}

impl EventIds<'_> {
    fn value(&self, i: usize) -> Result<[u8; 16], FormatError> {
        match self {
            EventIds::Text(texts) => {
                // Only the canonical form (lowercase, hyphenated): the one
                // that `WHERE event_id = '...'` and the sort order assume.
                let text = texts.value(i);
                let canonical = text.len() == uuid::fmt::Hyphenated::LENGTH
                    && !text.bytes().any(|b| b.is_ascii_uppercase());
                uuid::Uuid::try_parse(text)
                    .ok()
                    .filter(|_| canonical)
                    .map(|id| id.into_bytes())
                    .ok_or_else(|| FormatError::EventIdText {
                        found: text.chars().take(64).collect(),
                    })
            }
            EventIds::Bytes(bytes) => bytes
                .value(i)
                .try_into()
                .map_err(|_| FormatError::EventIdWidth),
        }
    }
}

/// Appends the rows of `batch` that `keep` accepts to `out`, owned, in
/// batch order (`keep` sees each row borrowed, so rejected rows cost no
/// allocation).
pub fn extend_rows(
    out: &mut Vec<ArchivedRow>,
    batch: &RecordBatch,
    mut keep: impl FnMut(&RowRef<'_>) -> bool,
) -> Result<(), FormatError> {
    for_each_row(batch, |row| {
        if keep(row) {
            out.push(ArchivedRow::from(row));
        }
    })
}

/// Decodes every row of the local archive file at `path`, in file order
/// (small files and tests; the archiver itself never materializes a file).
/// Blocking.
pub fn read_rows(path: &Path) -> Result<Vec<ArchivedRow>, FormatError> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(path).map_err(|error| FormatError::Io {
        path: path.display().to_string(),
        error,
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(READ_BATCH_ROWS)
        .build()?;
    let mut rows = Vec::new();
    for batch in reader {
        extend_rows(&mut rows, &batch?, |_| true)?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_from_batch(batch: &RecordBatch) -> Result<Vec<ArchivedRow>, FormatError> {
        let mut rows = Vec::new();
        extend_rows(&mut rows, batch, |_| true)?;
        Ok(rows)
    }
    use crate::layout::schema;

    #[test]
    fn batches_round_trip_rows() {
        let row = RowRef {
            user_id: "u1",
            occurred_at: 1_700_000_000_000_000,
            event_id: [7; 16],
            kind: "login",
            source: "auth",
            payload: r#"{"ip": "10.0.0.1"}"#,
            ingested_at: 1_700_000_000_000_001,
        };
        let mut builder = BatchBuilder::new(schema(), 4);
        builder.push(&row);
        let batch = builder.finish().unwrap();
        let mut seen = Vec::new();
        for_each_row(&batch, |r| seen.push(format!("{r:?}"))).unwrap();
        assert_eq!(seen, vec![format!("{row:?}")]);
    }

    #[test]
    fn batches_convert_to_owned_rows_and_filter_borrowed() {
        let row = |user_id| RowRef {
            user_id,
            occurred_at: 1_700_000_000_000_000,
            event_id: [9; 16],
            kind: "deposit",
            source: "ledger",
            payload: r#"{"amount": 5}"#,
            ingested_at: 1_700_000_000_000_002,
        };
        let mut builder = BatchBuilder::new(schema(), 4);
        builder.push(&row("u1"));
        builder.push(&row("u2"));
        let batch = builder.finish().unwrap();
        let all = rows_from_batch(&batch).unwrap();
        assert_eq!(
            all,
            vec![ArchivedRow::from(&row("u1")), ArchivedRow::from(&row("u2"))]
        );
        assert_eq!(all[1].event_id, uuid::Uuid::from_bytes([9; 16]));
        let mut only_u2 = Vec::new();
        extend_rows(&mut only_u2, &batch, |r| r.user_id == "u2").unwrap();
        assert_eq!(only_u2, vec![ArchivedRow::from(&row("u2"))]);
    }

    /// Archives are written with the id as lowercase UUID text (what Spark
    /// and every engine read); files written before, with the Parquet UUID
    /// type, still read to the same rows; text that is no UUID is refused.
    #[test]
    fn ids_are_written_as_text_and_files_with_16_byte_ids_still_read() {
        use arrow_array::{FixedSizeBinaryArray, StringArray, TimestampMicrosecondArray};
        use arrow_schema::extension::{Json, Uuid as UuidExtension};
        use arrow_schema::{DataType, Field, Schema, TimeUnit};

        let id = uuid::Uuid::parse_str("0190a3f2-7c1e-7d3b-9f00-5e2a1b3c4d5e").unwrap();
        let row = RowRef {
            user_id: "u1",
            occurred_at: 1_700_000_000_000_000,
            event_id: id.into_bytes(),
            kind: "login",
            source: "auth",
            payload: r#"{"ip": "10.0.0.1"}"#,
            ingested_at: 1_700_000_000_000_001,
        };
        let mut builder = BatchBuilder::new(schema(), 1);
        builder.push(&row);
        let batch = builder.finish().unwrap();
        assert_eq!(batch.schema().field(2).data_type(), &DataType::Utf8);
        assert_eq!(
            batch
                .column(2)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(0),
            "0190a3f2-7c1e-7d3b-9f00-5e2a1b3c4d5e"
        );

        // The encoding of files written before, through a real Parquet file.
        let utc = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let legacy = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, false),
            Field::new("occurred_at", utc(), false),
            Field::new("event_id", DataType::FixedSizeBinary(16), false)
                .with_extension_type(UuidExtension),
            Field::new("kind", DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
            Field::new("payload", DataType::Utf8, false).with_extension_type(Json::default()),
            Field::new("ingested_at", utc(), false),
        ]));
        let text = |value: &str| Arc::new(StringArray::from(vec![value])) as ArrayRef;
        let micros = |value: i64| {
            Arc::new(TimestampMicrosecondArray::from(vec![value]).with_timezone("UTC")) as ArrayRef
        };
        let ids = FixedSizeBinaryArray::try_from_iter(std::iter::once(id.into_bytes())).unwrap();
        let old_batch = RecordBatch::try_new(
            legacy.clone(),
            vec![
                text(row.user_id),
                micros(row.occurred_at),
                Arc::new(ids),
                text(row.kind),
                text(row.source),
                text(row.payload),
                micros(row.ingested_at),
            ],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.parquet");
        let mut writer = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            legacy,
            Some(crate::layout::writer_properties(1024)),
        )
        .unwrap();
        writer.write(&old_batch).unwrap();
        writer.close().unwrap();
        assert_eq!(read_rows(&path).unwrap(), vec![ArchivedRow::from(&row)]);
        assert_eq!(
            rows_from_batch(&batch).unwrap(),
            vec![ArchivedRow::from(&row)]
        );

        for not_canonical in [
            "not-a-uuid",
            "0190A3F2-7C1E-7D3B-9F00-5E2A1B3C4D5E",
            "0190a3f27c1e7d3b9f005e2a1b3c4d5e",
        ] {
            let mut bad = batch.columns().to_vec();
            bad[2] = text(not_canonical);
            let bad = RecordBatch::try_new(schema(), bad).unwrap();
            assert!(matches!(
                rows_from_batch(&bad),
                Err(FormatError::EventIdText { found }) if found == not_canonical
            ));
        }
    }

    #[test]
    fn a_batch_of_another_shape_is_refused_with_its_reason() {
        let batch = RecordBatch::try_from_iter([(
            "user_id",
            Arc::new(arrow_array::StringArray::from(vec!["u1"])) as ArrayRef,
        )])
        .unwrap();
        let err = rows_from_batch(&batch).unwrap_err();
        assert_eq!(err.to_string(), "expected 7 columns, found 1");
    }

    use strata_core::error_chain as chain;

    /// A file that cannot be read says why once, in its message (callers
    /// keep only the text), and the chain does not repeat it.
    #[test]
    fn unreadable_files_print_their_cause_once() {
        let scratch = std::env::temp_dir().join(format!("strata-{}", uuid::Uuid::new_v4()));
        let missing = scratch.join("part-00000.parquet");
        let io_text = std::fs::File::open(&missing)
            .expect_err("no such file")
            .to_string();
        let err = read_rows(&missing).unwrap_err();
        assert!(matches!(err, FormatError::Io { .. }), "{err:?}");
        assert_eq!(
            chain(&err),
            format!("read {}: {io_text}", missing.display())
        );

        std::fs::create_dir_all(&scratch).unwrap();
        let junk = scratch.join("junk.parquet");
        std::fs::write(&junk, b"not parquet").unwrap();
        let err = read_rows(&junk).unwrap_err();
        let _ = std::fs::remove_dir_all(&scratch);
        assert!(matches!(err, FormatError::Parquet(_)), "{err:?}");
        assert!(err.to_string().starts_with("parquet: "), "{err}");
        assert_eq!(chain(&err), err.to_string());

        let arrow = FormatError::from(arrow_schema::ArrowError::ComputeError("overflow".into()));
        assert_eq!(chain(&arrow), "parquet: Compute error: overflow");
    }
}
