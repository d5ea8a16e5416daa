//! The history API (in progress): reads one user's activity across the hot
//! store and the archive. This first part holds the page tokens; the gRPC
//! service, tier merging and exports follow.

pub mod page_token;

pub use page_token::{Binding, Cursor, PageTokenError, PageTokenKey, PageTokenKeys};
