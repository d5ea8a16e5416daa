//! The history API as a client sees it: a real `strata api` process over a
//! hot store (real Postgres) and an archive on the S3 server (moto), read
//! by the generated Rust client and by Python grpcio stubs generated from
//! the proto; authentication, authorisation, audit, page-token attacks,
//! SQL injection, exports (streamed and jobs with presigned URLs), limits.

use std::collections::HashSet;

use anyhow::Context;
use std::time::Duration;

use chrono::{NaiveDate, TimeDelta, Utc};
use serde_json::json;
use strata_api::export::Format;
use strata_api::{Binding, Cursor, PageTokenKey, PageTokenKeys};
use strata_archive::ArchivedRow;
use strata_producer::NewEvent;
use strata_proto::v1::history_service_client::HistoryServiceClient as HistoryClient;
use strata_proto::v1::{
    CancelExportRequest, Event as ProtoEvent, ExportActivityRequest, ExportFormat, ExportState,
    GetEventRequest, GetExportRequest, ListActivityRequest, ListExportsRequest, Order,
    StartExportRequest,
};
use strata_tests::api::{authed, python_client, python_stubs, token, token_with, ApiServer};
use strata_tests::archive::{boto3, run_archive, S3Target};
use strata_tests::TestEnv;
use tonic::transport::Channel;
use tonic::Code;

use crate::archive::{at, day_arg, events_for, past_day, produce, ship, user_history, KINDS};

const READ_ANY: &str = "activity:read:any";
const EXPORT: &str = "activity:export";

/// A store with alice's and bob's histories over four closed days and
/// today, plus other users' noise; days `cold` archived. Returns alice's
/// history (oldest first) as the hot store held it before archiving.
async fn store_with_history(
    env: &TestEnv,
    target: &S3Target,
    cold: &[NaiveDate],
) -> anyhow::Result<Vec<ArchivedRow>> {
    let mut events = Vec::new();
    for (d, day) in [past_day(5), past_day(4), past_day(3), past_day(2)]
        .into_iter()
        .enumerate()
    {
        events.extend(events_for(day, 40));
        for i in 0..9u32 {
            events.push(
                NewEvent::new("alice", KINDS[i as usize % KINDS.len()])
                    .occurred_at(at(day, 1 + i, 0, 0, i))
                    .payload(json!({"i": i, "d": d, "note": "a,b \"c\"\n"})),
            );
        }
        for i in 0..3u32 {
            events.push(
                NewEvent::new("bob", "login")
                    .occurred_at(at(day, 2 + i, 30, 0, 0))
                    .payload(json!({"i": i})),
            );
        }
    }
    // Same instant twice: event_id breaks the tie.
    let tie = at(past_day(3), 12, 0, 0, 0);
    events.push(NewEvent::new("alice", "login").occurred_at(tie));
    events.push(NewEvent::new("alice", "logout").occurred_at(tie));
    events.push(NewEvent::new("alice", "deposit").occurred_at(Utc::now() - TimeDelta::minutes(5)));
    produce(env, &events).await?;
    ship(env).await?;
    let expected = user_history(env, "alice").await?;
    assert_eq!(expected.len(), 4 * 9 + 3);
    for day in cold {
        let (ok, output) = run_archive(env, target, &["--day", &day_arg(*day)], &[], None).await?;
        assert!(ok, "{output}");
    }
    Ok(expected)
}

fn list(user: &str, page_size: i32, order: Order, page_token: &str) -> ListActivityRequest {
    ListActivityRequest {
        user_id: user.into(),
        start_time: None,
        end_time: None,
        kinds: Vec::new(),
        order: order as i32,
        page_size,
        page_token: page_token.into(),
    }
}

/// The comparable identity of an event: id, user, time, kind, source,
/// payload text.
fn key_of_row(row: &ArchivedRow) -> (String, String, i64, String, String, String) {
    (
        row.event_id.to_string(),
        row.user_id.clone(),
        row.occurred_at,
        row.kind.clone(),
        row.source.clone(),
        row.payload.clone(),
    )
}

fn key_of_proto(event: &ProtoEvent) -> (String, String, i64, String, String, String) {
    let t = event.event_time.unwrap_or_default();
    (
        event.event_id.clone(),
        event.user_id.clone(),
        t.seconds * 1_000_000 + i64::from(t.nanos / 1_000),
        event.kind.clone(),
        event.source.clone(),
        event.payload_json.clone(),
    )
}

fn row_of_proto(event: &ProtoEvent) -> ArchivedRow {
    let micros = |t: &Option<prost_types::Timestamp>| {
        let t = (*t).unwrap_or_default();
        t.seconds * 1_000_000 + i64::from(t.nanos / 1_000)
    };
    ArchivedRow {
        user_id: event.user_id.clone(),
        occurred_at: micros(&event.event_time),
        event_id: event.event_id.parse().unwrap_or_default(),
        kind: event.kind.clone(),
        source: event.source.clone(),
        payload: event.payload_json.clone(),
        ingested_at: micros(&event.ingest_time),
    }
}

/// The job form of a streamed export's request.
fn job_request(request: ExportActivityRequest) -> StartExportRequest {
    StartExportRequest {
        user_id: request.user_id,
        start_time: request.start_time,
        end_time: request.end_time,
        kinds: request.kinds,
        format: request.format,
        ..Default::default()
    }
}

/// The AIP-193 `ErrorInfo` of a status (reason, domain, metadata), read as
/// any gRPC client reads it, from `grpc-status-details-bin`.
fn error_info(
    status: &tonic::Status,
) -> (String, String, std::collections::HashMap<String, String>) {
    use tonic_types::StatusExt;
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    (info.reason, info.domain, info.metadata)
}

/// The `ErrorInfo.reason` of a failed call.
fn reason<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> String {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(status) => error_info(&status).0,
    }
}

/// Every page of `request` (its page_token replaced as it goes).
async fn read_all(
    client: &mut HistoryClient<Channel>,
    token: &str,
    mut request: ListActivityRequest,
) -> anyhow::Result<Vec<ProtoEvent>> {
    let mut all = Vec::new();
    for _ in 0..10_000 {
        let page = client
            .list_activity(authed(request.clone(), token))
            .await?
            .into_inner();
        let max = if request.page_size == 0 {
            100
        } else {
            request.page_size
        };
        assert!(page.events.len() <= max as usize);
        all.extend(page.events);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        request.page_token = page.next_page_token;
    }
    anyhow::bail!("pagination did not end")
}

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(status) => status.code(),
    }
}

async fn audit_rows(
    env: &TestEnv,
    principal: &str,
    decision: &str,
) -> anyhow::Result<Vec<(String, String, String)>> {
    Ok(env
        .hot()
        .await?
        .query(
            "SELECT method, target_user, status_code FROM strata.api_audit
              WHERE principal = $1 AND decision = $2 ORDER BY audit_id",
            &[&principal, &decision],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Tests 1 and 2: alice's history across archived and hot days, page by
/// page, ascending and descending, through the Rust client and through
/// Python grpcio stubs generated from the proto; a day archived between two
/// pages; GetEvent in both tiers; health and reflection (v1, v1alpha).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_across_tiers_for_rust_and_python_clients() -> anyhow::Result<()> {
    let env = TestEnv::new("api_tiers").await?;
    let target = S3Target::new("api-tiers").await?;
    let (d5, d4, d3) = (past_day(5), past_day(4), past_day(3));
    let expected = store_with_history(&env, &target, &[d5, d4]).await?;
    let expected_keys: Vec<_> = expected.iter().map(key_of_row).collect();
    let server = ApiServer::start(&env, &target, "api-tiers", &[]).await?;
    let mut client = server.client().await?;
    let alice = token("alice", &[], 600);

    let ascending = read_all(&mut client, &alice, list("", 7, Order::Ascending, "")).await?;
    assert_eq!(
        ascending.iter().map(key_of_proto).collect::<Vec<_>>(),
        expected_keys
    );
    let descending = read_all(&mut client, &alice, list("alice", 5, Order::Descending, "")).await?;
    let mut newest_first = expected_keys.clone();
    newest_first.reverse();
    assert_eq!(
        descending.iter().map(key_of_proto).collect::<Vec<_>>(),
        newest_first
    );

    // A day moves from hot to cold between two pages: no gap, no repeat.
    let first = client
        .list_activity(authed(list("", 10, Order::Ascending, ""), &alice))
        .await?
        .into_inner();
    assert_eq!(first.events.len(), 10);
    let (ok, output) = run_archive(&env, &target, &["--day", &day_arg(d3)], &[], None).await?;
    assert!(ok, "{output}");
    let rest = read_all(
        &mut client,
        &alice,
        list("", 10, Order::Ascending, &first.next_page_token),
    )
    .await?;
    let seamed: Vec<_> = first
        .events
        .iter()
        .chain(rest.iter())
        .map(key_of_proto)
        .collect();
    assert_eq!(seamed, expected_keys);

    // GetEvent: a cold event, a hot one, a missing one.
    let cold_event = &expected[0];
    let hot_event = expected.last().expect("events");
    for wanted in [cold_event, hot_event] {
        let got = client
            .get_event(authed(
                GetEventRequest {
                    event_id: wanted.event_id.to_string(),
                    user_id: String::new(),
                },
                &alice,
            ))
            .await?
            .into_inner()
            .event
            .context("no event")?;
        assert_eq!(key_of_proto(&got), key_of_row(wanted));
    }
    let missing = client
        .get_event(authed(
            GetEventRequest {
                event_id: uuid::Uuid::now_v7().to_string(),
                user_id: String::new(),
            },
            &alice,
        ))
        .await;
    assert_eq!(code(missing), Code::NotFound);

    // The independent client.
    let stubs = python_stubs().await?;
    let address = format!("127.0.0.1:{}", server.port);
    let output = python_client(
        &stubs,
        "history_client.py",
        &["list", &address, &alice, "", "9", "asc"],
    )
    .await?;
    let mut python_ids = Vec::new();
    let mut pages = 0;
    for line in output.lines() {
        let value: serde_json::Value = serde_json::from_str(line)?;
        if let Some(n) = value.get("pages") {
            pages = n.as_u64().unwrap_or(0);
        } else {
            python_ids.push((
                value["event_id"].as_str().unwrap_or_default().to_string(),
                value["occurred_at_micros"].as_i64().unwrap_or_default(),
            ));
        }
    }
    let expected_ids: Vec<_> = expected
        .iter()
        .map(|r| (r.event_id.to_string(), r.occurred_at))
        .collect();
    assert_eq!(python_ids, expected_ids);
    assert_eq!(pages as usize, expected.len().div_ceil(9));
    let got = python_client(
        &stubs,
        "history_client.py",
        &["get", &address, &alice, &cold_event.event_id.to_string()],
    )
    .await?;
    let got: serde_json::Value = serde_json::from_str(got.trim())?;
    assert_eq!(got["event_id"], cold_event.event_id.to_string());

    let health = python_client(&stubs, "history_client.py", &["health", &address]).await?;
    assert_eq!(health.matches("\"SERVING\"").count(), 2, "{health}");
    for version in ["v1", "v1alpha"] {
        let reflected =
            python_client(&stubs, "history_client.py", &["reflect", &address, version]).await?;
        let value: serde_json::Value = serde_json::from_str(reflected.trim())?;
        let services: Vec<&str> = value["services"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
            .unwrap_or_default();
        let own = format!("grpc.reflection.{version}.ServerReflection");
        for wanted in [
            "strata.v1.HistoryService",
            "grpc.health.v1.Health",
            own.as_str(),
        ] {
            assert!(services.contains(&wanted), "{version}: {services:?}");
        }
        assert!(value["files"].as_u64().unwrap_or(0) >= 1);
    }
    let allowed = audit_rows(&env, "alice", "allowed").await?;
    assert!(allowed
        .iter()
        .all(|(_, target, code)| target == "alice" && code == "OK"));
    assert!(allowed.len() >= 10, "{allowed:?}");
    Ok(())
}

/// Tests 3, 4, 5 and 6: authentication failures, cross-user access in
/// every method, page-token forgery (10,000 mutants), expiry and foreign
/// keys, SQL injection in every string field; every call audited; the API
/// role cannot change the audit trail or the activity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_authentication_authorisation_tokens_and_injection() -> anyhow::Result<()> {
    let env = TestEnv::new("api_security").await?;
    let target = S3Target::new("api-security").await?;
    let expected = store_with_history(&env, &target, &[past_day(5)]).await?;
    let server = ApiServer::start(&env, &target, "api-security", &[]).await?;
    let mut client = server.client().await?;
    let alice = token("alice", &[], 600);
    let bob = token("bob", &[EXPORT], 600);
    let agent = token("agent-7", &[READ_ANY], 600);

    // Test 5: UNAUTHENTICATED, before any handler runs.
    let no_token = client
        .list_activity(tonic::Request::new(list("alice", 10, Order::Ascending, "")))
        .await;
    assert_eq!(code(no_token), Code::Unauthenticated);
    for (label, bad) in [
        ("expired", token("alice", &[], -120)),
        (
            "wrong signature",
            token_with(
                "alice",
                &[],
                600,
                "strata-history",
                "another-secret-of-at-least-32-bytes!!",
            ),
        ),
        (
            "wrong audience",
            token_with(
                "alice",
                &[],
                600,
                "someone-else",
                strata_tests::api::JWT_SECRET,
            ),
        ),
        ("garbage", "x.y.z".to_string()),
    ] {
        let result = client
            .list_activity(authed(list("alice", 10, Order::Ascending, ""), &bad))
            .await;
        let status = result.expect_err(label);
        assert_eq!(status.code(), Code::Unauthenticated, "{label}: {status:?}");
    }
    let unauthenticated = audit_rows(&env, "", "denied").await?;
    assert_eq!(unauthenticated.len(), 5, "{unauthenticated:?}");
    assert!(unauthenticated
        .iter()
        .all(|(_, _, c)| c == "UNAUTHENTICATED"));
    // A NUL character (which Postgres text cannot hold) in user_id: a
    // specific refusal, and the refused calls are audited all the same
    // (the audit row's text cannot hold it either).
    let nul_user = "al\0ice";
    let no_token = client
        .list_activity(tonic::Request::new(list(
            nul_user,
            10,
            Order::Ascending,
            "",
        )))
        .await;
    assert_eq!(code(no_token), Code::Unauthenticated);
    assert_eq!(
        reason(
            client
                .list_activity(authed(list(nul_user, 10, Order::Ascending, ""), &agent))
                .await
        ),
        "INVALID_USER_ID"
    );
    let audited: i64 = env
        .hot()
        .await?
        .query_one(
            "SELECT count(*) FROM strata.api_audit WHERE target_user = $1",
            &[&"al\u{FFFD}ice"],
        )
        .await?
        .try_get(0)?;
    assert_eq!(audited, 2, "NUL user ids not audited");

    // Test 3: bob (a customer with the export scope) against alice.
    let alice_event = expected[0].event_id.to_string();
    let denied = client
        .list_activity(authed(list("alice", 10, Order::Ascending, ""), &bob))
        .await;
    assert_eq!(code(denied), Code::PermissionDenied);
    let denied = client
        .get_event(authed(
            GetEventRequest {
                event_id: alice_event.clone(),
                user_id: "alice".into(),
            },
            &bob,
        ))
        .await;
    assert_eq!(code(denied), Code::PermissionDenied);
    // Without naming alice, bob's own history is searched: not found.
    let hidden = client
        .get_event(authed(
            GetEventRequest {
                event_id: alice_event.clone(),
                user_id: String::new(),
            },
            &bob,
        ))
        .await;
    assert_eq!(code(hidden), Code::NotFound);
    let export_request = ExportActivityRequest {
        user_id: "alice".into(),
        ..Default::default()
    };
    assert_eq!(
        code(
            client
                .export_activity(authed(export_request.clone(), &bob))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            client
                .start_export(authed(job_request(export_request.clone()), &bob))
                .await
        ),
        Code::PermissionDenied
    );
    // Alice's page token replayed by bob (for "his" history): refused.
    let alice_page = client
        .list_activity(authed(list("", 5, Order::Ascending, ""), &alice))
        .await?
        .into_inner();
    assert!(!alice_page.next_page_token.is_empty());
    let replay = client
        .list_activity(authed(
            list("", 5, Order::Ascending, &alice_page.next_page_token),
            &bob,
        ))
        .await;
    assert_eq!(code(replay), Code::InvalidArgument);
    // Alice's export job is invisible to bob.
    let alice_exporter = token("alice", &[EXPORT], 600);
    let job = client
        .start_export(authed(StartExportRequest::default(), &alice_exporter))
        .await?
        .into_inner()
        .export_job
        .context("no export_job")?;
    let peek = client
        .get_export(authed(
            GetExportRequest {
                export_id: job.export_id.clone(),
            },
            &bob,
        ))
        .await;
    assert_eq!(code(peek), Code::NotFound);
    // A support agent reads alice; a customer-less agent call needs a user.
    let as_agent = read_all(
        &mut client,
        &agent,
        list("alice", 100, Order::Ascending, ""),
    )
    .await?;
    assert_eq!(as_agent.len(), expected.len());
    assert_eq!(
        code(
            client
                .list_activity(authed(list("", 10, Order::Ascending, ""), &agent))
                .await
        ),
        Code::InvalidArgument
    );
    let bob_denied = audit_rows(&env, "bob", "denied").await?;
    let methods: HashSet<&str> = bob_denied.iter().map(|(m, _, _)| m.as_str()).collect();
    for method in [
        "ListActivity",
        "GetEvent",
        "ExportActivity",
        "StartExport",
        "GetExport",
    ] {
        assert!(
            methods.contains(method),
            "{method} not audited: {bob_denied:?}"
        );
    }
    assert!(bob_denied
        .iter()
        .any(|(m, t, c)| m == "ListActivity" && t == "alice" && c == "PERMISSION_DENIED"));

    // Test 4: page tokens. 10,000 mutants of a valid token: all refused.
    let valid = alice_page.next_page_token.clone();
    let bytes = valid.as_bytes().to_vec();
    let mut rng = rand::thread_rng();
    use rand::Rng;
    let mut mutants = HashSet::new();
    while mutants.len() < 10_000 {
        let mut m = bytes.clone();
        match rng.gen_range(0..4) {
            0 => {
                let i = rng.gen_range(0..m.len());
                m[i] ^= 1 << rng.gen_range(0..7);
            }
            1 => m.truncate(rng.gen_range(0..m.len())),
            2 => {
                let i = rng.gen_range(0..m.len());
                m[i] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                    [rng.gen_range(0..64)];
            }
            _ => m.extend((0..rng.gen_range(1..8)).map(|_| b'A' + rng.gen_range(0..26))),
        }
        if m != bytes && !m.is_empty() {
            if let Ok(text) = String::from_utf8(m) {
                mutants.insert(text);
            }
        }
    }
    let mutants: Vec<String> = mutants.into_iter().collect();
    let mut accepted = Vec::new();
    for batch in mutants.chunks(32) {
        let mut calls = tokio::task::JoinSet::new();
        for mutant in batch {
            let mut client = client.clone();
            let request = authed(list("", 5, Order::Ascending, mutant), &alice);
            let mutant = mutant.clone();
            calls.spawn(async move { (mutant, client.list_activity(request).await) });
        }
        while let Some(joined) = calls.join_next().await {
            let (mutant, result) = joined?;
            match result {
                Err(status) if status.code() == Code::InvalidArgument => {}
                other => accepted.push((mutant, format!("{other:?}"))),
            }
        }
    }
    assert!(
        accepted.is_empty(),
        "{} mutants not refused: {:?}",
        accepted.len(),
        &accepted[..accepted.len().min(3)]
    );
    // The same token with other request fields.
    for changed in [
        list("", 5, Order::Descending, &valid),
        ListActivityRequest {
            kinds: vec!["login".into()],
            ..list("", 5, Order::Ascending, &valid)
        },
        ListActivityRequest {
            end_time: Some(prost_types::Timestamp {
                seconds: Utc::now().timestamp(),
                nanos: 0,
            }),
            ..list("", 5, Order::Ascending, &valid)
        },
    ] {
        assert_eq!(
            code(client.list_activity(authed(changed, &alice)).await),
            Code::InvalidArgument
        );
    }
    // page_size may change between pages.
    let next = client
        .list_activity(authed(list("", 50, Order::Ascending, &valid), &alice))
        .await?
        .into_inner();
    assert_eq!(next.events.len(), expected.len() - 5);
    // Expired, and signed by a key the server does not know, though
    // otherwise genuine (we hold the test's key).
    let (id, secret) = strata_tests::api::PAGE_KEY
        .split_once('=')
        .expect("id=secret");
    let keys = PageTokenKeys::new(vec![PageTokenKey::new(id, secret.as_bytes().to_vec())])?;
    let binding = Binding {
        method: "ListActivity",
        user_id: "alice",
        kinds: &[],
        from_micros: -62_135_596_800 * 1_000_000,
        to_micros: 253_402_300_800 * 1_000_000,
        descending: false,
    };
    let cursor = Cursor {
        occurred_at_micros: expected[4].occurred_at,
        event_id: *expected[4].event_id.as_bytes(),
    };
    let fresh = keys.issue(&cursor, &binding, Utc::now().timestamp() + 60);
    let page = client
        .list_activity(authed(list("", 50, Order::Ascending, &fresh), &alice))
        .await?
        .into_inner();
    assert_eq!(
        page.events.len(),
        expected.len() - 5,
        "a genuine token works"
    );
    let expired = keys.issue(&cursor, &binding, Utc::now().timestamp() - 1);
    let status = client
        .list_activity(authed(list("", 50, Order::Ascending, &expired), &alice))
        .await
        .expect_err("expired");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("expired"), "{status:?}");
    assert_eq!(error_info(&status).0, "PAGE_TOKEN_EXPIRED");
    {
        use tonic_types::StatusExt;
        let bad_request = status.get_details_bad_request().expect("BadRequest");
        assert_eq!(bad_request.field_violations.len(), 1, "{bad_request:?}");
        assert_eq!(bad_request.field_violations[0].field, "page_token");
    }
    let foreign = PageTokenKeys::new(vec![PageTokenKey::new("k9", vec![7u8; 32])])?.issue(
        &cursor,
        &binding,
        Utc::now().timestamp() + 60,
    );
    assert_eq!(
        reason(
            client
                .list_activity(authed(list("", 50, Order::Ascending, &foreign), &alice))
                .await
        ),
        "PAGE_TOKEN_INVALID"
    );

    // Bad requests: precise codes, nothing changes.
    let bad = [
        ListActivityRequest {
            page_size: -1,
            ..list("", 5, Order::Ascending, "")
        },
        ListActivityRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: 2_000_000_000,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: 1_000_000_000,
                nanos: 0,
            }),
            ..list("", 5, Order::Ascending, "")
        },
        ListActivityRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            }),
            ..list("", 5, Order::Ascending, "")
        },
        ListActivityRequest {
            end_time: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -5,
            }),
            ..list("", 5, Order::Ascending, "")
        },
        ListActivityRequest {
            kinds: vec!["not a kind!".into()],
            ..list("", 5, Order::Ascending, "")
        },
        ListActivityRequest {
            kinds: (0..33).map(|i| format!("k{i}")).collect(),
            ..list("", 5, Order::Ascending, "")
        },
        ListActivityRequest {
            order: 99,
            ..list("", 5, Order::Ascending, "")
        },
    ];
    for request in bad {
        let shown = format!("{request:?}");
        assert_eq!(
            code(client.list_activity(authed(request, &alice)).await),
            Code::InvalidArgument,
            "{shown}"
        );
    }
    let huge = ListActivityRequest {
        user_id: "x".repeat(100_000),
        ..list("", 5, Order::Ascending, "")
    };
    let status = client
        .list_activity(authed(huge, &agent))
        .await
        .expect_err("oversized");
    assert!(
        matches!(
            status.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::InvalidArgument
        ),
        "{status:?}"
    );
    let coerced = client
        .list_activity(authed(list("", 1_000_000, Order::Ascending, ""), &alice))
        .await?
        .into_inner();
    assert_eq!(coerced.events.len(), expected.len());
    let unknown_user = client
        .list_activity(authed(
            list("nobody-here", 10, Order::Ascending, ""),
            &agent,
        ))
        .await?
        .into_inner();
    assert!(unknown_user.events.is_empty() && unknown_user.next_page_token.is_empty());

    // Test 6: SQL injection in every string field answers like the
    // literal value: an unknown user is an empty history, a malformed kind
    // or id is INVALID_ARGUMENT, and nothing in the database changes.
    let corpus = [
        "' OR '1'='1",
        "alice' --",
        "alice'; DROP TABLE strata.activity; --",
        "\" OR \"\"=\"",
        "1; SELECT pg_sleep(10)",
        "alice\\' OR 1=1 /*",
        "%' OR user_id LIKE '%",
        "$1",
        "') UNION SELECT * FROM strata.api_audit --",
    ];
    let before: i64 = env
        .hot()
        .await?
        .query_one("SELECT count(*) FROM strata.activity", &[])
        .await?
        .get(0);
    for evil in corpus {
        let page = client
            .list_activity(authed(list(evil, 10, Order::Ascending, ""), &agent))
            .await?
            .into_inner();
        assert!(page.events.is_empty(), "{evil}");
        assert_eq!(
            code(
                client
                    .list_activity(authed(
                        ListActivityRequest {
                            kinds: vec![evil.into()],
                            ..list("alice", 10, Order::Ascending, "")
                        },
                        &agent
                    ))
                    .await
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            code(
                client
                    .list_activity(authed(list("alice", 10, Order::Ascending, evil), &agent))
                    .await
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            code(
                client
                    .get_event(authed(
                        GetEventRequest {
                            event_id: evil.into(),
                            user_id: "alice".into()
                        },
                        &agent
                    ))
                    .await
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            code(
                client
                    .get_event(authed(
                        GetEventRequest {
                            event_id: alice_event.clone(),
                            user_id: evil.into()
                        },
                        &agent
                    ))
                    .await
            ),
            Code::NotFound
        );
        assert_eq!(
            code(
                client
                    .get_export(authed(
                        GetExportRequest {
                            export_id: evil.into()
                        },
                        &bob
                    ))
                    .await
            ),
            Code::InvalidArgument
        );
    }
    // A user whose id is itself an injection string is read exactly.
    let sneaky = "alice'; DROP TABLE strata.activity; --";
    produce(
        &env,
        &[NewEvent::new(sneaky, "login").payload(json!({"x": 1}))],
    )
    .await?;
    ship(&env).await?;
    let sneaky_page = client
        .list_activity(authed(list(sneaky, 10, Order::Ascending, ""), &agent))
        .await?
        .into_inner();
    assert_eq!(sneaky_page.events.len(), 1);
    assert_eq!(sneaky_page.events[0].user_id, sneaky);
    let after: i64 = env
        .hot()
        .await?
        .query_one("SELECT count(*) FROM strata.activity", &[])
        .await?
        .get(0);
    assert_eq!(after, before + 1);

    // ListActivity writes its record while it reads: no record, no data;
    // a read that fails after its "allowed" record gets a "failed" one.
    let hot = env.hot().await?;
    let with_id = |id: &str| {
        let mut request = authed(list("", 10, Order::Ascending, ""), &alice);
        request
            .metadata_mut()
            .insert("x-request-id", id.parse().expect("ascii"));
        request
    };
    let decisions = |id: &'static str| {
        let env = &env;
        async move {
            Ok::<_, anyhow::Error>(
                env.hot()
                    .await?
                    .query(
                        "SELECT decision, status_code FROM strata.api_audit
                          WHERE request_id = $1 ORDER BY audit_id",
                        &[&id],
                    )
                    .await?
                    .iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                    .collect::<Vec<_>>(),
            )
        }
    };
    hot.batch_execute("REVOKE INSERT ON strata.api_audit FROM strata_api")
        .await?;
    let unaudited = client.list_activity(with_id("no-audit-no-data")).await;
    hot.batch_execute("GRANT INSERT ON strata.api_audit TO strata_api")
        .await?;
    assert_eq!(code(unaudited), Code::Unavailable);
    assert!(decisions("no-audit-no-data").await?.is_empty());
    hot.batch_execute("REVOKE SELECT ON strata.activity FROM strata_api")
        .await?;
    let failed_read = client.list_activity(with_id("read-fails")).await;
    hot.batch_execute("GRANT SELECT ON strata.activity TO strata_api")
        .await?;
    assert_eq!(code(failed_read), Code::Unavailable);
    assert_eq!(
        decisions("read-fails").await?,
        [
            ("allowed".to_string(), "OK".to_string()),
            ("failed".to_string(), "UNAVAILABLE".to_string())
        ]
    );
    let fine = client.list_activity(with_id("fine")).await?.into_inner();
    assert_eq!(fine.events.len(), 10);
    assert_eq!(
        decisions("fine").await?,
        [("allowed".to_string(), "OK".to_string())]
    );

    // The API's role: may insert audit rows, may not change or delete
    // them, may not write activity.
    hot.batch_execute("SET ROLE strata_api").await?;
    for statement in [
        "UPDATE strata.api_audit SET decision = 'allowed'",
        "DELETE FROM strata.api_audit",
        "TRUNCATE strata.api_audit",
        "DELETE FROM strata.activity",
        "INSERT INTO strata.activity (event_id, user_id, kind, occurred_at, source, payload) VALUES (gen_random_uuid(), 'x', 'login', now(), 's', '{}')",
    ] {
        assert!(hot.batch_execute(statement).await.is_err(), "{statement} was allowed");
    }
    hot.batch_execute("RESET ROLE").await?;
    // Even the owner cannot rewrite history without dropping the trigger.
    assert!(hot
        .batch_execute("DELETE FROM strata.api_audit")
        .await
        .is_err());
    let total: i64 = hot
        .query_one("SELECT count(*) FROM strata.api_audit", &[])
        .await?
        .get(0);
    assert!(total > 10_000, "every call is audited: {total}");
    Ok(())
}

/// Reads a whole streamed export.
async fn stream_export(
    client: &mut HistoryClient<Channel>,
    token: &str,
    request: ExportActivityRequest,
) -> anyhow::Result<Vec<u8>> {
    let mut stream = client
        .export_activity(authed(request, token))
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        bytes.extend_from_slice(&chunk.data);
    }
    Ok(bytes)
}

async fn download(url: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let code = r#"
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=30) as r:
        sys.stdout.write("200\n"); sys.stdout.flush(); sys.stdout.buffer.write(r.read())
except urllib.error.HTTPError as e:
    sys.stdout.write(f"{e.code}\n")
"#;
    let python = std::env::var("STRATA_TEST_PYTHON")?;
    let output = tokio::process::Command::new(python)
        .args(["-c", code, url])
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let split = output.stdout.iter().position(|b| *b == b'\n').unwrap_or(0);
    let status: u16 = std::str::from_utf8(&output.stdout[..split])?
        .trim()
        .parse()?;
    Ok((status, output.stdout[split + 1..].to_vec()))
}

async fn wait_job(
    client: &mut HistoryClient<Channel>,
    token: &str,
    export_id: &str,
) -> anyhow::Result<strata_proto::v1::ExportJob> {
    for _ in 0..240 {
        let job = client
            .get_export(authed(
                GetExportRequest {
                    export_id: export_id.into(),
                },
                token,
            ))
            .await?
            .into_inner()
            .export_job
            .context("no export_job")?;
        if job.state == ExportState::Succeeded as i32 || job.state == ExportState::Failed as i32 {
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("export job {export_id} did not finish")
}

/// Test 7: the streamed export (JSON lines and CSV) and the job export of
/// a range equal ListActivity's pages concatenated; the job survives an
/// API crash; its presigned URL works and is signed for 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_equal_the_pages_and_jobs_survive_restarts() -> anyhow::Result<()> {
    let env = TestEnv::new("api_exports").await?;
    let target = S3Target::new("api-exports").await?;
    let expected = store_with_history(&env, &target, &[past_day(5), past_day(4)]).await?;
    let mut server = ApiServer::start(&env, &target, "api-exports", &[]).await?;
    let mut client = server.client().await?;
    let alice = token("alice", &[EXPORT], 600);
    let range_from = prost_types::Timestamp {
        seconds: at(past_day(5), 3, 0, 0, 0).timestamp(),
        nanos: 0,
    };
    let paged = read_all(
        &mut client,
        &alice,
        ListActivityRequest {
            start_time: Some(range_from),
            ..list("", 4, Order::Ascending, "")
        },
    )
    .await?;
    assert_eq!(
        paged.len(),
        expected
            .iter()
            .filter(|r| r.occurred_at >= range_from.seconds * 1_000_000)
            .count()
    );
    for (format, proto_format) in [
        (Format::JsonLines, ExportFormat::Jsonl),
        (Format::Csv, ExportFormat::Csv),
    ] {
        let mut want = format.header().to_vec();
        for event in &paged {
            format.write(&row_of_proto(event), &mut want);
        }
        let streamed = stream_export(
            &mut client,
            &alice,
            ExportActivityRequest {
                start_time: Some(range_from),
                format: proto_format as i32,
                ..Default::default()
            },
        )
        .await?;
        assert_eq!(
            String::from_utf8(streamed.clone())?,
            String::from_utf8(want)?
        );
        if format == Format::JsonLines {
            for (line, event) in String::from_utf8(streamed)?.lines().zip(&paged) {
                let value: serde_json::Value = serde_json::from_str(line)?;
                assert_eq!(value["event_id"], event.event_id);
            }
        }
    }
    let streamed = stream_export(
        &mut client,
        &alice,
        ExportActivityRequest {
            start_time: Some(range_from),
            ..Default::default()
        },
    )
    .await?;

    // The job: started, the API killed at once, restarted: it completes.
    let job = client
        .start_export(authed(
            StartExportRequest {
                start_time: Some(range_from),
                ..Default::default()
            },
            &alice,
        ))
        .await?
        .into_inner()
        .export_job
        .context("no export_job")?;
    assert_eq!(job.state, ExportState::Pending as i32);
    server.process.kill9();
    server = ApiServer::start(&env, &target, "api-exports-2", &[]).await?;
    let mut client = server.client().await?;
    let done = wait_job(&mut client, &alice, &job.export_id).await?;
    assert_eq!(done.state, ExportState::Succeeded as i32, "{done:?}");
    assert_eq!(done.event_count as usize, paged.len());
    assert_eq!(done.size_bytes as usize, streamed.len());
    assert!(
        done.download_uri.contains("X-Amz-Expires=60"),
        "{}",
        done.download_uri
    );
    let (status, body) = download(&done.download_uri).await?;
    assert_eq!(status, 200);
    assert_eq!(body, streamed);
    // The file is in the bucket under the export prefix.
    let listed = boto3(
        &target,
        "print(sum(1 for o in c.list_objects_v2(Bucket=B, Prefix='strata/exports/').get('Contents', [])))",
    )
    .await?;
    assert_eq!(listed.trim(), "1");
    // Expiry is S3's to enforce and the local S3 server does not; so the
    // URL is checked independently: a SigV4 query signature (recomputed
    // by botocore) over X-Amz-Expires=60 from now, which no holder can
    // extend without invalidating it.
    let stubs = python_stubs().await?;
    let checked = python_client(
        &stubs,
        "check_presigned.py",
        &[&done.download_uri, "test", "test", "us-east-1"],
    )
    .await?;
    let checked: serde_json::Value = serde_json::from_str(checked.trim())?;
    assert_eq!(checked["expires"], 60, "{checked}");
    assert_eq!(checked["signature_ok"], true, "{checked}");
    assert_eq!(
        checked["longer_expiry_signature_differs"], true,
        "{checked}"
    );
    let age = checked["age_s"].as_f64().unwrap_or(f64::MAX);
    assert!((-5.0..30.0).contains(&age), "signed now: {checked}");
    // A new GetExport gives a new, working URL.
    let again = wait_job(&mut client, &alice, &job.export_id).await?;
    assert_eq!(download(&again.download_uri).await?.0, 200);
    Ok(())
}

/// Test 8 and key rotation: per-principal request rate and export
/// concurrency limits answer RESOURCE_EXHAUSTED without affecting another
/// principal; page tokens survive a key rotation with overlap and die
/// when their key is retired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_per_principal_and_page_key_rotation() -> anyhow::Result<()> {
    let env = TestEnv::new("api_limits").await?;
    let target = S3Target::new("api-limits").await?;
    // A long history (~6 MB as JSON lines) so a streamed export outlasts
    // its channel and every HTTP/2 buffer between it and a stalled reader.
    let mut events = Vec::new();
    for i in 0..3_000u32 {
        events.push(
            NewEvent::new("carol", "login")
                .occurred_at(at(past_day(2), 0, 0, 0, 0) + TimeDelta::milliseconds(i64::from(i)))
                .payload(json!({"i": i, "pad": "x".repeat(2000)})),
        );
    }
    produce(&env, &events).await?;
    ship(&env).await?;
    let mut server = ApiServer::start(
        &env,
        &target,
        "api-limits",
        &[("api.rate_per_second", "0.5"), ("api.rate_burst", "5")],
    )
    .await?;
    let mut client = server.client().await?;
    let dave = token("dave", &[], 600);
    let erin = token("erin", &[], 600);
    for i in 0..5 {
        client
            .list_activity(authed(list("", 1, Order::Ascending, ""), &dave))
            .await
            .map_err(|e| anyhow::anyhow!("call {i}: {e}"))?;
    }
    let limited = client
        .list_activity(authed(list("", 1, Order::Ascending, ""), &dave))
        .await
        .expect_err("sixth call");
    assert_eq!(limited.code(), Code::ResourceExhausted);
    let (why, domain, metadata) = error_info(&limited);
    assert_eq!(
        (why.as_str(), domain.as_str()),
        ("RATE_LIMITED", "strata.dev")
    );
    assert_eq!(metadata.get("limit").map(String::as_str), Some("principal"));
    {
        use tonic_types::StatusExt;
        let retry = limited.get_details_retry_info().expect("RetryInfo");
        let delay = retry.retry_delay.expect("a retry delay");
        assert!(
            delay > Duration::ZERO && delay <= Duration::from_secs(60),
            "{delay:?}"
        );
    }
    client
        .list_activity(authed(list("", 1, Order::Ascending, ""), &erin))
        .await?;
    assert!(audit_rows(&env, "dave", "denied")
        .await?
        .iter()
        .any(|(_, _, c)| c == "RESOURCE_EXHAUSTED"));

    // One export at a time per principal: a stream held open blocks a
    // second stream and a job, not another principal's export.
    server.process.kill9();
    let server = ApiServer::start(
        &env,
        &target,
        "api-exports-limit",
        &[("api.max_concurrent_exports", "1")],
    )
    .await?;
    let mut client = server.client().await?;
    let carol = token("carol", &[EXPORT], 600);
    let frank = token("frank", &[EXPORT], 600);
    let mut held = client
        .export_activity(authed(ExportActivityRequest::default(), &carol))
        .await?
        .into_inner();
    let first_chunk = held.message().await?.expect("a first chunk");
    assert!(!first_chunk.data.is_empty());
    assert_eq!(
        code(
            client
                .export_activity(authed(ExportActivityRequest::default(), &carol))
                .await
        ),
        Code::ResourceExhausted
    );
    assert_eq!(
        code(
            client
                .start_export(authed(StartExportRequest::default(), &carol))
                .await
        ),
        Code::ResourceExhausted
    );
    let other = stream_export(&mut client, &frank, ExportActivityRequest::default()).await?;
    assert!(other.is_empty(), "frank has no events");
    drop(held);
    let freed = strata_tests::wait_until(Duration::from_secs(10), || {
        let mut client = client.clone();
        let carol = carol.clone();
        async move {
            client
                .export_activity(authed(ExportActivityRequest::default(), &carol))
                .await
                .is_ok()
        }
    })
    .await;
    assert!(freed, "the slot is freed when the client goes away");

    // Key rotation: a token from the k1 server works on a [k2, k1] server
    // and not on a [k2] server.
    let mut server = server;
    let page = client
        .list_activity(authed(list("", 2, Order::Ascending, ""), &carol))
        .await?
        .into_inner();
    assert!(!page.next_page_token.is_empty());
    server.process.kill9();

    // Concurrent job creations for one principal (as from several API
    // processes, each with its own pool) cannot all pass the check: the
    // count and the insert share a per-principal lock. No API (so no job
    // worker) runs now: the jobs stay pending.
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let pool = strata_api::pool::Pool::new(
            &env.hot_url,
            Some("strata_api"),
            Duration::from_secs(5),
            1,
        );
        burst.spawn(async move {
            let spec = strata_api::jobs::JobSpec {
                principal: "grace".into(),
                user_id: "grace".into(),
                from: Utc::now() - TimeDelta::days(1),
                to: Utc::now(),
                kinds: Vec::new(),
                format: Format::JsonLines,
                request_id: None,
            };
            strata_api::jobs::create(&pool, &spec, "exports", || 2)
                .await
                .map(|created| matches!(created, strata_api::jobs::Created::New(_)))
                .map_err(|e| anyhow::anyhow!("create: {e}"))
        });
    }
    let mut created = 0;
    while let Some(result) = burst.join_next().await {
        created += usize::from(result??);
    }
    assert_eq!(
        created, 2,
        "jobs created by 8 concurrent calls with a limit of 2"
    );

    let k2 = "k2=second-page-token-secret-0123456789abcdef";
    let both = format!("[\"{k2}\", \"{}\"]", strata_tests::api::PAGE_KEY);
    let mut rotated = ApiServer::start(
        &env,
        &target,
        "api-rotated",
        &[("api.page_token_keys", &both)],
    )
    .await?;
    let mut client = rotated.client().await?;
    let next = client
        .list_activity(authed(
            list("", 2, Order::Ascending, &page.next_page_token),
            &carol,
        ))
        .await?
        .into_inner();
    assert_eq!(next.events.len(), 2);
    rotated.process.kill9();
    let only_new = format!("[\"{k2}\"]");
    let retired = ApiServer::start(
        &env,
        &target,
        "api-retired",
        &[("api.page_token_keys", &only_new)],
    )
    .await?;
    let mut client = retired.client().await?;
    assert_eq!(
        code(
            client
                .list_activity(authed(
                    list("", 2, Order::Ascending, &page.next_page_token),
                    &carol
                ))
                .await
        ),
        Code::InvalidArgument
    );
    // The new key's own tokens work there.
    let fresh = client
        .list_activity(authed(list("", 2, Order::Ascending, ""), &carol))
        .await?
        .into_inner();
    client
        .list_activity(authed(
            list("", 2, Order::Ascending, &fresh.next_page_token),
            &carol,
        ))
        .await?;
    Ok(())
}

/// TLS on the listener (rustls): a grpcio client trusting the server's
/// certificate checks health and reads a page; a plaintext client cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_grpc_over_tls() -> anyhow::Result<()> {
    let env = TestEnv::new("api_tls").await?;
    let target = S3Target::new("api-tls").await?;
    let dir = tempfile::Builder::new().prefix("strata-tls").tempdir()?;
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let output = tokio::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let server = ApiServer::start(
        &env,
        &target,
        "api-tls",
        &[
            ("api.tls_cert_file", cert_s.as_str()),
            ("api.tls_key_file", key_s.as_str()),
        ],
    )
    .await?;
    let stubs = python_stubs().await?;
    let address = format!("localhost:{}", server.port);
    let checked = python_client(
        &stubs,
        "history_client.py",
        &["health_tls", &address, &cert_s, &token("alice", &[], 600)],
    )
    .await?;
    let checked: serde_json::Value = serde_json::from_str(checked.trim())?;
    assert_eq!(checked["status"], "SERVING", "{checked}");
    assert_eq!(checked["events"], 0, "{checked}");
    // Plaintext against the TLS listener fails.
    let plaintext = python_client(&stubs, "history_client.py", &["health", &address]).await;
    assert!(plaintext.is_err(), "plaintext must not work: {plaintext:?}");
    Ok(())
}

/// Every export job of `token`'s listing, page by page (`page_size` 1
/// forces a token per job), newest first.
async fn list_all_jobs(
    client: &mut HistoryClient<Channel>,
    token: &str,
    user_id: &str,
) -> anyhow::Result<Vec<strata_proto::v1::ExportJob>> {
    let mut request = ListExportsRequest {
        user_id: user_id.into(),
        page_size: 1,
        page_token: String::new(),
    };
    let mut jobs = Vec::new();
    for _ in 0..1_000 {
        let page = client
            .list_exports(authed(request.clone(), token))
            .await?
            .into_inner();
        assert!(page.export_jobs.len() <= 1);
        jobs.extend(page.export_jobs);
        if page.next_page_token.is_empty() {
            return Ok(jobs);
        }
        request.page_token = page.next_page_token;
    }
    anyhow::bail!("ListExports did not end")
}

/// Starts an export job for `token`'s own history and waits until its
/// worker (held after the upload by a failpoint) has uploaded the file of
/// its first attempt; returns the job, its id and that file's key.
async fn start_until_uploaded(
    client: &mut HistoryClient<Channel>,
    token: &str,
    hot: &tokio_postgres::Client,
    store: &strata_archive::ObjectStore,
    server: &ApiServer,
) -> anyhow::Result<(strata_proto::v1::ExportJob, uuid::Uuid, String)> {
    let job = client
        .start_export(authed(StartExportRequest::default(), token))
        .await?
        .into_inner()
        .export_job
        .context("no export_job")?;
    let id = uuid::Uuid::parse_str(&job.export_id)?;
    let key: String = hot
        .query_one(
            "SELECT object_key FROM strata.export_jobs WHERE export_id = $1",
            &[&id],
        )
        .await?
        .try_get(0)?;
    let uploaded = strata_tests::wait_until(Duration::from_secs(20), || async {
        store.size(&key).await.is_ok()
    })
    .await;
    anyhow::ensure!(uploaded, "never uploaded: {}", server.process.log_tail());
    Ok((job, id, key))
}

/// Test 9: the export jobs' contract. StartExport is idempotent by
/// `request_id` (also under concurrent retries, and a reused id with other
/// fields is refused); ListExports pages newest first and shows each
/// principal its own jobs (support agents a user's); CancelExport stops an
/// open job, is idempotent, and refuses a finished one; every error carries
/// AIP-193 details that Rust and Python clients decode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_jobs_are_idempotent_listed_and_cancelled() -> anyhow::Result<()> {
    use tonic_types::StatusExt;

    let env = TestEnv::new("api_jobs").await?;
    let target = S3Target::new("api-jobs").await?;
    store_with_history(&env, &target, &[past_day(3)]).await?;
    let mut server = ApiServer::start(&env, &target, "api-jobs", &[]).await?;
    let mut client = server.client().await?;
    let hot = env.hot().await?;
    let alice = token("alice", &[EXPORT], 600);
    let bob = token("bob", &[EXPORT], 600);
    let agent = token("agent-7", &[READ_ANY, EXPORT], 600);

    // Idempotent: the same request_id twice is one job.
    let request_id = uuid::Uuid::new_v4().to_string();
    let start = |format: ExportFormat, request_id: &str| StartExportRequest {
        format: format as i32,
        request_id: request_id.into(),
        kinds: vec!["login".into(), "deposit".into()],
        ..Default::default()
    };
    let first = client
        .start_export(authed(start(ExportFormat::Csv, &request_id), &alice))
        .await?
        .into_inner()
        .export_job
        .context("no export_job")?;
    let again = client
        .start_export(authed(start(ExportFormat::Csv, &request_id), &alice))
        .await?
        .into_inner()
        .export_job
        .context("no export_job")?;
    assert_eq!(first.export_id, again.export_id);
    assert_eq!(again.request_id, request_id);
    assert_eq!(again.user_id, "alice");
    assert_eq!(again.kinds, ["deposit", "login"], "sorted");
    assert_eq!(again.format, ExportFormat::Csv as i32);
    assert!(again.create_time.is_some() && again.start_time.is_some());
    // The same id for another export: refused, with the field named.
    let reused = client
        .start_export(authed(start(ExportFormat::Jsonl, &request_id), &alice))
        .await
        .expect_err("a reused request_id");
    assert_eq!(reused.code(), Code::InvalidArgument);
    assert_eq!(error_info(&reused).0, "REQUEST_ID_REUSED");
    let violations = reused
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations;
    assert_eq!(violations[0].field, "request_id");
    // Another principal's request id space is its own.
    let bobs = client
        .start_export(authed(start(ExportFormat::Csv, &request_id), &bob))
        .await?
        .into_inner()
        .export_job
        .context("no export_job")?;
    assert_ne!(bobs.export_id, first.export_id);
    assert_eq!(
        reason(
            client
                .start_export(authed(start(ExportFormat::Csv, "retry-1"), &alice))
                .await
        ),
        "INVALID_REQUEST_ID"
    );
    // Concurrent retries of one new request: one job.
    let racing = uuid::Uuid::new_v4().to_string();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut client = client.clone();
        let request = authed(start(ExportFormat::Jsonl, &racing), &alice);
        calls.spawn(async move { client.start_export(request).await });
    }
    let mut ids = HashSet::new();
    while let Some(answer) = calls.join_next().await {
        let job = answer??.into_inner().export_job.context("no export_job")?;
        ids.insert(job.export_id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let racing_uuid = uuid::Uuid::parse_str(&racing)?;
    let rows: i64 = hot
        .query_one(
            "SELECT count(*) FROM strata.export_jobs WHERE request_id = $1",
            &[&racing_uuid],
        )
        .await?
        .try_get(0)?;
    assert_eq!(rows, 1);
    let done = wait_job(&mut client, &alice, &first.export_id).await?;
    assert_eq!(done.state, ExportState::Succeeded as i32, "{done:?}");
    assert!(done.finish_time.is_some() && done.expire_time.is_some());

    // A job another API process runs (its lease held): cancelled at once.
    let running = uuid::Uuid::now_v7();
    hot.execute(
        "INSERT INTO strata.export_jobs (export_id, principal, user_id, range_from, range_to,
                kinds, format, state, object_key, lease_until)
         VALUES ($1, 'alice', 'alice', '2020-01-01', '2021-01-01', '{}', 'csv', 'running',
                 'exports/elsewhere.csv', now() + interval '20 seconds')",
        &[&running],
    )
    .await?;
    let cancel = |id: &str| CancelExportRequest {
        export_id: id.to_string(),
    };
    let cancelled = client
        .cancel_export(authed(cancel(&running.to_string()), &alice))
        .await?
        .into_inner()
        .export_job
        .context("no export_job")?;
    assert_eq!(cancelled.state, ExportState::Cancelled as i32);
    assert!(cancelled.finish_time.is_some());
    let state: String = hot
        .query_one(
            "SELECT state FROM strata.export_jobs WHERE export_id = $1",
            &[&running],
        )
        .await?
        .try_get(0)?;
    assert_eq!(state, "cancelled");
    // Again: the same answer. A finished job: FAILED_PRECONDITION.
    let twice = client
        .cancel_export(authed(cancel(&running.to_string()), &alice))
        .await?
        .into_inner()
        .export_job
        .context("no export_job")?;
    assert_eq!(twice.state, ExportState::Cancelled as i32);
    let ended = client
        .cancel_export(authed(cancel(&first.export_id), &alice))
        .await
        .expect_err("a finished job");
    assert_eq!(ended.code(), Code::FailedPrecondition);
    let (why, _, metadata) = error_info(&ended);
    assert_eq!(why, "EXPORT_ALREADY_ENDED");
    assert_eq!(metadata.get("state").map(String::as_str), Some("succeeded"));
    // Bob cannot cancel (or see) alice's job: the answer of a missing one.
    assert_eq!(
        reason(
            client
                .cancel_export(authed(cancel(&running.to_string()), &bob))
                .await
        ),
        "EXPORT_NOT_FOUND"
    );

    // ListExports: newest first, a token per page, as the table holds it.
    let listed = list_all_jobs(&mut client, &alice, "").await?;
    let expected: Vec<String> = hot
        .query(
            "SELECT export_id FROM strata.export_jobs WHERE principal = 'alice'
              ORDER BY created_at DESC, export_id DESC",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get::<_, uuid::Uuid>(0).to_string())
        .collect();
    assert_eq!(expected.len(), 3, "first, racing, running");
    let listed_ids: Vec<String> = listed.iter().map(|j| j.export_id.clone()).collect();
    assert_eq!(listed_ids, expected);
    assert!(listed.iter().all(|j| j.download_uri.is_empty()));
    let bobs_list = list_all_jobs(&mut client, &bob, "").await?;
    assert_eq!(bobs_list.len(), 1);
    assert_eq!(bobs_list[0].export_id, bobs.export_id);
    // An agent naming alice sees every principal's jobs of alice's history.
    let as_agent = list_all_jobs(&mut client, &agent, "alice").await?;
    let agent_ids: Vec<String> = as_agent.iter().map(|j| j.export_id.clone()).collect();
    assert_eq!(agent_ids, expected);
    assert_eq!(list_all_jobs(&mut client, &agent, "").await?.len(), 0);
    assert_eq!(
        reason(
            client
                .list_exports(authed(
                    ListExportsRequest {
                        user_id: "alice".into(),
                        ..Default::default()
                    },
                    &bob
                ))
                .await
        ),
        "OTHER_USER"
    );
    // A ListActivity token is no ListExports token.
    let page = client
        .list_activity(authed(list("", 1, Order::Ascending, ""), &alice))
        .await?
        .into_inner();
    assert!(!page.next_page_token.is_empty());
    let foreign = client
        .list_exports(authed(
            ListExportsRequest {
                page_token: page.next_page_token,
                ..Default::default()
            },
            &alice,
        ))
        .await
        .expect_err("a ListActivity token");
    assert_eq!(error_info(&foreign).0, "PAGE_TOKEN_INVALID");

    // Details every error carries: RequestInfo with the call's id.
    let mut reversed = authed(
        ListActivityRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: 2_000,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: 1_000,
                nanos: 0,
            }),
            ..list("", 5, Order::Ascending, "")
        },
        &alice,
    );
    reversed
        .metadata_mut()
        .insert("x-request-id", "req-reversed-1".parse()?);
    let status = client.list_activity(reversed).await.expect_err("reversed");
    let (why, domain, metadata) = error_info(&status);
    assert_eq!(
        (why.as_str(), domain.as_str()),
        ("RANGE_REVERSED", "strata.dev")
    );
    assert_eq!(
        metadata.get("field").map(String::as_str),
        Some("start_time")
    );
    assert_eq!(
        status
            .get_details_request_info()
            .map(|info| info.request_id),
        Some("req-reversed-1".to_string())
    );
    let missing = client
        .list_activity(tonic::Request::new(list("", 5, Order::Ascending, "")))
        .await;
    assert_eq!(reason(missing), "TOKEN_MISSING");

    // The same details, decoded by Python grpcio (grpcio-status).
    let stubs = python_stubs().await?;
    let address = format!("127.0.0.1:{}", server.port);
    let stubs = &stubs;
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = python_client(stubs, "export_client.py", &args).await?;
        output
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).map_err(Into::into))
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let python_request = uuid::Uuid::new_v4().to_string();
    let idempotent = run(vec![
        "idempotent".into(),
        address.clone(),
        alice.clone(),
        "alice".into(),
        python_request.clone(),
    ])
    .await?;
    assert_eq!(
        idempotent[0]["first"], idempotent[0]["second"],
        "{idempotent:?}"
    );
    assert_eq!(idempotent[0]["request_id"], python_request.as_str());
    assert_eq!(idempotent[1]["code"], "INVALID_ARGUMENT", "{idempotent:?}");
    assert_eq!(idempotent[1]["reason"], "REQUEST_ID_REUSED");
    assert_eq!(idempotent[1]["domain"], "strata.dev");
    assert_eq!(idempotent[1]["field_violations"][0][0], "request_id");
    let listed = run(vec![
        "list".into(),
        address.clone(),
        alice.clone(),
        String::new(),
        "2".into(),
    ])
    .await?;
    assert_eq!(listed.len(), 4 + 1, "{listed:?}");
    assert_eq!(listed[4]["pages"], 2);
    let tampered = run(vec![
        "error".into(),
        address.clone(),
        alice.clone(),
        "ListExports".into(),
        json!({"page_token": "AAAA"}).to_string(),
    ])
    .await?;
    assert_eq!(tampered[0]["reason"], "PAGE_TOKEN_INVALID", "{tampered:?}");
    assert_eq!(tampered[0]["field_violations"][0][0], "page_token");
    assert!(tampered[0]["request_id"].is_string(), "{tampered:?}");
    let cancelled = run(vec![
        "cancel".into(),
        address.clone(),
        alice.clone(),
        running.to_string(),
    ])
    .await?;
    assert_eq!(
        cancelled[0]["state"], "EXPORT_STATE_CANCELLED",
        "{cancelled:?}"
    );

    // Cancelled while its worker uploads (held after the upload by a
    // failpoint): the job stays cancelled and its file is deleted. The
    // first API stops, so the held one's worker is the only one.
    server.process.kill9();
    let held = ApiServer::start_with_failpoints(
        &env,
        &target,
        "api-jobs-held",
        &[],
        Some("api.export_job.after_upload=sleep:5s"),
    )
    .await?;
    let mut client = held.client().await?;
    let store = target.store().await?;
    let (job, id, key) = start_until_uploaded(&mut client, &alice, &hot, &store, &held).await?;
    let cancelled = client
        .cancel_export(authed(cancel(&job.export_id), &alice))
        .await?
        .into_inner()
        .export_job
        .context("no export_job")?;
    assert_eq!(cancelled.state, ExportState::Cancelled as i32);
    let deleted = strata_tests::wait_until(Duration::from_secs(20), || async {
        matches!(store.size(&key).await, Err(err) if err.not_found())
    })
    .await;
    assert!(deleted, "file kept: {}", held.process.log_tail());
    // Released by its worker: no longer counted as open.
    let released = strata_tests::wait_until(Duration::from_secs(20), || async {
        hot.query_one(
            "SELECT state = 'cancelled' AND lease_until IS NULL AND file_deleted
               FROM strata.export_jobs WHERE export_id = $1",
            &[&id],
        )
        .await
        .and_then(|row| row.try_get::<_, bool>(0))
        .unwrap_or(false)
    })
    .await;
    assert!(released, "not released: {}", held.process.log_tail());

    // A worker whose job is claimed again while it uploads (its lease
    // lapsed: here the claim is made by hand, as another process's would
    // be) can neither finish the job nor leave its file behind: it deletes
    // what it uploaded, and the attempt that takes the job over finishes
    // it with a file of its own, the one GetExport serves.
    let (job, id, first_key) =
        start_until_uploaded(&mut client, &alice, &hot, &store, &held).await?;
    let claimed = hot
        .execute(
            "UPDATE strata.export_jobs
                SET attempts = attempts + 1, lease_until = now() + interval '1 hour'
              WHERE export_id = $1 AND state = 'running' AND attempts = 1",
            &[&id],
        )
        .await?;
    assert_eq!(claimed, 1, "not running its first attempt");
    // The fenced-out attempt deletes its own file (while the job is still
    // the other attempt's), then that claim's lease lapses as if its
    // process had died, and a third attempt runs.
    let deleted = strata_tests::wait_until(Duration::from_secs(30), || async {
        matches!(store.size(&first_key).await, Err(err) if err.not_found())
    })
    .await;
    assert!(
        deleted,
        "the fenced-out attempt's file was kept: {}",
        held.process.log_tail()
    );
    let untouched: (String, i32) = hot
        .query_one(
            "SELECT state, attempts FROM strata.export_jobs WHERE export_id = $1",
            &[&id],
        )
        .await
        .map(|row| (row.get(0), row.get(1)))?;
    assert_eq!(
        untouched,
        ("running".to_string(), 2),
        "finished by the fenced-out attempt"
    );
    hot.execute(
        "UPDATE strata.export_jobs SET lease_until = now() WHERE export_id = $1",
        &[&id],
    )
    .await?;
    let done = wait_job(&mut client, &alice, &job.export_id).await?;
    assert_eq!(
        done.state,
        ExportState::Succeeded as i32,
        "{done:?}: {}",
        held.process.log_tail()
    );
    let attempts: i32 = hot
        .query_one(
            "SELECT attempts FROM strata.export_jobs WHERE export_id = $1",
            &[&id],
        )
        .await?
        .try_get(0)?;
    assert_eq!(attempts, 3);
    let last_key = first_key.replace(".jsonl", ".attempt-3.jsonl");
    assert_ne!(last_key, first_key);
    assert!(store.size(&last_key).await.is_ok(), "{last_key} missing");
    assert!(
        done.download_uri.contains(".attempt-3.jsonl"),
        "{}",
        done.download_uri
    );
    let (status, body) = download(&done.download_uri).await?;
    assert_eq!(status, 200);
    assert!(!body.is_empty());

    // A subject holding an agent token and a customer token: the jobs the
    // agent token started for other users stay out of the customer
    // token's sight.
    let as_agent = token("dana", &[READ_ANY, EXPORT], 600);
    let as_customer = token("dana", &[EXPORT], 600);
    let for_alice = client
        .start_export(authed(
            StartExportRequest {
                user_id: "alice".into(),
                ..Default::default()
            },
            &as_agent,
        ))
        .await?
        .into_inner()
        .export_job
        .context("no export_job")?;
    assert_eq!(list_all_jobs(&mut client, &as_agent, "").await?.len(), 1);
    assert!(list_all_jobs(&mut client, &as_customer, "")
        .await?
        .is_empty());
    assert_eq!(
        reason(
            client
                .get_export(authed(
                    GetExportRequest {
                        export_id: for_alice.export_id.clone(),
                    },
                    &as_customer,
                ))
                .await
        ),
        "EXPORT_NOT_FOUND"
    );
    Ok(())
}
