//! Strata's shared vocabulary: the activity event and its validation rules,
//! configuration loading, durations, and the Prometheus text endpoint's
//! renderer. No I/O lives here: every crate can depend on it.

#![warn(unreachable_pub)]

pub mod backoff;
pub mod config;
pub mod duration;
mod error_chain;
pub mod event;
pub mod failpoint;
pub mod telemetry;

pub use config::{Config, ConfigError};
pub use error_chain::error_chain;
pub use event::{EventLimits, NewEvent, ValidationError};
