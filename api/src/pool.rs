//! A small Postgres connection pool for the API: every connection switches
//! to the API's role and gets a statement timeout before its first use, so
//! no request ever runs with the login user's privileges.
//!
//! Connections keep the API's few constant statements prepared, and plan
//! them generically: a page is then one round trip with no planning (a
//! custom plan of the page statement costs more than running it). The
//! statements are all keyed by the user's leading index column, so one
//! plan fits every user; partitions are still pruned, at execution.

use std::collections::HashMap;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_core::config::DatabaseUrl;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use crate::lock;

/// How long a request waits for a free connection before UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `application_name` of the API's sessions, for `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "strata-api";

/// Why no connection could be had. It is logged with its `Display` alone
/// (`error = %err`), so the cause is shown in the message and is not also
/// the `source()` (`{err:#}` would print it twice).
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every connection is busy.
    #[error("all {0} database connections are busy")]
    Busy(usize),
    /// Connecting failed.
    #[error("database: {error}")]
    Connect {
        /// Why (shown in the message).
        error: strata_pg::PgError,
    },
    /// The new session could not be set up (role, timeouts).
    #[error("database: prepare session ({setup}): {error}")]
    Prepare {
        /// The setup statements.
        setup: String,
        /// The driver's error (shown in the message).
        error: tokio_postgres::Error,
    },
}

struct Inner {
    url: DatabaseUrl,
    role: Option<String>,
    statement_timeout: Duration,
    /// More `SET`s every session runs (see [`Pool::with_session_settings`]).
    session_settings: &'static str,
    size: usize,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

/// The pool; cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("role", &self.inner.role)
            .field("size", &self.inner.size)
            .finish()
    }
}

/// A connection and the statements prepared on it.
struct Connection {
    client: Client,
    prepared: HashMap<&'static str, Statement>,
}

/// A hot-store connection that may keep statements prepared.
pub trait PreparedStatements {
    /// The connection.
    fn client(&self) -> &Client;

    /// `sql` prepared with `types`, once per connection where possible.
    fn prepared(
        &mut self,
        sql: &'static str,
        types: &'static [Type],
    ) -> impl Future<Output = Result<Statement, tokio_postgres::Error>> + Send;
}

/// A bare client prepares on every call (tools and tests).
impl PreparedStatements for Client {
    fn client(&self) -> &Client {
        self
    }

    async fn prepared(
        &mut self,
        sql: &'static str,
        types: &'static [Type],
    ) -> Result<Statement, tokio_postgres::Error> {
        self.prepare_typed(sql, types).await
    }
}

impl PreparedStatements for PooledClient {
    fn client(&self) -> &Client {
        self
    }

    async fn prepared(
        &mut self,
        sql: &'static str,
        types: &'static [Type],
    ) -> Result<Statement, tokio_postgres::Error> {
        let connection = self.connection.as_mut().expect("present until drop");
        if let Some(statement) = connection.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = connection.client.prepare_typed(sql, types).await?;
        connection.prepared.insert(sql, statement.clone());
        Ok(statement)
    }
}

/// A connection on loan; returns to the pool when dropped (unless broken).
pub struct PooledClient {
    connection: Option<Connection>,
    inner: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
    /// Whether the connection goes back to the pool when dropped: not
    /// while a statement a dropped future started may still be running
    /// on it (the next borrower would wait behind it).
    reusable: bool,
}

impl PooledClient {
    /// Marks the connection as in the middle of work that may be
    /// abandoned (`false`) or done with it (`true`); dropped while not
    /// reusable, it is closed instead of going back to the pool.
    pub fn set_reusable(&mut self, reusable: bool) {
        self.reusable = reusable;
    }
}

impl Deref for PooledClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.connection.as_ref().expect("present until drop").client
    }
}

impl DerefMut for PooledClient {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.connection.as_mut().expect("present until drop").client
    }
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            if self.reusable && !connection.client.is_closed() {
                lock(&self.inner.idle).push(connection);
            }
        }
    }
}

impl Pool {
    /// At most `size` connections to `url`, each switched to `role` (`None`:
    /// the login user) with `statement_timeout`.
    pub fn new(url: &str, role: Option<&str>, statement_timeout: Duration, size: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                url: DatabaseUrl::new(url),
                role: role.map(str::to_string),
                statement_timeout,
                session_settings: "",
                size,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(size)),
            }),
        }
    }

    /// The same pool whose sessions also run `settings` (constant `SET`
    /// statements) before their first use. Call before the first `get`.
    pub fn with_session_settings(self, settings: &'static str) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                url: inner.url.clone(),
                role: inner.role.clone(),
                statement_timeout: inner.statement_timeout,
                session_settings: settings,
                size: inner.size,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(inner.size)),
            }),
        }
    }

    /// A connection, waiting up to a few seconds for one to be free.
    pub async fn get(&self) -> Result<PooledClient, PoolError> {
        let permit =
            tokio::time::timeout(ACQUIRE_TIMEOUT, self.inner.permits.clone().acquire_owned())
                .await
                .map_err(|_| PoolError::Busy(self.inner.size))?
                .map_err(|_| PoolError::Busy(self.inner.size))?;
        let reused = {
            let mut idle = lock(&self.inner.idle);
            let mut found = None;
            while let Some(connection) = idle.pop() {
                if !connection.client.is_closed() {
                    found = Some(connection);
                    break;
                }
            }
            found
        };
        let connection = match reused {
            Some(connection) => connection,
            None => Connection {
                client: self.connect().await?,
                prepared: HashMap::new(),
            },
        };
        Ok(PooledClient {
            connection: Some(connection),
            inner: self.inner.clone(),
            _permit: permit,
            reusable: true,
        })
    }

    async fn connect(&self) -> Result<Client, PoolError> {
        let client = strata_pg::connect(&self.inner.url, APPLICATION_NAME, CONNECT_TIMEOUT)
            .await
            .map_err(|error| PoolError::Connect { error })?;
        let mut setup = format!(
            "SET statement_timeout = {}; SET plan_cache_mode = force_generic_plan;",
            self.inner.statement_timeout.as_millis()
        );
        if let Some(role) = &self.inner.role {
            setup.push_str(&format!(" SET ROLE {};", quote_identifier(role)));
        }
        if !self.inner.session_settings.is_empty() {
            setup.push(' ');
            setup.push_str(self.inner.session_settings);
        }
        match client.batch_execute(&setup).await {
            Ok(()) => Ok(client),
            Err(error) => Err(PoolError::Prepare { setup, error }),
        }
    }
}

/// `"name"` with embedded quotes doubled: the role comes from
/// configuration, never from a request, but is quoted all the same.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use strata_core::error_chain as chain;
    use strata_pg::PgError;

    use super::*;

    /// The texts logged are those of the string variants these replaced,
    /// each cause once in the chain.
    #[test]
    fn pool_errors_show_their_cause_once() {
        let timeout = PoolError::Connect {
            error: PgError::ConnectTimeout {
                url: "postgres://strata:***@db.example/hot".into(),
                timeout: Duration::from_secs(10),
            },
        };
        assert_eq!(
            timeout.to_string(),
            "database: connect to postgres://strata:***@db.example/hot: timed out after 10s"
        );
        assert_eq!(chain(&timeout), timeout.to_string());

        let driver = "port=notaport"
            .parse::<tokio_postgres::Config>()
            .expect_err("not a port");
        let driver_text = driver.to_string();
        let setup = "SET statement_timeout = 5000; SET plan_cache_mode = force_generic_plan;";
        let prepare = PoolError::Prepare {
            setup: setup.into(),
            error: driver,
        };
        assert_eq!(
            prepare.to_string(),
            format!("database: prepare session ({setup}): {driver_text}")
        );
        assert_eq!(chain(&prepare), prepare.to_string());
    }
}
