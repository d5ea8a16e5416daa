//! The archiver: rolls closed days of the hot store into verified Parquet
//! files on S3 (or a local directory) and records them in a catalog in the
//! hot store, fenced so that exactly one archiver commits (G5, G6).
//!
//! The archive's format (keys, Parquet schema, rows) and the object store
//! are `strata-archive`'s; this crate uses them and does not re-export them.
//!
//! - [`export`]: hot store -> Parquet spool files, streaming;
//! - [`catalog`]: all the archiver's SQL: the catalog tables, the lease,
//!   the export's statements, retention's, the outboxes' closure query;
//!   [`DayState`] and [`FileOrigin`];
//! - [`archive`]: the [`Archiver`], its options and reports, and the
//!   continuous archiver's pass;
//! - `closure`: the closure rule and the pending days;
//! - `commit`: a day's or a late file's seal -> export -> stage -> commit,
//!   one path for both, and the commit transaction;
//! - `stage`: export, upload to staging, read back and verify;
//! - `publish`: final keys and manifest; verifying a committed day;
//! - `retention`: dropping expired partitions, garbage collection;
//! - `lease`: keeping and giving up the lease ([`LeasedArchiver`]);
//! - `retry`: object-store calls retried in place;
//! - [`day`]: a UTC day's bounds and partition name;
//! - `pg`: connecting and bounded calls (through `strata-pg`), column
//!   decoding;
//! - `daemon`: the continuous archiver.

#![warn(unreachable_pub)]

pub mod archive;
pub mod catalog;
mod closure;
mod commit;
mod daemon;
pub mod day;
mod error;
pub mod export;
mod lease;
pub mod metrics;
mod pg;
mod publish;
mod retention;
mod retry;
mod stage;
#[cfg(test)]
mod test_support;

pub use archive::{Archiver, ArchiverOptions, Closure, DayReport, Outcome, Progress};
pub use catalog::{DayState, FileOrigin};
pub use closure::NotYet;
pub use daemon::run;
pub use error::ArchiveError;
pub use lease::{LeaseKeeper, LeasedArchiver};
pub use pg::APPLICATION_NAME;
pub use publish::VerifyReport;
