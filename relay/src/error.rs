//! The relay's error type and the one question retry loops ask of it.

/// Why a relay operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A database call failed.
    #[error("{context}: {}", strata_pg::describe_pg_error(error))]
    Database {
        /// What was being done ("claim batch", "commit hot batch", ...).
        context: &'static str,
        /// The driver error, shown in the message with the server's
        /// SQLSTATE and text (so not also the `source()`: `{err:#}` would
        /// print it twice).
        error: tokio_postgres::Error,
    },
    /// A database call took longer than `relay.statement_timeout`.
    #[error("{context}: timed out")]
    Timeout {
        /// What was being done.
        context: &'static str,
    },
    /// A batch held an event for a day whose partition is missing (dropped
    /// after archiving, or never created); retry after creating it.
    #[error("hot store has no partition for a day in the batch")]
    PartitionMissing,
    /// The hot store runs with unsafe durability settings.
    #[error("hot store runs with {setting}={value}; a crash could lose events already released from the outbox. Fix the server, or set hot_store.allow_unsafe_durability = true to accept the risk")]
    UnsafeDurability {
        /// The setting.
        setting: &'static str,
        /// Its value.
        value: String,
    },
    /// A database lacks Strata's schema.
    #[error(transparent)]
    NotMigrated(#[from] strata_migrations::MigrateError),
    /// A connection string is malformed.
    #[error("{what} connection string is invalid: {error}")]
    BadUrl {
        /// Which database.
        what: String,
        /// The parse error (shown in the message, so not also the
        /// `source()`).
        error: tokio_postgres::Error,
    },
    /// TLS settings that cannot work (see [`strata_pg::PgError::Tls`]);
    /// the message names the URL and the setting.
    #[error("{0}")]
    Tls(String),
    /// A row from the database did not have the expected shape.
    #[error("unexpected row shape in {context}: {error}")]
    Row {
        /// Which query.
        context: &'static str,
        /// The decode error (shown in the message, so not also the
        /// `source()`).
        error: tokio_postgres::Error,
    },
    /// This relay's reconciler term was superseded (fencing check failed).
    #[error("reconciler term {epoch} was superseded")]
    Superseded {
        /// The stale epoch.
        epoch: i64,
    },
    /// Required configuration is missing.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The relay was asked to stop.
    #[error("cancelled")]
    Cancelled,
}

impl RelayError {
    /// For `Row::try_get`: a value of the `context` query that does not
    /// decode into its type.
    pub(crate) fn row(context: &'static str) -> impl Fn(tokio_postgres::Error) -> Self {
        move |error| RelayError::Row { context, error }
    }

    /// Whether retrying (after reconnecting) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            RelayError::Database { .. }
            | RelayError::Timeout { .. }
            | RelayError::PartitionMissing
            | RelayError::Superseded { .. } => true,
            // A value that does not decode will not decode next time either
            // (claimed rows are read raw and never fail; see `claim.rs`).
            RelayError::Row { .. }
            | RelayError::UnsafeDurability { .. }
            | RelayError::NotMigrated(_)
            | RelayError::BadUrl { .. }
            | RelayError::Tls(_)
            | RelayError::Config(_)
            | RelayError::Cancelled => false,
        }
    }

    /// Whether the connections involved should be dropped and reopened.
    pub fn needs_reconnect(&self) -> bool {
        !matches!(self, RelayError::PartitionMissing)
    }

    /// Whether this is the hot store finding no partition for a row's day
    /// (23514 without a constraint name; a CHECK constraint's violation has
    /// the same code and names its constraint).
    pub fn is_missing_partition(&self) -> bool {
        match self {
            RelayError::Database { error, .. } => {
                error.code().map(|c| c.code()) == Some("23514")
                    && error
                        .as_db_error()
                        .is_some_and(|e| e.constraint().is_none())
            }
            _ => false,
        }
    }

    /// Whether the hot store refused a row for its values rather than for a
    /// fault of its own: data exceptions (22), integrity violations (23)
    /// other than the key (23505, dropped as a duplicate) and a missing
    /// partition, and program limits (54, such as nesting too deep). Such a
    /// batch fails the same way every time until the row is alone.
    pub fn is_row_rejection(&self) -> bool {
        if self.is_missing_partition() {
            return false;
        }
        match self.sqlstate() {
            Some("23505") => false,
            Some(code) => {
                code.starts_with("22") || code.starts_with("23") || code.starts_with("54")
            }
            None => false,
        }
    }

    /// SQLSTATE, when the database sent one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            RelayError::Database { error, .. } => error.code().map(|c| c.code()),
            _ => None,
        }
    }
}

/// The relay's reading of a session or call failure: a connect failure is
/// a [`RelayError::Database`] in context "connect", a connect timeout a
/// [`RelayError::Timeout`] there, a malformed URL a [`RelayError::BadUrl`]
/// and unworkable TLS settings a [`RelayError::Tls`], the two not retried.
impl From<strata_pg::PgError> for RelayError {
    fn from(err: strata_pg::PgError) -> Self {
        use strata_pg::PgError;
        match err {
            PgError::BadUrl { url, error } => RelayError::BadUrl { what: url, error },
            tls @ PgError::Tls { .. } => RelayError::Tls(tls.to_string()),
            PgError::Connect { error, .. } => RelayError::Database {
                context: "connect",
                error,
            },
            PgError::ConnectTimeout { .. } => RelayError::Timeout { context: "connect" },
            PgError::Timeout { context, .. } => RelayError::Timeout { context },
            PgError::Database { context, error } => RelayError::Database { context, error },
        }
    }
}

/// Runs a database future under a timeout ([`strata_pg::bounded`]), mapping
/// both failure kinds.
pub(crate) async fn db<T>(
    context: &'static str,
    timeout: std::time::Duration,
    fut: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, RelayError> {
    Ok(strata_pg::bounded(context, timeout, fut).await?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use strata_pg::PgError;

    use super::*;

    fn driver_error() -> tokio_postgres::Error {
        "port=notaport"
            .parse::<tokio_postgres::Config>()
            .expect_err("not a port")
    }

    use strata_core::error_chain as chain;

    /// A database error's message shows the driver's error in full (it is
    /// what the relay logs); `{err:#}` prints it once.
    #[test]
    fn database_errors_print_their_cause_once() {
        let described = strata_pg::describe_pg_error(&driver_error());
        let failed = RelayError::from(PgError::Database {
            context: "commit hot batch",
            error: driver_error(),
        });
        assert_eq!(failed.to_string(), format!("commit hot batch: {described}"));
        assert_eq!(chain(&failed), failed.to_string());
        assert_eq!(failed.sqlstate(), None);

        let refused = RelayError::from(PgError::Connect {
            url: "postgres://strata:***@db/hot".into(),
            error: driver_error(),
        });
        assert_eq!(chain(&refused), format!("connect: {described}"));

        let stalled = RelayError::Timeout {
            context: "claim batch",
        };
        assert_eq!(chain(&stalled), "claim batch: timed out");

        let driver_text = driver_error().to_string();
        let bad_url = RelayError::from(PgError::BadUrl {
            url: "postgres://strata:***@db/hot".into(),
            error: driver_error(),
        });
        assert_eq!(
            bad_url.to_string(),
            format!("postgres://strata:***@db/hot connection string is invalid: {driver_text}")
        );
        assert_eq!(chain(&bad_url), bad_url.to_string());

        let row = RelayError::row("claim")(driver_error());
        assert_eq!(
            row.to_string(),
            format!("unexpected row shape in claim: {driver_text}")
        );
        assert_eq!(chain(&row), row.to_string());
        assert!(!row.is_retryable());
    }

    #[test]
    fn session_failures_keep_their_relay_meaning() {
        let url = || "postgres://strata:***@db/hot".to_string();
        let bad_url = RelayError::from(PgError::BadUrl {
            url: url(),
            error: driver_error(),
        });
        assert!(matches!(bad_url, RelayError::BadUrl { .. }));
        assert!(!bad_url.is_retryable());

        let refused = RelayError::from(PgError::Connect {
            url: url(),
            error: driver_error(),
        });
        assert!(matches!(
            refused,
            RelayError::Database {
                context: "connect",
                ..
            }
        ));
        assert!(refused.is_retryable());

        let slow = RelayError::from(PgError::ConnectTimeout {
            url: url(),
            timeout: Duration::from_secs(5),
        });
        assert!(matches!(slow, RelayError::Timeout { context: "connect" }));
        assert!(slow.is_retryable());

        let stalled = RelayError::from(PgError::Timeout {
            context: "claim batch",
            timeout: Duration::from_secs(5),
        });
        assert!(matches!(
            stalled,
            RelayError::Timeout {
                context: "claim batch"
            }
        ));
        assert_eq!(stalled.to_string(), "claim batch: timed out");
        assert!(stalled.is_retryable());

        let failed = RelayError::from(PgError::Database {
            context: "commit hot batch",
            error: driver_error(),
        });
        assert!(matches!(
            failed,
            RelayError::Database {
                context: "commit hot batch",
                ..
            }
        ));
        assert!(failed.is_retryable() && failed.needs_reconnect());
    }
}
