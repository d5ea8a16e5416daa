//! Retention: dropping the hot partitions of archived days once they are
//! older than `archiver.hot_retention_days`, and collecting the object
//! store's garbage (staged files no commit needs, abandoned uploads).
//!
//! A hot partition is dropped only after its day's commit is published and
//! no late rows of the day wait ([`may_drop`]).

use std::time::SystemTime;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use strata_archive::layout;
use strata_core::failpoint;

use crate::archive::Archiver;
use crate::catalog::{self, DayStatus};
use crate::day::{day_end, partition_day};
use crate::error::ArchiveError;
use crate::metrics;

/// Whether `day` is older than `retention` at `now` (measured from its
/// end).
pub(crate) fn past_retention(day: NaiveDate, now: DateTime<Utc>, retention: TimeDelta) -> bool {
    day_end(day)
        .checked_add_signed(retention)
        .is_some_and(|kept_until| kept_until <= now)
}

/// Whether the hot partition of `day` may be dropped at `now`: the day is
/// older than `retention`, committed, every commit published, and none of
/// its late rows wait for a late file.
pub(crate) fn may_drop(
    day: NaiveDate,
    status: &DayStatus,
    late_rows_wait: bool,
    now: DateTime<Utc>,
    retention: TimeDelta,
) -> bool {
    past_retention(day, now, retention) && status.is_published() && !late_rows_wait
}

/// Whether the stream lets a partition go: its newest numbered row
/// (`newest`, the commit of its transaction) is older than
/// `archiver.stream_retention`, so dropping it raises the subscription
/// stream's floor only to a position that old. A late row written into an old day keeps its
/// partition until then instead of cutting every subscriber behind it off.
pub(crate) fn stream_allows_drop(
    newest: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    retention: TimeDelta,
) -> bool {
    newest.is_none_or(|at| at < now - retention)
}

/// Whether a staged object is garbage: older than the grace period (its
/// `last_modified` before `cutoff`) and not needed by an unpublished
/// commit.
fn is_garbage(
    key: &str,
    last_modified: Option<SystemTime>,
    cutoff: SystemTime,
    needed: &[String],
) -> bool {
    let old = last_modified.is_some_and(|t| t < cutoff);
    old && !needed.iter().any(|n| n == key)
}

impl Archiver {
    /// Drops hot partitions of days that are committed, published, older
    /// than the retention, and have no late rows waiting. Returns the days.
    pub async fn drop_expired_partitions(&mut self) -> Result<Vec<NaiveDate>, ArchiveError> {
        let now = catalog::db_now(&self.hot).await?;
        let retention = TimeDelta::days(i64::from(self.options.archiver.hot_retention_days));
        let mut dropped = Vec::new();
        for partition in catalog::hot_partitions(&self.hot).await? {
            let Some(day) = partition_day(&partition.name) else {
                continue;
            };
            if !past_retention(day, now, retention) {
                continue;
            }
            let Some(status) = catalog::day_status(&self.hot, day).await? else {
                continue;
            };
            let waiting = catalog::late_rows_wait(&self.hot, day).await?;
            if !may_drop(day, &status, waiting, now, retention) {
                continue;
            }
            let newest = catalog::newest_stream_commit(&self.hot, &partition).await?;
            let stream_retention = TimeDelta::from_std(self.options.archiver.stream_retention)
                .unwrap_or(TimeDelta::MAX);
            if !stream_allows_drop(newest, now, stream_retention) {
                tracing::debug!(%day, partition = %partition.name, "kept: it holds rows numbered within archiver.stream_retention (late events)");
                continue;
            }
            failpoint::hit("archiver.before_drop");
            catalog::raise_stream_floor(&self.hot, &partition).await?;
            if partition.attached {
                catalog::detach_partition(&self.hot, &partition).await?;
            }
            catalog::raise_stream_floor(&self.hot, &partition).await?;
            catalog::drop_partition(&self.hot, &partition).await?;
            catalog::record_partition_dropped(&self.hot, day).await?;
            metrics::PARTITIONS_DROPPED.inc();
            tracing::info!(%day, partition = %partition.name, "hot partition dropped after retention");
            dropped.push(day);
        }
        Ok(dropped)
    }

    /// Deletes staged objects no commit needs any more (older than
    /// `orphan_grace`) and aborts abandoned multipart uploads.
    pub async fn collect_garbage(&self) -> Result<usize, ArchiveError> {
        let grace = self.options.archiver.orphan_grace;
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        // Staged files of committed days not yet published are still needed.
        let needed: Vec<String> = catalog::unpublished_keys(&self.hot)
            .await?
            .iter()
            .map(|key| layout::staging_key(&self.prefix, key))
            .collect();
        let staging = layout::staging_dir(&self.prefix);
        let mut deleted = 0;
        for object in self.store.list(&staging).await? {
            if is_garbage(&object.key, object.last_modified, cutoff, &needed) {
                self.store.delete(&object.key).await?;
                deleted += 1;
            }
        }
        let aborted = self
            .store
            .abort_abandoned_uploads(&staging, self.options.object_store.abandoned_upload_after)
            .await?;
        if deleted + aborted > 0 {
            tracing::info!(deleted, aborted, "archive garbage collected");
        }
        Ok(deleted + aborted)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn late_rows_keep_their_partition_until_they_are_as_old_as_the_retention() {
        use super::stream_allows_drop;
        let now = chrono::Utc::now();
        let retention = chrono::TimeDelta::days(7);
        assert!(stream_allows_drop(None, now, retention));
        assert!(stream_allows_drop(
            Some(now - chrono::TimeDelta::days(8)),
            now,
            retention
        ));
        assert!(!stream_allows_drop(
            Some(now - chrono::TimeDelta::days(6)),
            now,
            retention
        ));
        assert!(!stream_allows_drop(Some(now), now, retention));
    }

    use std::time::Duration;

    use super::*;
    use crate::catalog::DayState;
    use crate::test_support::{at, date};

    fn status(state: DayState, version: i32, manifest_version: i32) -> DayStatus {
        crate::test_support::status(date("2025-03-01"), state, version, manifest_version)
    }

    const SEVEN_DAYS: TimeDelta = TimeDelta::days(7);

    #[test]
    fn a_published_day_past_retention_without_late_rows_is_dropped() {
        let day = date("2025-03-01");
        let published = status(DayState::Committed, 1, 1);
        // Day ends 03-02 00:00; seven days later is 03-09 00:00.
        assert!(may_drop(
            day,
            &published,
            false,
            at("2025-03-09T00:00:00Z"),
            SEVEN_DAYS
        ));
        assert!(may_drop(
            day,
            &published,
            false,
            at("2025-04-01T00:00:00Z"),
            SEVEN_DAYS
        ));
    }

    #[test]
    fn a_day_within_retention_is_kept() {
        let day = date("2025-03-01");
        let published = status(DayState::Committed, 1, 1);
        assert!(!may_drop(
            day,
            &published,
            false,
            at("2025-03-08T23:59:59Z"),
            SEVEN_DAYS
        ));
        assert!(!past_retention(day, at("2025-03-08T23:59:59Z"), SEVEN_DAYS));
        assert!(past_retention(day, at("2025-03-09T00:00:00Z"), SEVEN_DAYS));
    }

    #[test]
    fn a_day_not_committed_or_not_published_is_kept() {
        let day = date("2025-03-01");
        let late = at("2025-06-01T00:00:00Z");
        assert!(!may_drop(
            day,
            &status(DayState::Sealed, 0, 0),
            false,
            late,
            SEVEN_DAYS
        ));
        // A late commit the manifest does not reflect yet.
        assert!(!may_drop(
            day,
            &status(DayState::Committed, 2, 1),
            false,
            late,
            SEVEN_DAYS
        ));
    }

    #[test]
    fn a_day_with_late_rows_waiting_is_kept() {
        let day = date("2025-03-01");
        let published = status(DayState::Committed, 1, 1);
        assert!(!may_drop(
            day,
            &published,
            true,
            at("2025-06-01T00:00:00Z"),
            SEVEN_DAYS
        ));
    }

    #[test]
    fn a_zero_retention_drops_once_the_day_ended() {
        let day = date("2025-03-01");
        let published = status(DayState::Committed, 1, 1);
        assert!(!may_drop(
            day,
            &published,
            false,
            at("2025-03-01T23:00:00Z"),
            TimeDelta::zero()
        ));
        assert!(may_drop(
            day,
            &published,
            false,
            at("2025-03-02T00:00:00Z"),
            TimeDelta::zero()
        ));
    }

    #[test]
    fn only_old_unneeded_staged_objects_are_garbage() {
        let cutoff = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let old = Some(cutoff - Duration::from_secs(1));
        let young = Some(cutoff + Duration::from_secs(1));
        let needed = vec!["_staging/needed".to_string()];
        assert!(is_garbage("_staging/orphan", old, cutoff, &needed));
        assert!(!is_garbage("_staging/needed", old, cutoff, &needed));
        assert!(!is_garbage("_staging/orphan", young, cutoff, &needed));
        // An object without a modification time is never collected.
        assert!(!is_garbage("_staging/orphan", None, cutoff, &needed));
    }
}
