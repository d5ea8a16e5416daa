//! What a request says, checked: its fields (range, kinds, page size,
//! order, ids, format) as typed values or an [`InvalidArgument`], and its
//! metadata (request id, bearer token, `grpc-timeout`).
//!
//! Pure functions, no I/O; the handlers call them before any work.

use std::time::Duration;

use prost_types::Timestamp;
use strata_proto::v1::{ExportFormat, Order};
use tonic::Request;
use uuid::Uuid;

use crate::error::InvalidArgument;
use crate::export::Format;
use crate::page_token::PageTokenError;

/// Events per page when the request says 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Larger page sizes are coerced to this.
pub const MAX_PAGE_SIZE: usize = 1_000;
/// Most kinds one request may filter on.
pub const MAX_KINDS: usize = 32;
/// Earliest accepted timestamp: 0001-01-01T00:00:00Z.
const MIN_SECONDS: i64 = -62_135_596_800;
/// Latest accepted timestamp: 9999-12-31T23:59:59Z.
const MAX_SECONDS: i64 = 253_402_300_799;

/// Validated range in UTC microseconds: unset `from` is the beginning of
/// time, unset `to` the end of time (so the range, and with it the page
/// token binding, does not move between pages).
pub fn range(
    from: Option<&Timestamp>,
    to: Option<&Timestamp>,
) -> Result<(i64, i64), InvalidArgument> {
    let from = match from {
        Some(t) => micros(t, "start_time")?,
        None => MIN_SECONDS * 1_000_000,
    };
    let to = match to {
        Some(t) => micros(t, "end_time")?,
        None => (MAX_SECONDS + 1) * 1_000_000,
    };
    if from > to {
        return Err(InvalidArgument::RangeReversed);
    }
    Ok((from, to))
}

/// A timestamp field as UTC microseconds, within years 0001 to 9999.
pub fn micros(t: &Timestamp, field: &'static str) -> Result<i64, InvalidArgument> {
    if !(0..1_000_000_000).contains(&t.nanos) || !(MIN_SECONDS..=MAX_SECONDS).contains(&t.seconds) {
        return Err(InvalidArgument::Timestamp { field });
    }
    Ok(t.seconds * 1_000_000 + i64::from(t.nanos / 1_000))
}

/// The kinds filter, valid, sorted and without duplicates.
pub fn kinds(requested: &[String]) -> Result<Vec<String>, InvalidArgument> {
    if requested.len() > MAX_KINDS {
        return Err(InvalidArgument::TooManyKinds { max: MAX_KINDS });
    }
    for kind in requested {
        if strata_core::event::validate_kind(kind).is_err() {
            return Err(InvalidArgument::Kind {
                kind: truncate(kind, 64).to_string(),
            });
        }
    }
    let mut kinds = requested.to_vec();
    kinds.sort_unstable();
    kinds.dedup();
    Ok(kinds)
}

/// Events per page: 0 is the default, larger than the most is the most.
pub fn page_size(requested: i32) -> Result<usize, InvalidArgument> {
    match requested {
        n if n < 0 => Err(InvalidArgument::NegativePageSize),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

/// Whether the order asked for is newest first (unset: oldest first).
pub fn descending(order: i32) -> Result<bool, InvalidArgument> {
    match Order::try_from(order) {
        Ok(Order::Unspecified | Order::Ascending) => Ok(false),
        Ok(Order::Descending) => Ok(true),
        Err(_) => Err(InvalidArgument::UnknownOrder),
    }
}

/// The export file format (unset: JSON lines).
pub fn export_format(format: i32) -> Result<Format, InvalidArgument> {
    match ExportFormat::try_from(format) {
        Ok(ExportFormat::Unspecified | ExportFormat::Jsonl) => Ok(Format::JsonLines),
        Ok(ExportFormat::Csv) => Ok(Format::Csv),
        Err(_) => Err(InvalidArgument::ExportFormat),
    }
}

/// GetEvent's `event_id`.
pub fn event_id(text: &str) -> Result<Uuid, InvalidArgument> {
    Uuid::parse_str(text).map_err(|_| InvalidArgument::EventId)
}

/// GetExport's `export_id`.
pub fn export_id(text: &str) -> Result<Uuid, InvalidArgument> {
    Uuid::parse_str(text).map_err(|_| InvalidArgument::ExportId)
}

/// StartExport's `request_id`: empty (none) or a UUID in its 36-character
/// hyphenated form (any case), neither nil nor max: a client whose unset
/// default is the nil UUID is told so instead of getting its first job
/// back on every call, and braced, `urn:uuid:` or hyphen-less spellings
/// are refused as the README says.
pub fn export_request_id(text: &str) -> Result<Option<Uuid>, InvalidArgument> {
    if text.is_empty() {
        return Ok(None);
    }
    let hyphenated = text.len() == 36
        && text
            .char_indices()
            .all(|(at, c)| matches!(at, 8 | 13 | 18 | 23) == (c == '-'));
    match Uuid::try_parse(text) {
        Ok(id) if hyphenated && !id.is_nil() && !id.is_max() => Ok(Some(id)),
        _ => Err(InvalidArgument::RequestId),
    }
}

/// Export jobs per ListExports page when the request says 0.
pub const DEFAULT_JOBS_PAGE_SIZE: usize = 50;
/// Larger ListExports page sizes are coerced to this.
pub const MAX_JOBS_PAGE_SIZE: usize = 500;

/// ListExports' page size: 0 is the default, larger than the most is the
/// most.
pub fn jobs_page_size(requested: i32) -> Result<usize, InvalidArgument> {
    match requested {
        n if n < 0 => Err(InvalidArgument::NegativePageSize),
        0 => Ok(DEFAULT_JOBS_PAGE_SIZE),
        n => Ok((n as usize).min(MAX_JOBS_PAGE_SIZE)),
    }
}

/// A page token that did not verify: expired, or not for this request.
pub fn page_token(err: PageTokenError) -> InvalidArgument {
    match err {
        PageTokenError::Expired => InvalidArgument::PageTokenExpired,
        other => InvalidArgument::PageTokenInvalid(other),
    }
}

/// The caller's `x-request-id` when it is a sane token, else a new UUID.
pub fn request_id<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| Uuid::new_v4().to_string())
}

/// The `authorization` metadata; a value that is not visible ASCII reads
/// as one that does not verify.
pub fn authorization<T>(request: &Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("\u{0}"))
}

/// The call's deadline: `limit`, or the client's `grpc-timeout` when it
/// is shorter.
pub fn deadline<T>(request: &Request<T>, limit: Duration) -> Duration {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(limit, |client| client.min(limit))
}

/// `grpc-timeout` as the gRPC HTTP/2 protocol spells it: at most 8 digits
/// and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let unit = text.chars().last()?;
    let digits = text.get(..text.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(value.checked_mul(3600)?),
        'M' => Duration::from_secs(value.checked_mul(60)?),
        'S' => Duration::from_secs(value),
        'm' => Duration::from_millis(value),
        'u' => Duration::from_micros(value),
        'n' => Duration::from_nanos(value),
        _ => return None,
    })
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_spells_them() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "m", "123456789S", "1x", "-1S", "1.5S", "9999999\u{e9}"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges_default_to_all_time_and_refuse_bad_bounds() {
        let (from, to) = range(None, None).expect("all time");
        assert!(from < to);
        let late = Timestamp {
            seconds: 10,
            nanos: 0,
        };
        let early = Timestamp {
            seconds: 5,
            nanos: 0,
        };
        assert_eq!(
            range(Some(&late), Some(&early)),
            Err(InvalidArgument::RangeReversed)
        );
        let bad = Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert_eq!(
            range(None, Some(&bad)),
            Err(InvalidArgument::Timestamp { field: "end_time" })
        );
    }

    #[test]
    fn kinds_are_checked_sorted_and_deduplicated() {
        let asked = vec!["b".to_string(), "a".to_string(), "b".to_string()];
        assert_eq!(kinds(&asked), Ok(vec!["a".to_string(), "b".to_string()]));
        let many = vec!["a".to_string(); MAX_KINDS + 1];
        assert_eq!(
            kinds(&many),
            Err(InvalidArgument::TooManyKinds { max: MAX_KINDS })
        );
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(5_000), Ok(MAX_PAGE_SIZE));
        assert_eq!(page_size(-1), Err(InvalidArgument::NegativePageSize));
        assert_eq!(jobs_page_size(0), Ok(DEFAULT_JOBS_PAGE_SIZE));
        assert_eq!(jobs_page_size(5_000), Ok(MAX_JOBS_PAGE_SIZE));
        assert_eq!(jobs_page_size(-1), Err(InvalidArgument::NegativePageSize));
    }

    #[test]
    fn request_ids_are_empty_or_uuids() {
        assert_eq!(export_request_id(""), Ok(None));
        let id = Uuid::now_v7();
        assert_eq!(export_request_id(&id.to_string()), Ok(Some(id)));
        let upper = id.to_string().to_uppercase();
        assert_eq!(export_request_id(&upper), Ok(Some(id)));
        for refused in [
            "retry-1".to_owned(),
            Uuid::nil().to_string(),
            Uuid::max().to_string(),
            id.simple().to_string(),
            id.braced().to_string(),
            id.urn().to_string(),
            format!(" {}", &id.to_string()[1..]),
            id.to_string().replacen('-', "", 1) + "0",
        ] {
            assert_eq!(
                export_request_id(&refused),
                Err(InvalidArgument::RequestId),
                "{refused}"
            );
        }
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("h\u{e9}llo", 2), "h");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
