//! Unit tests of `error.rs`.

use super::*;

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 3, 4).expect("a date")
}

use strata_core::error_chain as chain;

#[test]
fn transient_faults_are_retryable() {
    let io = std::io::Error::other("disk busy");
    for err in [
        ArchiveError::Timeout {
            context: "seal the day".into(),
            seconds: 30.0,
        },
        ArchiveError::spool(std::path::Path::new("/tmp/x"))(io),
        ArchiveError::LeaseHeld {
            holder: "other".into(),
            until: "later".into(),
        },
        ArchiveError::SourceUnchecked {
            day: day(),
            source_name: "main".into(),
            error: Box::new(ArchiveError::Timeout {
                context: "read the outbox".into(),
                seconds: 30.0,
            }),
        },
    ] {
        assert!(err.is_retryable(), "{err}");
    }
}

#[test]
fn permanent_faults_are_not_retryable() {
    for err in [
        ArchiveError::StageStopped { stage: "uploader" },
        ArchiveError::BadSnapshot { text: "x".into() },
        ArchiveError::Verification {
            key: "k".into(),
            message: "SHA-256 mismatch".into(),
        },
        ArchiveError::Fenced { epoch: 7 },
        ArchiveError::NotCommitted(day()),
        ArchiveError::UnknownValue {
            context: "the archive catalog",
            error: UnknownValue {
                column: "day state",
                value: "archived".into(),
            },
        },
        ArchiveError::Cancelled,
    ] {
        assert!(!err.is_retryable(), "{err}");
    }
}

/// Only a transient object-store fault is retried: a missing object,
/// a refusal (401/403) and a rejected request (other 4xx) are not.
#[test]
fn object_store_failures_are_retried_only_when_transient() {
    use strata_archive::StoreErrorKind;
    let cases = [
        (StoreErrorKind::Transient, true),
        (StoreErrorKind::NotFound, false),
        (StoreErrorKind::Denied, false),
        (StoreErrorKind::Invalid, false),
    ];
    for (kind, retryable) in cases {
        let err = ArchiveError::from(StoreError {
            op: "put",
            key: "_staging/activity/date=2025-03-04/part-00000-a.parquet".into(),
            message: "AccessDenied: Access Denied".into(),
            kind,
        });
        assert_eq!(err.is_retryable(), retryable, "{kind:?}");
        assert_eq!(err.label(), "object_store");
        assert_eq!(
            chain(&err),
            "object store: put _staging/activity/date=2025-03-04/part-00000-a.parquet: AccessDenied: Access Denied"
        );
    }
}

#[test]
fn stopped_stages_keep_their_message_and_label() {
    for (stage, text) in [
        ("encoder", "parquet: encoder stopped"),
        ("uploader", "parquet: uploader stopped"),
    ] {
        let err = ArchiveError::StageStopped { stage };
        assert_eq!(err.to_string(), text);
        assert_eq!(chain(&err), text);
        assert_eq!(err.label(), "parquet");
        assert!(!err.is_retryable());
    }
}

#[test]
fn split_variants_keep_their_former_messages_and_labels() {
    let io = std::io::Error::other("no space left on device");
    let spool = ArchiveError::spool(std::path::Path::new("/spool/part-00000.parquet"))(io);
    assert_eq!(
        spool.to_string(),
        "spool file /spool/part-00000.parquet: no space left on device"
    );
    assert_eq!(chain(&spool), spool.to_string());
    assert_eq!(spool.label(), "spool");

    let snapshot = ArchiveError::BadSnapshot { text: "1;2".into() };
    assert_eq!(
        snapshot.to_string(),
        r#"parquet: unexpected snapshot text "1;2""#
    );
    assert_eq!(snapshot.label(), "parquet");

    let unchecked = ArchiveError::SourceUnchecked {
        day: day(),
        source_name: "main".into(),
        error: Box::new(ArchiveError::Cancelled),
    };
    assert_eq!(
        unchecked.to_string(),
        r#"day 2025-03-04 cannot be archived: cannot check source "main" for unshipped events: cancelled"#
    );
    assert_eq!(unchecked.label(), "not_archivable");

    let unknown = ArchiveError::UnknownValue {
        context: "the archive catalog",
        error: UnknownValue {
            column: "day state",
            value: "archived".into(),
        },
    };
    assert_eq!(
        unknown.to_string(),
        r#"decode the archive catalog: unknown day state "archived""#
    );
    assert_eq!(unknown.label(), "decode");
}

/// A driver error to wrap (the only kind a unit test can make: a
/// connection string that does not parse).
fn driver_error() -> tokio_postgres::Error {
    <tokio_postgres::Config as std::str::FromStr>::from_str("host=h port=notaport")
        .expect_err("a bad port")
}

#[test]
fn session_errors_keep_the_archivers_messages_labels_and_retry_policy() {
    let url = "postgres://strata:***@db.example/hot";
    let described = describe_pg_error(&driver_error());

    let bad_url = ArchiveError::from(PgError::BadUrl {
        url: url.into(),
        error: driver_error(),
    });
    assert!(
        matches!(bad_url, ArchiveError::BadUrl { .. }),
        "{bad_url:?}"
    );
    assert_eq!(bad_url.to_string(), format!("parse {url}: {described}"));
    assert_eq!(bad_url.label(), "db");
    assert!(!bad_url.is_retryable());

    let connect = ArchiveError::from(PgError::Connect {
        url: url.into(),
        error: driver_error(),
    });
    assert!(matches!(connect, ArchiveError::Db { .. }), "{connect:?}");
    assert_eq!(
        connect.to_string(),
        format!("connect to {url}: {described}")
    );
    assert_eq!(chain(&connect), connect.to_string());
    assert_eq!(connect.label(), "db");
    assert!(connect.is_retryable());

    let connect_timeout = ArchiveError::from(PgError::ConnectTimeout {
        url: url.into(),
        timeout: std::time::Duration::from_secs(30),
    });
    assert!(
        matches!(connect_timeout, ArchiveError::Timeout { seconds, .. } if seconds == 30.0),
        "{connect_timeout:?}"
    );
    assert_eq!(
        connect_timeout.to_string(),
        format!("connect to {url}: timed out after 30 s")
    );
    assert_eq!(connect_timeout.label(), "timeout");
    assert!(connect_timeout.is_retryable());

    let timeout = ArchiveError::from(PgError::Timeout {
        context: "renew the archiver lease",
        timeout: std::time::Duration::from_millis(12_000),
    });
    assert_eq!(
        timeout.to_string(),
        "renew the archiver lease: timed out after 12 s"
    );
    assert_eq!(timeout.label(), "timeout");
    assert!(timeout.is_retryable());

    let database = ArchiveError::from(PgError::Database {
        context: "seal the day",
        error: driver_error(),
    });
    assert!(
        matches!(&database, ArchiveError::Db { context, .. } if context == "seal the day"),
        "{database:?}"
    );
    assert_eq!(database.to_string(), format!("seal the day: {described}"));
    assert_eq!(database.label(), "db");
    assert!(database.is_retryable());
}

#[test]
fn unreadable_files_are_told_from_other_failures() {
    let stopped = ArchiveError::StageStopped { stage: "encoder" };
    assert_eq!(stopped.unreadable().as_deref(), Some("encoder stopped"));
    let format = ArchiveError::from(strata_archive::FormatError::Null);
    assert_eq!(format.unreadable().as_deref(), Some("unexpected null"));
    assert_eq!(format.to_string(), "parquet: unexpected null");
    assert_eq!(format.label(), "parquet");
    assert!(!format.is_retryable());
    assert_eq!(ArchiveError::Cancelled.unreadable(), None);
    let timeout = ArchiveError::Timeout {
        context: "x".into(),
        seconds: 1.0,
    };
    assert_eq!(timeout.unreadable(), None);
}

/// What the binary prints (`{err:#}`) is each message once, as it was
/// when these variants held their cause as text: the cause is in the
/// message (which the daemon logs alone), never also the `source()`.
#[test]
fn causes_print_once_in_the_chain() {
    let io = || std::io::Error::other("no space left on device");
    let spool = ArchiveError::spool(std::path::Path::new("/spool/part-00000.parquet"))(io());
    assert_eq!(
        chain(&spool),
        "spool file /spool/part-00000.parquet: no space left on device"
    );

    let unchecked = ArchiveError::SourceUnchecked {
        day: day(),
        source_name: "main".into(),
        error: Box::new(ArchiveError::spool(std::path::Path::new("/tmp/x"))(io())),
    };
    assert_eq!(
        chain(&unchecked),
        r#"day 2025-03-04 cannot be archived: cannot check source "main" for unshipped events: spool file /tmp/x: no space left on device"#
    );
    assert!(unchecked.is_retryable());

    let json = serde_json::from_str::<serde_json::Value>("{").expect_err("not JSON");
    let json_text = json.to_string();
    let manifest = ArchiveError::Manifest(json);
    assert_eq!(chain(&manifest), format!("parquet: manifest: {json_text}"));

    let codec = ArchiveError::from(parquet::errors::ParquetError::General("bad page".into()));
    assert!(matches!(codec, ArchiveError::ParquetCodec(_)), "{codec:?}");
    assert_eq!(chain(&codec), "parquet: Parquet error: bad page");
    assert_eq!(
        codec.unreadable().as_deref(),
        Some("Parquet error: bad page")
    );

    let arrow = ArchiveError::from(arrow_schema::ArrowError::ComputeError("overflow".into()));
    assert!(matches!(arrow, ArchiveError::Arrow(_)), "{arrow:?}");
    assert_eq!(chain(&arrow), "parquet: Compute error: overflow");

    let format = ArchiveError::from(strata_archive::FormatError::Null);
    assert_eq!(chain(&format), "parquet: unexpected null");

    let unknown = ArchiveError::UnknownValue {
        context: "the archive catalog",
        error: UnknownValue {
            column: "day state",
            value: "archived".into(),
        },
    };
    assert_eq!(
        chain(&unknown),
        r#"decode the archive catalog: unknown day state "archived""#
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let join = runtime.block_on(async {
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        task.await.expect_err("aborted")
    });
    let join_text = join.to_string();
    let thread = ArchiveError::Thread {
        context: "encoder thread",
        error: join,
    };
    assert_eq!(
        chain(&thread),
        format!("parquet: encoder thread: {join_text}")
    );
    assert_eq!(
        thread.unreadable(),
        Some(format!("encoder thread: {join_text}"))
    );

    let url = "postgres://strata:***@db.example/hot";
    let described = describe_pg_error(&driver_error());
    let bad_url = ArchiveError::from(PgError::BadUrl {
        url: url.into(),
        error: driver_error(),
    });
    assert_eq!(chain(&bad_url), format!("parse {url}: {described}"));
    let database = ArchiveError::from(PgError::Database {
        context: "seal the day",
        error: driver_error(),
    });
    assert_eq!(chain(&database), format!("seal the day: {described}"));

    let driver_text = driver_error().to_string();
    let decode = ArchiveError::decode("the archive catalog")(driver_error());
    assert_eq!(
        decode.to_string(),
        format!("decode the archive catalog: {driver_text}")
    );
    assert_eq!(chain(&decode), decode.to_string());
    assert_eq!(decode.label(), "decode");
    assert!(!decode.is_retryable());
}
