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
//!
//! The rows themselves (borrowed, owned, to and from Arrow batches) are in
//! [`crate::row`].

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::NaiveDate;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};

use crate::row::RowRef;

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

/// Index of the `user_id` column in [`COLUMNS`] and [`schema`]: the first,
/// the files' leading sort key, whose statistics and page index a reader
/// uses to find one user's rows.
pub const USER_ID_COLUMN: usize = 0;

/// The Arrow schema of archive files: names and types of the hot store's
/// `strata.activity`, timestamps as UTC microseconds, `event_id` as the
/// canonical 36-character UUID text and `payload` as JSON text, both plain
/// strings with no logical type: Spark 3.5 and 4 refuse the Parquet UUID
/// type (`PARQUET_TYPE_ILLEGAL`), a 16-byte id without it reads as binary
/// that `WHERE event_id = '...'` never matches, and Polars cannot cast the
/// JSON type to a string. Text ids cost about 0.2 points of the size
/// ratio to raw JSON; lowercase text sorts as the 16 bytes do. Files
/// written before (16-byte ids) stay readable ([`crate::row::for_each_row`]).
pub fn schema() -> SchemaRef {
    let utc = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("occurred_at", utc(), false),
        Field::new("event_id", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("payload", DataType::Utf8, false),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_id_column_is_where_readers_look_for_it() {
        assert_eq!(COLUMNS[USER_ID_COLUMN], "user_id");
        assert_eq!(schema().field(USER_ID_COLUMN).name(), "user_id");
    }

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
}
