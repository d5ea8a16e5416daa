//! Strata's values as the wire carries them: events and instants as
//! `strata.v1` messages, durations as people read them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use strata_proto::v1::Event as ProtoEvent;

use crate::event::Event;

/// UTC microseconds as a protobuf timestamp.
pub fn proto_timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// An instant as a protobuf timestamp (to the nanosecond).
pub fn proto_instant(instant: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: instant.timestamp(),
        nanos: instant.timestamp_subsec_nanos() as i32,
    }
}

/// An event as the API returns it.
pub fn to_proto(event: &Event) -> ProtoEvent {
    ProtoEvent {
        event_id: event.event_id.hyphenated().to_string(),
        user_id: event.user_id.clone(),
        kind: event.kind.clone(),
        event_time: Some(proto_timestamp(event.occurred_at)),
        source: event.source.clone(),
        payload_json: event.payload.clone(),
        ingest_time: Some(proto_timestamp(event.ingested_at)),
    }
}

/// A retention as people say it: `24h`, `90m`, `45s`, `1500ms`.
pub fn retention_text(retention: Duration) -> String {
    let seconds = retention.as_secs();
    if retention.subsec_nanos() != 0 || seconds == 0 {
        strata_core::duration::format(retention)
    } else if seconds.is_multiple_of(3600) {
        format!("{}h", seconds / 3600)
    } else if seconds.is_multiple_of(60) {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_reads_as_people_say_it() {
        assert_eq!(retention_text(Duration::from_secs(24 * 3600)), "24h");
        assert_eq!(retention_text(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(retention_text(Duration::from_secs(45)), "45s");
        assert_eq!(retention_text(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn timestamps_before_1970_keep_positive_nanos() {
        let t = proto_timestamp(-1);
        assert_eq!((t.seconds, t.nanos), (-1, 999_999_000));
    }
}
