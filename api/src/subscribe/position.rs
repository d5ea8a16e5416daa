//! Positions in the subscription stream and the resume tokens that carry
//! them.
//!
//! An event's position is the commit sequence of the relay transaction
//! that stored it (`strata.stream_log.seq`) and, within that transaction,
//! its primary key `(user_id, occurred_at, event_id)` in byte order. A
//! subscription's cursor says how far it has delivered: "through
//! transaction `seq`, up to key `k`", or through the whole transaction.
//!
//! Resume token payload: `seq(i64 BE) | 0` for a whole transaction, or
//! `seq | 1 | user_len(u16 BE) | user_id | occurred_at(i64 BE, µs) |
//! event_id(16)`; sealed with the page-token keys
//! ([`PageTokenKeys::seal`]) and bound to the filter's digest, so a token
//! only resumes the filter it came from. Tokens do not expire: a position
//! stays valid until the archiver's retention drops rows after it (the
//! stream's floor), and then it is OUT_OF_RANGE.

use std::cmp::Ordering;

use uuid::Uuid;

use crate::error::InvalidArgument;
use crate::page_token::{PageTokenError, PageTokenKeys};

/// An event's key within its transaction: the hot store's primary key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowKey {
    /// Compared as bytes, as the column's "C" collation does.
    pub user_id: String,
    /// UTC microseconds.
    pub occurred_at: i64,
    /// The event id (compared as Postgres compares uuids: bytewise).
    pub event_id: Uuid,
}

/// How far a subscription has delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The commit sequence of the last transaction (partly) delivered.
    pub seq: i64,
    /// `None`: all of transaction `seq`; else up to and including this key.
    pub key: Option<RowKey>,
}

impl Position {
    /// Through all of transaction `seq`.
    pub fn after_transaction(seq: i64) -> Self {
        Self { seq, key: None }
    }

    /// Whether what follows this position may be gone with the stream's
    /// `floor`: transactions up to the floor lost rows (and their log
    /// rows), so a position before it, or inside the floor's own
    /// transaction, cannot be continued.
    pub fn is_below(&self, floor: i64) -> bool {
        self.seq < floor || (self.seq == floor && self.key.is_some())
    }
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> Ordering {
        self.seq
            .cmp(&other.seq)
            .then_with(|| match (&self.key, &other.key) {
                (None, None) => Ordering::Equal,
                // A whole transaction is past every key in it.
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Domain-separates resume tokens from anything else the keys sign.
fn binding(filter_digest: &[u8; 32]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"strata.v1.Subscribe.resume_token\0");
    hasher.update(filter_digest);
    hasher.finalize().into()
}

/// The resume token of `position` for the filter with `filter_digest`.
pub fn issue(keys: &PageTokenKeys, position: &Position, filter_digest: &[u8; 32]) -> String {
    let mut payload = Vec::with_capacity(64);
    payload.extend_from_slice(&position.seq.to_be_bytes());
    match &position.key {
        None => payload.push(0),
        Some(key) => {
            payload.push(1);
            // User ids are at most 256 bytes (checked on ingest).
            let user = key.user_id.as_bytes();
            payload
                .extend_from_slice(&(user.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
            payload.extend_from_slice(user);
            payload.extend_from_slice(&key.occurred_at.to_be_bytes());
            payload.extend_from_slice(key.event_id.as_bytes());
        }
    }
    keys.seal(&payload, &binding(filter_digest))
}

/// The position of a resume token issued for the same filter.
pub fn verify(
    keys: &PageTokenKeys,
    token: &str,
    filter_digest: &[u8; 32],
) -> Result<Position, InvalidArgument> {
    let payload = keys
        .open(token, &binding(filter_digest))
        .map_err(InvalidArgument::ResumeTokenInvalid)?;
    decode(&payload).ok_or(InvalidArgument::ResumeTokenInvalid(
        PageTokenError::Malformed,
    ))
}

fn decode(payload: &[u8]) -> Option<Position> {
    let (seq, rest) = payload.split_first_chunk::<8>()?;
    let seq = i64::from_be_bytes(*seq);
    let (&tag, rest) = rest.split_first()?;
    match tag {
        0 if rest.is_empty() => Some(Position { seq, key: None }),
        1 => {
            let (len, rest) = rest.split_first_chunk::<2>()?;
            let len = usize::from(u16::from_be_bytes(*len));
            if rest.len() != len + 8 + 16 {
                return None;
            }
            let (user, rest) = rest.split_at(len);
            let user_id = String::from_utf8(user.to_vec()).ok()?;
            let (micros, id) = rest.split_first_chunk::<8>()?;
            Some(Position {
                seq,
                key: Some(RowKey {
                    user_id,
                    occurred_at: i64::from_be_bytes(*micros),
                    event_id: Uuid::from_slice(id).ok()?,
                }),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page_token::PageTokenKey;

    fn keys(id: &str) -> PageTokenKeys {
        PageTokenKeys::new(vec![PageTokenKey::new(
            id,
            format!("{id}-secret-of-at-least-32-bytes-long"),
        )])
        .expect("keys")
    }

    fn keyed(seq: i64, user: &str, micros: i64) -> Position {
        Position {
            seq,
            key: Some(RowKey {
                user_id: user.into(),
                occurred_at: micros,
                event_id: Uuid::from_u128(7),
            }),
        }
    }

    #[test]
    fn positions_order_by_transaction_then_key_and_a_whole_transaction_last() {
        let whole = Position::after_transaction(5);
        assert!(keyed(5, "zz", 9) < whole);
        assert!(whole < keyed(6, "a", 0));
        assert!(keyed(5, "a", 9) < keyed(5, "b", 0));
        assert!(keyed(5, "a", 1) < keyed(5, "a", 2));
    }

    #[test]
    fn a_position_inside_the_floors_transaction_is_below_it() {
        assert!(keyed(5, "a", 1).is_below(5));
        assert!(!Position::after_transaction(5).is_below(5));
        assert!(Position::after_transaction(4).is_below(5));
        assert!(!keyed(6, "a", 1).is_below(5));
    }

    #[test]
    fn tokens_round_trip_and_are_bound_to_the_filter() {
        let keys = keys("k1");
        let (filter, other) = ([1u8; 32], [2u8; 32]);
        for position in [Position::after_transaction(42), keyed(42, "usér-1", -5)] {
            let token = issue(&keys, &position, &filter);
            assert_eq!(verify(&keys, &token, &filter).unwrap(), position);
            assert!(verify(&keys, &token, &other).is_err());
            assert!(verify(&self::keys("k2"), &token, &filter).is_err());
            let mut tampered = token.into_bytes();
            let last = tampered.len() - 3;
            tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(tampered).unwrap();
            assert!(verify(&keys, &tampered, &filter).is_err());
        }
        assert!(verify(&keys, "", &filter).is_err());
        assert!(verify(&keys, &"A".repeat(5000), &filter).is_err());
    }

    #[test]
    fn truncated_payloads_do_not_decode() {
        let mut payload = 42i64.to_be_bytes().to_vec();
        assert_eq!(decode(&payload), None);
        payload.push(0);
        assert_eq!(decode(&payload), Some(Position::after_transaction(42)));
        payload.push(0);
        assert_eq!(decode(&payload), None);
        payload[8] = 1;
        assert_eq!(decode(&payload), None);
    }
}
