//! `Outbox`: validation, then one INSERT into `strata_outbox.events` on the
//! caller's connection or transaction (sqlx or tokio-postgres).

use chrono::{DateTime, Utc};
use strata_core::event::{validate_source, EventLimits, NewEvent, PreparedEvent, ValidationError};
use uuid::Uuid;

/// Insert of one event: the SQL any producer can use.
pub const INSERT_ONE_SQL: &str = "INSERT INTO strata_outbox.events \
     (event_id, user_id, kind, occurred_at, source, payload) \
     VALUES ($1, $2, $3, $4, $5, $6::text::jsonb)";

/// Insert of many events in one statement.
const INSERT_MANY_SQL: &str = "INSERT INTO strata_outbox.events \
     (event_id, user_id, kind, occurred_at, source, payload) \
     SELECT e, u, k, o, $5, p::jsonb \
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $6::text[]) AS t(e, u, k, o, p)";

/// The naive wake-up: a NOTIFY inside the business transaction.
const NOTIFY_SQL: &str = "SELECT pg_notify('strata_outbox', '')";

/// Why an event was not enqueued. Nothing was written in every case but
/// `Database`, where the caller's transaction decides (roll it back).
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// Event number `index` (0-based) broke a rule; nothing was written.
    #[error("event {index} is invalid: {source}")]
    Invalid {
        /// Position in the batch.
        index: usize,
        /// The rule broken.
        #[source]
        source: ValidationError,
    },
    /// `enqueue_many` was called with no events.
    #[error("no events to enqueue")]
    Empty,
    /// The database rejected the insert (the caller's transaction is now
    /// aborted and must be rolled back).
    #[cfg(feature = "sqlx")]
    #[error("insert into the outbox: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// The database rejected the insert (the caller's transaction is now
    /// aborted and must be rolled back).
    #[cfg(feature = "tokio-postgres")]
    #[error("insert into the outbox: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// Why [`Outbox::enqueue_pg_pipelined`] failed: the event or its insert,
/// or the caller's own statements sent with it.
#[derive(Debug, thiserror::Error)]
pub enum PipelinedError<E> {
    /// The event was invalid (nothing was sent) or its insert failed.
    #[error(transparent)]
    Produce(ProduceError),
    /// The caller's statements failed.
    #[error("the statements sent with the event failed: {0}")]
    Business(E),
}

/// Writes events into the outbox of the database the caller's transaction
/// belongs to. Cheap to clone; holds no connection.
#[derive(Debug, Clone)]
pub struct Outbox {
    source: String,
    limits: EventLimits,
    notify_in_transaction: bool,
}

impl Outbox {
    /// An outbox writer for the producing service `source` (1 to 64 bytes),
    /// with the default limits (64 KiB payloads).
    pub fn new(source: impl Into<String>) -> Result<Self, ValidationError> {
        let source = source.into();
        validate_source(&source)?;
        Ok(Self {
            source,
            limits: EventLimits::default(),
            notify_in_transaction: false,
        })
    }

    /// Replaces the limits (the relay dead-letters rows above its own
    /// `relay.max_payload_bytes`, so keep the two equal).
    pub fn with_limits(mut self, limits: EventLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Also sends `NOTIFY strata_outbox` inside each enqueueing transaction.
    /// Lowest wake-up latency at low rates, but every such commit takes
    /// Postgres's global notify lock across its fsync: do not use at load.
    pub fn notify_in_transaction(mut self, enabled: bool) -> Self {
        self.notify_in_transaction = enabled;
        self
    }

    /// The producing service's name.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Validates every event, assigning ids and times; fails on the first
    /// invalid one without writing anything.
    pub fn prepare(&self, events: &[NewEvent]) -> Result<Vec<PreparedEvent>, ProduceError> {
        events
            .iter()
            .enumerate()
            .map(|(index, event)| {
                event
                    .prepare(&self.limits)
                    .map_err(|source| ProduceError::Invalid { index, source })
            })
            .collect()
    }

    /// Enqueues one event on a sqlx connection, normally a transaction
    /// (`&mut tx`). Returns its event id.
    #[cfg(feature = "sqlx")]
    pub async fn enqueue_sqlx(
        &self,
        conn: &mut sqlx::PgConnection,
        event: &NewEvent,
    ) -> Result<Uuid, ProduceError> {
        let event = self.prepare_one(event)?;
        sqlx::query(INSERT_ONE_SQL)
            .bind(event.event_id)
            .bind(&event.user_id)
            .bind(&event.kind)
            .bind(event.occurred_at)
            .bind(&self.source)
            .bind(&event.payload_text)
            .execute(&mut *conn)
            .await?;
        if self.notify_in_transaction {
            sqlx::query(NOTIFY_SQL).execute(&mut *conn).await?;
        }
        Ok(event.event_id)
    }

    /// Enqueues several events in one statement on a sqlx connection.
    #[cfg(feature = "sqlx")]
    pub async fn enqueue_many_sqlx(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[NewEvent],
    ) -> Result<Vec<Uuid>, ProduceError> {
        let columns = Columns::from(self.prepare(events)?)?;
        sqlx::query(INSERT_MANY_SQL)
            .bind(&columns.ids)
            .bind(&columns.users)
            .bind(&columns.kinds)
            .bind(&columns.times)
            .bind(&self.source)
            .bind(&columns.payloads)
            .execute(&mut *conn)
            .await?;
        if self.notify_in_transaction {
            sqlx::query(NOTIFY_SQL).execute(&mut *conn).await?;
        }
        Ok(columns.ids)
    }

    /// Enqueues one event on a tokio-postgres transaction (or client).
    /// One round trip: parameter types are given, nothing is prepared.
    #[cfg(feature = "tokio-postgres")]
    pub async fn enqueue_pg<C: tokio_postgres::GenericClient + Sync>(
        &self,
        client: &C,
        event: &NewEvent,
    ) -> Result<Uuid, ProduceError> {
        let event = self.prepare_one(event)?;
        self.insert_one_pg(client, &event).await?;
        Ok(event.event_id)
    }

    /// Enqueues `event` in the same round trip as `business`: the caller's
    /// own statement(s) on the same transaction (a transaction, so the two
    /// commit together), as a future not yet awaited. tokio-postgres
    /// pipelines requests that are polled together, so the insert is sent
    /// with the caller's first request and the outbox costs the
    /// transaction no extra round trip. Pass a prepared statement: a SQL
    /// string is prepared first (a round trip of its own, during which the
    /// insert already runs); `strata bench producer`, variant "pipelined",
    /// measures it. The event is
    /// validated first: when it is invalid, `business` is dropped without
    /// being polled and nothing is sent. On any error roll the
    /// transaction back, as after a failed statement.
    ///
    /// ```no_run
    /// # async fn f(client: &mut tokio_postgres::Client, outbox: &strata_producer::Outbox) -> Result<(), Box<dyn std::error::Error>> {
    /// use strata_producer::NewEvent;
    /// let deposit = client
    ///     .prepare("UPDATE accounts SET balance = balance + 10 WHERE id = $1")
    ///     .await?;
    /// let tx = client.transaction().await?;
    /// let event = NewEvent::new("user-42", "deposit").payload(serde_json::json!({"amount": "10.00"}));
    /// let (updated, event_id) = outbox
    ///     .enqueue_pg_pipelined(&tx, &event, tx.execute(&deposit, &[&42_i64]))
    ///     .await?;
    /// tx.commit().await?;
    /// # let _ = (updated, event_id);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tokio-postgres")]
    pub async fn enqueue_pg_pipelined<F, T, E>(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        event: &NewEvent,
        business: F,
    ) -> Result<(T, Uuid), PipelinedError<E>>
    where
        F: std::future::Future<Output = Result<T, E>>,
    {
        let client = tx;
        let event = self.prepare_one(event).map_err(PipelinedError::Produce)?;
        let business = async { business.await.map_err(PipelinedError::Business) };
        let insert = async {
            self.insert_one_pg(client, &event)
                .await
                .map_err(PipelinedError::Produce)
        };
        let (value, ()) = tokio::try_join!(business, insert)?;
        Ok((value, event.event_id))
    }

    /// One event validated, its id and time fixed.
    fn prepare_one(&self, event: &NewEvent) -> Result<PreparedEvent, ProduceError> {
        self.prepare(std::slice::from_ref(event))?
            .pop()
            .ok_or(ProduceError::Empty)
    }

    /// The insert of one prepared event (and the in-transaction NOTIFY
    /// when asked for).
    #[cfg(feature = "tokio-postgres")]
    async fn insert_one_pg<C: tokio_postgres::GenericClient + Sync>(
        &self,
        client: &C,
        event: &PreparedEvent,
    ) -> Result<(), ProduceError> {
        use tokio_postgres::types::Type;
        client
            .execute_typed(
                INSERT_ONE_SQL,
                &[
                    (&event.event_id, Type::UUID),
                    (&event.user_id, Type::TEXT),
                    (&event.kind, Type::TEXT),
                    (&event.occurred_at, Type::TIMESTAMPTZ),
                    (&self.source, Type::TEXT),
                    (&event.payload_text, Type::TEXT),
                ],
            )
            .await?;
        if self.notify_in_transaction {
            client.execute_typed(NOTIFY_SQL, &[]).await?;
        }
        Ok(())
    }

    /// Enqueues several events in one statement on a tokio-postgres
    /// transaction (or client).
    #[cfg(feature = "tokio-postgres")]
    pub async fn enqueue_many_pg<C: tokio_postgres::GenericClient + Sync>(
        &self,
        client: &C,
        events: &[NewEvent],
    ) -> Result<Vec<Uuid>, ProduceError> {
        use tokio_postgres::types::Type;
        let columns = Columns::from(self.prepare(events)?)?;
        client
            .execute_typed(
                INSERT_MANY_SQL,
                &[
                    (&columns.ids, Type::UUID_ARRAY),
                    (&columns.users, Type::TEXT_ARRAY),
                    (&columns.kinds, Type::TEXT_ARRAY),
                    (&columns.times, Type::TIMESTAMPTZ_ARRAY),
                    (&self.source, Type::TEXT),
                    (&columns.payloads, Type::TEXT_ARRAY),
                ],
            )
            .await?;
        if self.notify_in_transaction {
            client.execute_typed(NOTIFY_SQL, &[]).await?;
        }
        Ok(columns.ids)
    }
}

/// Prepared events as parallel arrays for `unnest`.
struct Columns {
    ids: Vec<Uuid>,
    users: Vec<String>,
    kinds: Vec<String>,
    times: Vec<DateTime<Utc>>,
    payloads: Vec<String>,
}

impl Columns {
    fn from(events: Vec<PreparedEvent>) -> Result<Self, ProduceError> {
        if events.is_empty() {
            return Err(ProduceError::Empty);
        }
        let mut columns = Columns {
            ids: Vec::with_capacity(events.len()),
            users: Vec::with_capacity(events.len()),
            kinds: Vec::with_capacity(events.len()),
            times: Vec::with_capacity(events.len()),
            payloads: Vec::with_capacity(events.len()),
        };
        for event in events {
            columns.ids.push(event.event_id);
            columns.users.push(event.user_id);
            columns.kinds.push(event.kind);
            columns.times.push(event.occurred_at);
            columns.payloads.push(event.payload_text);
        }
        Ok(columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn first_invalid_event_is_named() {
        let outbox = Outbox::new("svc").expect("valid source");
        let events = vec![
            NewEvent::new("u1", "login"),
            NewEvent::new("u1", "Bad Kind"),
        ];
        match outbox.prepare(&events) {
            Err(ProduceError::Invalid { index: 1, source }) => {
                assert_eq!(source.code(), "invalid_kind")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(outbox
            .prepare(&[NewEvent::new("u", "login").payload(json!({"a": 1}))])
            .is_ok());
    }

    #[test]
    fn source_is_checked() {
        assert!(Outbox::new("").is_err());
        assert!(Outbox::new("x".repeat(65)).is_err());
    }
}
