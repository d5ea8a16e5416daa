//! Publishing a committed day (every catalog file at its final key, then
//! the manifest datalake engines read) and verifying a committed day
//! against the catalog (`strata archive --verify`).

use chrono::NaiveDate;
use strata_archive::layout;
use tokio_util::sync::CancellationToken;

use crate::archive::Archiver;
use crate::catalog::{self, CommittedFile, DayState, DayStatus};
use crate::error::ArchiveError;
use crate::export::FileCheck;
use crate::metrics;

/// What `verify_day` found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The day.
    pub day: NaiveDate,
    /// Files read back.
    pub files: usize,
    /// Rows decoded.
    pub rows: u64,
    /// Mismatches; empty when the archive is intact.
    pub problems: Vec<String>,
}

/// The manifest of a committed day: its catalog entry and files.
pub(crate) fn manifest(
    day: NaiveDate,
    status: &DayStatus,
    files: &[CommittedFile],
) -> serde_json::Value {
    serde_json::json!({
        "format": "strata-archive-manifest/1",
        "day": day.format("%Y-%m-%d").to_string(),
        "version": status.version,
        "rows": status.rows,
        "bytes": status.bytes,
        "files": files,
    })
}

/// How a committed file read back differs from its catalog row.
fn file_problems(file: &CommittedFile, check: &FileCheck) -> Vec<String> {
    let mut problems = Vec::new();
    if check.rows != file.rows as u64 {
        problems.push(format!(
            "{}: {} rows, catalog says {}",
            file.key, check.rows, file.rows
        ));
    }
    if check.sha256 != file.sha256 {
        problems.push(format!("{}: SHA-256 differs from the catalog", file.key));
    }
    if check.content_sha256 != file.content_sha256 {
        problems.push(format!(
            "{}: content digest differs from the catalog",
            file.key
        ));
    }
    problems
}

impl Archiver {
    /// Makes a committed day readable by datalake engines: every catalog
    /// file at its final key, and the manifest. Idempotent.
    pub async fn publish(&mut self, day: NaiveDate) -> Result<(), ArchiveError> {
        let Some(status) = catalog::day_status(&self.hot, day).await? else {
            return Ok(());
        };
        if !status.needs_publish() {
            return Ok(());
        }
        let files = catalog::day_files(&self.hot, day).await?;
        let never = CancellationToken::new();
        for file in &files {
            let staging = layout::staging_key(&self.prefix, &file.key);
            match self.store.size(&file.key).await {
                Ok(size) if size == file.bytes as u64 => {}
                Ok(size) => {
                    return Err(ArchiveError::Verification {
                        key: file.key.clone(),
                        message: format!(
                            "{size} bytes at the final key, catalog says {}",
                            file.bytes
                        ),
                    })
                }
                Err(err) if err.not_found() => {
                    self.with_retries("copy", &never, || self.store.copy(&staging, &file.key))
                        .await?;
                    let size = self.store.size(&file.key).await?;
                    if size != file.bytes as u64 {
                        return Err(ArchiveError::Verification {
                            key: file.key.clone(),
                            message: format!("copy has {size} bytes, catalog says {}", file.bytes),
                        });
                    }
                }
                Err(err) => return Err(err.into()),
            }
            let _ = self.store.delete(&staging).await;
        }
        let body = serde_json::to_vec_pretty(&manifest(day, &status, &files))
            .map_err(ArchiveError::Manifest)?;
        let manifest_key = layout::manifest_key(&self.prefix, day);
        // A former leader must not overwrite a newer manifest; this leaves
        // a window of one PUT (see README, known limits).
        catalog::fence(&self.hot, &self.lease).await?;
        self.with_retries("put manifest", &never, || {
            self.store.put_bytes(&manifest_key, body.clone())
        })
        .await?;
        catalog::record_manifest(&self.hot, day, status.version, self.timeout()).await
    }

    /// Re-reads every committed file of `day` from the object store and
    /// checks it against the catalog.
    pub async fn verify_day(&self, day: NaiveDate) -> Result<VerifyReport, ArchiveError> {
        let status = catalog::day_status(&self.hot, day)
            .await?
            .filter(|s| s.state == DayState::Committed)
            .ok_or(ArchiveError::NotCommitted(day))?;
        let files = catalog::day_files(&self.hot, day).await?;
        let scratch = tempfile::tempdir().map_err(ArchiveError::spool(&std::env::temp_dir()))?;
        let never = CancellationToken::new();
        let mut report = VerifyReport {
            day,
            files: files.len(),
            rows: 0,
            problems: Vec::new(),
        };
        for file in &files {
            let local = scratch.path().join(format!("{}.parquet", file.seq));
            match self.read_back(&file.key, &local, &never).await {
                Ok(check) => {
                    report.rows += check.rows;
                    report.problems.extend(file_problems(file, &check));
                }
                Err(ArchiveError::Store(err)) => {
                    report.problems.push(format!("{}: {err}", file.key));
                }
                Err(err) => match err.unreadable() {
                    Some(message) => {
                        report
                            .problems
                            .push(format!("{}: unreadable: {message}", file.key));
                    }
                    None => return Err(err),
                },
            }
        }
        if report.rows != status.rows as u64 {
            report.problems.push(format!(
                "files hold {} rows, the day's catalog entry says {}",
                report.rows, status.rows
            ));
        }
        if !report.problems.is_empty() {
            metrics::VERIFICATION_FAILURES.inc();
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::FileOrigin;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 3, 4).expect("a date")
    }

    fn file(origin: FileOrigin, seq: i32) -> CommittedFile {
        CommittedFile {
            key: format!("activity/date=2025-03-04/part-{seq:05}.parquet"),
            origin,
            seq,
            rows: 10,
            bytes: 1000,
            min_user_id: "a".into(),
            max_user_id: "z".into(),
            sha256: "bytes".into(),
            content_sha256: "rows".into(),
            epoch: 3,
        }
    }

    #[test]
    fn the_manifest_lists_the_days_files_with_their_origin_text() {
        let status = DayStatus {
            day: day(),
            state: DayState::Committed,
            export_snapshot: Some("1:2:".into()),
            rows: 20,
            bytes: 2000,
            files: 2,
            version: 2,
            manifest_version: 1,
            partition_dropped_at: None,
        };
        let files = [file(FileOrigin::Day, 0), file(FileOrigin::Late, 1)];
        let value = manifest(day(), &status, &files);
        assert_eq!(value["format"], "strata-archive-manifest/1");
        assert_eq!(value["day"], "2025-03-04");
        assert_eq!(value["version"], 2);
        assert_eq!(value["rows"], 20);
        assert_eq!(value["files"][0]["origin"], "day");
        assert_eq!(value["files"][1]["origin"], "late");
        assert_eq!(value["files"][1]["seq"], 1);
        let keys: Vec<&str> = value["files"][0]
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 10, "{keys:?}");
    }

    #[test]
    fn every_difference_from_the_catalog_is_a_problem() {
        let committed = file(FileOrigin::Day, 0);
        let same = FileCheck {
            rows: 10,
            sha256: "bytes".into(),
            content_sha256: "rows".into(),
        };
        assert!(file_problems(&committed, &same).is_empty());
        let different = FileCheck {
            rows: 9,
            sha256: "other".into(),
            content_sha256: "other".into(),
        };
        let key = &committed.key;
        assert_eq!(
            file_problems(&committed, &different),
            vec![
                format!("{key}: 9 rows, catalog says 10"),
                format!("{key}: SHA-256 differs from the catalog"),
                format!("{key}: content digest differs from the catalog"),
            ]
        );
    }
}
