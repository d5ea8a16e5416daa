//! What a call can fail with ([`ApiError`]), and the one table from it to
//! a gRPC status ([`status`]).
//!
//! **Invariant:** every `tonic::Status` the service answers with is built
//! here (the tonic trait boundary only passes them on). A variant's
//! `Display` is the exact text the client reads; a cause (a database, an
//! object store or a task error) is kept as the variant's `source`, logged
//! once when the status is built, and never echoed to the client.

use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

use crate::admission::{Cap, InFlight, RateLimit, BUSY_WAIT};
use crate::auth::AuthError;
use crate::export::ExportError;
use crate::jobs::JobError;
use crate::page_token::PageTokenError;
use crate::pool::PoolError;
use crate::read_error::ReadError;

/// Why a call failed; answered by [`status`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is not acceptable (INVALID_ARGUMENT).
    #[error(transparent)]
    InvalidArgument(#[from] InvalidArgument),
    /// No valid bearer token (UNAUTHENTICATED; the text says which check
    /// failed, all of them safe to return).
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    /// The token may not make this call (PERMISSION_DENIED).
    #[error(transparent)]
    PermissionDenied(#[from] PermissionDenied),
    /// Nothing by that id for this caller (NOT_FOUND).
    #[error(transparent)]
    NotFound(#[from] NotFound),
    /// CancelExport of a job that already ended otherwise
    /// (FAILED_PRECONDITION).
    #[error(
        "export {export_id} already ended ({state}); only pending or running jobs can be cancelled"
    )]
    ExportAlreadyEnded {
        /// The job.
        export_id: Uuid,
        /// How it ended (`succeeded`, `failed`, `expired`).
        state: &'static str,
    },
    /// Over a rate (RESOURCE_EXHAUSTED with a retry hint).
    #[error("{} (retry after {} ms)", rate_message(*.limit), hint_millis(*.retry_after))]
    RateLimited {
        /// Whose rate.
        limit: RateLimit,
        /// When to try again.
        retry_after: Duration,
    },
    /// A cap on things in flight was reached (RESOURCE_EXHAUSTED with a
    /// retry hint of [`BUSY_WAIT`]).
    #[error("{} (retry after {} ms)", busy_message(*.cap, *.what), hint_millis(BUSY_WAIT))]
    Busy {
        /// Which cap.
        cap: Cap,
        /// Of what.
        what: InFlight,
    },
    /// The principal runs as many exports as it may (RESOURCE_EXHAUSTED,
    /// no hint: an export takes long).
    #[error(
        "this principal already runs {max} exports (streams and jobs); wait for one to finish"
    )]
    ExportLimit {
        /// Exports per principal.
        max: u32,
    },
    /// A subscription's start is older than the hot store still holds
    /// (OUT_OF_RANGE).
    #[error("the subscription's start is older than what the hot store still holds (positions up to {floor} went with dropped partitions); read that part with ListActivity or an export, then subscribe from_beginning")]
    PositionNotRetained {
        /// The newest position no longer readable.
        floor: i64,
    },
    /// A consumer group exists with another definition
    /// (FAILED_PRECONDITION).
    #[error("group {group:?} exists with another filter, key_path or bucket count; join it with its own, or use another group name")]
    GroupMismatch {
        /// The group.
        group: String,
    },
    /// The hot store holds as many consumer groups as it may
    /// (RESOURCE_EXHAUSTED).
    #[error("the hot store already holds {max} consumer groups; join an existing group or delete unused ones (strata.stream_groups)")]
    GroupLimit {
        /// Groups per hot store.
        max: i64,
    },
    /// A group member kept a delivery unacknowledged too long; its buckets
    /// go to other members (DEADLINE_EXCEEDED).
    #[error("a delivery stayed unacknowledged longer than {} ms; this member left the group and its unacknowledged events will be delivered again", .timeout.as_millis())]
    AckTimeout {
        /// `api.group_ack_timeout`.
        timeout: Duration,
    },
    /// The call's deadline passed (DEADLINE_EXCEEDED).
    #[error("the call did not finish within its deadline ({} ms)", .deadline.as_millis())]
    DeadlineExceeded {
        /// The deadline the call had.
        deadline: Duration,
    },
    /// No database connection (UNAVAILABLE).
    #[error("the history store is busy or unreachable; retry")]
    Pool(#[from] PoolError),
    /// Reading the history failed (UNAVAILABLE when the stores are
    /// unreachable, INTERNAL otherwise).
    #[error("{}", read_message(.0))]
    Read(#[from] ReadError),
    /// The call's audit record could not be written, so its result is
    /// withheld (UNAVAILABLE).
    #[error("the audit log is unavailable; nothing was returned")]
    AuditUnavailable,
    /// Anything else (INTERNAL).
    #[error("{what} failed; the error is logged")]
    Internal {
        /// What was being done ("create export job", ...).
        what: &'static str,
        /// The cause, for the log.
        #[source]
        source: Fault,
    },
}

impl ApiError {
    /// An internal failure while doing `what`.
    pub fn internal(what: &'static str, source: impl Into<Fault>) -> Self {
        ApiError::Internal {
            what,
            source: source.into(),
        }
    }

    /// The gRPC code of this error: the table.
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::ExportAlreadyEnded { .. } | ApiError::GroupMismatch { .. } => {
                Code::FailedPrecondition
            }
            ApiError::PositionNotRetained { .. } => Code::OutOfRange,
            ApiError::RateLimited { .. }
            | ApiError::Busy { .. }
            | ApiError::ExportLimit { .. }
            | ApiError::GroupLimit { .. } => Code::ResourceExhausted,
            ApiError::DeadlineExceeded { .. } | ApiError::AckTimeout { .. } => {
                Code::DeadlineExceeded
            }
            ApiError::Pool(_) | ApiError::AuditUnavailable => Code::Unavailable,
            ApiError::Read(ReadError::Db { .. } | ReadError::Store(_)) => Code::Unavailable,
            ApiError::Read(
                ReadError::Decode { .. }
                | ReadError::Unexpected(_)
                | ReadError::Archive { .. }
                | ReadError::Scratch(_),
            ) => Code::Internal,
            ApiError::Internal { .. } => Code::Internal,
        }
    }

    /// The stable `google.rpc.ErrorInfo.reason` (UPPER_SNAKE_CASE, in
    /// [`DOMAIN`]): what a client branches on; the message may change.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument(invalid) => invalid.reason(),
            ApiError::Unauthenticated(auth) => match auth {
                AuthError::Missing => "TOKEN_MISSING",
                AuthError::Malformed => "TOKEN_MALFORMED",
                AuthError::UnknownKey => "TOKEN_UNKNOWN_KEY",
                AuthError::BadSignature => "TOKEN_BAD_SIGNATURE",
                AuthError::Expired => "TOKEN_EXPIRED",
                AuthError::NotYetValid => "TOKEN_NOT_YET_VALID",
                AuthError::WrongAudience => "TOKEN_WRONG_AUDIENCE",
                AuthError::WrongIssuer => "TOKEN_WRONG_ISSUER",
                AuthError::MissingClaim(_) => "TOKEN_MISSING_CLAIM",
            },
            ApiError::PermissionDenied(
                PermissionDenied::ExportScope | PermissionDenied::GroupScope,
            ) => "SCOPE_MISSING",
            ApiError::PermissionDenied(PermissionDenied::OtherUser) => "OTHER_USER",
            ApiError::NotFound(NotFound::Event { .. }) => "EVENT_NOT_FOUND",
            ApiError::NotFound(NotFound::ExportJob) => "EXPORT_NOT_FOUND",
            ApiError::ExportAlreadyEnded { .. } => "EXPORT_ALREADY_ENDED",
            ApiError::PositionNotRetained { .. } => "POSITION_NOT_RETAINED",
            ApiError::GroupMismatch { .. } => "GROUP_MISMATCH",
            ApiError::GroupLimit { .. } => "GROUP_LIMIT",
            ApiError::AckTimeout { .. } => "ACK_TIMEOUT",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::Busy { .. } => "TOO_MANY_IN_FLIGHT",
            ApiError::ExportLimit { .. } => "EXPORT_LIMIT",
            ApiError::DeadlineExceeded { .. } => "DEADLINE_EXCEEDED",
            ApiError::Pool(_) | ApiError::Read(ReadError::Db { .. } | ReadError::Store(_)) => {
                "STORE_UNAVAILABLE"
            }
            ApiError::Read(
                ReadError::Decode { .. }
                | ReadError::Unexpected(_)
                | ReadError::Archive { .. }
                | ReadError::Scratch(_),
            ) => "READ_FAILED",
            ApiError::AuditUnavailable => "AUDIT_UNAVAILABLE",
            ApiError::Internal { .. } => "INTERNAL",
        }
    }

    /// `ErrorInfo.metadata`: the values a client may act on, by name.
    fn error_metadata(&self) -> Vec<(String, String)> {
        let pairs: Vec<(&str, String)> = match self {
            ApiError::InvalidArgument(invalid) => vec![("field", invalid.field().to_string())],
            ApiError::Unauthenticated(AuthError::MissingClaim(claim)) => {
                vec![("claim", claim.to_string())]
            }
            ApiError::PermissionDenied(PermissionDenied::ExportScope) => {
                vec![("scope", "activity:export".to_string())]
            }
            ApiError::PermissionDenied(PermissionDenied::GroupScope) => {
                vec![("scope", "activity:subscribe".to_string())]
            }
            ApiError::GroupMismatch { group } => vec![("group", group.clone())],
            ApiError::GroupLimit { max } => vec![("max_groups", max.to_string())],
            ApiError::AckTimeout { timeout } => {
                vec![("ack_timeout_ms", timeout.as_millis().to_string())]
            }
            ApiError::ExportAlreadyEnded { export_id, state } => vec![
                ("export_id", export_id.to_string()),
                ("state", state.to_string()),
            ],
            ApiError::RateLimited { limit, .. } => vec![(
                "limit",
                match limit {
                    RateLimit::Peer => "peer",
                    RateLimit::Principal => "principal",
                }
                .to_string(),
            )],
            ApiError::Busy { cap, what } => vec![
                (
                    "cap",
                    match cap {
                        Cap::PerPrincipal => "principal",
                        Cap::Total => "total",
                    }
                    .to_string(),
                ),
                (
                    "in_flight",
                    match what {
                        InFlight::Calls => "calls",
                        InFlight::ArchiveReads => "archive_reads",
                        InFlight::Subscriptions => "subscriptions",
                    }
                    .to_string(),
                ),
            ],
            ApiError::ExportLimit { max } => vec![("max_concurrent_exports", max.to_string())],
            ApiError::PositionNotRetained { floor } => vec![("floor", floor.to_string())],
            ApiError::DeadlineExceeded { deadline } => {
                vec![("deadline_ms", deadline.as_millis().to_string())]
            }
            _ => Vec::new(),
        };
        pairs
            .into_iter()
            .map(|(key, value)| (key.to_string(), value))
            .collect()
    }

    /// How long the client should wait before retrying, when the answer
    /// carries a retry hint.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after, .. } => Some(*retry_after),
            ApiError::Busy { .. } => Some(BUSY_WAIT),
            _ => None,
        }
    }
}

/// A request field that is not acceptable; the text names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidArgument {
    /// `start_time` after `end_time`.
    #[error("start_time is after end_time")]
    RangeReversed,
    /// A timestamp outside years 0001 to 9999, or with bad nanos.
    #[error("{field} is not a valid timestamp (years 0001 to 9999, nanos 0..1e9)")]
    Timestamp {
        /// `start_time` or `end_time`.
        field: &'static str,
    },
    /// More kinds than one request may filter on.
    #[error("at most {max} kinds per request")]
    TooManyKinds {
        /// The most allowed.
        max: usize,
    },
    /// A kind that breaks the naming rules.
    #[error("kinds: {kind:?} is not a valid kind")]
    Kind {
        /// The kind, cut to 64 bytes.
        kind: String,
    },
    /// `page_size` below zero.
    #[error("page_size must not be negative")]
    NegativePageSize,
    /// An `order` this server does not know.
    #[error("unknown order")]
    UnknownOrder,
    /// A page token past its expiry.
    #[error("page_token has expired; start again without it")]
    PageTokenExpired,
    /// A page token that does not verify for this request (every reason
    /// reads the same to the caller; the variant is for the log).
    #[error("page_token is not valid for this request (it must come from the previous page of the same query)")]
    PageTokenInvalid(#[source] PageTokenError),
    /// `event_id` is not a UUID.
    #[error("event_id must be a UUID")]
    EventId,
    /// `export_id` is not a UUID.
    #[error("export_id must be a UUID")]
    ExportId,
    /// A `format` this server does not know.
    #[error("unknown export format")]
    ExportFormat,
    /// A token that may read any history must say whose.
    #[error("user_id is required with an activity:read:any token")]
    UserIdRequired,
    /// `user_id` longer than a stored user id can be.
    #[error("user_id is longer than 256 bytes")]
    UserIdTooLong,
    /// `user_id` holding a NUL character, which no stored user id can.
    #[error("user_id contains a NUL character, which no stored user id can")]
    UserIdNul,
    /// A subscription filter that breaks its rules or limits.
    #[error("{field}: {problem}")]
    Filter {
        /// The filter's field (`filter.kinds`, ...).
        field: &'static str,
        /// What is wrong, without echoing large input.
        problem: String,
    },
    /// A consumer group's join or acknowledgement that breaks its rules.
    #[error("{field}: {problem}")]
    Group {
        /// The request's field (`join.group`, `ack.delivery_ids`, ...).
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A resume token that does not verify for this subscription (every
    /// reason reads the same to the caller).
    #[error("resume_token is not valid for this subscription (it must come from a response to a subscription with the same filter)")]
    ResumeTokenInvalid(#[source] PageTokenError),
    /// StartExport's `request_id` is not a UUID.
    #[error("request_id must be a UUID in its 36-character hyphenated form, not nil (or empty)")]
    RequestId,
    /// A `request_id` this principal already used for another export.
    #[error("request_id {request_id} was used for a different export (other user, range, kinds or format); use a new request_id for a new export")]
    RequestIdReused {
        /// The id.
        request_id: Uuid,
    },
}

impl InvalidArgument {
    /// The request field at fault (`BadRequest.field_violations[].field`).
    pub fn field(&self) -> &'static str {
        match self {
            InvalidArgument::RangeReversed => "start_time",
            InvalidArgument::Timestamp { field } => field,
            InvalidArgument::TooManyKinds { .. } | InvalidArgument::Kind { .. } => "kinds",
            InvalidArgument::NegativePageSize => "page_size",
            InvalidArgument::UnknownOrder => "order",
            InvalidArgument::PageTokenExpired | InvalidArgument::PageTokenInvalid(_) => {
                "page_token"
            }
            InvalidArgument::EventId => "event_id",
            InvalidArgument::ExportId => "export_id",
            InvalidArgument::ExportFormat => "format",
            InvalidArgument::UserIdRequired
            | InvalidArgument::UserIdTooLong
            | InvalidArgument::UserIdNul => "user_id",
            InvalidArgument::RequestId | InvalidArgument::RequestIdReused { .. } => "request_id",
            InvalidArgument::Filter { field, .. } | InvalidArgument::Group { field, .. } => field,
            InvalidArgument::ResumeTokenInvalid(_) => "resume_token",
        }
    }

    /// The stable `ErrorInfo.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            InvalidArgument::RangeReversed => "RANGE_REVERSED",
            InvalidArgument::Timestamp { .. } => "TIMESTAMP_OUT_OF_RANGE",
            InvalidArgument::TooManyKinds { .. } => "TOO_MANY_KINDS",
            InvalidArgument::Kind { .. } => "INVALID_KIND",
            InvalidArgument::NegativePageSize => "NEGATIVE_PAGE_SIZE",
            InvalidArgument::UnknownOrder => "UNKNOWN_ORDER",
            InvalidArgument::PageTokenExpired => "PAGE_TOKEN_EXPIRED",
            InvalidArgument::PageTokenInvalid(_) => "PAGE_TOKEN_INVALID",
            InvalidArgument::EventId => "INVALID_EVENT_ID",
            InvalidArgument::ExportId => "INVALID_EXPORT_ID",
            InvalidArgument::ExportFormat => "UNKNOWN_EXPORT_FORMAT",
            InvalidArgument::UserIdRequired => "USER_ID_REQUIRED",
            InvalidArgument::UserIdTooLong => "USER_ID_TOO_LONG",
            InvalidArgument::UserIdNul => "INVALID_USER_ID",
            InvalidArgument::RequestId => "INVALID_REQUEST_ID",
            InvalidArgument::RequestIdReused { .. } => "REQUEST_ID_REUSED",
            InvalidArgument::Filter { .. } => "INVALID_FILTER",
            InvalidArgument::Group { .. } => "INVALID_GROUP",
            InvalidArgument::ResumeTokenInvalid(_) => "RESUME_TOKEN_INVALID",
        }
    }
}

/// What a valid token may not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PermissionDenied {
    /// Exports (and export jobs) need the export scope.
    #[error("this token lacks the activity:export scope")]
    ExportScope,
    /// A customer token naming another user.
    #[error("a customer token reads only its own history")]
    OtherUser,
    /// Consumer groups are for services.
    #[error("consumer groups need a token with the activity:subscribe scope")]
    GroupScope,
}

/// Nothing by that id for this caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotFound {
    /// GetEvent found no such event (within the days it searches).
    #[error("no such event in this user's history (archived days are searched at most {max_days} days back from a UUIDv7 id's time, or the {max_days} most recent for other ids; use ListActivity with a range for older events)")]
    Event {
        /// `api.get_event_max_days`.
        max_days: usize,
    },
    /// No such export job, or one of another principal.
    #[error("no such export job")]
    ExportJob,
}

/// The cause of an internal failure.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// A task of the call's panicked or was aborted.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// The export jobs' table.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The object store.
    #[error(transparent)]
    Store(#[from] strata_archive::StoreError),
    /// A streamed export.
    #[error(transparent)]
    Export(#[from] ExportError),
}

fn rate_message(limit: RateLimit) -> &'static str {
    match limit {
        RateLimit::Peer => "too many calls from this network address; retry later",
        RateLimit::Principal => "request rate limit reached for this principal; retry later",
    }
}

fn busy_message(cap: Cap, what: InFlight) -> String {
    let whose = match cap {
        Cap::PerPrincipal => "this principal has the most",
        Cap::Total => "the server has the most",
    };
    let what = match what {
        InFlight::Calls => "calls",
        InFlight::ArchiveReads => "archive reads",
        InFlight::Subscriptions => "subscriptions",
    };
    format!("{whose} {what} in flight it may have; retry when one has finished")
}

fn read_message(err: &ReadError) -> &'static str {
    match err {
        ReadError::Db { .. } | ReadError::Store(_) => "the history store is unreachable; retry",
        ReadError::Decode { .. }
        | ReadError::Unexpected(_)
        | ReadError::Archive { .. }
        | ReadError::Scratch(_) => {
            "the history could not be read; the error is logged under this request id"
        }
    }
}

/// A retry hint in milliseconds, as the answer states it.
fn hint_millis(wait: Duration) -> u64 {
    wait.as_millis().clamp(1, 60_000) as u64
}

/// `ErrorInfo.domain` of every error this API answers with.
pub const DOMAIN: &str = "strata.dev";

/// The gRPC status answering `err`, for the call `request_id`. A cause is
/// logged (and counted) here, once; the client reads only the variant's
/// text. Every status carries AIP-193 details in `grpc-status-details-bin`:
/// `ErrorInfo` (a stable reason, [`DOMAIN`], metadata), `RequestInfo` (the
/// request id), `BadRequest` for INVALID_ARGUMENT and `RetryInfo` with a
/// retry hint; the hint also travels as `retry-after` (seconds) and
/// `grpc-retry-pushback-ms`, which gRPC clients with a retry policy obey.
pub fn status(err: ApiError, request_id: &str) -> Status {
    match &err {
        ApiError::Pool(source) => {
            tracing::warn!(%request_id, error = %source, "api database pool");
            crate::metrics::errors("pool");
        }
        ApiError::Read(source) => {
            tracing::error!(%request_id, error = %source, "history read failed");
            crate::metrics::errors("read");
        }
        ApiError::Internal { what, source } => {
            tracing::error!(%request_id, error = %source, "{what}");
            crate::metrics::errors("internal");
        }
        _ => {}
    }
    let code = err.code();
    let message = err.to_string();
    let mut details = ErrorDetails::new();
    details.set_error_info(
        err.reason(),
        DOMAIN,
        err.error_metadata()
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
    );
    details.set_request_info(request_id, "");
    if let ApiError::InvalidArgument(invalid) = &err {
        details.add_bad_request_violation(invalid.field(), invalid.to_string());
    }
    let metadata = match err.retry_after() {
        Some(wait) => {
            details.set_retry_info(Some(Duration::from_millis(hint_millis(wait))));
            retry_metadata(wait)
        }
        None => MetadataMap::new(),
    };
    Status::with_error_details_and_metadata(code, message, details, metadata)
}

fn retry_metadata(wait: Duration) -> MetadataMap {
    let millis = hint_millis(wait);
    let mut metadata = MetadataMap::new();
    if let Ok(value) = millis.to_string().parse() {
        metadata.insert("grpc-retry-pushback-ms", value);
    }
    if let Ok(value) = millis.div_ceil(1000).to_string().parse() {
        metadata.insert("retry-after", value);
    }
    metadata
}

/// `status` carrying the call's `x-request-id`.
pub fn with_request_id(mut status: Status, request_id: &str) -> Status {
    if let Ok(value) = request_id.parse() {
        status.metadata_mut().insert("x-request-id", value);
    }
    status
}

/// The canonical gRPC code name (`OK`, `INVALID_ARGUMENT`, ...).
pub fn code_name(code: Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(err: ApiError) -> (Code, String, Option<String>, Option<String>) {
        let status = status(err, "r1");
        let header = |name: &str| {
            status
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        (
            status.code(),
            status.message().to_string(),
            header("retry-after"),
            header("grpc-retry-pushback-ms"),
        )
    }

    #[test]
    fn refusals_carry_their_retry_hints() {
        let millis = Duration::from_millis;
        // (error, text, (retry-after, grpc-retry-pushback-ms)).
        type Case = (ApiError, &'static str, Option<(&'static str, &'static str)>);
        let cases: Vec<Case> = vec![
            (
                ApiError::RateLimited { limit: RateLimit::Peer, retry_after: millis(250) },
                "too many calls from this network address; retry later (retry after 250 ms)",
                Some(("1", "250")),
            ),
            (
                ApiError::RateLimited { limit: RateLimit::Principal, retry_after: millis(2_500) },
                "request rate limit reached for this principal; retry later (retry after 2500 ms)",
                Some(("3", "2500")),
            ),
            (
                ApiError::Busy { cap: Cap::Total, what: InFlight::ArchiveReads },
                "the server has the most archive reads in flight it may have; retry when one has finished (retry after 200 ms)",
                Some(("1", "200")),
            ),
            (
                ApiError::Busy { cap: Cap::PerPrincipal, what: InFlight::Calls },
                "this principal has the most calls in flight it may have; retry when one has finished (retry after 200 ms)",
                Some(("1", "200")),
            ),
            (
                ApiError::ExportLimit { max: 2 },
                "this principal already runs 2 exports (streams and jobs); wait for one to finish",
                None,
            ),
        ];
        for (err, text, hint) in cases {
            let (code, message, retry_after, pushback) = answer(err);
            assert_eq!((code, message.as_str()), (Code::ResourceExhausted, text));
            let expected = hint.map(|(s, ms)| (s.to_string(), ms.to_string()));
            assert_eq!(retry_after.zip(pushback), expected, "{text}");
        }
    }

    #[test]
    fn texts_and_codes_are_the_table() {
        let cases: Vec<(ApiError, Code, &str)> = vec![
            (
                InvalidArgument::Timestamp { field: "start_time" }.into(),
                Code::InvalidArgument,
                "start_time is not a valid timestamp (years 0001 to 9999, nanos 0..1e9)",
            ),
            (
                InvalidArgument::Kind { kind: "a b".into() }.into(),
                Code::InvalidArgument,
                "kinds: \"a b\" is not a valid kind",
            ),
            (
                InvalidArgument::PageTokenInvalid(PageTokenError::BadSignature).into(),
                Code::InvalidArgument,
                "page_token is not valid for this request (it must come from the previous page of the same query)",
            ),
            (
                AuthError::Expired.into(),
                Code::Unauthenticated,
                "token has expired",
            ),
            (
                PermissionDenied::OtherUser.into(),
                Code::PermissionDenied,
                "a customer token reads only its own history",
            ),
            (
                NotFound::Event { max_days: 7 }.into(),
                Code::NotFound,
                "no such event in this user's history (archived days are searched at most 7 days back from a UUIDv7 id's time, or the 7 most recent for other ids; use ListActivity with a range for older events)",
            ),
            (
                ApiError::ExportAlreadyEnded {
                    export_id: Uuid::nil(),
                    state: "succeeded",
                },
                Code::FailedPrecondition,
                "export 00000000-0000-0000-0000-000000000000 already ended (succeeded); only pending or running jobs can be cancelled",
            ),
            (
                ApiError::DeadlineExceeded {
                    deadline: Duration::from_millis(1500),
                },
                Code::DeadlineExceeded,
                "the call did not finish within its deadline (1500 ms)",
            ),
            (
                PoolError::Busy(4).into(),
                Code::Unavailable,
                "the history store is busy or unreachable; retry",
            ),
            (
                ReadError::Archive {
                    key: "k".into(),
                    error: parquet::errors::ParquetError::General("secret detail".into()).into(),
                }
                .into(),
                Code::Internal,
                "the history could not be read; the error is logged under this request id",
            ),
            (
                ApiError::AuditUnavailable,
                Code::Unavailable,
                "the audit log is unavailable; nothing was returned",
            ),
            (
                ApiError::internal(
                    "create export job",
                    JobError::UnknownState("weird".into()),
                ),
                Code::Internal,
                "create export job failed; the error is logged",
            ),
        ];
        for (err, code, text) in cases {
            let (got_code, got_text, retry_after, _) = answer(err);
            assert_eq!((got_code, got_text.as_str()), (code, text));
            assert_eq!(retry_after, None, "{text}");
        }
    }

    #[test]
    fn request_ids_travel_as_metadata() {
        let status = with_request_id(status(ApiError::AuditUnavailable, "r-1"), "r-1");
        assert_eq!(
            status.metadata().get("x-request-id").map(|v| v.as_bytes()),
            Some(&b"r-1"[..])
        );
    }

    /// One error of every reason.
    fn one_of_each() -> Vec<ApiError> {
        let auth = [
            AuthError::Missing,
            AuthError::Malformed,
            AuthError::UnknownKey,
            AuthError::BadSignature,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::WrongAudience,
            AuthError::WrongIssuer,
            AuthError::MissingClaim("sub"),
        ];
        let invalid = [
            InvalidArgument::RangeReversed,
            InvalidArgument::Timestamp { field: "end_time" },
            InvalidArgument::TooManyKinds { max: 32 },
            InvalidArgument::Kind { kind: "a b".into() },
            InvalidArgument::NegativePageSize,
            InvalidArgument::UnknownOrder,
            InvalidArgument::PageTokenExpired,
            InvalidArgument::PageTokenInvalid(PageTokenError::BadSignature),
            InvalidArgument::EventId,
            InvalidArgument::ExportId,
            InvalidArgument::ExportFormat,
            InvalidArgument::UserIdRequired,
            InvalidArgument::UserIdTooLong,
            InvalidArgument::UserIdNul,
            InvalidArgument::RequestId,
            InvalidArgument::RequestIdReused {
                request_id: Uuid::nil(),
            },
            InvalidArgument::Filter {
                field: "filter.kinds",
                problem: "at most 50 values".into(),
            },
            InvalidArgument::ResumeTokenInvalid(PageTokenError::BadSignature),
            InvalidArgument::Group {
                field: "join.buckets",
                problem: "1 to 1024".into(),
            },
        ];
        let mut all: Vec<ApiError> = auth.into_iter().map(ApiError::from).collect();
        all.extend(invalid.into_iter().map(ApiError::from));
        all.extend([
            PermissionDenied::ExportScope.into(),
            PermissionDenied::OtherUser.into(),
            NotFound::Event { max_days: 7 }.into(),
            NotFound::ExportJob.into(),
            ApiError::ExportAlreadyEnded {
                export_id: Uuid::nil(),
                state: "failed",
            },
            ApiError::RateLimited {
                limit: RateLimit::Peer,
                retry_after: Duration::from_millis(250),
            },
            ApiError::Busy {
                cap: Cap::Total,
                what: InFlight::Calls,
            },
            ApiError::ExportLimit { max: 2 },
            ApiError::PositionNotRetained { floor: 7 },
            ApiError::GroupMismatch {
                group: "fraud".into(),
            },
            ApiError::AckTimeout {
                timeout: Duration::from_secs(30),
            },
            ApiError::GroupLimit { max: 1000 },
            ApiError::DeadlineExceeded {
                deadline: Duration::from_secs(1),
            },
            PoolError::Busy(4).into(),
            ReadError::Archive {
                key: "k".into(),
                error: parquet::errors::ParquetError::General("x".into()).into(),
            }
            .into(),
            ApiError::AuditUnavailable,
            ApiError::internal("list export jobs", JobError::UnknownState("x".into())),
        ]);
        all
    }

    #[test]
    fn every_status_carries_its_reason_and_details() {
        use tonic_types::StatusExt;
        for err in one_of_each() {
            let reason = err.reason();
            let retry = err.retry_after();
            let field = match &err {
                ApiError::InvalidArgument(invalid) => Some(invalid.field()),
                _ => None,
            };
            let status = status(err, "r-9");
            let info = status.get_details_error_info().expect("ErrorInfo");
            assert_eq!(
                (info.reason.as_str(), info.domain.as_str()),
                (reason, DOMAIN)
            );
            assert_eq!(
                status.get_details_request_info().map(|r| r.request_id),
                Some("r-9".to_string())
            );
            let violations = status
                .get_details_bad_request()
                .map(|b| b.field_violations)
                .unwrap_or_default();
            assert_eq!(
                violations.first().map(|v| v.field.as_str()),
                field,
                "{reason}"
            );
            assert_eq!(info.metadata.get("field").map(String::as_str), field);
            let delay = status.get_details_retry_info().and_then(|r| r.retry_delay);
            assert_eq!(delay.is_some(), retry.is_some(), "{reason}");
        }
    }

    #[test]
    fn reasons_are_distinct_stable_names_listed_in_the_readme() {
        let readme = include_str!("../../README.md");
        let reasons: Vec<&str> = one_of_each().iter().map(ApiError::reason).collect();
        let mut distinct = reasons.clone();
        distinct.sort_unstable();
        distinct.dedup();
        // Unreachable stores and failed reads share STORE_UNAVAILABLE only
        // through ReadError::Db/Store, which one_of_each leaves out.
        assert_eq!(distinct.len(), reasons.len(), "{reasons:?}");
        for reason in reasons {
            assert!(
                reason
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
                "{reason}"
            );
            assert!(
                readme.contains(&format!("`{reason}`")),
                "README's error table lacks {reason}"
            );
        }
    }
}
