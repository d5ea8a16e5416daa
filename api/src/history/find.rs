//! GetEvent: one event by id, hot and late rows first, then at most
//! `api.get_event_max_days` archived days, anchored at a UUIDv7 id's time.

use chrono::NaiveDate;
use tokio_postgres::types::Type;

use super::sql::{split_rows, FIND};
use super::{ColdFile, HistoryReader};
use crate::event::Event;
use crate::pool::PreparedStatements;
use crate::read_error::{db, ReadError};

impl HistoryReader {
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
