//! Producer SDK: write activity events into the Strata outbox inside the
//! caller's own database transaction, so an event exists if and only if
//! the business transaction commits (guarantee G1).
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use strata_producer::{NewEvent, Outbox};
//! let outbox = Outbox::new("payments")?;
//! let mut tx = pool.begin().await?;
//! // ... the business writes ...
//! let event = NewEvent::new("user-42", "deposit")
//!     .payload(serde_json::json!({"amount": "100.00", "currency": "EUR"}));
//! outbox.enqueue_sqlx(&mut tx, &event).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```
//!
//! Waking the relays: by default nothing is sent inside the business
//! transaction (a NOTIFY there takes a cluster-wide lock across the commit's
//! fsync and serialises every producer). Ring a [`Doorbell`] after commit
//! instead; it sends at most one NOTIFY per debounce interval from its own
//! connection. Relays also poll, so a forgotten ring only delays delivery.

#![warn(unreachable_pub)]

mod doorbell;
mod outbox;

pub use doorbell::Doorbell;
pub use outbox::{Outbox, PipelinedError, ProduceError, INSERT_ONE_SQL};
pub use strata_core::event::{EventLimits, NewEvent, PreparedEvent, ValidationError};
