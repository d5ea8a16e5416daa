//! Strata's shared vocabulary: the activity event and its validation rules,
//! configuration loading, durations, and the Prometheus text endpoint's
//! renderer. No I/O lives here: every crate can depend on it.

#![warn(unreachable_pub)]

pub mod backoff;
pub mod config;
pub mod duration;
pub mod event;
pub mod failpoint;
pub mod telemetry;

pub use config::{Config, ConfigError};
pub use event::{EventLimits, NewEvent, ValidationError};
