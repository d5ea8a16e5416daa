//! Live subscriptions' engine: the filter (`filter.rs`), positions and
//! resume tokens (`position.rs`), the one read statement (`read.rs`), the
//! live feeds shared by the subscriptions of a process (`tail.rs`) and
//! consumer groups' leases and acknowledgements (`group.rs`).
//! The gRPC side (admission, the stream of responses, audit) is
//! `service/subscribe.rs`.
//!
//! The stream's order is the relays' commit order, numbered in
//! `strata.stream_log` (see `migrations/store/0009_stream.sql` and
//! ARCHITECTURE.md): a subscriber that resumes after a position never
//! misses an event that committed after it was written.

pub mod filter;
pub mod group;
pub mod position;
pub mod read;
pub mod tail;

use std::sync::Arc;

use crate::pool::Pool;

pub use filter::Filter;
pub use position::Position;
pub use tail::Tail;

/// What subscriptions share in one process: their own connections (apart
/// from the history reads') and the live feeds.
pub struct Streams {
    /// Connections to the database subscriptions read (a replica when
    /// configured).
    pub pool: Pool,
    /// The live feeds.
    pub tail: Arc<Tail>,
    /// Connections to the primary for consumer groups' leases and
    /// acknowledgements (apart from the history reads').
    pub groups: Pool,
}
