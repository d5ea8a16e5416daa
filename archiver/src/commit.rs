//! A day's way into the archive, shared by whole days and late files:
//! (seal ->) export -> stage -> verify -> commit -> publish. A whole day is
//! sealed first and exported from the hot store; a late file exports the
//! captured rows its day's export did not see. Both then go through
//! [`Archiver::export_and_commit`]: files staged and verified, one fenced
//! commit transaction, and publication.

use std::time::Instant;

use chrono::NaiveDate;
use strata_core::failpoint;
use tokio_util::sync::CancellationToken;

use crate::archive::{Archiver, Closure, DayReport, Outcome};
use crate::catalog::{self, CommitTotals, DayState, FileOrigin, FileRecord};
use crate::error::ArchiveError;
use crate::export::ExportTotals;
use crate::metrics;
use crate::pg::bounded;
use crate::stage::Staged;

/// The state a day must be in, under the commit's row lock, for a commit
/// of `origin` files: a day's export commits a sealed day, a late file adds
/// to a committed one. Any other state means another attempt got there
/// first.
pub(crate) fn state_before_commit(origin: FileOrigin) -> DayState {
    match origin {
        FileOrigin::Day => DayState::Sealed,
        FileOrigin::Late => DayState::Committed,
    }
}

/// Whether an export that produced no file is still committed: a day
/// without rows is archived as such; a late export without rows is
/// nothing to do.
pub(crate) fn commits_when_empty(origin: FileOrigin) -> bool {
    match origin {
        FileOrigin::Day => true,
        FileOrigin::Late => false,
    }
}

/// What [`Archiver::export_and_commit`] did.
enum Committed {
    /// The export found nothing to commit.
    Nothing,
    /// The day changed under this attempt; its files stay garbage.
    Superseded,
    /// These files were committed.
    Files {
        totals: ExportTotals,
        files: u32,
        bytes: u64,
    },
}

impl Committed {
    /// Fills `report` with what was committed, as `outcome`.
    fn report(&self, report: &mut DayReport, outcome: Outcome) {
        if let Committed::Files {
            totals,
            files,
            bytes,
        } = self
        {
            report.outcome = outcome;
            report.rows = totals.rows;
            report.payload_bytes = totals.payload_bytes;
            report.files = *files;
            report.bytes = *bytes;
        }
    }
}

impl Archiver {
    /// Archives `day` if it is not committed yet (and finishes its
    /// publication if a crash interrupted it).
    pub async fn archive_day(
        &mut self,
        day: NaiveDate,
        closure: Closure,
        cancel: &CancellationToken,
    ) -> Result<DayReport, ArchiveError> {
        let started = Instant::now();
        let mut report = DayReport::nothing(day, Outcome::AlreadyCommitted);
        if let Some(status) = catalog::day_status(&self.hot, day).await? {
            if status.state == DayState::Committed {
                self.publish(day).await?;
                report.elapsed = started.elapsed();
                return Ok(report);
            }
        }
        self.check_closed(day, closure).await?;
        let timeout = self.timeout();
        catalog::seal_day(&mut self.hot, day, timeout).await?;
        // The day is read through the parent table, bounded by the day,
        // inside the export's snapshot: whether the partition exists is
        // decided by that snapshot too. (Checking for the partition first
        // lost events: a back-dated event could create it between the check
        // and the snapshot, the seal trigger captured it as late, the
        // export read nothing, and the commit deleted the capture as
        // archived.) Pruning keeps this a scan of one partition.
        failpoint::hit("archiver.before_export_snapshot");
        let select = catalog::day_export_select(day);
        let committed = self
            .export_and_commit(day, FileOrigin::Day, 0, select, cancel)
            .await?;
        committed.report(&mut report, Outcome::Committed);
        self.publish(day).await?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Archives the rows that reached `day` after its export, as one more
    /// file (G6).
    pub async fn archive_late(
        &mut self,
        day: NaiveDate,
        cancel: &CancellationToken,
    ) -> Result<DayReport, ArchiveError> {
        let started = Instant::now();
        let status = catalog::day_status(&self.hot, day)
            .await?
            .filter(|s| s.state == DayState::Committed)
            .ok_or(ArchiveError::NotCommitted(day))?;
        let export_snapshot = status
            .export_snapshot
            .ok_or(ArchiveError::NotCommitted(day))?;
        let select = catalog::late_export_select(day, &export_snapshot)?;
        let next_seq = catalog::next_file_seq(&self.hot, day).await?;
        let committed = self
            .export_and_commit(day, FileOrigin::Late, next_seq, select, cancel)
            .await?;
        let mut report = DayReport::nothing(day, Outcome::NothingLate);
        if let Committed::Nothing = committed {
            report.elapsed = started.elapsed();
            return Ok(report);
        }
        committed.report(&mut report, Outcome::LateCommitted);
        self.publish(day).await?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// `strata archive --day`: archives `day` now, or, when it was already
    /// committed, archives its late rows; the second report is the late
    /// file's.
    pub async fn archive_day_with_late(
        &mut self,
        day: NaiveDate,
        closure: Closure,
        cancel: &CancellationToken,
    ) -> Result<(DayReport, Option<DayReport>), ArchiveError> {
        let report = self.archive_day(day, closure, cancel).await?;
        let late = if report.outcome == Outcome::AlreadyCommitted {
            Some(self.archive_late(day, cancel).await?)
        } else {
            None
        };
        Ok((report, late))
    }

    /// The path shared by a day and its late files: exports `select` (files
    /// numbered from `first_seq`), stages and verifies each file, and
    /// commits them as `origin`.
    async fn export_and_commit(
        &mut self,
        day: NaiveDate,
        origin: FileOrigin,
        first_seq: i32,
        select: String,
        cancel: &CancellationToken,
    ) -> Result<Committed, ArchiveError> {
        let (snapshot, staged, totals) = self
            .export_and_stage(day, first_seq, select, cancel)
            .await?;
        if staged.is_empty() && !commits_when_empty(origin) {
            return Ok(Committed::Nothing);
        }
        failpoint::hit("archiver.before_commit");
        if cancel.is_cancelled() {
            return Err(ArchiveError::Cancelled);
        }
        let committed = self.commit(day, origin, &snapshot, &staged).await?;
        failpoint::hit("archiver.after_commit");
        if !committed {
            return Ok(Committed::Superseded);
        }
        Ok(Committed::Files {
            totals,
            files: staged.len() as u32,
            bytes: staged.iter().map(|s| s.spool.bytes).sum(),
        })
    }

    /// The commit point. Returns false when the day was committed by
    /// another attempt meanwhile (this attempt's files stay garbage).
    async fn commit(
        &mut self,
        day: NaiveDate,
        origin: FileOrigin,
        snapshot: &str,
        staged: &[Staged],
    ) -> Result<bool, ArchiveError> {
        let timeout = self.timeout();
        let lease = self.lease.clone();
        let tx = bounded("begin commit", timeout, self.hot.transaction()).await?;
        catalog::fence(&tx, &lease).await?;
        let state = catalog::lock_day_state(&tx, day, timeout).await?;
        if state != Some(state_before_commit(origin)) {
            let (state, origin) = (state.map(DayState::as_str), origin.as_str());
            tracing::warn!(%day, ?state, origin, "day changed under this attempt; not committing");
            return Ok(false);
        }
        let mut totals = CommitTotals {
            rows: 0,
            bytes: 0,
            files: staged.len() as i32,
        };
        for file in staged {
            let s = &file.spool;
            totals.rows += s.rows as i64;
            totals.bytes += s.bytes as i64;
            let record = FileRecord {
                key: &file.final_key,
                seq: file.seq,
                rows: s.rows as i64,
                bytes: s.bytes as i64,
                min_user_id: &s.min_user_id,
                max_user_id: &s.max_user_id,
                sha256: &s.sha256,
                content_sha256: &s.content_sha256,
            };
            catalog::record_file(&tx, day, origin, lease.epoch, &record, timeout).await?;
        }
        catalog::record_commit(&tx, day, origin, snapshot, lease.epoch, &totals, timeout).await?;
        // Captured rows this export saw are in the archive now.
        catalog::clear_archived_late_rows(&tx, day, snapshot, timeout).await?;
        bounded("commit", timeout, tx.commit()).await?;
        let (rows, bytes, origin) = (totals.rows, totals.bytes, origin.as_str());
        metrics::ROWS_ARCHIVED.inc_by(rows as u64);
        metrics::COMMITS.with_label_values(&[origin]).inc();
        tracing::info!(%day, origin, rows, bytes, files = staged.len(), epoch = lease.epoch, "archive commit");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_commits_a_sealed_day_and_a_late_file_a_committed_one() {
        assert_eq!(state_before_commit(FileOrigin::Day), DayState::Sealed);
        assert_eq!(state_before_commit(FileOrigin::Late), DayState::Committed);
    }

    #[test]
    fn an_empty_day_is_committed_and_an_empty_late_export_is_not() {
        assert!(commits_when_empty(FileOrigin::Day));
        assert!(!commits_when_empty(FileOrigin::Late));
    }
}
