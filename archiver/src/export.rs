//! Streams rows out of the hot store into Parquet files in bounded memory.
//!
//! Three stages run at once, joined by small bounded channels: this task
//! decodes `COPY ... TO STDOUT (FORMAT binary)` into Arrow batches (and
//! hashes each row as Postgres sent it); a blocking thread encodes the
//! batches into Parquet spool files; the caller's task uploads and verifies
//! each finished file while the next is written. Memory is a few batches
//! plus one row group per stage, whatever the size of the day.
//!
//! Reading a file back into rows is `strata_archive::read_rows`; here only
//! [`check_file`] reads one, to verify an upload.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::RecordBatch;
use bytes::Buf;
use futures_util::{pin_mut, StreamExt};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};
use strata_archive::layout::{self, ContentHasher};
use strata_archive::row::{for_each_row, BatchBuilder, RowRef};
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::{BinaryCopyOutRow, BinaryCopyOutStream};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::Client;

use crate::catalog;
use crate::error::ArchiveError;

/// Rows per Arrow batch handed to the encoder.
const BATCH_ROWS: usize = 8192;

/// Column types of the export query, in [`layout::COLUMNS`] order.
const COLUMN_TYPES: [Type; 7] = [
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::UUID,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::TIMESTAMPTZ,
];

/// A finished, closed Parquet file in the spool directory.
#[derive(Debug, Clone)]
pub struct SpoolFile {
    /// Where it is.
    pub path: PathBuf,
    /// Position among the files of this export (0-based).
    pub index: u32,
    /// Rows in it.
    pub rows: u64,
    /// File size.
    pub bytes: u64,
    /// First user (byte order).
    pub min_user_id: String,
    /// Last user (byte order).
    pub max_user_id: String,
    /// SHA-256 of the file's bytes as written.
    pub sha256: String,
    /// [`ContentHasher`] digest of its rows as read from Postgres.
    pub content_sha256: String,
}

/// What to export and how to cut it into files.
pub struct ExportPlan {
    /// `SELECT` of [`layout::COLUMNS`], sorted; no bind parameters (COPY
    /// takes none), so every literal in it must be validated by the caller.
    pub select: String,
    /// Directory for spool files.
    pub spool_dir: PathBuf,
    /// A new file starts at the first user boundary after this many rows.
    pub max_file_rows: u64,
    /// Parquet settings.
    pub properties: WriterProperties,
    /// Bumped as rows are read, for progress displays of long exports.
    pub rows_read: Arc<AtomicU64>,
}

/// Totals of one export.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportTotals {
    /// Rows read from Postgres.
    pub rows: u64,
    /// Bytes of the JSON payloads read (the raw size compression is judged by).
    pub payload_bytes: u64,
}

/// Runs `plan` on `client` (inside the caller's transaction, whose snapshot
/// defines the export) and sends each finished file to `files`.
pub async fn export(
    client: &Client,
    plan: ExportPlan,
    files: mpsc::Sender<SpoolFile>,
) -> Result<ExportTotals, ArchiveError> {
    let (batches_tx, batches_rx) = mpsc::channel::<ToEncoder>(2);
    let spool_dir = plan.spool_dir.clone();
    let properties = plan.properties.clone();
    let encoder =
        tokio::task::spawn_blocking(move || encode_files(batches_rx, files, spool_dir, properties));
    let decoded = decode(client, &plan, batches_tx).await;
    let encoded = encoder.await.map_err(|error| ArchiveError::Thread {
        context: "encoder thread",
        error,
    })?;
    // A decode error usually closes the channel the encoder reads, so
    // report the first cause.
    let totals = decoded?;
    encoded?;
    Ok(totals)
}

enum ToEncoder {
    Batch(RecordBatch),
    EndFile(FileMeta),
}

struct FileMeta {
    rows: u64,
    min_user_id: String,
    max_user_id: String,
    content_sha256: String,
}

struct OpenFile {
    rows: u64,
    min_user_id: String,
    last_user_id: String,
    hasher: ContentHasher,
}

impl OpenFile {
    fn finish(self) -> FileMeta {
        FileMeta {
            rows: self.rows,
            min_user_id: self.min_user_id,
            max_user_id: self.last_user_id,
            content_sha256: self.hasher.finish(),
        }
    }
}

async fn decode(
    client: &Client,
    plan: &ExportPlan,
    batches: mpsc::Sender<ToEncoder>,
) -> Result<ExportTotals, ArchiveError> {
    let copy = catalog::copy_out_sql(&plan.select);
    let stream = client
        .copy_out(copy.as_str())
        .await
        .map_err(ArchiveError::db("start COPY of the day"))?;
    let rows = BinaryCopyOutStream::new(stream, &COLUMN_TYPES);
    pin_mut!(rows);
    let schema = layout::schema();
    let mut builder = BatchBuilder::new(schema.clone(), BATCH_ROWS);
    let mut current: Option<OpenFile> = None;
    let mut totals = ExportTotals::default();
    let send = |message| {
        let batches = batches.clone();
        async move {
            batches
                .send(message)
                .await
                .map_err(|_| ArchiveError::StageStopped { stage: "encoder" })
        }
    };
    while let Some(row) = rows.next().await {
        let row = row.map_err(ArchiveError::db("read COPY of the day"))?;
        let row = row_ref(&row)?;
        if let Some(open) = &current {
            if open.rows >= plan.max_file_rows && open.last_user_id != row.user_id {
                if !builder.is_empty() {
                    plan.rows_read
                        .fetch_add(builder.len() as u64, Ordering::Relaxed);
                    send(ToEncoder::Batch(builder.finish()?)).await?;
                }
                if let Some(done) = current.take() {
                    send(ToEncoder::EndFile(done.finish())).await?;
                }
            }
        }
        let open = current.get_or_insert_with(|| OpenFile {
            rows: 0,
            min_user_id: row.user_id.to_string(),
            last_user_id: String::new(),
            hasher: ContentHasher::default(),
        });
        open.rows += 1;
        if open.last_user_id != row.user_id {
            open.last_user_id.clear();
            open.last_user_id.push_str(row.user_id);
        }
        open.hasher.add(&row);
        totals.rows += 1;
        totals.payload_bytes += row.payload.len() as u64;
        builder.push(&row);
        if builder.len() >= BATCH_ROWS {
            plan.rows_read
                .fetch_add(builder.len() as u64, Ordering::Relaxed);
            send(ToEncoder::Batch(builder.finish()?)).await?;
        }
    }
    if !builder.is_empty() {
        plan.rows_read
            .fetch_add(builder.len() as u64, Ordering::Relaxed);
        send(ToEncoder::Batch(builder.finish()?)).await?;
    }
    if let Some(done) = current.take() {
        send(ToEncoder::EndFile(done.finish())).await?;
    }
    Ok(totals)
}

fn row_ref(row: &BinaryCopyOutRow) -> Result<RowRef<'_>, ArchiveError> {
    let bad = |e: tokio_postgres::Error| ArchiveError::Db {
        context: "decode a row of the day".into(),
        error: e,
    };
    Ok(RowRef {
        user_id: row.try_get::<&str>(0).map_err(bad)?,
        occurred_at: row.try_get::<PgMicros>(1).map_err(bad)?.0,
        event_id: *row.try_get::<uuid::Uuid>(2).map_err(bad)?.as_bytes(),
        kind: row.try_get::<&str>(3).map_err(bad)?,
        source: row.try_get::<&str>(4).map_err(bad)?,
        payload: row.try_get::<JsonbText>(5).map_err(bad)?.0,
        ingested_at: row.try_get::<PgMicros>(6).map_err(bad)?.0,
    })
}

/// A `timestamptz` as UTC microseconds since the Unix epoch, straight from
/// the binary format (microseconds since 2000-01-01).
struct PgMicros(i64);

const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

impl<'a> FromSql<'a> for PgMicros {
    fn from_sql(
        _: &Type,
        mut raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if raw.len() != 8 {
            return Err("timestamptz is not 8 bytes".into());
        }
        Ok(Self(raw.get_i64() + PG_EPOCH_OFFSET_MICROS))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

/// `jsonb`'s text, as Postgres prints it (binary format: version 1, text).
struct JsonbText<'a>(&'a str);

impl<'a> FromSql<'a> for JsonbText<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        match raw.split_first() {
            Some((1, text)) => Ok(Self(std::str::from_utf8(text)?)),
            _ => Err("unsupported jsonb binary version".into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }
}

/// Hashes and counts bytes on their way to the file.
struct HashingWriter {
    file: std::io::BufWriter<std::fs::File>,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn encode_files(
    mut batches: mpsc::Receiver<ToEncoder>,
    files: mpsc::Sender<SpoolFile>,
    spool_dir: PathBuf,
    properties: WriterProperties,
) -> Result<(), ArchiveError> {
    let mut writer: Option<(ArrowWriter<HashingWriter>, PathBuf)> = None;
    let mut index = 0u32;
    while let Some(message) = batches.blocking_recv() {
        match message {
            ToEncoder::Batch(batch) => {
                if writer.is_none() {
                    writer = Some(open_writer(&spool_dir, index, &properties)?);
                }
                if let Some((w, _)) = writer.as_mut() {
                    w.write(&batch)?;
                }
            }
            ToEncoder::EndFile(meta) => {
                let Some((w, path)) = writer.take() else {
                    continue;
                };
                let mut sink = w.into_inner()?;
                sink.flush().map_err(ArchiveError::spool(&path))?;
                let file = sink
                    .file
                    .into_inner()
                    .map_err(|e| ArchiveError::spool(&path)(e.into_error()))?;
                file.sync_all().map_err(ArchiveError::spool(&path))?;
                let spool = SpoolFile {
                    path,
                    index,
                    rows: meta.rows,
                    bytes: sink.bytes,
                    min_user_id: meta.min_user_id,
                    max_user_id: meta.max_user_id,
                    sha256: layout::hex(&sink.hasher.finalize()),
                    content_sha256: meta.content_sha256,
                };
                index += 1;
                if files.blocking_send(spool).is_err() {
                    return Err(ArchiveError::StageStopped { stage: "uploader" });
                }
            }
        }
    }
    Ok(())
}

fn open_writer(
    dir: &Path,
    index: u32,
    properties: &WriterProperties,
) -> Result<(ArrowWriter<HashingWriter>, PathBuf), ArchiveError> {
    let path = dir.join(format!("part-{index:05}.parquet"));
    let file = std::fs::File::create(&path).map_err(ArchiveError::spool(&path))?;
    let sink = HashingWriter {
        file: std::io::BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let writer = ArrowWriter::try_new(sink, layout::schema(), Some(properties.clone()))?;
    Ok((writer, path))
}

/// What reading a file back found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    /// Rows decoded.
    pub rows: u64,
    /// SHA-256 of the bytes.
    pub sha256: String,
    /// [`ContentHasher`] digest of the decoded rows.
    pub content_sha256: String,
}

/// Reads a local Parquet file completely: its bytes' digest, and its rows'
/// count and content digest. Blocking; run it off the async runtime.
pub fn check_file(path: &Path) -> Result<FileCheck, ArchiveError> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(ArchiveError::spool(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(ArchiveError::spool(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let sha256 = layout::hex(&hasher.finalize());
    let file = std::fs::File::open(path).map_err(ArchiveError::spool(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(BATCH_ROWS)
        .build()?;
    let mut content = ContentHasher::default();
    for batch in reader {
        let batch = batch?;
        for_each_row(&batch, |row| content.add(row))?;
    }
    Ok(FileCheck {
        rows: content.rows(),
        sha256,
        content_sha256: content.finish(),
    })
}
