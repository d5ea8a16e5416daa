//! Why a read of a user's history failed (the hot store, the object store,
//! an archive file): the one error of the page reader ([`crate::history`])
//! and the archive reader ([`crate::cold`]).

use parquet::errors::ParquetError;
use strata_archive::{FormatError, StoreError};

/// A read that failed. It is logged with its `Display` alone (`error =
/// %err`), so a cause shown in the message is not also the `source()`
/// (`{err:#}` would print it twice).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The hot store.
    #[error("{context}: {error}")]
    Db {
        /// What was being done.
        context: &'static str,
        /// The driver's error (shown in the message).
        error: tokio_postgres::Error,
    },
    /// A value the hot store returned that does not decode into its type
    /// (a NULL where none is allowed, ...). Not a transient fault.
    #[error("decode {context}: {error}")]
    Decode {
        /// What was being read.
        context: &'static str,
        /// The driver's error (shown in the message).
        error: tokio_postgres::Error,
    },
    /// The hot store answered in a shape the statement cannot produce.
    #[error("{0}: unexpected answer from the hot store")]
    Unexpected(&'static str),
    /// The object store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An archive file that cannot be read.
    #[error("archive file {key}: {error}")]
    Archive {
        /// The object.
        key: String,
        /// Why (shown in the message).
        error: ArchiveReadError,
    },
    /// Local scratch space for downloads (the cause is shown in the
    /// message, which is what is logged, so it is not also the `source()`).
    #[error("scratch file: {0}")]
    Scratch(std::io::Error),
}

/// Why an archive file could not be read (the text after "archive file
/// KEY: ").
#[derive(Debug, thiserror::Error)]
pub enum ArchiveReadError {
    /// Its footer, page index or pages do not decode.
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    /// Its batches do not decode into rows.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The object store failed while the file's pages were fetched.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Neither the object nor its staging copy exists.
    #[error("neither the object nor its staging copy exists")]
    Missing,
    /// The rows read ahead for the page were dropped before they were
    /// used.
    #[error("rows fetched for this page were evicted")]
    Evicted,
}

impl From<std::io::Error> for ReadError {
    fn from(err: std::io::Error) -> Self {
        Self::Scratch(err)
    }
}

/// For a database call: a failure while doing `context`.
pub(crate) fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ReadError {
    move |error| ReadError::Db { context, error }
}

/// For `Row::try_get`: a value that does not decode into its type.
pub(crate) fn decode(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ReadError {
    move |error| ReadError::Decode { context, error }
}

#[cfg(test)]
mod tests {
    use strata_core::error_chain as chain;

    use super::*;

    fn driver_error() -> tokio_postgres::Error {
        "port=notaport"
            .parse::<tokio_postgres::Config>()
            .expect_err("not a port")
    }

    /// What is logged (the `Display`) shows the cause, and the chain
    /// (`{err:#}`) shows it once, as when these held their cause as text.
    #[test]
    fn read_failures_show_their_cause_once() {
        let driver_text = driver_error().to_string();
        let failed = db("read page")(driver_error());
        assert_eq!(failed.to_string(), format!("read page: {driver_text}"));
        assert_eq!(chain(&failed), failed.to_string());

        let undecodable = decode("event row")(driver_error());
        assert_eq!(
            undecodable.to_string(),
            format!("decode event row: {driver_text}")
        );
        assert_eq!(chain(&undecodable), undecodable.to_string());

        let archive = |error: ArchiveReadError| ReadError::Archive {
            key: "activity/date=2025-03-04/part-00000-a.parquet".into(),
            error,
        };
        let cases = [
            (
                archive(ParquetError::General("bad footer".into()).into()),
                "Parquet error: bad footer",
            ),
            (archive(FormatError::Null.into()), "unexpected null"),
            (
                archive(ArchiveReadError::Missing),
                "neither the object nor its staging copy exists",
            ),
            (
                archive(ArchiveReadError::Evicted),
                "rows fetched for this page were evicted",
            ),
        ];
        for (err, why) in cases {
            let text = format!("archive file activity/date=2025-03-04/part-00000-a.parquet: {why}");
            assert_eq!(err.to_string(), text);
            assert_eq!(chain(&err), text);
        }
    }
}
