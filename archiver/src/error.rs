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
            Self::Db { .. } | Self::BadUrl { .. } => "db",
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
mod tests {
    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 3, 4).expect("a date")
    }

    use strata_core::error_chain as chain;

    #[test]
    fn transient_faults_are_retryable() {
        let io = std::io::Error::other("disk busy");
        for err in [
            ArchiveError::Timeout {
                context: "seal the day".into(),
                seconds: 30.0,
            },
            ArchiveError::spool(std::path::Path::new("/tmp/x"))(io),
            ArchiveError::LeaseHeld {
                holder: "other".into(),
                until: "later".into(),
            },
            ArchiveError::SourceUnchecked {
                day: day(),
                source_name: "main".into(),
                error: Box::new(ArchiveError::Timeout {
                    context: "read the outbox".into(),
                    seconds: 30.0,
                }),
            },
        ] {
            assert!(err.is_retryable(), "{err}");
        }
    }

    #[test]
    fn permanent_faults_are_not_retryable() {
        for err in [
            ArchiveError::StageStopped { stage: "uploader" },
            ArchiveError::BadSnapshot { text: "x".into() },
            ArchiveError::Verification {
                key: "k".into(),
                message: "SHA-256 mismatch".into(),
            },
            ArchiveError::Fenced { epoch: 7 },
            ArchiveError::NotCommitted(day()),
            ArchiveError::UnknownValue {
                context: "the archive catalog",
                error: UnknownValue {
                    column: "day state",
                    value: "archived".into(),
                },
            },
            ArchiveError::Cancelled,
        ] {
            assert!(!err.is_retryable(), "{err}");
        }
    }

    /// Only a transient object-store fault is retried: a missing object,
    /// a refusal (401/403) and a rejected request (other 4xx) are not.
    #[test]
    fn object_store_failures_are_retried_only_when_transient() {
        use strata_archive::StoreErrorKind;
        let cases = [
            (StoreErrorKind::Transient, true),
            (StoreErrorKind::NotFound, false),
            (StoreErrorKind::Denied, false),
            (StoreErrorKind::Invalid, false),
        ];
        for (kind, retryable) in cases {
            let err = ArchiveError::from(StoreError {
                op: "put",
                key: "_staging/activity/date=2025-03-04/part-00000-a.parquet".into(),
                message: "AccessDenied: Access Denied".into(),
                kind,
            });
            assert_eq!(err.is_retryable(), retryable, "{kind:?}");
            assert_eq!(err.label(), "object_store");
            assert_eq!(
                chain(&err),
                "object store: put _staging/activity/date=2025-03-04/part-00000-a.parquet: AccessDenied: Access Denied"
            );
        }
    }

    #[test]
    fn stopped_stages_keep_their_message_and_label() {
        for (stage, text) in [
            ("encoder", "parquet: encoder stopped"),
            ("uploader", "parquet: uploader stopped"),
        ] {
            let err = ArchiveError::StageStopped { stage };
            assert_eq!(err.to_string(), text);
            assert_eq!(chain(&err), text);
            assert_eq!(err.label(), "parquet");
            assert!(!err.is_retryable());
        }
    }

    #[test]
    fn split_variants_keep_their_former_messages_and_labels() {
        let io = std::io::Error::other("no space left on device");
        let spool = ArchiveError::spool(std::path::Path::new("/spool/part-00000.parquet"))(io);
        assert_eq!(
            spool.to_string(),
            "spool file /spool/part-00000.parquet: no space left on device"
        );
        assert_eq!(chain(&spool), spool.to_string());
        assert_eq!(spool.label(), "spool");

        let snapshot = ArchiveError::BadSnapshot { text: "1;2".into() };
        assert_eq!(
            snapshot.to_string(),
            r#"parquet: unexpected snapshot text "1;2""#
        );
        assert_eq!(snapshot.label(), "parquet");

        let unchecked = ArchiveError::SourceUnchecked {
            day: day(),
            source_name: "main".into(),
            error: Box::new(ArchiveError::Cancelled),
        };
        assert_eq!(
            unchecked.to_string(),
            r#"day 2025-03-04 cannot be archived: cannot check source "main" for unshipped events: cancelled"#
        );
        assert_eq!(unchecked.label(), "not_archivable");

        let unknown = ArchiveError::UnknownValue {
            context: "the archive catalog",
            error: UnknownValue {
                column: "day state",
                value: "archived".into(),
            },
        };
        assert_eq!(
            unknown.to_string(),
            r#"decode the archive catalog: unknown day state "archived""#
        );
        assert_eq!(unknown.label(), "decode");
    }

    /// A driver error to wrap (the only kind a unit test can make: a
    /// connection string that does not parse).
    fn driver_error() -> tokio_postgres::Error {
        <tokio_postgres::Config as std::str::FromStr>::from_str("host=h port=notaport")
            .expect_err("a bad port")
    }

    #[test]
    fn session_errors_keep_the_archivers_messages_labels_and_retry_policy() {
        let url = "postgres://strata:***@db.example/hot";
        let described = describe_pg_error(&driver_error());

        let bad_url = ArchiveError::from(PgError::BadUrl {
            url: url.into(),
            error: driver_error(),
        });
        assert!(
            matches!(bad_url, ArchiveError::BadUrl { .. }),
            "{bad_url:?}"
        );
        assert_eq!(bad_url.to_string(), format!("parse {url}: {described}"));
        assert_eq!(bad_url.label(), "db");
        assert!(!bad_url.is_retryable());

        let connect = ArchiveError::from(PgError::Connect {
            url: url.into(),
            error: driver_error(),
        });
        assert!(matches!(connect, ArchiveError::Db { .. }), "{connect:?}");
        assert_eq!(
            connect.to_string(),
            format!("connect to {url}: {described}")
        );
        assert_eq!(chain(&connect), connect.to_string());
        assert_eq!(connect.label(), "db");
        assert!(connect.is_retryable());

        let connect_timeout = ArchiveError::from(PgError::ConnectTimeout {
            url: url.into(),
            timeout: std::time::Duration::from_secs(30),
        });
        assert!(
            matches!(connect_timeout, ArchiveError::Timeout { seconds, .. } if seconds == 30.0),
            "{connect_timeout:?}"
        );
        assert_eq!(
            connect_timeout.to_string(),
            format!("connect to {url}: timed out after 30 s")
        );
        assert_eq!(connect_timeout.label(), "timeout");
        assert!(connect_timeout.is_retryable());

        let timeout = ArchiveError::from(PgError::Timeout {
            context: "renew the archiver lease",
            timeout: std::time::Duration::from_millis(12_000),
        });
        assert_eq!(
            timeout.to_string(),
            "renew the archiver lease: timed out after 12 s"
        );
        assert_eq!(timeout.label(), "timeout");
        assert!(timeout.is_retryable());

        let database = ArchiveError::from(PgError::Database {
            context: "seal the day",
            error: driver_error(),
        });
        assert!(
            matches!(&database, ArchiveError::Db { context, .. } if context == "seal the day"),
            "{database:?}"
        );
        assert_eq!(database.to_string(), format!("seal the day: {described}"));
        assert_eq!(database.label(), "db");
        assert!(database.is_retryable());
    }

    #[test]
    fn unreadable_files_are_told_from_other_failures() {
        let stopped = ArchiveError::StageStopped { stage: "encoder" };
        assert_eq!(stopped.unreadable().as_deref(), Some("encoder stopped"));
        let format = ArchiveError::from(strata_archive::FormatError::Null);
        assert_eq!(format.unreadable().as_deref(), Some("unexpected null"));
        assert_eq!(format.to_string(), "parquet: unexpected null");
        assert_eq!(format.label(), "parquet");
        assert!(!format.is_retryable());
        assert_eq!(ArchiveError::Cancelled.unreadable(), None);
        let timeout = ArchiveError::Timeout {
            context: "x".into(),
            seconds: 1.0,
        };
        assert_eq!(timeout.unreadable(), None);
    }

    /// What the binary prints (`{err:#}`) is each message once, as it was
    /// when these variants held their cause as text: the cause is in the
    /// message (which the daemon logs alone), never also the `source()`.
    #[test]
    fn causes_print_once_in_the_chain() {
        let io = || std::io::Error::other("no space left on device");
        let spool = ArchiveError::spool(std::path::Path::new("/spool/part-00000.parquet"))(io());
        assert_eq!(
            chain(&spool),
            "spool file /spool/part-00000.parquet: no space left on device"
        );

        let unchecked = ArchiveError::SourceUnchecked {
            day: day(),
            source_name: "main".into(),
            error: Box::new(ArchiveError::spool(std::path::Path::new("/tmp/x"))(io())),
        };
        assert_eq!(
            chain(&unchecked),
            r#"day 2025-03-04 cannot be archived: cannot check source "main" for unshipped events: spool file /tmp/x: no space left on device"#
        );
        assert!(unchecked.is_retryable());

        let json = serde_json::from_str::<serde_json::Value>("{").expect_err("not JSON");
        let json_text = json.to_string();
        let manifest = ArchiveError::Manifest(json);
        assert_eq!(chain(&manifest), format!("parquet: manifest: {json_text}"));

        let codec = ArchiveError::from(parquet::errors::ParquetError::General("bad page".into()));
        assert!(matches!(codec, ArchiveError::ParquetCodec(_)), "{codec:?}");
        assert_eq!(chain(&codec), "parquet: Parquet error: bad page");
        assert_eq!(
            codec.unreadable().as_deref(),
            Some("Parquet error: bad page")
        );

        let arrow = ArchiveError::from(arrow_schema::ArrowError::ComputeError("overflow".into()));
        assert!(matches!(arrow, ArchiveError::Arrow(_)), "{arrow:?}");
        assert_eq!(chain(&arrow), "parquet: Compute error: overflow");

        let format = ArchiveError::from(strata_archive::FormatError::Null);
        assert_eq!(chain(&format), "parquet: unexpected null");

        let unknown = ArchiveError::UnknownValue {
            context: "the archive catalog",
            error: UnknownValue {
                column: "day state",
                value: "archived".into(),
            },
        };
        assert_eq!(
            chain(&unknown),
            r#"decode the archive catalog: unknown day state "archived""#
        );

        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let join = runtime.block_on(async {
            let task = tokio::spawn(std::future::pending::<()>());
            task.abort();
            task.await.expect_err("aborted")
        });
        let join_text = join.to_string();
        let thread = ArchiveError::Thread {
            context: "encoder thread",
            error: join,
        };
        assert_eq!(
            chain(&thread),
            format!("parquet: encoder thread: {join_text}")
        );
        assert_eq!(
            thread.unreadable(),
            Some(format!("encoder thread: {join_text}"))
        );

        let url = "postgres://strata:***@db.example/hot";
        let described = describe_pg_error(&driver_error());
        let bad_url = ArchiveError::from(PgError::BadUrl {
            url: url.into(),
            error: driver_error(),
        });
        assert_eq!(chain(&bad_url), format!("parse {url}: {described}"));
        let database = ArchiveError::from(PgError::Database {
            context: "seal the day",
            error: driver_error(),
        });
        assert_eq!(chain(&database), format!("seal the day: {described}"));

        let driver_text = driver_error().to_string();
        let decode = ArchiveError::decode("the archive catalog")(driver_error());
        assert_eq!(
            decode.to_string(),
            format!("decode the archive catalog: {driver_text}")
        );
        assert_eq!(chain(&decode), decode.to_string());
        assert_eq!(decode.label(), "decode");
        assert!(!decode.is_retryable());
    }
}
