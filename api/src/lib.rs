//! The history API (in progress): reads one user's activity across the hot
//! store and the archive. Built so far: page tokens and the cross-tier page
//! reader; the gRPC service, authentication, audit and exports follow.

pub mod history;
pub mod page_token;

pub use history::{Event, HistoryReader, Page, Query, ReadError};
pub use page_token::{Binding, Cursor, PageTokenError, PageTokenKey, PageTokenKeys};
