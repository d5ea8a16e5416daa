//! The tools around the pipeline, not part of it: `strata demo` (a private
//! Postgres cluster, synthetic traffic and `strata run`'s pipeline, handed
//! in by the binary), the synthetic activity generator, and `strata bench`
//! (throughput and latency figures against baselines). The binary parses
//! their flags and calls [`demo::run`] and [`bench::run`].
//!
//! Errors are `anyhow`: a tool reports them and stops, nothing matches on
//! them. SQL on tables other crates own goes through those crates where
//! they offer it (migrations, the producer's `Outbox`, the relay's
//! `hot_copy`, the archiver's catalog); what is left stands as named
//! constants at the top of the module that runs it.

#![warn(unreachable_pub)]

pub mod bench;
pub mod demo;
pub mod latency;
pub mod pg;
pub mod synth;
