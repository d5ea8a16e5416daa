//! The activity event and the rules every event obeys, checked by the
//! producer SDK before anything is written and again by the relay for rows
//! that were inserted by hand (those go to the dead-letter table).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, SubsecRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Default payload limit: 64 KiB of JSON text.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Longest accepted `user_id`, in bytes.
pub const MAX_USER_ID_BYTES: usize = 256;
/// Longest accepted `kind`, in bytes.
pub const MAX_KIND_BYTES: usize = 64;

/// Default of how far back `occurred_at` may lie: a fintech's correction
/// window (a year of statements plus slack), not "any date at all".
pub const DEFAULT_ACCEPT_PAST: Duration = Duration::from_secs(400 * 24 * 3600);
/// Default of how far ahead `occurred_at` may lie: clock skew, not scheduling.
pub const DEFAULT_ACCEPT_FUTURE: Duration = Duration::from_secs(24 * 3600);
/// The widest window a configuration may set, either way. It keeps every
/// admitted day inside years 1..=9999, where day partitions have one
/// name each and every reader (chrono, Parquet, the API) can hold the time.
pub const MAX_ACCEPT_WINDOW: Duration = Duration::from_secs(100 * 366 * 24 * 3600);

/// Limits applied to every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// Largest payload, measured as the JSON text Postgres prints for the
    /// `jsonb` value (`octet_length(payload::text)`).
    pub max_payload_bytes: usize,
    /// `occurred_at` may lie at most this far before now.
    pub accept_past: Duration,
    /// `occurred_at` may lie at most this far after now.
    pub accept_future: Duration,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            accept_past: DEFAULT_ACCEPT_PAST,
            accept_future: DEFAULT_ACCEPT_FUTURE,
        }
    }
}

impl EventLimits {
    /// The accepted `occurred_at` range at `now`: `[earliest, latest]`.
    pub fn window(&self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let past =
            TimeDelta::from_std(self.accept_past.min(MAX_ACCEPT_WINDOW)).unwrap_or(TimeDelta::MAX);
        let future = TimeDelta::from_std(self.accept_future.min(MAX_ACCEPT_WINDOW))
            .unwrap_or(TimeDelta::MAX);
        (
            now.checked_sub_signed(past)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            now.checked_add_signed(future)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }

    /// Checks `occurred_at` against the window at `now`.
    pub fn check_occurred_at(
        &self,
        occurred_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), ValidationError> {
        let (earliest, latest) = self.window(now);
        if occurred_at < earliest || occurred_at > latest {
            return Err(ValidationError::OccurredAtOutOfWindow {
                occurred_at: occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                earliest: earliest.to_rfc3339_opts(SecondsFormat::Secs, true),
                latest: latest.to_rfc3339_opts(SecondsFormat::Secs, true),
            });
        }
        Ok(())
    }
}

/// Why an event (or an outbox row) is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// `user_id` was the empty string.
    #[error("user_id is empty")]
    EmptyUserId,
    /// `user_id` is longer than [`MAX_USER_ID_BYTES`].
    #[error("user_id is {len} bytes, more than the {max}-byte limit")]
    UserIdTooLong { len: usize, max: usize },
    /// `kind` is not `[a-z0-9_.-]{1,64}`.
    #[error("kind {kind:?} is not a short identifier ([a-z0-9_.-], 1 to 64 bytes)")]
    InvalidKind { kind: String },
    /// The payload is JSON but not an object.
    #[error("payload must be a JSON object, got {found}")]
    PayloadNotObject { found: &'static str },
    /// The payload is larger than the configured limit.
    #[error("payload is {len} bytes, more than the {max}-byte limit")]
    PayloadTooLarge { len: usize, max: usize },
    /// `source` is empty or longer than [`MAX_KIND_BYTES`].
    #[error("source {name:?} must be 1 to 64 bytes")]
    InvalidSource { name: String },
    /// `occurred_at` lies outside the accepted window (`relay.accept_past`,
    /// `relay.accept_future`), or is not a finite time at all. Widening the
    /// window and re-driving the dead letter stores it.
    #[error("occurred_at {occurred_at} is outside the accepted window {earliest} .. {latest}")]
    OccurredAtOutOfWindow {
        occurred_at: String,
        earliest: String,
        latest: String,
    },
    /// The hot store already holds an event with this key (user_id,
    /// occurred_at, event_id) and different contents: the producer reused
    /// an event_id. The stored event stays; this one is dead-lettered.
    #[error("event {event_id} is already stored with the same user_id and occurred_at but a different kind, source or payload")]
    ConflictingDuplicate { event_id: String },
    /// The hot store refused the row itself (a data exception, a check
    /// constraint a DBA added, nesting too deep to parse): it is kept whole
    /// and can be requeued once the hot store accepts it.
    #[error("the hot store refused the row: {message}")]
    HotStoreRejected { message: String },
    /// A text column of a row is not valid UTF-8 (a `SQL_ASCII` source
    /// database lets such bytes in); the dead letter keeps a lossy copy.
    #[error("{column} is not valid UTF-8")]
    InvalidUtf8 { column: &'static str },
}

impl ValidationError {
    /// A stable, machine-readable code (stored with dead letters).
    pub fn code(&self) -> &'static str {
        match self {
            ValidationError::EmptyUserId => "empty_user_id",
            ValidationError::UserIdTooLong { .. } => "user_id_too_long",
            ValidationError::InvalidKind { .. } => "invalid_kind",
            ValidationError::PayloadNotObject { .. } => "payload_not_object",
            ValidationError::PayloadTooLarge { .. } => "payload_too_large",
            ValidationError::InvalidSource { .. } => "invalid_source",
            ValidationError::OccurredAtOutOfWindow { .. } => "occurred_at_out_of_window",
            ValidationError::InvalidUtf8 { .. } => "invalid_utf8",
            ValidationError::ConflictingDuplicate { .. } => "conflicting_duplicate",
            ValidationError::HotStoreRejected { .. } => "hot_store_rejected",
        }
    }
}

/// An event a producer wants recorded.
///
/// `event_id` is the idempotency key: a retried business operation that
/// passes the same `event_id` and `occurred_at` is stored once. When not
/// set, a UUIDv7 (time-ordered) id is generated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Idempotency key; generated (UUIDv7) when `None`.
    pub event_id: Option<Uuid>,
    /// Whose history this is; opaque to Strata.
    pub user_id: String,
    /// What happened: `login`, `2fa_reset`, `deposit`, ...
    pub kind: String,
    /// When it happened; decides the day and the order. Now when `None`.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The details, a JSON object.
    pub payload: Value,
}

impl NewEvent {
    /// An event for `user_id` of `kind` with an empty payload.
    pub fn new(user_id: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            event_id: None,
            user_id: user_id.into(),
            kind: kind.into(),
            occurred_at: None,
            payload: Value::Object(Map::new()),
        }
    }

    /// Sets the payload.
    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = payload;
        self
    }

    /// Sets the event id, to make a retried operation idempotent.
    pub fn event_id(mut self, event_id: Uuid) -> Self {
        self.event_id = Some(event_id);
        self
    }

    /// Sets when the event happened.
    pub fn occurred_at(mut self, occurred_at: DateTime<Utc>) -> Self {
        self.occurred_at = Some(occurred_at);
        self
    }

    /// Validates the event and fixes its id, time and payload text: what
    /// the outbox row will hold.
    pub fn prepare(&self, limits: &EventLimits) -> Result<PreparedEvent, ValidationError> {
        validate_user_id(&self.user_id)?;
        validate_kind(&self.kind)?;
        if !self.payload.is_object() {
            return Err(ValidationError::PayloadNotObject {
                found: json_type_name(&self.payload),
            });
        }
        let payload_text = jsonb_text(&self.payload);
        validate_payload_size(payload_text.len(), limits)?;
        let now = Utc::now();
        let occurred_at = self.occurred_at.unwrap_or(now);
        limits.check_occurred_at(occurred_at, now)?;
        Ok(PreparedEvent {
            event_id: self.event_id.unwrap_or_else(Uuid::now_v7),
            user_id: self.user_id.clone(),
            kind: self.kind.clone(),
            // Postgres keeps microseconds; truncating here keeps the
            // idempotency key (event_id, occurred_at) identical on retries.
            occurred_at: occurred_at.trunc_subsecs(6),
            payload_text,
        })
    }
}

/// A validated event, ready to be written as an outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedEvent {
    /// The idempotency key.
    pub event_id: Uuid,
    /// Whose history.
    pub user_id: String,
    /// What happened.
    pub kind: String,
    /// When, truncated to microseconds.
    pub occurred_at: DateTime<Utc>,
    /// The payload as JSON text.
    pub payload_text: String,
}

/// Checks `user_id` rules.
pub fn validate_user_id(user_id: &str) -> Result<(), ValidationError> {
    if user_id.is_empty() {
        return Err(ValidationError::EmptyUserId);
    }
    if user_id.len() > MAX_USER_ID_BYTES {
        return Err(ValidationError::UserIdTooLong {
            len: user_id.len(),
            max: MAX_USER_ID_BYTES,
        });
    }
    Ok(())
}

/// Checks `kind` is `[a-z0-9_.-]{1,64}`.
pub fn validate_kind(kind: &str) -> Result<(), ValidationError> {
    let ok = !kind.is_empty()
        && kind.len() <= MAX_KIND_BYTES
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::InvalidKind {
            kind: kind.chars().take(80).collect(),
        })
    }
}

/// Checks a producer's `source` name (1 to 64 bytes).
pub fn validate_source(source: &str) -> Result<(), ValidationError> {
    if source.is_empty() || source.len() > MAX_KIND_BYTES {
        return Err(ValidationError::InvalidSource {
            name: source.chars().take(80).collect(),
        });
    }
    Ok(())
}

fn validate_payload_size(len: usize, limits: &EventLimits) -> Result<(), ValidationError> {
    if len > limits.max_payload_bytes {
        return Err(ValidationError::PayloadTooLarge {
            len,
            max: limits.max_payload_bytes,
        });
    }
    Ok(())
}

/// Validates an outbox row as the relay reads it: payload as the text
/// Postgres prints for the `jsonb` value.
pub fn validate_row(
    user_id: &str,
    kind: &str,
    payload_text: &str,
    limits: &EventLimits,
) -> Result<(), ValidationError> {
    validate_user_id(user_id)?;
    validate_kind(kind)?;
    // jsonb text output has no leading whitespace: the first byte tells the type.
    match payload_text.as_bytes().first() {
        Some(b'{') => {}
        Some(b'[') => return Err(ValidationError::PayloadNotObject { found: "array" }),
        Some(b'"') => return Err(ValidationError::PayloadNotObject { found: "string" }),
        Some(b't' | b'f') => return Err(ValidationError::PayloadNotObject { found: "boolean" }),
        Some(b'n') => return Err(ValidationError::PayloadNotObject { found: "null" }),
        _ => return Err(ValidationError::PayloadNotObject { found: "number" }),
    }
    validate_payload_size(payload_text.len(), limits)
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// JSON text spaced the way Postgres prints `jsonb` (`{"a": 1, "b": [1, 2]}`),
/// so the SDK and the relay measure a payload's size alike.
pub fn jsonb_text(value: &Value) -> String {
    let mut out = String::new();
    write_jsonb_text(value, &mut out);
    out
}

fn write_jsonb_text(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_jsonb_text(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push_str(": ");
                write_jsonb_text(item, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;
    use serde_json::json;

    #[test]
    fn kinds() {
        for good in [
            "login",
            "2fa_reset",
            "a",
            "card.payment-v2",
            &"x".repeat(64),
        ] {
            assert_eq!(validate_kind(good), Ok(()), "{good}");
        }
        for bad in ["", "Login", "log in", "ü", &"x".repeat(65), "a;drop"] {
            assert!(validate_kind(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_ids() {
        assert_eq!(validate_user_id(""), Err(ValidationError::EmptyUserId));
        assert!(validate_user_id(&"u".repeat(256)).is_ok());
        assert!(matches!(
            validate_user_id(&"u".repeat(257)),
            Err(ValidationError::UserIdTooLong { len: 257, .. })
        ));
    }

    #[test]
    fn payload_rules() {
        let limits = EventLimits {
            max_payload_bytes: 20,
            ..EventLimits::default()
        };
        let event = NewEvent::new("u1", "login").payload(json!([1]));
        assert_eq!(
            event.prepare(&limits),
            Err(ValidationError::PayloadNotObject { found: "array" })
        );
        let event = NewEvent::new("u1", "login").payload(json!({"k": "x".repeat(30)}));
        assert!(matches!(
            event.prepare(&limits),
            Err(ValidationError::PayloadTooLarge { max: 20, .. })
        ));
        let event = NewEvent::new("u1", "login").payload(json!({"k": 1}));
        let prepared = event.prepare(&limits).expect("valid");
        assert_eq!(prepared.payload_text, r#"{"k": 1}"#);
        assert_eq!(prepared.event_id.get_version_num(), 7);
    }

    #[test]
    fn occurred_at_window() {
        let limits = EventLimits::default();
        let now = Utc::now();
        let day = TimeDelta::days(1);
        assert!(limits.check_occurred_at(now, now).is_ok());
        assert!(limits.check_occurred_at(now - day * 399, now).is_ok());
        assert!(limits
            .check_occurred_at(now + day - TimeDelta::seconds(1), now)
            .is_ok());
        for bad in [
            now - day * 401,
            now + day * 2,
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        ] {
            let err = limits.check_occurred_at(bad, now).expect_err("outside");
            assert_eq!(err.code(), "occurred_at_out_of_window");
        }
        let event = NewEvent::new("u1", "login").occurred_at(now - day * 500);
        assert_eq!(
            event.prepare(&limits).map_err(|e| e.code()),
            Err("occurred_at_out_of_window")
        );
        // An absurd configuration is clamped, never overflows.
        let wide = EventLimits {
            accept_past: Duration::MAX,
            accept_future: Duration::MAX,
            ..limits
        };
        let (earliest, latest) = wide.window(now);
        assert!(earliest.year() > 1900 && latest.year() < 2200);
    }

    #[test]
    fn jsonb_spacing() {
        let v = json!({"a": [1, {"b": null}], "c": "x"});
        assert_eq!(jsonb_text(&v), r#"{"a": [1, {"b": null}], "c": "x"}"#);
    }

    #[test]
    fn raw_rows() {
        let l = EventLimits::default();
        assert!(validate_row("u", "login", "{}", &l).is_ok());
        assert_eq!(
            validate_row("u", "login", "[1]", &l),
            Err(ValidationError::PayloadNotObject { found: "array" })
        );
        assert_eq!(
            validate_row("u", "login", "12", &l),
            Err(ValidationError::PayloadNotObject { found: "number" })
        );
        assert_eq!(
            validate_row("", "login", "{}", &l),
            Err(ValidationError::EmptyUserId)
        );
    }
}
