//! Names of the SQL objects Strata owns, shared by every crate that talks to
//! them so a rename happens in one place.

/// Schema that producer databases hold the outbox in.
pub const OUTBOX_SCHEMA: &str = "strata_outbox";
/// The outbox table: the public producer contract (see README).
pub const OUTBOX_TABLE: &str = "strata_outbox.events";
/// LISTEN/NOTIFY channel that wakes idle relays.
pub const OUTBOX_CHANNEL: &str = "strata_outbox";
/// Schema of the hot store.
pub const STORE_SCHEMA: &str = "strata";
/// The day-partitioned activity table in the hot store.
pub const ACTIVITY_TABLE: &str = "strata.activity";
/// Poison rows moved out of an outbox, with the reason.
pub const DEAD_LETTER_TABLE: &str = "strata.dead_letters";
/// `application_name` the relay's sessions carry, for `pg_stat_activity`.
pub const RELAY_APPLICATION_NAME: &str = "strata-relay";
