//! The archive's lower floor: what an archive file is and where it lives,
//! shared by the archiver that writes it and the history API that reads it.
//!
//! - [`layout`]: object keys, the Parquet schema and writer settings, the
//!   content digest;
//! - [`row`]: archived rows, borrowed and owned, to and from Arrow batches
//!   (the one conversion of archive data into [`ArchivedRow`]s);
//! - [`store`]: the object store (an S3-compatible bucket or a local
//!   directory).
//!
//! No Postgres and no gRPC here: only the format and the store.

#![warn(unreachable_pub)]

pub mod layout;
pub mod row;
pub mod store;

pub use row::{extend_rows, read_rows, ArchivedRow, FormatError, RowRef};
pub use store::{ObjectMeta, ObjectStore, StoreError, StoreErrorKind};
