//! Why opening a session or a database call failed. URLs appear only
//! redacted ([`DatabaseUrl::redacted`](strata_core::config::DatabaseUrl::redacted)):
//! no variant can carry a password.

use std::time::Duration;

/// Why a Postgres operation failed. TLS settings that cannot work and a
/// server certificate they reject are a [`PgError::Tls`]; a handshake cut
/// by the network is a [`PgError::Connect`]; the enum is exhaustive so that each caller decides
/// how a new kind maps onto its own retry policy.
///
/// Each message shows the driver's error in full ([`describe_pg_error`]),
/// so that a log line (`error = %err`) says what failed; for the same
/// reason the driver's error is not the `source()`, or the binary's
/// `{err:#}` would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The connection string does not parse.
    #[error("{url} connection string is invalid: {}", describe_pg_error(error))]
    BadUrl {
        /// The connection string, its password replaced by `***`.
        url: String,
        /// The parse error.
        error: tokio_postgres::Error,
    },
    /// The server could not be reached, refused the session, or failed
    /// authentication.
    #[error("connect to {url}: {}", describe_pg_error(error))]
    Connect {
        /// The connection string, its password replaced by `***`.
        url: String,
        /// The driver error.
        error: tokio_postgres::Error,
    },
    /// The TLS settings cannot work: a setting is invalid or its file
    /// unreadable, the server's certificate fails the checks `sslmode`
    /// asks for, or the server refuses the plaintext `sslmode=disable`
    /// insists on. The message names the setting to fix.
    #[error("connect to {url}: {message}")]
    Tls {
        /// The connection string, its password replaced by `***`.
        url: String,
        /// What is wrong, naming the setting.
        message: String,
    },
    /// Connecting (TCP, authentication, start-up) took longer than allowed.
    #[error("connect to {url}: timed out after {timeout:?}")]
    ConnectTimeout {
        /// The connection string, its password replaced by `***`.
        url: String,
        /// The bound that was hit.
        timeout: Duration,
    },
    /// A database call took longer than allowed (see [`crate::bounded`]).
    #[error("{context}: timed out after {timeout:?}")]
    Timeout {
        /// What was being done ("claim batch", "renew the lease", ...).
        context: &'static str,
        /// The bound that was hit.
        timeout: Duration,
    },
    /// A database call failed.
    #[error("{context}: {}", describe_pg_error(error))]
    Database {
        /// What was being done.
        context: &'static str,
        /// The driver error.
        error: tokio_postgres::Error,
    },
}

impl PgError {
    /// Whether retrying (on a new session) may succeed: everything but a
    /// connection string that does not parse and TLS settings that cannot
    /// work, which fail the same way every time. A server that refuses or rejects a statement is retried like
    /// the relay always has; callers that know a SQLSTATE is permanent ask
    /// [`PgError::sqlstate`].
    pub fn is_retryable(&self) -> bool {
        match self {
            PgError::Connect { .. }
            | PgError::ConnectTimeout { .. }
            | PgError::Timeout { .. }
            | PgError::Database { .. } => true,
            PgError::BadUrl { .. } | PgError::Tls { .. } => false,
        }
    }

    /// SQLSTATE, when the server sent one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::Connect { error, .. } | PgError::Database { error, .. } => {
                error.code().map(|code| code.code())
            }
            PgError::BadUrl { .. }
            | PgError::Tls { .. }
            | PgError::ConnectTimeout { .. }
            | PgError::Timeout { .. } => None,
        }
    }
}

/// A tokio-postgres error with the server's SQLSTATE and message, which its
/// `Display` hides ("db error"). Shared by every crate that reports them.
pub fn describe_pg_error(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{err} ({}): {}", db.code().code(), db.message()),
        None => match std::error::Error::source(err) {
            Some(inner) => format!("{err}: {inner}"),
            None => err.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_name_what_was_being_done_and_the_bound() {
        let err = PgError::Timeout {
            context: "renew the lease",
            timeout: Duration::from_millis(1500),
        };
        assert_eq!(err.to_string(), "renew the lease: timed out after 1.5s");
        assert!(err.is_retryable());
        assert_eq!(err.sqlstate(), None);
    }

    use strata_core::error_chain as chain;

    /// A driver error to wrap (a connection string that does not parse).
    fn driver_error() -> tokio_postgres::Error {
        "port=notaport"
            .parse::<tokio_postgres::Config>()
            .expect_err("not a port")
    }

    /// The message shows the driver's error in full; `{err:#}` prints it
    /// once.
    #[test]
    fn driver_errors_print_once_in_the_chain() {
        let url = "postgres://strata:***@db.example/hot";
        let described = describe_pg_error(&driver_error());
        assert!(
            described.starts_with("invalid connection string: "),
            "{described}"
        );

        let bad_url = PgError::BadUrl {
            url: url.into(),
            error: driver_error(),
        };
        assert_eq!(
            chain(&bad_url),
            format!("{url} connection string is invalid: {described}")
        );
        assert!(!bad_url.is_retryable());

        let connect = PgError::Connect {
            url: url.into(),
            error: driver_error(),
        };
        assert_eq!(chain(&connect), format!("connect to {url}: {described}"));
        assert!(connect.is_retryable());

        let database = PgError::Database {
            context: "claim batch",
            error: driver_error(),
        };
        assert_eq!(chain(&database), format!("claim batch: {described}"));
        assert_eq!(database.sqlstate(), None);
    }
}
