//! The event as the API returns it, and the API's microsecond times as
//! timestamps: shared by the page reader ([`crate::history`]), the archive
//! reader ([`crate::cold`]), exports and the service.

/// One event as the API returns it: the archive's row shape, which equals
/// the hot store's columns.
pub type Event = strata_archive::ArchivedRow;

/// Microseconds as a timestamp, clamped to what chrono represents (the
/// caller validated the range; this only keeps extremes total).
pub(crate) fn timestamp(micros: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(micros).unwrap_or(if micros < 0 {
        chrono::DateTime::<chrono::Utc>::MIN_UTC
    } else {
        chrono::DateTime::<chrono::Utc>::MAX_UTC
    })
}
