//! Claiming outbox rows, and reading them without trusting them.
//!
//! Producers in any language insert rows with plain SQL, so a claimed row
//! may hold anything the column types allow: `occurred_at = 'infinity'`, a
//! year chrono cannot hold, a 100 MB payload, a megabyte of `user_id`.
//! Invariants:
//! - **The plan is bounded whatever the statistics.** The locking scan runs
//!   once, in a materialized CTE; the delete joins on the locked ids. Claim
//!   sessions run with `enable_seqscan = off` (see `connect.rs`), so the
//!   scan walks the primary key and stops after `LIMIT` rows even when the
//!   outbox's statistics say it is empty (`reltuples = 0` after a crash
//!   restart or a vacuum of an empty table).
//! - **Sizes are measured in the database, bytes are fetched within limits.**
//!   A batch stops once its payloads add up to `batch_bytes` (at least one
//!   row is taken); a payload above `max_payload_bytes` comes back as a
//!   prefix of [`PAYLOAD_PREFIX_CHARS`] characters, texts as at most
//!   [`TEXT_PREFIX_CHARS`] characters.
//! - **Decoding cannot fail on a value.** Timestamps are read as Postgres'
//!   raw microseconds ([`PgTimestamp`]) and texts as raw bytes, so every row
//!   becomes either an event to ship or a dead letter with a reason
//!   ([`classify`]); no value makes a batch fail and be retried forever.

use chrono::{DateTime, SecondsFormat, Utc};
use strata_core::event::{validate_row, validate_source, EventLimits, ValidationError};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use uuid::Uuid;

use crate::error::RelayError;

/// Characters of an oversized payload kept in its dead letter.
pub const PAYLOAD_PREFIX_CHARS: i32 = 1024;
/// Characters of `user_id`, `kind` and `source` fetched; longer values are
/// invalid anyway (256 and 64 bytes) and their dead letter keeps this much.
pub const TEXT_PREFIX_CHARS: i32 = 1024;

/// How many times larger than `max_payload_bytes` a payload's stored size
/// (`pg_column_size`, the jsonb binary form, maybe compressed) may be for
/// its text to be measured. jsonb's binary form of a text within the limit
/// is at most a few times larger (small numbers), so nothing valid is
/// refused; and a stored value within this bound prints to a few hundred
/// MB at most, so measuring one row can neither run long nor exceed the
/// 1 GB datum limit. Larger stored values are oversized without being
/// printed at all.
pub const STORED_SIZE_FACTOR: i64 = 8;

/// The claim, shared by both filters. Parameters: `$1` rows, `$2` batch
/// bytes, `$3` largest accepted payload, `$4` payload prefix characters,
/// `$5` text prefix characters, `$6` minimum age in seconds (0: any row),
/// `$7` largest stored payload size that is printed to be measured.
///
/// `locked` takes the rows and their stored sizes (`pg_column_size`, no
/// detoasting). `sizes` prints a payload to measure it only when its size
/// is in doubt: jsonb's text is at most six times its binary form (a
/// control character prints as `\u0001`), so an uncompressed one stored in
/// at most a sixth of the limit (every ordinary event) is counted at its
/// stored size and printed once, by the DELETE; one stored in more
/// than `$7` bytes is oversized unprinted. `chosen` keeps rows while the
/// bytes before them stay under the batch's budget, counting an oversized
/// payload as its prefix. Locked rows not chosen are released at commit,
/// untouched. A claim that fails anyway (a timeout) is retried with half
/// the rows, down to one (the worker's adaptive batch size), so no row can
/// stall the rows behind it.
pub const CLAIM_SQL: &str = "\
WITH locked AS MATERIALIZED (
    SELECT id, pg_column_size(payload)::int8 AS stored_bytes,
           pg_column_compression(payload) IS NULL AS plain
    FROM strata_outbox.events
    WHERE $6::float8 <= 0 OR enqueued_at < now() - make_interval(secs => $6::float8)
    ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
), sizes AS MATERIALIZED (
    SELECT l.id, l.stored_bytes,
           CASE WHEN l.plain AND l.stored_bytes * 6 <= $3::int8 THEN l.stored_bytes
                WHEN l.stored_bytes <= $7::int8 THEN
                    (SELECT octet_length(e.payload::text)::int8
                       FROM strata_outbox.events e WHERE e.id = l.id)
                ELSE l.stored_bytes END AS payload_bytes
    FROM locked l
), chosen AS MATERIALIZED (
    SELECT id, stored_bytes, payload_bytes FROM (
        SELECT id, stored_bytes, payload_bytes,
               sum(least(payload_bytes, $3::int8)) OVER (ORDER BY id)
                   - least(payload_bytes, $3::int8) AS bytes_before
        FROM sizes) w
    WHERE bytes_before < $2::int8
)
DELETE FROM strata_outbox.events e USING chosen c WHERE e.id = c.id
RETURNING e.id, e.event_id, left(e.user_id, $5), left(e.kind, $5), e.occurred_at,
          left(e.source, $5),
          CASE WHEN c.payload_bytes <= $3::int8 THEN e.payload::text
               WHEN c.stored_bytes <= $7::int8 THEN left(e.payload::text, $4)
               ELSE '' END,
          c.payload_bytes <= $3::int8,
          c.payload_bytes,
          octet_length(e.user_id)::int8 + octet_length(e.kind) + octet_length(e.source),
          e.enqueued_at";

/// A `timestamptz` as Postgres stores it: microseconds since
/// 2000-01-01 UTC, `i64::MAX` / `i64::MIN` for `±infinity`. Any value a
/// column holds decodes, and writes back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PgTimestamp(pub i64);

/// Microseconds from the Unix epoch to Postgres' epoch (2000-01-01).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

impl PgTimestamp {
    /// The time, if it is finite and chrono can hold it.
    pub fn to_utc(self) -> Option<DateTime<Utc>> {
        if self.0 == i64::MAX || self.0 == i64::MIN {
            return None;
        }
        DateTime::from_timestamp_micros(self.0.checked_add(PG_EPOCH_UNIX_MICROS)?)
    }

    /// The raw value of `time`.
    pub fn from_utc(time: DateTime<Utc>) -> Self {
        Self(time.timestamp_micros().saturating_sub(PG_EPOCH_UNIX_MICROS))
    }

    /// Human-readable, for dead-letter reasons and logs.
    pub fn describe(self) -> String {
        match (self.0, self.to_utc()) {
            (i64::MAX, _) => "infinity".into(),
            (i64::MIN, _) => "-infinity".into(),
            (_, Some(time)) => time.to_rfc3339_opts(SecondsFormat::Micros, true),
            (raw, None) => format!("{raw} µs from 2000-01-01 (beyond year 262143)"),
        }
    }
}

impl<'a> FromSql<'a> for PgTimestamp {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("timestamptz of {} bytes, expected 8", raw.len()))?;
        Ok(Self(i64::from_be_bytes(bytes)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

impl ToSql for PgTimestamp {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use bytes::BufMut;
        out.put_i64(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }

    to_sql_checked!();
}

/// A text value as raw bytes: a `SQL_ASCII` database can hand out bytes
/// that are not UTF-8, which `String` would refuse to decode.
struct RawText(Vec<u8>);

impl<'a> FromSql<'a> for RawText {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(raw.to_vec()))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME)
    }
}

/// One claimed row, decoded without judgement.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedRow {
    /// The outbox row's id.
    pub outbox_id: i64,
    /// The producer's idempotency key.
    pub event_id: Uuid,
    /// Up to [`TEXT_PREFIX_CHARS`] characters of each text column, with
    /// whether its bytes were valid UTF-8 (lossy copy otherwise).
    pub user_id: (String, bool),
    /// See `user_id`.
    pub kind: (String, bool),
    /// See `user_id`.
    pub source: (String, bool),
    /// As stored.
    pub occurred_at: PgTimestamp,
    /// The payload's jsonb text, or its prefix when oversized.
    pub payload: (String, bool),
    /// `octet_length(payload::text)` of the stored payload; its stored size
    /// when that is too large to print (it is oversized either way).
    pub payload_bytes: i64,
    /// Bytes of `user_id`, `kind` and `source` as stored.
    pub text_bytes: i64,
    /// What the claim counted this payload as against the batch's byte
    /// budget (its stored size when that surely fits): the relay sums the
    /// same numbers to know whether the budget cut the batch.
    pub budget_bytes: i64,
    /// As stored (producers may set it too).
    pub enqueued_at: PgTimestamp,
}

impl ClaimedRow {
    /// Decodes a row of [`CLAIM_SQL`]. Fails only if the outbox's column
    /// types are not the ones `strata migrate` created.
    pub(crate) fn decode(row: &tokio_postgres::Row) -> Result<Self, RelayError> {
        fn text(row: &tokio_postgres::Row, index: usize) -> Result<(String, bool), RelayError> {
            let raw: RawText = get(row, index)?;
            Ok(match String::from_utf8(raw.0) {
                Ok(text) => (text, true),
                Err(err) => (String::from_utf8_lossy(err.as_bytes()).into_owned(), false),
            })
        }
        let payload = text(row, 6)?;
        let whole: bool = get(row, 7)?;
        // A whole payload's size is its text's; otherwise the database's
        // measure (or its stored size, when too large to print).
        let payload_bytes = if whole {
            i64::try_from(payload.0.len()).unwrap_or(i64::MAX)
        } else {
            get(row, 8)?
        };
        Ok(Self {
            outbox_id: get(row, 0)?,
            event_id: get(row, 1)?,
            user_id: text(row, 2)?,
            kind: text(row, 3)?,
            occurred_at: get(row, 4)?,
            source: text(row, 5)?,
            payload,
            payload_bytes,
            budget_bytes: get(row, 8)?,
            text_bytes: get(row, 9)?,
            enqueued_at: get(row, 10)?,
        })
    }

    /// Whether the texts held here are the stored values, byte for byte
    /// (false when a prefix was fetched or bytes were not UTF-8): only such
    /// dead letters can be re-driven.
    pub fn intact(&self) -> bool {
        let texts = [&self.user_id, &self.kind, &self.source, &self.payload];
        texts.iter().all(|(_, utf8)| *utf8)
            && self.payload.0.len() as i64 == self.payload_bytes
            && (self.user_id.0.len() + self.kind.0.len() + self.source.0.len()) as i64
                == self.text_bytes
    }
}

fn get<'a, T: FromSql<'a>>(row: &'a tokio_postgres::Row, index: usize) -> Result<T, RelayError> {
    row.try_get(index).map_err(RelayError::row("claim"))
}

/// What to do with a claimed row.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Ship it; `occurred_at` is within the window.
    Ship(DateTime<Utc>),
    /// Dead-letter it for this reason.
    Refuse(ValidationError),
}

/// Judges a row against the event rules and the `occurred_at` window at
/// `now`. Pure: every rule an outbox row can break is decided here.
pub fn classify(row: &ClaimedRow, limits: &EventLimits, now: DateTime<Utc>) -> Verdict {
    for (column, (_, utf8)) in [
        ("user_id", &row.user_id),
        ("kind", &row.kind),
        ("source", &row.source),
        ("payload", &row.payload),
    ] {
        if !utf8 {
            return Verdict::Refuse(ValidationError::InvalidUtf8 { column });
        }
    }
    // The row's own measure decides the size rule: the payload text may be
    // a prefix.
    let payload_bytes = usize::try_from(row.payload_bytes).unwrap_or(usize::MAX);
    if payload_bytes > limits.max_payload_bytes {
        if let Err(reason) = validate_row(&row.user_id.0, &row.kind.0, "{}", limits) {
            return Verdict::Refuse(reason);
        }
        return Verdict::Refuse(ValidationError::PayloadTooLarge {
            len: payload_bytes,
            max: limits.max_payload_bytes,
        });
    }
    if let Err(reason) = validate_source(&row.source.0)
        .and_then(|()| validate_row(&row.user_id.0, &row.kind.0, &row.payload.0, limits))
    {
        return Verdict::Refuse(reason);
    }
    let Some(occurred_at) = row.occurred_at.to_utc() else {
        let (earliest, latest) = limits.window(now);
        return Verdict::Refuse(ValidationError::OccurredAtOutOfWindow {
            occurred_at: row.occurred_at.describe(),
            earliest: earliest.to_rfc3339_opts(SecondsFormat::Secs, true),
            latest: latest.to_rfc3339_opts(SecondsFormat::Secs, true),
        });
    };
    match limits.check_occurred_at(occurred_at, now) {
        Ok(()) => Verdict::Ship(occurred_at),
        Err(reason) => Verdict::Refuse(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn row(occurred_at: PgTimestamp) -> ClaimedRow {
        ClaimedRow {
            outbox_id: 1,
            event_id: Uuid::nil(),
            user_id: ("u1".into(), true),
            kind: ("login".into(), true),
            source: ("svc".into(), true),
            occurred_at,
            payload: ("{}".into(), true),
            payload_bytes: 2,
            budget_bytes: 2,
            text_bytes: 10,
            enqueued_at: PgTimestamp(0),
        }
    }

    fn code(verdict: &Verdict) -> &'static str {
        match verdict {
            Verdict::Ship(_) => "ship",
            Verdict::Refuse(reason) => reason.code(),
        }
    }

    #[test]
    fn raw_timestamps_round_trip_and_describe() {
        let now = Utc::now().trunc_subsecs_micros();
        assert_eq!(PgTimestamp::from_utc(now).to_utc(), Some(now));
        assert_eq!(PgTimestamp(0).describe(), "2000-01-01T00:00:00.000000Z");
        assert_eq!(PgTimestamp(i64::MAX).describe(), "infinity");
        assert_eq!(PgTimestamp(i64::MIN).describe(), "-infinity");
        // Year 294276 fits Postgres, not chrono.
        let far = PgTimestamp(i64::MAX - 1);
        assert_eq!(far.to_utc(), None);
        assert!(far.describe().contains("beyond"));
    }

    trait TruncMicros {
        fn trunc_subsecs_micros(self) -> Self;
    }
    impl TruncMicros for DateTime<Utc> {
        fn trunc_subsecs_micros(self) -> Self {
            use chrono::SubsecRound;
            self.trunc_subsecs(6)
        }
    }

    #[test]
    fn hostile_times_are_refused_with_the_window_reason() {
        let limits = EventLimits::default();
        let now = Utc::now();
        let ok = PgTimestamp::from_utc(now - TimeDelta::days(3));
        assert_eq!(code(&classify(&row(ok), &limits, now)), "ship");
        for bad in [
            PgTimestamp(i64::MAX),
            PgTimestamp(i64::MIN),
            PgTimestamp::from_utc(now - TimeDelta::days(401)),
            PgTimestamp::from_utc(now + TimeDelta::days(2)),
            // 0001-01-01 BC and 0001-01-01 AD.
            PgTimestamp(-63_082_281_600_000_000 - 366 * 86_400_000_000),
            PgTimestamp(-63_082_281_600_000_000),
            // 9999-12-31.
            PgTimestamp(252_455_529_600_000_000),
            PgTimestamp(i64::MAX - 1),
            PgTimestamp(i64::MIN + 1),
        ] {
            let verdict = classify(&row(bad), &limits, now);
            assert_eq!(code(&verdict), "occurred_at_out_of_window", "{bad:?}");
        }
    }

    #[test]
    fn sizes_come_from_the_database_not_the_prefix() {
        let limits = EventLimits::default();
        let now = Utc::now();
        let mut big = row(PgTimestamp::from_utc(now));
        big.payload = ("{\"a\": \"xxxx".into(), true);
        big.payload_bytes = 100 * 1024 * 1024;
        assert_eq!(
            classify(&big, &limits, now),
            Verdict::Refuse(ValidationError::PayloadTooLarge {
                len: 100 * 1024 * 1024,
                max: limits.max_payload_bytes
            })
        );
        assert!(!big.intact());
        let fine = row(PgTimestamp::from_utc(now));
        assert!(fine.intact());
        let mut odd = row(PgTimestamp::from_utc(now));
        odd.user_id = ("b\u{fffd}d".into(), false);
        assert_eq!(code(&classify(&odd, &limits, now)), "invalid_utf8");
        assert!(!odd.intact());
    }
}
