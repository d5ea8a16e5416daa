//! The history API: reads one user's activity across the hot store and the
//! archive over gRPC (`strata.v1.History`), with signed page tokens, bearer
//! authentication, an append-only audit trail, per-principal limits and
//! exports (streamed, or as background jobs with presigned URLs).
//!
//! - [`history`]: the cross-tier page reader (G3);
//! - [`cold`]: ranged, metadata-cached reads of archive files;
//! - [`page_token`]: HMAC-signed, request-bound cursors;
//! - [`auth`]: JWT bearer tokens and scopes;
//! - [`limits`]: per-principal rate and export limits;
//! - [`admission`]: caps on calls and archive reads in flight, per-peer
//!   rates, and audit summaries of refused calls;
//! - [`export`] and [`jobs`]: exports, streamed and as jobs;
//! - [`service`]: the gRPC service (admission, audit, handlers);
//! - [`server`]: the listener (health, reflection, TLS) and its workers.

pub mod admission;
pub mod auth;
pub mod cold;
pub mod export;
pub mod history;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod page_token;
pub mod pool;
pub mod server;
pub mod service;

pub use history::{Event, HistoryReader, Page, Query, ReadAhead, ReadError};
pub use page_token::{Binding, Cursor, PageTokenError, PageTokenKey, PageTokenKeys};
pub use server::{serve, serve_with_reader, ApiOptions};

/// Locks `mutex`, recovering from poisoning: every map and cache behind
/// the API's mutexes stays consistent whatever panicked while holding it.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
