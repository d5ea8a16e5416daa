//! End-to-end tests against the real Postgres the test command started.
//! One test binary (link time on two cores); modules by capability, and
//! `tidy`, checks of the workspace's sources that need no database.

mod api;
mod archive;
mod groups;
mod hostile;
mod ingest;
mod operations;
mod sdk;
mod starvation;
mod subscribe;
mod tidy;
mod tls;
