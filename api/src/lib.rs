//! The history API: reads one user's activity across the hot store and the
//! archive over gRPC (`strata.v1.HistoryService`), with signed page tokens, bearer
//! authentication, an append-only audit trail, per-principal limits and
//! exports (streamed, or as background jobs with presigned URLs).
//!
//! - [`history`]: the cross-tier page reader (G3) and GetEvent's lookup;
//! - [`cold`]: ranged, metadata-cached reads of archive files;
//! - [`event`] and [`read_error`]: the event the readers return and their
//!   error, shared by both;
//! - [`page_token`]: HMAC-signed, request-bound cursors;
//! - [`auth`]: JWT bearer tokens and scopes;
//! - [`limits`]: per-principal rate and export limits;
//! - [`admission`]: whether a call may start (the typed decision, and its
//!   refusal held and audited), the caps on calls and archive reads in
//!   flight, per-peer rates, and summaries of refused calls;
//! - [`audit`]: the audit rows of calls and of refusal summaries;
//! - [`request`] and [`convert`]: request fields checked, and values as
//!   the wire carries them;
//! - [`error`]: what a call can fail with, and the one table from it to a
//!   gRPC status;
//! - [`export`] and [`jobs`]: exports, streamed and as jobs;
//! - [`service`]: the gRPC service (admission, handlers, audit around
//!   them);
//! - [`server`]: the listener (health, reflection, TLS) and its workers.

#![warn(unreachable_pub)]

pub mod admission;
pub mod audit;
pub mod auth;
pub mod cold;
pub mod convert;
pub mod error;
pub mod event;
pub mod export;
pub mod history;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod page_token;
pub mod pool;
pub mod read_error;
pub mod request;
pub mod server;
pub mod service;
pub mod subscribe;

pub use event::Event;
pub use history::{HistoryReader, Page, Query, ReadAhead};
pub use page_token::{Binding, Cursor, PageTokenError, PageTokenKey, PageTokenKeys};
pub use read_error::{ArchiveReadError, ReadError};
pub use server::{serve, serve_with_reader, ApiOptions};

/// Locks `mutex`, recovering from poisoning: every map and cache behind
/// the API's mutexes stays consistent whatever panicked while holding it.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
