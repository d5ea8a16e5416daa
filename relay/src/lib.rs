//! The relay: ships outbox rows from producer databases into the hot store.
//!
//! Per source, a relay process runs:
//! - a **listener** (`LISTEN strata_outbox`) that wakes the workers, and
//!   doubles as the safety-net poll clock and the lag sampler;
//! - `workers_per_source` **workers**, each looping claim -> ship -> release
//!   ([`ship`]; the hot-store write in `hot_write`, its binary COPY in
//!   [`hot_copy`]);
//! - a **reconciler candidate** that becomes the source's single elected
//!   reconciler while it holds a Postgres advisory lock on a dedicated
//!   hot-store connection ([`reconcile`]).
//!
//! Any number of relay processes can run against the same sources; rows are
//! claimed with `FOR UPDATE SKIP LOCKED` inside a source transaction that
//! stays open until the hot store committed the batch, so no two relays ship
//! a row at once and a relay killed at any instruction leaves its rows to be
//! claimed again (the hot store drops the duplicates).

#![warn(unreachable_pub)]
// Outbox rows are untrusted input: no slice index here can panic on them.
#![deny(clippy::indexing_slicing)]

pub mod claim;
mod connect;
pub mod dead_letters;
mod durability;
mod error;
pub use strata_core::failpoint;
pub mod hot_copy;
mod hot_write;
pub mod listener;
pub mod metrics;
mod partition;
pub mod reconcile;
mod relay;
pub mod ship;

pub use connect::WORKER_APPLICATION_NAME;
pub use error::RelayError;
pub use relay::{run, RelayOptions, ShipObserver};
