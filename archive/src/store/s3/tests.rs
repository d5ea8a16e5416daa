//! Unit tests of `s3.rs`.

use aws_sdk_s3::error::{ConnectorError, ErrorMetadata};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::SdkBody;

use super::*;

#[test]
fn service_answers_are_classified_by_status_and_code() {
    use StoreErrorKind::*;
    let cases: &[(u16, Option<&str>, StoreErrorKind)] = &[
        (404, Some("NoSuchKey"), NotFound),
        // A HEAD's 404 has no body; the SDK names it `NotFound`.
        (404, Some("NotFound"), NotFound),
        (404, Some("NoSuchBucket"), Invalid),
        (404, Some("NoSuchUpload"), Transient),
        (404, None, Invalid),
        (401, None, Denied),
        (403, Some("AccessDenied"), Denied),
        (403, Some("InvalidAccessKeyId"), Denied),
        (403, Some("SignatureDoesNotMatch"), Denied),
        (400, Some("InvalidArgument"), Invalid),
        (400, Some("EntityTooLarge"), Invalid),
        (409, Some("BucketAlreadyOwnedByYou"), Invalid),
        (412, Some("PreconditionFailed"), Invalid),
        (416, Some("InvalidRange"), Invalid),
        (301, Some("PermanentRedirect"), Invalid),
        (400, Some("RequestTimeout"), Transient),
        (400, Some("ThrottlingException"), Transient),
        (409, Some("OperationAborted"), Transient),
        (408, None, Transient),
        (429, None, Transient),
        (429, Some("TooManyRequestsException"), Transient),
        (503, Some("SlowDown"), Transient),
        (503, Some("ServiceUnavailable"), Transient),
        (500, Some("InternalError"), Transient),
        (502, None, Transient),
        (504, None, Transient),
        // A copy or multipart completion can fail inside a 200.
        (200, Some("InternalError"), Transient),
    ];
    for &(status, code, kind) in cases {
        assert_eq!(service_kind(status, code), kind, "{status} {code:?}");
    }
}

fn answer(status: u16, code: &str, message: &str) -> SdkError<GetObjectError, HttpResponse> {
    let error =
        GetObjectError::generic(ErrorMetadata::builder().code(code).message(message).build());
    let raw = HttpResponse::new(status.try_into().expect("a status"), SdkBody::empty());
    SdkError::service_error(error, raw)
}

#[test]
fn sdk_errors_keep_their_text_and_get_a_kind() {
    let missing = sdk_error(
        "get",
        "k",
        &answer(404, "NoSuchKey", "The key does not exist"),
    );
    assert_eq!(
        missing.to_string(),
        "object store: get k: NoSuchKey: The key does not exist"
    );
    assert!(missing.not_found() && !missing.is_retryable());

    let slow = sdk_error("put", "k", &answer(503, "SlowDown", "Reduce your rate"));
    assert_eq!(slow.kind, StoreErrorKind::Transient);
    assert!(slow.is_retryable());

    let denied = sdk_error("put", "k", &answer(403, "AccessDenied", "Access Denied"));
    assert_eq!(denied.kind, StoreErrorKind::Denied);
    assert!(!denied.is_retryable());

    let timeout: SdkError<GetObjectError, HttpResponse> =
        SdkError::timeout_error(std::io::Error::from(std::io::ErrorKind::TimedOut));
    let timeout = sdk_error("get", "k", &timeout);
    assert_eq!(timeout.kind, StoreErrorKind::Transient);
    assert!(
        timeout.message.starts_with("request has timed out: "),
        "{timeout}"
    );

    let refused: SdkError<GetObjectError, HttpResponse> = SdkError::dispatch_failure(
        ConnectorError::io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into()),
    );
    assert_eq!(sdk_kind(&refused), StoreErrorKind::Transient);

    let unbuildable: SdkError<GetObjectError, HttpResponse> =
        SdkError::construction_failure("no bucket");
    let unbuildable = sdk_error("get", "k", &unbuildable);
    assert_eq!(unbuildable.kind, StoreErrorKind::Invalid);
    assert_eq!(
        unbuildable.message,
        "failed to construct request: no bucket"
    );
    // The text holds the cause, so it is not also the source.
    assert!(std::error::Error::source(&unbuildable).is_none());
}

#[test]
fn local_and_streaming_failures_take_the_kind_of_their_io_error() {
    use aws_sdk_s3::primitives::ByteStreamError;
    use std::io::{Error, ErrorKind};
    // The SDK's stream error shows "IO error"; its source decides.
    let unreadable = ByteStreamError::from(Error::from(ErrorKind::PermissionDenied));
    assert_eq!(io_chain_kind(&unreadable), StoreErrorKind::Denied);
    let gone = ByteStreamError::from(Error::from(ErrorKind::NotFound));
    assert_eq!(io_chain_kind(&gone), StoreErrorKind::NotFound);
    let missing = Error::from(ErrorKind::NotFound);
    assert_eq!(io_chain_kind(&missing), StoreErrorKind::NotFound);
    let reset = Error::from(ErrorKind::ConnectionReset);
    assert_eq!(io_chain_kind(&reset), StoreErrorKind::Transient);
    assert_eq!(io_chain_kind(&std::fmt::Error), StoreErrorKind::Transient);
}
