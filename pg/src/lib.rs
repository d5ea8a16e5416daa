//! Every Postgres session of Strata is opened here: the relay's, the
//! archiver's, the API's and the binary's own.
//!
//! - [`connect`] / [`connect_raw`]: parse the URL, apply the shared session
//!   settings (an `application_name`, TCP keepalives, a connect timeout) and
//!   connect, either driving the connection in a background task or handing
//!   it to the caller (LISTEN);
//! - [`bounded`]: one database call under a timeout;
//! - [`holder_id`]: the name a process gives itself in leases and
//!   election rows;
//! - [`stable_key`]: the advisory-lock key of a name (the migrations'
//!   lock, the relay's reconciler election), fixed across versions;
//! - [`PgError`]: why any of it failed, and whether retrying may help;
//!   [`describe_pg_error`]: a driver error with the server's SQLSTATE and
//!   message, for every crate's error messages.
//!
//! The transport is chosen inside [`connect_raw`] and hidden behind
//! [`PgConnection`]: TLS over rustls, with libpq's `sslmode`,
//! `sslrootcert`, `sslcert` and `sslkey` read from the URL (see `tls`). Nothing here knows Strata's tables: session settings
//! that are a caller's policy (statement timeouts, roles) stay with it.

#![warn(unreachable_pub)]

mod advisory;
mod connect;
mod error;
mod holder;
mod timeout;
mod tls;

pub use advisory::stable_key;
pub use connect::{
    connect, connect_raw, PgConnection, KEEPALIVES_IDLE, KEEPALIVES_INTERVAL, KEEPALIVES_RETRIES,
};
pub use error::{describe_pg_error, PgError};
pub use holder::holder_id;
pub use timeout::bounded;
pub use tls::{HandshakeError, RustlsStream};
pub use tokio_postgres::Client;
