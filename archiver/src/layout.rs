//! What the archive looks like: object keys, the Parquet schema and writer
//! settings, and the content checksum that ties a file to the rows it was
//! written from.
//!
//! Layout under `<prefix>/`:
//! - `activity/date=YYYY-MM-DD/part-NNNNN-<attempt>.parquet`: committed
//!   data files only (Hive style, so `date` becomes a column for readers);
//! - `activity/date=YYYY-MM-DD/_manifest.json`: the committed file list
//!   (underscore files are skipped by Spark, Hive and pyarrow datasets);
//! - `_staging/...`: uploads not yet committed; garbage unless committed.

use std::sync::Arc;

use arrow_array::builder::{FixedSizeBinaryBuilder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::extension::{Json, Uuid as UuidExtension};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::NaiveDate;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};

/// Column order of every archive file (and of the export query).
pub const COLUMNS: [&str; 7] = [
    "user_id",
    "occurred_at",
    "event_id",
    "kind",
    "source",
    "payload",
    "ingested_at",
];

/// The Arrow schema of archive files: names and types of the hot store's
/// `strata.activity`, timestamps as UTC microseconds, `event_id` as a
/// 16-byte UUID, `payload` as JSON text.
pub fn schema() -> SchemaRef {
    let utc = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("occurred_at", utc(), false),
        Field::new("event_id", DataType::FixedSizeBinary(16), false)
            .with_extension_type(UuidExtension),
        Field::new("kind", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("payload", DataType::Utf8, false).with_extension_type(Json::default()),
        Field::new("ingested_at", utc(), false),
    ]))
}

/// Parquet settings: zstd, page-level statistics (column and offset
/// indexes), a bloom filter on `user_id`, and the sort order declared so
/// engines can rely on it.
pub fn writer_properties(row_group_rows: usize) -> WriterProperties {
    let user_id = ColumnPath::from("user_id");
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(row_group_rows))
        .set_column_bloom_filter_enabled(user_id.clone(), true)
        .set_column_bloom_filter_fpp(user_id.clone(), 0.01)
        .set_column_bloom_filter_max_ndv(user_id, row_group_rows as u64)
        // Payloads are unique per row: dictionary pages would only be
        // built to be thrown away.
        .set_column_dictionary_enabled(ColumnPath::from("payload"), false)
        .set_column_dictionary_enabled(ColumnPath::from("event_id"), false)
        .set_sorting_columns(Some(
            (0..3)
                .map(|column_idx| SortingColumn {
                    column_idx,
                    descending: false,
                    nulls_first: false,
                })
                .collect(),
        ))
        .set_created_by(format!("strata {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Key prefix of one day's committed files.
pub fn day_dir(prefix: &str, day: NaiveDate) -> String {
    format!(
        "{}activity/date={}/",
        with_slash(prefix),
        day.format("%Y-%m-%d")
    )
}

/// Key of a committed data file.
pub fn data_key(prefix: &str, day: NaiveDate, seq: u32, attempt: &str) -> String {
    format!("{}part-{seq:05}-{attempt}.parquet", day_dir(prefix, day))
}

/// Where a data file is uploaded before its commit.
pub fn staging_key(prefix: &str, final_key: &str) -> String {
    let relative = final_key
        .strip_prefix(&with_slash(prefix))
        .unwrap_or(final_key);
    format!("{}{relative}", staging_dir(prefix))
}

/// Prefix of uncommitted uploads.
pub fn staging_dir(prefix: &str) -> String {
    format!("{}_staging/", with_slash(prefix))
}

/// Key of a day's manifest.
pub fn manifest_key(prefix: &str, day: NaiveDate) -> String {
    format!("{}_manifest.json", day_dir(prefix, day))
}

fn with_slash(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
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

/// Running SHA-256 over rows in file order, every field length-prefixed, so
/// the checksum computed while reading the hot store must equal the one
/// computed by decoding the uploaded file.
#[derive(Clone, Default)]
pub struct ContentHasher {
    hasher: Sha256,
    rows: u64,
}

impl ContentHasher {
    /// Adds one row.
    pub fn add(&mut self, row: &RowRef<'_>) {
        let h = &mut self.hasher;
        for text in [row.user_id, row.kind, row.source, row.payload] {
            h.update((text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
        }
        h.update(row.occurred_at.to_le_bytes());
        h.update(row.event_id);
        h.update(row.ingested_at.to_le_bytes());
        self.rows += 1;
    }

    /// Rows added so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Hex digest.
    pub fn finish(self) -> String {
        hex(&self.hasher.finalize())
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Accumulates rows into an Arrow batch.
pub struct BatchBuilder {
    user_id: StringBuilder,
    occurred_at: TimestampMicrosecondBuilder,
    event_id: FixedSizeBinaryBuilder,
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
            event_id: FixedSizeBinaryBuilder::with_capacity(capacity, 16),
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
        // Cannot fail: the value is exactly the builder's 16 bytes wide.
        let _ = self.event_id.append_value(row.event_id);
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

/// Calls `visit` for every row of `batch` (a batch of [`schema`]).
pub fn for_each_row(batch: &RecordBatch, mut visit: impl FnMut(&RowRef<'_>)) -> Result<(), String> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMicrosecondType;
    if batch.num_columns() != COLUMNS.len() {
        return Err(format!(
            "expected {} columns, found {}",
            COLUMNS.len(),
            batch.num_columns()
        ));
    }
    let text = |i: usize| {
        batch.column(i).as_string_opt::<i32>().ok_or_else(|| {
            format!(
                "column {} is {}, not Utf8",
                COLUMNS[i],
                batch.column(i).data_type()
            )
        })
    };
    let micros = |i: usize| {
        batch
            .column(i)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| format!("column {} is not timestamp(us)", COLUMNS[i]))
    };
    let user_id = text(0)?;
    let occurred_at = micros(1)?;
    let event_id = batch
        .column(2)
        .as_fixed_size_binary_opt()
        .ok_or_else(|| "column event_id is not fixed_size_binary(16)".to_string())?;
    let kind = text(3)?;
    let source = text(4)?;
    let payload = text(5)?;
    let ingested_at = micros(6)?;
    for column in batch.columns() {
        if column.null_count() > 0 {
            return Err("unexpected null".into());
        }
    }
    for i in 0..batch.num_rows() {
        let id: [u8; 16] = event_id
            .value(i)
            .try_into()
            .map_err(|_| "event_id is not 16 bytes".to_string())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_hive_layout() {
        let day = NaiveDate::from_ymd_opt(2026, 3, 9).unwrap();
        assert_eq!(
            data_key("prod/", day, 2, "e7-ab"),
            "prod/activity/date=2026-03-09/part-00002-e7-ab.parquet"
        );
        assert_eq!(
            data_key("", day, 0, "x"),
            "activity/date=2026-03-09/part-00000-x.parquet"
        );
        assert_eq!(
            staging_key(
                "prod",
                "prod/activity/date=2026-03-09/part-00002-e7-ab.parquet"
            ),
            "prod/_staging/activity/date=2026-03-09/part-00002-e7-ab.parquet"
        );
        assert_eq!(
            manifest_key("a/b", day),
            "a/b/activity/date=2026-03-09/_manifest.json"
        );
    }

    #[test]
    fn content_hash_sees_field_boundaries() {
        let row = |user_id, kind| RowRef {
            user_id,
            occurred_at: 1,
            event_id: [0; 16],
            kind,
            source: "s",
            payload: "{}",
            ingested_at: 2,
        };
        let mut a = ContentHasher::default();
        a.add(&row("ab", "c"));
        let mut b = ContentHasher::default();
        b.add(&row("a", "bc"));
        assert_ne!(a.finish(), b.finish());
    }

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
}
