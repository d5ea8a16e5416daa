//! The read-ahead of long reads (exports): one user's decoded archive rows
//! kept from page to page, and how many days' files to fetch at once.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::event::Event;

/// One user's decoded rows of archive files, kept across the pages of one
/// long read so a day split over two pages is fetched once, and how many
/// days' files to fetch at once while a page is short of rows. Archive
/// files are immutable, so kept rows never go stale; which files a day
/// has is still decided by each page's snapshot.
pub struct ReadAhead {
    /// Days whose files are fetched at once while a page is short.
    pub(super) days: usize,
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

    pub(super) fn holds(&self, user: &str, key: &str) -> bool {
        self.files.iter().any(|(u, k, _)| u == user && k == key)
    }

    pub(super) fn rows(&self, user: &str, key: &str) -> Option<Arc<Vec<Event>>> {
        self.files
            .iter()
            .find(|(u, k, _)| u == user && k == key)
            .map(|(_, _, rows)| rows.clone())
    }

    pub(super) fn insert(&mut self, user: &str, key: &str, rows: Vec<Event>) {
        self.events += rows.len();
        self.files
            .push_back((user.to_string(), key.to_string(), Arc::new(rows)));
    }

    /// Drops the oldest files down to the bound (at the end of a page).
    pub(super) fn trim(&mut self) {
        while self.events > self.max_events {
            match self.files.pop_front() {
                Some((_, _, rows)) => self.events -= rows.len(),
                None => break,
            }
        }
    }
}
