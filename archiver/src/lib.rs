//! The archiver: rolls closed days of the hot store into verified Parquet
//! files on S3 (or a local directory) and records them in a catalog in the
//! hot store, fenced so that exactly one archiver commits (G5, G6).
//!
//! - [`store`]: the object store (S3-compatible or a directory);
//! - [`layout`]: keys, Parquet schema and settings, content digests;
//! - [`export`]: hot store -> Parquet spool files, streaming;
//! - [`catalog`]: the catalog tables and the lease;
//! - [`archive`]: the steps (archive a day, late files, publish, verify,
//!   drop partitions, collect garbage) and their commit protocol;
//! - `daemon`: the continuous archiver.

pub mod archive;
pub mod catalog;
mod daemon;
mod error;
pub mod export;
pub mod layout;
pub mod metrics;
pub mod store;

pub use archive::{Archiver, ArchiverOptions, Closure, DayReport, Outcome, Progress, VerifyReport};
pub use daemon::run;
pub use error::ArchiveError;
pub use store::{ObjectStore, StoreError};
