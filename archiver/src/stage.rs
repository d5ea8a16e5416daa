//! Export and staging: rows go from the hot store into spool files under
//! one snapshot, and each finished file is uploaded to `_staging/`,
//! downloaded again and read completely; its bytes' SHA-256 and its rows'
//! count and content digest must match what was written. A file that does
//! not is deleted and the attempt fails (nothing is committed).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use chrono::NaiveDate;
use strata_archive::layout;
use strata_core::failpoint;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::archive::Archiver;
use crate::catalog;
use crate::error::ArchiveError;
use crate::export::{self, ExportPlan, ExportTotals, FileCheck, SpoolFile};
use crate::metrics;
use crate::pg::connect;

/// A verified file in staging, ready to commit.
pub(crate) struct Staged {
    /// The spool file it was uploaded from.
    pub spool: SpoolFile,
    /// Its number among the day's files.
    pub seq: i32,
    /// Where publishing puts it.
    pub final_key: String,
}

impl Archiver {
    /// Exports `select` under a fresh snapshot; uploads and verifies each
    /// file as it is finished. Returns the snapshot and the staged files.
    pub(crate) async fn export_and_stage(
        &self,
        day: NaiveDate,
        first_seq: i32,
        select: String,
        cancel: &CancellationToken,
    ) -> Result<(String, Vec<Staged>, ExportTotals), ArchiveError> {
        let spool_root = match &self.options.archiver.spool_dir {
            None => std::env::temp_dir(),
            Some(dir) => PathBuf::from(dir),
        };
        std::fs::create_dir_all(&spool_root).map_err(ArchiveError::spool(&spool_root))?;
        let spool = tempfile::Builder::new()
            .prefix("strata-archive-")
            .tempdir_in(&spool_root)
            .map_err(ArchiveError::spool(&spool_root))?;
        let client = connect(&self.options.hot_store, self.timeout()).await?;
        let snapshot = catalog::begin_export(&client, self.timeout()).await?;
        let attempt = format!("e{}-{:08x}", self.lease.epoch, rand::random::<u32>());
        let plan = ExportPlan {
            select,
            spool_dir: spool.path().to_path_buf(),
            max_file_rows: self.options.archiver.max_file_rows,
            properties: layout::writer_properties(self.options.archiver.row_group_rows),
            rows_read: self.progress.rows_read.clone(),
        };
        let (files_tx, mut files_rx) = mpsc::channel::<SpoolFile>(1);
        let exporting = export::export(&client, plan, files_tx);
        let staging = async {
            let mut staged = Vec::new();
            while let Some(file) = files_rx.recv().await {
                let seq = first_seq + file.index as i32;
                let final_key = layout::data_key(&self.prefix, day, seq as u32, &attempt);
                self.stage(&file, &final_key, cancel).await?;
                staged.push(Staged {
                    spool: file,
                    seq,
                    final_key,
                });
            }
            Ok::<_, ArchiveError>(staged)
        };
        let (exported, staged) = tokio::select! {
            _ = cancel.cancelled() => return Err(ArchiveError::Cancelled),
            results = async { tokio::join!(exporting, staging) } => results,
        };
        // An upload failure stops the export early: report it, not the
        // "uploader stopped" it causes.
        let staged = staged?;
        let totals = exported?;
        metrics::ROWS_EXPORTED.inc_by(totals.rows);
        catalog::end_export(&client).await;
        Ok((snapshot, staged, totals))
    }

    /// Uploads one spool file to staging and verifies the upload.
    async fn stage(
        &self,
        file: &SpoolFile,
        final_key: &str,
        cancel: &CancellationToken,
    ) -> Result<(), ArchiveError> {
        failpoint::hit("archiver.after_local_write");
        inject_upload_faults(&file.path)?;
        let staging = layout::staging_key(&self.prefix, final_key);
        let uploaded = self
            .with_retries("upload", cancel, || {
                self.store.put_file(&staging, &file.path)
            })
            .await?;
        metrics::BYTES_UPLOADED.inc_by(uploaded);
        self.progress
            .bytes_uploaded
            .fetch_add(uploaded, Ordering::Relaxed);
        failpoint::hit("archiver.after_upload");
        let problem = match self.read_back(&staging, &file.path, cancel).await {
            Ok(check) => mismatch(&check, file),
            Err(err) => match err.unreadable() {
                Some(message) => Some(format!("unreadable: {message}")),
                None => return Err(err),
            },
        };
        if let Some(message) = problem {
            metrics::VERIFICATION_FAILURES.inc();
            let _ = self.store.delete(&staging).await;
            return Err(ArchiveError::Verification {
                key: staging,
                message,
            });
        }
        let _ = std::fs::remove_file(&file.path);
        self.progress.files_verified.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Downloads `key` next to `near` and reads it completely.
    pub(crate) async fn read_back(
        &self,
        key: &str,
        near: &Path,
        cancel: &CancellationToken,
    ) -> Result<FileCheck, ArchiveError> {
        let download = near.with_extension("download");
        self.with_retries("download", cancel, || {
            self.store.get_to_file(key, &download)
        })
        .await?;
        let path = download.clone();
        let check = tokio::task::spawn_blocking(move || export::check_file(&path))
            .await
            .map_err(|error| ArchiveError::Thread {
                context: "reader thread",
                error,
            })?;
        let _ = std::fs::remove_file(&download);
        check
    }
}

/// How a file read back differs from the spool file it was uploaded from,
/// if it does (the first difference found).
fn mismatch(check: &FileCheck, file: &SpoolFile) -> Option<String> {
    if check.rows != file.rows {
        Some(format!(
            "{} rows read back, {} written",
            check.rows, file.rows
        ))
    } else if check.sha256 != file.sha256 {
        Some("bytes differ from the file written (SHA-256 mismatch)".to_string())
    } else if check.content_sha256 != file.content_sha256 {
        Some("rows differ from the hot store's (content digest mismatch)".to_string())
    } else {
        None
    }
}

/// Test-only faults between writing a file and uploading it.
fn inject_upload_faults(path: &Path) -> Result<(), ArchiveError> {
    if failpoint::fires("archiver.truncate_upload") {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(ArchiveError::spool(path))?;
        let len = file.metadata().map_err(ArchiveError::spool(path))?.len();
        file.set_len(len / 2).map_err(ArchiveError::spool(path))?;
        eprintln!("strata: failpoint archiver.truncate_upload fired");
    }
    if failpoint::fires("archiver.corrupt_upload") {
        let mut bytes = std::fs::read(path).map_err(ArchiveError::spool(path))?;
        let middle = bytes.len() / 2;
        if let Some(byte) = bytes.get_mut(middle) {
            *byte ^= 0x5a;
        }
        std::fs::write(path, bytes).map_err(ArchiveError::spool(path))?;
        eprintln!("strata: failpoint archiver.corrupt_upload fired");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool() -> SpoolFile {
        SpoolFile {
            path: PathBuf::from("/spool/part-00000.parquet"),
            index: 0,
            rows: 10,
            bytes: 1000,
            min_user_id: "a".into(),
            max_user_id: "z".into(),
            sha256: "bytes".into(),
            content_sha256: "rows".into(),
        }
    }

    fn check(rows: u64, sha256: &str, content_sha256: &str) -> FileCheck {
        FileCheck {
            rows,
            sha256: sha256.into(),
            content_sha256: content_sha256.into(),
        }
    }

    #[test]
    fn a_file_read_back_must_match_what_was_written() {
        assert_eq!(mismatch(&check(10, "bytes", "rows"), &spool()), None);
        assert_eq!(
            mismatch(&check(9, "other", "other"), &spool()).as_deref(),
            Some("9 rows read back, 10 written")
        );
        assert_eq!(
            mismatch(&check(10, "other", "rows"), &spool()).as_deref(),
            Some("bytes differ from the file written (SHA-256 mismatch)")
        );
        assert_eq!(
            mismatch(&check(10, "bytes", "other"), &spool()).as_deref(),
            Some("rows differ from the hot store's (content digest mismatch)")
        );
    }
}
