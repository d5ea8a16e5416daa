//! The archiver's errors. Every one leaves the catalog unchanged: files of a
//! failed attempt are uncommitted garbage, and the day is retried.
//!
//! Each error keeps its cause as a typed field, and its message shows the
//! cause: the daemon logs errors with their `Display` alone (`error =
//! %err`), the binary with the whole chain (`{err:#}`). So a cause shown in
//! the message is not also the error's `source()`, or `{err:#}` would
//! print it twice. Messages and metric labels ([`ArchiveError::label`]) are
//! those of the variants before they were split (so a `parquet`-labelled
//! error may be a manifest or a thread).

use chrono::NaiveDate;
use strata_archive::StoreError;
use strata_pg::{describe_pg_error, PgError};

use crate::catalog::UnknownValue;
use crate::closure::NotYet;

/// Why an archiver step failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A database call failed.
    #[error("{context}: {}", describe_pg_error(error))]
    Db {
        /// What was being done.
        context: String,
        /// The driver's error (shown in the message, with the server's
        /// SQLSTATE and text).
        error: tokio_postgres::Error,
    },
    /// A database URL does not parse (configuration).
    #[error("parse {url}: {}", describe_pg_error(error))]
    BadUrl {
        /// The URL, without its password.
        url: String,
        /// The parse error (shown in the message).
        error: tokio_postgres::Error,
    },
    /// TLS settings that cannot work (see [`strata_pg::PgError::Tls`]):
    /// the message names the URL and the setting. Not retried.
    #[error("{0}")]
    Tls(String),
    /// A value read from the database could not be decoded into the
    /// expected type (a NULL where none is allowed, a `timestamptz` of
    /// `infinity`, ...). Not a transient fault: retrying reads it again.
    #[error("decode {context}: {error}")]
    Decode {
        /// What was being read.
        context: &'static str,
        /// The driver's error (shown in the message).
        error: tokio_postgres::Error,
    },
    /// A catalog text column holds a value this archiver does not know.
    #[error("decode {context}: {error}")]
    UnknownValue {
        /// What was being read.
        context: &'static str,
        /// The value (shown in the message).
        error: UnknownValue,
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
    /// Writing Parquet stopped: a stage of the export (the encoder, the
    /// uploader) went away, so the other cannot go on.
    #[error("parquet: {stage} stopped")]
    StageStopped {
        /// The stage that went away (`"encoder"`, `"uploader"`).
        stage: &'static str,
    },
    /// The Parquet library failed (encoding, or a file that does not read).
    /// (The cause is shown in the message, so it is not the `source`; the
    /// `From` conversions are below.)
    #[error("parquet: {0}")]
    ParquetCodec(parquet::errors::ParquetError),
    /// Archive data does not decode into rows (the archive crate's
    /// format).
    #[error("parquet: {0}")]
    RowFormat(strata_archive::FormatError),
    /// Arrow failed (building or reading a batch).
    #[error("parquet: {0}")]
    Arrow(arrow_schema::ArrowError),
    /// A blocking thread (the export's encoder, reading a file back)
    /// panicked or was cancelled.
    #[error("parquet: {context}: {error}")]
    Thread {
        /// Which thread.
        context: &'static str,
        /// The join error (shown in the message).
        error: tokio::task::JoinError,
    },
    /// The manifest could not be encoded.
    #[error("parquet: manifest: {0}")]
    Manifest(serde_json::Error),
    /// A snapshot read from the database is not what `pg_current_snapshot()`
    /// prints, so it is not inlined into SQL.
    #[error("parquet: unexpected snapshot text {text:?}")]
    BadSnapshot {
        /// The text.
        text: String,
    },
    /// A local spool file could not be written or read.
    #[error("spool file {path}: {error}")]
    Spool {
        /// The file.
        path: String,
        /// The I/O error (shown in the message).
        error: std::io::Error,
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
    /// The day cannot be archived yet (the closure rule).
    #[error("day {day} cannot be archived: {reason}")]
    NotArchivable {
        /// The day.
        day: NaiveDate,
        /// Which part of the closure rule holds it.
        reason: NotYet,
    },
    /// A source's outbox could not be checked for unshipped events of the
    /// day, so the day cannot be archived now.
    #[error("day {day} cannot be archived: cannot check source {source_name:?} for unshipped events: {error}")]
    SourceUnchecked {
        /// The day.
        day: NaiveDate,
        /// The source's name in the configuration.
        source_name: String,
        /// Why the check failed (shown in the message).
        error: Box<ArchiveError>,
    },
    /// The day has no committed archive (for `--verify`).
    #[error("day {0} has no committed archive")]
    NotCommitted(NaiveDate),
    /// Shutdown was requested.
    #[error("cancelled")]
    Cancelled,
}

/// A session that could not be opened or a bounded call that failed, in
/// the archiver's terms (the messages it always had: "connect to URL: ...",
/// "CONTEXT: timed out after N s").
impl From<PgError> for ArchiveError {
    fn from(err: PgError) -> Self {
        match err {
            PgError::BadUrl { url, error } => Self::BadUrl { url, error },
            tls @ PgError::Tls { .. } => Self::Tls(tls.to_string()),
            PgError::Connect { url, error } => Self::Db {
                context: format!("connect to {url}"),
                error,
            },
            PgError::ConnectTimeout { url, timeout } => Self::Timeout {
                context: format!("connect to {url}"),
                seconds: timeout.as_secs_f64(),
            },
            PgError::Timeout { context, timeout } => Self::Timeout {
                context: context.into(),
                seconds: timeout.as_secs_f64(),
            },
            PgError::Database { context, error } => Self::Db {
                context: context.into(),
                error,
            },
        }
    }
}

impl From<parquet::errors::ParquetError> for ArchiveError {
    fn from(err: parquet::errors::ParquetError) -> Self {
        Self::ParquetCodec(err)
    }
}

impl From<strata_archive::FormatError> for ArchiveError {
    fn from(err: strata_archive::FormatError) -> Self {
        Self::RowFormat(err)
    }
}

impl From<arrow_schema::ArrowError> for ArchiveError {
    fn from(err: arrow_schema::ArrowError) -> Self {
        Self::Arrow(err)
    }
}

impl ArchiveError {
    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Self {
        let context = context.into();
        move |error| Self::Db { context, error }
    }

    /// For `Row::try_get`: a value that does not decode into its type.
    pub(crate) fn decode(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |error| Self::Decode { context, error }
    }

    pub(crate) fn spool(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |error| Self::Spool {
            path: path.display().to_string(),
            error,
        }
    }

    /// Whether trying the same step again later may succeed: connection
    /// and I/O faults, timeouts, transient object-store failures
    /// ([`StoreError::is_retryable`]), another archiver's lease, a day not
    /// closed yet. Corrupt or undecodable data, a verification mismatch, a
    /// lost lease (fenced), a missing commit, a missing object, an object
    /// store that refuses the credentials or the request, configuration and
    /// cancellation are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Db { .. }
            | Self::Timeout { .. }
            | Self::Spool { .. }
            | Self::LeaseHeld { .. }
            | Self::NotArchivable { .. } => true,
            Self::Store(err) => err.is_retryable(),
            Self::SourceUnchecked { error, .. } => error.is_retryable(),
            Self::BadUrl { .. }
            | Self::Tls(_)
            | Self::Decode { .. }
            | Self::UnknownValue { .. }
            | Self::StageStopped { .. }
            | Self::ParquetCodec(_)
            | Self::RowFormat(_)
            | Self::Arrow(_)
            | Self::Thread { .. }
            | Self::Manifest(_)
            | Self::BadSnapshot { .. }
            | Self::Verification { .. }
            | Self::Fenced { .. }
            | Self::NotCommitted(_)
            | Self::Cancelled => false,
        }
    }

    /// When the closure rule holds a day back (or a source could not be
    /// checked for it): the day, and why as text.
    pub(crate) fn not_archivable(&self) -> Option<(NaiveDate, String)> {
        match self {
            Self::NotArchivable { day, reason } => Some((*day, reason.to_string())),
            Self::SourceUnchecked {
                day,
                source_name,
                error,
            } => Some((
                *day,
                format!("cannot check source {source_name:?} for unshipped events: {error}"),
            )),
            _ => None,
        }
    }

    /// Why a file read back is unreadable, when that is the failure (the
    /// message after "unreadable: " in a verification problem).
    pub(crate) fn unreadable(&self) -> Option<String> {
        match self {
            Self::StageStopped { stage } => Some(format!("{stage} stopped")),
            Self::ParquetCodec(err) => Some(err.to_string()),
            Self::RowFormat(err) => Some(err.to_string()),
            Self::Arrow(err) => Some(err.to_string()),
            Self::Thread { context, error } => Some(format!("{context}: {error}")),
            _ => None,
        }
    }

    /// Short label for the errors metric.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Db { .. } | Self::BadUrl { .. } | Self::Tls(_) => "db",
            Self::Decode { .. } | Self::UnknownValue { .. } => "decode",
            Self::Timeout { .. } => "timeout",
            Self::Store(_) => "object_store",
            Self::StageStopped { .. }
            | Self::ParquetCodec(_)
            | Self::RowFormat(_)
            | Self::Arrow(_)
            | Self::Thread { .. }
            | Self::Manifest(_)
            | Self::BadSnapshot { .. } => "parquet",
            Self::Spool { .. } => "spool",
            Self::Verification { .. } => "verification",
            Self::Fenced { .. } => "fenced",
            Self::LeaseHeld { .. } => "lease_held",
            Self::NotArchivable { .. } | Self::SourceUnchecked { .. } => "not_archivable",
            Self::NotCommitted(_) => "not_committed",
            Self::Cancelled => "cancelled",
        }
    }
}

#[cfg(test)]
mod tests;
