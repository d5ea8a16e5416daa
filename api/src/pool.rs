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

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every connection is busy.
    #[error("all {0} database connections are busy")]
    Busy(usize),
    /// Connecting or preparing the session failed.
    #[error("database: {0}")]
    Connect(String),
}

struct Inner {
    url: DatabaseUrl,
    role: String,
    statement_timeout: Duration,
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
            if !connection.client.is_closed() {
                lock(&self.inner.idle).push(connection);
            }
        }
    }
}

impl Pool {
    /// At most `size` connections to `url`, each switched to `role` (empty:
    /// the login user) with `statement_timeout`.
    pub fn new(url: &str, role: &str, statement_timeout: Duration, size: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                url: DatabaseUrl::new(url),
                role: role.to_string(),
                statement_timeout,
                size,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(size)),
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
        })
    }

    async fn connect(&self) -> Result<Client, PoolError> {
        let client = strata_pg::connect(&self.inner.url, APPLICATION_NAME, CONNECT_TIMEOUT)
            .await
            .map_err(|e| PoolError::Connect(e.to_string()))?;
        let mut setup = format!(
            "SET statement_timeout = {}; SET plan_cache_mode = force_generic_plan;",
            self.inner.statement_timeout.as_millis()
        );
        if !self.inner.role.is_empty() {
            setup.push_str(&format!(
                " SET ROLE {};",
                quote_identifier(&self.inner.role)
            ));
        }
        client
            .batch_execute(&setup)
            .await
            .map_err(|e| PoolError::Connect(format!("prepare session ({setup}): {e}")))?;
        Ok(client)
    }
}

/// `"name"` with embedded quotes doubled: the role comes from
/// configuration, never from a request, but is quoted all the same.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
