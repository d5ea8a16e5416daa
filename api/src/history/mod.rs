//! One page of one user's history across the tiers (G3).
//!
//! The catalog decides the tier of each day: a day whose archive is
//! committed is served from its archive files plus the rows of
//! `strata.late_activity` not archived yet; every other day from the hot
//! store. The catalog, the hot rows and the late rows are read by one
//! statement, so in one snapshot (and one round trip), and committing a day
//! (or a late file) changes the catalog and `late_activity` in one
//! transaction, so each event is counted exactly once whichever way its
//! day is served, and a day that moves from hot to cold between two pages
//! yields the same rows on both sides of the seam. Pages are cut by the
//! (occurred_at, event_id) cursor.
//!
//! Cold reads fetch the day's files whose user range covers the user; the
//! files are immutable, at their final key once published and at their
//! staging key until then.
//!
//! Here: the query, the page and its two halves; `sql` holds the
//! statements and the decoding of their rows, `find` GetEvent's lookup,
//! `read_ahead` what long reads keep between pages.

use chrono::NaiveDate;
use strata_archive::ObjectStore;

use crate::cold::ColdReader;
use crate::event::{timestamp, Event};
use crate::page_token::Cursor;
use crate::pool::PreparedStatements;
use crate::read_error::{db, ArchiveReadError, ReadError};

mod find;
mod read_ahead;
mod sql;

pub use find::{ArchiveFiles, Lookup};
pub use read_ahead::ReadAhead;

use sql::{split_rows, PAGE_ASC, PAGE_DESC, PAGE_TYPES};

/// What to read.
#[derive(Debug, Clone)]
pub struct Query {
    /// Whose history.
    pub user_id: String,
    /// Range start, UTC microseconds, inclusive.
    pub from_micros: i64,
    /// Range end, UTC microseconds, exclusive.
    pub to_micros: i64,
    /// Only these kinds (empty: all).
    pub kinds: Vec<String>,
    /// Newest first.
    pub descending: bool,
    /// Continue after (descending: before) this event.
    pub after: Option<Cursor>,
    /// Events per page (at least 1).
    pub limit: usize,
}

/// One page.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// At most `limit` events, in the requested order.
    pub events: Vec<Event>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// Reads pages of histories from a hot store and its archive.
pub struct HistoryReader {
    cold: ColdReader,
}

/// The database half of a page ([`HistoryReader::hot_part`]): the rows
/// from the hot store and `late_activity`, and the archive files of the
/// range's committed days that may hold the user.
#[derive(Debug)]
pub struct HotPage {
    candidates: Vec<Event>,
    files: Vec<ColdFile>,
}

impl HotPage {
    /// Whether completing the page for `query` will read the archive: some
    /// file's day can still improve the page (the rule
    /// [`HistoryReader::cold_part`] applies).
    pub fn needs_archive(&self, query: &Query) -> bool {
        let limit = query.limit.max(1);
        match self.candidates.get(limit) {
            None => !self.files.is_empty(),
            Some(worst) => {
                let worst_day = day_of(worst.occurred_at);
                self.files.iter().any(|f| {
                    if query.descending {
                        f.day >= worst_day
                    } else {
                        f.day <= worst_day
                    }
                })
            }
        }
    }
}

/// An archive file of a committed day that may hold the user's rows.
#[derive(Debug)]
struct ColdFile {
    day: NaiveDate,
    seq: i32,
    key: String,
    bytes: u64,
}

/// Archive files whose footers the default reader keeps.
pub const DEFAULT_METADATA_CACHE_FILES: usize = 4096;

impl HistoryReader {
    /// A reader of the archive in `store` under `prefix`.
    pub fn new(store: ObjectStore, prefix: impl Into<String>) -> Self {
        Self::with_cache(store, prefix, DEFAULT_METADATA_CACHE_FILES)
    }

    /// The same, caching the metadata of at most `cache_files` files.
    pub fn with_cache(store: ObjectStore, prefix: impl Into<String>, cache_files: usize) -> Self {
        Self {
            cold: ColdReader::new(store, prefix, cache_files),
        }
    }

    /// The archive reader (request counters, cache control).
    pub fn cold(&self) -> &ColdReader {
        &self.cold
    }

    /// One page of `query` (the client must not be in a transaction).
    pub async fn page(
        &self,
        hot: &mut impl PreparedStatements,
        query: &Query,
    ) -> Result<Page, ReadError> {
        self.page_with(hot, query, &mut ReadAhead::none()).await
    }

    /// One page of `query`, taking archive rows from `ahead` and fetching
    /// the files of its next days with those of the day the page needs
    /// (for a read that goes on to the next page, like an export). The
    /// caller's connection is kept across the archive reads: callers with a
    /// pooled connection use [`Self::hot_part`] and [`Self::cold_part`] and
    /// give the connection back in between.
    pub async fn page_with(
        &self,
        hot: &mut impl PreparedStatements,
        query: &Query,
        ahead: &mut ReadAhead,
    ) -> Result<Page, ReadError> {
        let hot_page = self.hot_part(hot, query).await?;
        self.cold_part(hot_page, query, ahead).await
    }

    /// The database half of a page: hot and late rows, and which archive
    /// files may hold the rest, in one statement (one snapshot).
    pub async fn hot_part(
        &self,
        hot: &mut impl PreparedStatements,
        query: &Query,
    ) -> Result<HotPage, ReadError> {
        let limit = query.limit.max(1);
        let want = (limit + 1) as i64;
        let first_day = day_of(query.from_micros);
        let last_day = day_of(query.to_micros.saturating_sub(1));
        // Without a cursor, the page starts at the range's edge: just
        // before `from` (ascending) or at the exclusive `to` (descending).
        // Always binding one keeps the cursor an index condition of the
        // generic plan, so a deep page costs what the first one does.
        let (cursor_micros, cursor_id) = match (&query.after, query.descending) {
            (Some(c), _) => (c.occurred_at_micros, uuid::Uuid::from_bytes(c.event_id)),
            (None, false) => (query.from_micros.saturating_sub(1), uuid::Uuid::max()),
            (None, true) => (query.to_micros, uuid::Uuid::nil()),
        };
        let cursor_at = timestamp(cursor_micros);
        let from = timestamp(query.from_micros);
        let to = timestamp(query.to_micros);
        let statement = hot
            .prepared(
                if query.descending {
                    PAGE_DESC
                } else {
                    PAGE_ASC
                },
                PAGE_TYPES,
            )
            .await
            .map_err(db("prepare the page statement"))?;
        // Constant SQL; the request only binds values. One statement is one
        // snapshot and one round trip.
        let rows = hot
            .client()
            .query(
                &statement,
                &[
                    &query.user_id,
                    &from,
                    &to,
                    &query.kinds,
                    &cursor_at,
                    &cursor_id,
                    &want,
                    &first_day,
                    &last_day,
                ],
            )
            .await
            .map_err(db("read the hot store and the catalog"))?;
        let (mut candidates, files) = split_rows(&rows)?;
        sort(&mut candidates, query.descending);
        candidates.truncate(limit + 1);
        Ok(HotPage { candidates, files })
    }

    /// The archive half of a page: reads the files of [`HotPage`] that can
    /// still change the page. No database connection is needed.
    pub async fn cold_part(
        &self,
        hot_page: HotPage,
        query: &Query,
        ahead: &mut ReadAhead,
    ) -> Result<Page, ReadError> {
        let limit = query.limit.max(1);
        let HotPage {
            mut candidates,
            files,
        } = hot_page;
        // Cold days in reading order, until they cannot improve the page.
        let mut days: Vec<NaiveDate> = files.iter().map(|f| f.day).collect();
        days.dedup();
        if query.descending {
            days.reverse();
        }
        for (index, &day) in days.iter().enumerate() {
            let short = candidates.len() <= limit;
            if !short {
                let worst = &candidates[limit];
                let worst_day = day_of(worst.occurred_at);
                let beyond = if query.descending {
                    day < worst_day
                } else {
                    day > worst_day
                };
                if beyond {
                    break;
                }
            }
            // This day's files, and while the page is short, the next
            // days' too (with a read-ahead), fetched concurrently.
            let reach = if short { ahead.days.max(1) } else { 1 };
            let fetch_days = &days[index..(index + reach).min(days.len())];
            let missing: Vec<&ColdFile> = files
                .iter()
                .filter(|f| fetch_days.contains(&f.day) && !ahead.holds(&query.user_id, &f.key))
                .collect();
            let fetched = futures_util::future::try_join_all(
                missing
                    .iter()
                    .map(|f| self.cold.user_rows(&f.key, f.bytes, &query.user_id)),
            )
            .await?;
            for (file, rows) in missing.into_iter().zip(fetched) {
                ahead.insert(&query.user_id, &file.key, rows);
            }
            for file in files.iter().filter(|f| f.day == day) {
                let rows =
                    ahead
                        .rows(&query.user_id, &file.key)
                        .ok_or_else(|| ReadError::Archive {
                            key: file.key.clone(),
                            error: ArchiveReadError::Evicted,
                        })?;
                candidates.extend(rows.iter().filter(|r| matches(r, query)).cloned());
            }
            sort(&mut candidates, query.descending);
            candidates.truncate(limit + 1);
        }
        ahead.trim();
        let more = candidates.len() > limit;
        candidates.truncate(limit);
        let next = if more {
            candidates.last().map(|e| Cursor {
                occurred_at_micros: e.occurred_at,
                event_id: *e.event_id.as_bytes(),
            })
        } else {
            None
        };
        Ok(Page {
            events: candidates,
            next,
        })
    }
}

/// The UTC day of a timestamp in microseconds.
fn day_of(micros: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.date_naive())
        .unwrap_or(if micros < 0 {
            NaiveDate::MIN
        } else {
            NaiveDate::MAX
        })
}

fn key(e: &Event) -> (i64, [u8; 16]) {
    (e.occurred_at, *e.event_id.as_bytes())
}

fn sort(events: &mut [Event], descending: bool) {
    if descending {
        events.sort_unstable_by_key(|e| std::cmp::Reverse(key(e)));
    } else {
        events.sort_unstable_by_key(key);
    }
}

/// The hot-side predicate, applied to a decoded archive row.
fn matches(row: &Event, query: &Query) -> bool {
    if row.user_id != query.user_id
        || row.occurred_at < query.from_micros
        || row.occurred_at >= query.to_micros
        || (!query.kinds.is_empty() && !query.kinds.contains(&row.kind))
    {
        return false;
    }
    match &query.after {
        None => true,
        Some(c) => {
            let here = key(row);
            let cursor = (c.occurred_at_micros, c.event_id);
            if query.descending {
                here < cursor
            } else {
                here > cursor
            }
        }
    }
}
