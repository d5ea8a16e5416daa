//! Why a read of a user's history failed (the hot store, the object store,
//! an archive file): the one error of the page reader ([`crate::history`])
//! and the archive reader ([`crate::cold`]).

use strata_archive::StoreError;

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
    /// Local scratch space for downloads (the cause is shown in the
    /// message, which is what is logged, so it is not also the `source()`).
    #[error("scratch file: {0}")]
    Scratch(std::io::Error),
}

impl From<std::io::Error> for ReadError {
    fn from(err: std::io::Error) -> Self {
        Self::Scratch(err)
    }
}

/// For a database call: a failure while doing `context`.
pub(crate) fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ReadError {
    move |source| ReadError::Db { context, source }
}

/// For `Row::try_get`: a value that does not decode into its type.
pub(crate) fn decode(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ReadError {
    move |source| ReadError::Decode { context, source }
}
