//! The archiver's errors. Every one leaves the catalog unchanged: files of a
//! failed attempt are uncommitted garbage, and the day is retried.

use chrono::NaiveDate;
use strata_migrations::describe_pg_error;

use crate::store::StoreError;

/// Why an archiver step failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A database call failed.
    #[error("{context}: {}", describe_pg_error(source))]
    Db {
        /// What was being done.
        context: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A value read from the database could not be decoded into the
    /// expected type (a NULL where none is allowed, a `timestamptz` of
    /// `infinity`, ...). Not a transient fault: retrying reads it again.
    #[error("decode {context}: {source}")]
    Decode {
        /// What was being read.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A database call took longer than `archiver.statement_timeout`.
    #[error("{context}: timed out after {seconds:.0} s")]
    Timeout {
        /// What was being done.
        context: String,
        /// The bound that was hit.
        seconds: f64,
    },
    /// The object store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing or reading Parquet failed.
    #[error("parquet: {0}")]
    Parquet(String),
    /// A local spool file could not be written or read.
    #[error("spool file {path}: {message}")]
    Spool {
        /// The file.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// An uploaded file does not match what was read from the hot store; it
    /// is not committed.
    #[error("verification of {key} failed: {message}")]
    Verification {
        /// The object.
        key: String,
        /// What differed.
        message: String,
    },
    /// This archiver no longer holds the lease (another took over); nothing
    /// it did since is committed.
    #[error("fenced: archiver lease epoch {epoch} is no longer held by this process")]
    Fenced {
        /// The epoch this process held.
        epoch: i64,
    },
    /// Another archiver holds the lease.
    #[error("another archiver ({holder}) holds the lease until {until}")]
    LeaseHeld {
        /// Its holder id.
        holder: String,
        /// When the lease expires unless renewed.
        until: String,
    },
    /// The day cannot be archived yet, or at all.
    #[error("day {day} cannot be archived: {reason}")]
    NotArchivable {
        /// The day.
        day: NaiveDate,
        /// Why.
        reason: String,
    },
    /// The day has no committed archive (for `--verify`).
    #[error("day {0} has no committed archive")]
    NotCommitted(NaiveDate),
    /// Shutdown was requested.
    #[error("cancelled")]
    Cancelled,
}

impl ArchiveError {
    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Self {
        let context = context.into();
        move |source| Self::Db { context, source }
    }

    /// For `Row::try_get`: a value that does not decode into its type.
    pub(crate) fn decode(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| Self::Decode { context, source }
    }

    pub(crate) fn spool(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |err| Self::Spool {
            path: path.display().to_string(),
            message: err.to_string(),
        }
    }

    /// Short label for the errors metric.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Db { .. } => "db",
            Self::Decode { .. } => "decode",
            Self::Timeout { .. } => "timeout",
            Self::Store(_) => "object_store",
            Self::Parquet(_) => "parquet",
            Self::Spool { .. } => "spool",
            Self::Verification { .. } => "verification",
            Self::Fenced { .. } => "fenced",
            Self::LeaseHeld { .. } => "lease_held",
            Self::NotArchivable { .. } => "not_archivable",
            Self::NotCommitted(_) => "not_committed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl From<parquet::errors::ParquetError> for ArchiveError {
    fn from(err: parquet::errors::ParquetError) -> Self {
        Self::Parquet(err.to_string())
    }
}

impl From<arrow_schema::ArrowError> for ArchiveError {
    fn from(err: arrow_schema::ArrowError) -> Self {
        Self::Parquet(err.to_string())
    }
}
