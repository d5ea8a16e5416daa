//! Reads one user's rows from an archive file with ranged GETs.
//!
//! Files are sorted by user, so a user's rows of a day sit in one row
//! group (or two, at a boundary) and in a few pages of each column. The
//! file's footer and page index are fetched once (one suffix GET, sized by
//! the catalog's byte count) and cached, bounded by count; then the row
//! groups whose `user_id` statistics can hold the user, and in them the
//! pages whose page-index bounds can, give a row selection; the reader asks
//! for those pages of every column at once, and they are fetched as ONE
//! ranged GET spanning them per row group (a row group's column chunks are
//! contiguous, so the span is at most one row group: row groups are kept
//! small for this). When the user's day crosses a row-group boundary, the
//! adjacent groups are fetched as one span before the reader asks. A warm
//! page costs one GET per file; a cold one adds the footer's GET.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, TryStreamExt};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use strata_archive::layout::{self, USER_ID_COLUMN};
use strata_archive::{extend_rows, ObjectStore, StoreError};

use crate::event::Event;
use crate::lock;
use crate::read_error::{ArchiveReadError, ReadError};

/// First guess at the footer + page index size (one GET when it fits).
const FOOTER_GUESS: u64 = 256 * 1024;

/// Requests made, for metrics and the benchmark.
#[derive(Debug, Default)]
pub struct ColdStats {
    /// GETs issued (metadata and data).
    pub gets: AtomicU64,
    /// Bytes fetched.
    pub bytes: AtomicU64,
    /// Metadata cache hits.
    pub metadata_hits: AtomicU64,
    /// Metadata cache misses.
    pub metadata_misses: AtomicU64,
}

/// Cached metadata of one object.
struct Cached {
    /// The key the object was found under (final, or staging before
    /// publication).
    found_at: String,
    metadata: ArrowReaderMetadata,
}

/// A bounded cache of file metadata (first in, first out: archive files
/// are immutable, so entries never go stale, only cold).
struct MetadataCache {
    capacity: usize,
    entries: HashMap<String, Arc<Cached>>,
    order: VecDeque<String>,
}

impl MetadataCache {
    fn get(&self, key: &str) -> Option<Arc<Cached>> {
        self.entries.get(key).cloned()
    }

    fn insert(&mut self, key: String, value: Arc<Cached>) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
    }
}

/// (file key, user id).
type RowKey = (String, String);

/// Decoded rows of one user in one file, kept (first in, first out)
/// within a byte budget: a user's archived rows never change, and the
/// same user's files are read again and again (paging back and forth,
/// GetEvent for ids that are not there), so repeated reads cost no GET.
struct RowCache {
    budget_bytes: usize,
    used_bytes: usize,
    /// (file key, user) -> (rows, their size in bytes).
    entries: HashMap<RowKey, (Arc<Vec<Event>>, usize)>,
    order: VecDeque<(String, String)>,
}

impl RowCache {
    fn get(&self, key: &str, user: &str) -> Option<Arc<Vec<Event>>> {
        self.entries
            .get(&(key.to_string(), user.to_string()))
            .map(|(rows, _)| rows.clone())
    }

    fn insert(&mut self, key: &str, user: &str, rows: Arc<Vec<Event>>) {
        let size: usize = rows
            .iter()
            .map(|r| r.user_id.len() + r.kind.len() + r.source.len() + r.payload.len() + 64)
            .sum::<usize>()
            + 64;
        if size > self.budget_bytes / 4 {
            return;
        }
        let entry = (key.to_string(), user.to_string());
        if let Some((_, old)) = self.entries.insert(entry.clone(), (rows, size)) {
            self.used_bytes = self.used_bytes.saturating_sub(old);
        } else {
            self.order.push_back(entry);
        }
        self.used_bytes += size;
        while self.used_bytes > self.budget_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((_, freed)) = self.entries.remove(&old) {
                self.used_bytes = self.used_bytes.saturating_sub(freed);
            }
        }
    }
}

/// Bytes of decoded rows the default reader keeps.
pub const DEFAULT_ROW_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Ranged, cached reads of archive files.
pub struct ColdReader {
    store: ObjectStore,
    prefix: String,
    cache: Mutex<MetadataCache>,
    rows: Mutex<RowCache>,
    stats: Arc<ColdStats>,
}

/// One ranged GET, counted.
async fn counted_get(
    store: &ObjectStore,
    stats: &ColdStats,
    key: &str,
    range: Range<u64>,
) -> Result<Bytes, StoreError> {
    stats.gets.fetch_add(1, Ordering::Relaxed);
    crate::metrics::COLD_GETS.inc();
    let bytes = store.get_range(key, range).await?;
    stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    crate::metrics::COLD_BYTES.inc_by(bytes.len() as u64);
    Ok(bytes)
}

fn archive_error(key: &str, err: impl Into<ArchiveReadError>) -> ReadError {
    ReadError::Archive {
        key: key.to_string(),
        error: err.into(),
    }
}

impl ColdReader {
    /// A reader of archive objects under `prefix` caching the metadata of
    /// up to `cache_files` files.
    pub fn new(store: ObjectStore, prefix: impl Into<String>, cache_files: usize) -> Self {
        Self {
            store,
            prefix: prefix.into(),
            cache: Mutex::new(MetadataCache {
                capacity: cache_files,
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
            // No row cache without a metadata cache (the benchmark's
            // cold-cache runs build the reader that way).
            rows: Mutex::new(RowCache {
                budget_bytes: if cache_files == 0 {
                    0
                } else {
                    DEFAULT_ROW_CACHE_BYTES
                },
                used_bytes: 0,
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
            stats: Arc::new(ColdStats::default()),
        }
    }

    /// Request counters.
    pub fn stats(&self) -> &ColdStats {
        &self.stats
    }

    /// Forgets every cached footer and row (the benchmark's cold-cache
    /// runs).
    pub fn clear_cache(&self) {
        let mut cache = lock(&self.cache);
        cache.entries.clear();
        cache.order.clear();
        self.clear_rows();
    }

    /// Forgets every cached row (footers stay): what a warm-metadata read
    /// of rows not read before costs.
    pub fn clear_rows(&self) {
        let mut rows = lock(&self.rows);
        rows.entries.clear();
        rows.order.clear();
        rows.used_bytes = 0;
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        counted_get(&self.store, &self.stats, key, range).await
    }

    /// The metadata of `key` (`size` bytes long), from the cache or the
    /// store: final key first, then the staging key (not published yet).
    async fn metadata(&self, key: &str, size: u64) -> Result<Arc<Cached>, ReadError> {
        if let Some(cached) = lock(&self.cache).get(key) {
            self.stats.metadata_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(cached);
        }
        self.stats.metadata_misses.fetch_add(1, Ordering::Relaxed);
        let staging = layout::staging_key(&self.prefix, key);
        let guess = FOOTER_GUESS.min(size);
        let mut found = None;
        // Publication moves the object while we look: final, staging, final.
        for candidate in [key, staging.as_str(), key] {
            match self.get_range(candidate, size - guess..size).await {
                Ok(tail) => {
                    found = Some((candidate.to_string(), tail));
                    break;
                }
                Err(err) if err.not_found() => continue,
                Err(err) => return Err(err.into()),
            }
        }
        let Some((found_at, mut tail)) = found else {
            return Err(archive_error(key, ArchiveReadError::Missing));
        };
        let metadata = loop {
            let mut reader =
                ParquetMetaDataReader::new().with_page_index_policy(PageIndexPolicy::Required);
            match reader.try_parse_sized(&tail, size) {
                Ok(()) => break reader.finish().map_err(|e| archive_error(key, e))?,
                Err(ParquetError::NeedMoreData(needed)) if (needed as u64) > tail.len() as u64 => {
                    let needed = (needed as u64).min(size);
                    tail = self.get_range(&found_at, size - needed..size).await?;
                }
                Err(err) => return Err(archive_error(key, err)),
            }
        };
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
        let metadata = ArrowReaderMetadata::try_new(Arc::new(metadata), options)
            .map_err(|e| archive_error(key, e))?;
        let cached = Arc::new(Cached { found_at, metadata });
        lock(&self.cache).insert(key.to_string(), cached.clone());
        Ok(cached)
    }

    /// Every row of `user` in the file `key` (`size` bytes), in file order.
    pub async fn user_rows(
        &self,
        key: &str,
        size: u64,
        user: &str,
    ) -> Result<Vec<Event>, ReadError> {
        if let Some(rows) = lock(&self.rows).get(key, user) {
            return Ok(rows.as_ref().clone());
        }
        let rows = Arc::new(self.fetch_user_rows(key, size, user).await?);
        lock(&self.rows).insert(key, user, rows.clone());
        Ok(Arc::try_unwrap(rows).unwrap_or_else(|shared| shared.as_ref().clone()))
    }

    /// [`Self::user_rows`] from the object store.
    async fn fetch_user_rows(
        &self,
        key: &str,
        size: u64,
        user: &str,
    ) -> Result<Vec<Event>, ReadError> {
        let cached = self.metadata(key, size).await?;
        let metadata = cached.metadata.metadata().clone();
        let (row_groups, selection) = select(&metadata, user.as_bytes());
        if row_groups.is_empty() {
            return Ok(Vec::new());
        }
        // Across a row-group boundary the reader would fetch each group
        // on its own; the groups are adjacent, so one GET covers both.
        let prefetched = if row_groups.len() > 1 {
            let span = groups_span(&metadata, &row_groups);
            let bytes = self
                .get_range(&cached.found_at, span.clone())
                .await
                .map_err(|e| archive_error(key, e))?;
            Some((span.start, bytes))
        } else {
            None
        };
        let input = SpanReader {
            store: self.store.clone(),
            stats: self.stats.clone(),
            key: cached.found_at.clone(),
            metadata: metadata.clone(),
            prefetched,
        };
        let stream =
            ParquetRecordBatchStreamBuilder::new_with_metadata(input, cached.metadata.clone())
                .with_row_groups(row_groups)
                .with_row_selection(selection)
                .with_batch_size(4096)
                .build()
                .map_err(|e| archive_error(key, e))?;
        let batches: Vec<_> = stream
            .try_collect()
            .await
            .map_err(|e| archive_error(key, e))?;
        let mut rows = Vec::new();
        for batch in &batches {
            extend_rows(&mut rows, batch, |row| row.user_id == user)
                .map_err(|e| archive_error(key, e))?;
        }
        Ok(rows)
    }
}

/// Row groups whose `user_id` bounds hold `user`, and within them the rows
/// of the pages whose page-index bounds do (across the selected groups, in
/// order, as the reader expects).
fn select(metadata: &ParquetMetaData, user: &[u8]) -> (Vec<usize>, RowSelection) {
    let mut groups = Vec::new();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut offset = 0usize;
    for (index, group) in metadata.row_groups().iter().enumerate() {
        let rows = group.num_rows().max(0) as usize;
        let column = group.column(USER_ID_COLUMN);
        let may_hold = match column.statistics() {
            Some(stats) => match (stats.min_bytes_opt(), stats.max_bytes_opt()) {
                (Some(min), Some(max)) => min <= user && user <= max,
                _ => true,
            },
            None => true,
        };
        if !may_hold {
            continue;
        }
        let pages = page_rows(metadata, index, rows, user);
        if pages.is_empty() {
            continue;
        }
        groups.push(index);
        ranges.extend(pages.into_iter().map(|r| r.start + offset..r.end + offset));
        offset += rows;
    }
    let selection = RowSelection::from_consecutive_ranges(ranges.into_iter(), offset);
    (groups, selection)
}

/// The bytes from the first column chunk of the first of `groups` to the
/// end of the last chunk of the last one.
fn groups_span(metadata: &ParquetMetaData, groups: &[usize]) -> Range<u64> {
    let chunks = groups
        .iter()
        .filter_map(|&group| metadata.row_groups().get(group))
        .flat_map(|group| group.columns().iter().map(|column| column.byte_range()));
    let (mut start, mut end) = (u64::MAX, 0);
    for (offset, length) in chunks {
        start = start.min(offset);
        end = end.max(offset.saturating_add(length));
    }
    start.min(end)..end
}

/// Rows (within row group `group` of `rows` rows) of the `user_id` pages
/// whose bounds hold `user`; every row when there is no page index.
fn page_rows(
    metadata: &ParquetMetaData,
    group: usize,
    rows: usize,
    user: &[u8],
) -> Vec<Range<usize>> {
    let all = std::iter::once(0..rows).collect::<Vec<_>>();
    let Some(page_index) = metadata.page_index() else {
        return all;
    };
    let (Some(ColumnIndexMetaData::BYTE_ARRAY(index)), Some(offsets)) = (
        page_index.column_index(group, USER_ID_COLUMN),
        page_index.offset_index(group, USER_ID_COLUMN),
    ) else {
        return all;
    };
    let locations = offsets.page_locations();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    for (page, location) in locations.iter().enumerate() {
        let (Some(min), Some(max)) = (index.min_value(page), index.max_value(page)) else {
            continue;
        };
        if min > user || user > max {
            continue;
        }
        let start = location.first_row_index.max(0) as usize;
        let end = locations
            .get(page + 1)
            .map_or(rows, |next| next.first_row_index.max(0) as usize);
        match ranges.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => ranges.push(start..end),
        }
    }
    ranges
}

/// Serves the Parquet reader's byte ranges with one GET spanning them, or
/// from bytes already fetched when they hold the ranges.
struct SpanReader {
    store: ObjectStore,
    stats: Arc<ColdStats>,
    key: String,
    metadata: Arc<ParquetMetaData>,
    /// Bytes from this offset, fetched before the reader asked.
    prefetched: Option<(u64, Bytes)>,
}

impl SpanReader {
    /// `range` out of the prefetched bytes, when they hold it.
    fn prefetched(&self, range: &Range<u64>) -> Option<Bytes> {
        let (start, bytes) = self.prefetched.as_ref()?;
        let from = usize::try_from(range.start.checked_sub(*start)?).ok()?;
        let to = usize::try_from(range.end.checked_sub(*start)?).ok()?;
        (from <= to && to <= bytes.len()).then(|| bytes.slice(from..to))
    }
}

impl AsyncFileReader for SpanReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            if let Some(bytes) = self.prefetched(&range) {
                return Ok(bytes);
            }
            counted_get(&self.store, &self.stats, &self.key, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            let held: Option<Vec<Bytes>> = ranges.iter().map(|r| self.prefetched(r)).collect();
            if let Some(held) = held {
                return Ok(held);
            }
            let (Some(start), Some(end)) = (
                ranges.iter().map(|r| r.start).min(),
                ranges.iter().map(|r| r.end).max(),
            ) else {
                return Ok(Vec::new());
            };
            let span = counted_get(&self.store, &self.stats, &self.key, start..end)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))?;
            Ok(ranges
                .iter()
                .map(|r| span.slice((r.start - start) as usize..(r.end - start) as usize))
                .collect())
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let metadata = self.metadata.clone();
        async move { Ok(metadata) }.boxed()
    }
}
