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

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::NaiveDate;
use strata_archiver::export::ArchivedRow;
use strata_archiver::{ObjectStore, StoreError};
use tokio_postgres::types::{FromSql, Type};

use crate::cold::ColdReader;
use crate::page_token::Cursor;
use crate::pool::PreparedStatements;

/// One event as the API returns it: the archive's row shape, which equals
/// the hot store's columns.
pub type Event = ArchivedRow;

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

/// A read that failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The hot store.
    #[error("{context}: {source}")]
    Db {
        /// What was being done.
        context: &'static str,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// A value the hot store returned that does not decode into its type
    /// (a NULL where none is allowed, ...). Not a transient fault.
    #[error("decode {context}: {source}")]
    Decode {
        /// What was being read.
        context: &'static str,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// The object store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An archive file that cannot be decoded.
    #[error("archive file {key}: {message}")]
    Archive {
        /// The object.
        key: String,
        /// Why.
        message: String,
    },
    /// Local scratch space for downloads.
    #[error("scratch file: {0}")]
    Scratch(#[from] std::io::Error),
}

fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ReadError {
    move |source| ReadError::Db { context, source }
}

fn decode(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ReadError {
    move |source| ReadError::Decode { context, source }
}

/// Column `index` of `row` as a `T`; [`ReadError::Decode`] instead of the
/// panic of `Row::get` when the value does not decode.
fn column<'a, T: FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    index: usize,
    context: &'static str,
) -> Result<T, ReadError> {
    row.try_get(index).map_err(decode(context))
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

/// A page statement's rows: its events, and its archive files in (day,
/// seq) order.
fn split_rows(rows: &[tokio_postgres::Row]) -> Result<(Vec<Event>, Vec<ColdFile>), ReadError> {
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
                            message: "rows fetched for this page were evicted".into(),
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

    /// One event of `user_id` by id, from whichever tier holds it, holding
    /// the caller's connection throughout (see [`Self::find_hot`] and
    /// [`Self::find_cold`] to give it back in between).
    pub async fn find(
        &self,
        hot: &mut impl PreparedStatements,
        user_id: &str,
        event_id: uuid::Uuid,
        max_days: usize,
    ) -> Result<Option<Event>, ReadError> {
        match self.find_hot(hot, user_id, event_id).await? {
            Lookup::Found(event) => Ok(Some(event)),
            Lookup::Archive(files) => self.find_cold(files, user_id, event_id, max_days).await,
        }
    }

    /// Hot and late rows first (one snapshot, like a page); if the event is
    /// not there, the user's archive files that may hold it.
    pub async fn find_hot(
        &self,
        hot: &mut impl PreparedStatements,
        user_id: &str,
        event_id: uuid::Uuid,
    ) -> Result<Lookup, ReadError> {
        let statement = hot
            .prepared(FIND, &[Type::TEXT, Type::UUID])
            .await
            .map_err(db("prepare the find statement"))?;
        let rows = hot
            .client()
            .query(&statement, &[&user_id, &event_id])
            .await
            .map_err(db("read the hot store and the catalog"))?;
        let (events, files) = split_rows(&rows)?;
        Ok(match events.into_iter().next() {
            Some(found) => Lookup::Found(found),
            None => Lookup::Archive(ArchiveFiles(files)),
        })
    }

    /// Searches the archive files [`Self::find_hot`] named, at most
    /// `max_days` days of them: for a UUIDv7 id (the SDK's ids carry their
    /// creation time) that day, the next, then the days before it; for
    /// any other id the most recent days. A random id never makes one call
    /// read a user's whole archive.
    pub async fn find_cold(
        &self,
        files: ArchiveFiles,
        user_id: &str,
        event_id: uuid::Uuid,
        max_days: usize,
    ) -> Result<Option<Event>, ReadError> {
        for file in search_order(files.0, event_id, max_days) {
            let rows = self.cold.user_rows(&file.key, file.bytes, user_id).await?;
            if let Some(found) = rows.into_iter().find(|r| r.event_id == event_id) {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

/// What [`HistoryReader::find_hot`] found.
#[derive(Debug)]
pub enum Lookup {
    /// The event, from the hot store or `late_activity`.
    Found(Event),
    /// Not there: these archive files may hold it.
    Archive(ArchiveFiles),
}

/// Archive files of a user's committed days (opaque outside this module).
#[derive(Debug)]
pub struct ArchiveFiles(Vec<ColdFile>);

impl ArchiveFiles {
    /// Whether there is any file to search.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The files a GetEvent may read, in the order to read them: at most
/// `max_days` archived days. A UUIDv7 id carries the time it was made,
/// and an event is usually recorded when or after it happens (a back-dated
/// event lies before its id's time), so the id's day comes first, then the
/// day after it (clock skew), then the days before it, newest first, then
/// (ids made ahead of their event) the later days, oldest first. Any other
/// id: the most recent days.
fn search_order(files: Vec<ColdFile>, event_id: uuid::Uuid, max_days: usize) -> Vec<ColdFile> {
    let hinted = event_id
        .get_timestamp()
        .filter(|_| event_id.get_version_num() == 7)
        .and_then(|ts| {
            let (secs, _) = ts.to_unix();
            chrono::DateTime::from_timestamp(i64::try_from(secs).ok()?, 0).map(|t| t.date_naive())
        });
    // (rank, day): lower ranks are read first.
    let rank = |day: NaiveDate| -> Option<(u8, std::cmp::Reverse<NaiveDate>)> {
        match hinted {
            Some(hint) if day == hint => Some((0, std::cmp::Reverse(day))),
            Some(hint) if day == hint + chrono::Days::new(1) => Some((1, std::cmp::Reverse(day))),
            Some(hint) if day < hint => Some((2, std::cmp::Reverse(day))),
            // Later days, oldest first: rank 3 sorts after, and the
            // distance from the hint orders them.
            Some(hint) => Some((
                3,
                std::cmp::Reverse(
                    hint.checked_sub_signed(day - hint)
                        .unwrap_or(NaiveDate::MIN),
                ),
            )),
            None => Some((2, std::cmp::Reverse(day))),
        }
    };
    let mut ranked: Vec<_> = files
        .into_iter()
        .filter_map(|f| rank(f.day).map(|r| (r, f.seq, f)))
        .collect();
    ranked.sort_by_key(|(rank, seq, _)| (*rank, *seq));
    let mut days_seen = 0usize;
    let mut last_day = None;
    ranked
        .into_iter()
        .map(|(_, _, f)| f)
        .take_while(|f| {
            if last_day != Some(f.day) {
                last_day = Some(f.day);
                days_seen += 1;
            }
            days_seen <= max_days
        })
        .collect()
}

/// One user's decoded rows of archive files, kept across the pages of one
/// long read so a day split over two pages is fetched once, and how many
/// days' files to fetch at once while a page is short of rows. Archive
/// files are immutable, so kept rows never go stale; which files a day
/// has is still decided by each page's snapshot.
pub struct ReadAhead {
    days: usize,
    max_events: usize,
    files: VecDeque<(String, String, Arc<Vec<Event>>)>,
    events: usize,
}

impl ReadAhead {
    /// No read-ahead: one day's files at a time, nothing kept after the
    /// page (ListActivity).
    pub fn none() -> Self {
        Self::new(1, 0)
    }

    /// Fetch `days` days' files at once; keep up to `max_events` rows
    /// between pages (the files of the page being read are always kept
    /// until it ends).
    pub fn new(days: usize, max_events: usize) -> Self {
        Self {
            days: days.max(1),
            max_events,
            files: VecDeque::new(),
            events: 0,
        }
    }

    fn holds(&self, user: &str, key: &str) -> bool {
        self.files.iter().any(|(u, k, _)| u == user && k == key)
    }

    fn rows(&self, user: &str, key: &str) -> Option<Arc<Vec<Event>>> {
        self.files
            .iter()
            .find(|(u, k, _)| u == user && k == key)
            .map(|(_, _, rows)| rows.clone())
    }

    fn insert(&mut self, user: &str, key: &str, rows: Vec<Event>) {
        self.events += rows.len();
        self.files
            .push_back((user.to_string(), key.to_string(), Arc::new(rows)));
    }

    /// Drops the oldest files down to the bound (at the end of a page).
    fn trim(&mut self) {
        while self.events > self.max_events {
            match self.files.pop_front() {
                Some((_, _, rows)) => self.events -= rows.len(),
                None => break,
            }
        }
    }
}

/// Microseconds as a timestamp, clamped to what chrono represents (the
/// caller validated the range; this only keeps extremes total).
pub(crate) fn timestamp(micros: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(micros).unwrap_or(if micros < 0 {
        chrono::DateTime::<chrono::Utc>::MIN_UTC
    } else {
        chrono::DateTime::<chrono::Utc>::MAX_UTC
    })
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

const PAGE_ASC: &str = page_sql!(">", "e.occurred_at, e.event_id");
const PAGE_DESC: &str = page_sql!("<", "e.occurred_at DESC, e.event_id DESC");

/// The page statements' parameter types.
const PAGE_TYPES: &[Type] = &[
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
const FIND: &str = concat!(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(day: NaiveDate, seq: i32) -> ColdFile {
        ColdFile {
            day,
            seq,
            key: format!("{day}/{seq}"),
            bytes: 1,
        }
    }

    fn days(files: &[ColdFile]) -> Vec<NaiveDate> {
        files.iter().map(|f| f.day).collect()
    }

    #[test]
    fn get_event_reads_near_a_v7_id_or_a_bounded_number_of_days() {
        let base = NaiveDate::from_ymd_opt(2026, 1, 1).expect("date");
        let all: Vec<ColdFile> = (0..100)
            .map(|i| file(base + chrono::Days::new(i), 0))
            .collect();
        // A v7 id made on day 50: that day first, then its neighbours only.
        let day50 = base + chrono::Days::new(50);
        let at = day50.and_hms_opt(12, 0, 0).expect("time").and_utc();
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, at.timestamp() as u64, 0);
        let v7 = uuid::Uuid::new_v7(ts);
        let order = search_order(all, v7, 31);
        assert_eq!(order.len(), 31);
        assert_eq!(
            days(&order)[..4],
            [
                day50,
                day50 + chrono::Days::new(1),
                day50 - chrono::Days::new(1),
                day50 - chrono::Days::new(2)
            ]
        );
        assert_eq!(
            order.last().map(|f| f.day),
            Some(day50 - chrono::Days::new(29))
        );
        // A v4 id: the 31 most recent days, newest first.
        let all: Vec<ColdFile> = (0..100)
            .flat_map(|i| {
                [
                    file(base + chrono::Days::new(i), 0),
                    file(base + chrono::Days::new(i), 1),
                ]
            })
            .collect();
        let order = search_order(all, uuid::Uuid::new_v4(), 31);
        assert_eq!(order.len(), 62);
        assert_eq!(
            order.first().map(|f| f.day),
            Some(base + chrono::Days::new(99))
        );
        assert_eq!(
            order.last().map(|f| f.day),
            Some(base + chrono::Days::new(69))
        );
    }
}
