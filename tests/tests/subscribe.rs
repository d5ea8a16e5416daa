//! Live subscriptions as a client sees them: real relays (one of them
//! holding its hot transactions open), a real `strata api`, producers under
//! load, and a subscriber that reconnects from resume tokens all the time;
//! filters, tokens, scopes and audit.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use strata_producer::{NewEvent, Outbox};
use strata_proto::v1::subscribe_request::Start;
use strata_proto::v1::subscription_service_client::SubscriptionServiceClient;
use strata_proto::v1::{
    ComparisonOperator, PayloadComparison, SubscribeRequest, SubscribeResponse, SubscriptionFilter,
    SubscriptionState,
};
use strata_tests::api::{authed, python_script, python_stubs, token, ApiServer};
use strata_tests::archive::S3Target;
use strata_tests::load::{self, LoadOptions};
use strata_tests::{check, http_get, metric_value, wait_until, Ledger, StrataProcess, TestEnv};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Code;

pub(crate) const SUBSCRIBE: &str = "activity:subscribe";

/// An event's position as the stream orders them: (commit sequence,
/// user_id, occurred_at µs, event_id).
pub(crate) type Key = (i64, String, i64, String);

async fn client(endpoint: &str) -> anyhow::Result<SubscriptionServiceClient<Channel>> {
    Ok(SubscriptionServiceClient::connect(endpoint.to_string()).await?)
}

fn request(filter: Option<SubscriptionFilter>, start: Start) -> SubscribeRequest {
    SubscribeRequest {
        filter,
        start: Some(start),
    }
}

fn keys_of(response: &SubscribeResponse) -> Vec<Key> {
    response
        .events
        .iter()
        .map(|e| {
            let event = e.event.clone().unwrap_or_default();
            let at = event.event_time.unwrap_or_default();
            (
                e.commit_sequence,
                event.user_id,
                at.seconds * 1_000_000 + i64::from(at.nanos / 1000),
                event.event_id,
            )
        })
        .collect()
}

/// Every event the hot store holds, in stream order, with the start time
/// of the relay transaction that stored it.
pub(crate) async fn stream_order(env: &TestEnv) -> anyhow::Result<Vec<(Key, i64)>> {
    Ok(env
        .hot()
        .await?
        .query(
            "SELECT l.seq, a.user_id, (extract(epoch FROM a.occurred_at) * 1000000)::int8,
                    a.event_id::text, (extract(epoch FROM a.ingested_at) * 1000000)::int8
               FROM strata.activity a JOIN strata.stream_log l ON l.txid = a.stream_txid
              ORDER BY l.seq, a.user_id, a.occurred_at, a.event_id",
            &[],
        )
        .await?
        .iter()
        .map(|r| ((r.get(0), r.get(1), r.get(2), r.get(3)), r.get(4)))
        .collect())
}

/// Waits until `relay` drained the outbox; then the stored events' keys in
/// stream order.
pub(crate) async fn drained_stream(
    env: &TestEnv,
    relay: &StrataProcess,
) -> anyhow::Result<Vec<Key>> {
    let drained = wait_until(Duration::from_secs(60), || async {
        env.outbox_len().await.map(|n| n == 0).unwrap_or(false)
    })
    .await;
    anyhow::ensure!(drained, "relay did not drain: {}", relay.log_tail());
    Ok(stream_order(env)
        .await?
        .into_iter()
        .map(|(key, _)| key)
        .collect())
}

/// Subscribes from the beginning and keeps reconnecting (every 0.2 to 1
/// s) from the last response's resume token, recording every event, until
/// `stop`.
async fn reconnecting_subscriber(
    endpoint: String,
    bearer: String,
    delivered: Arc<Mutex<Vec<Key>>>,
    stop: CancellationToken,
) -> anyhow::Result<usize> {
    let mut resume: Option<String> = None;
    let mut sessions = 0;
    while !stop.is_cancelled() {
        sessions += 1;
        let start = match &resume {
            Some(token) => Start::ResumeToken(token.clone()),
            None => Start::FromBeginning(true),
        };
        let mut client = client(&endpoint).await?;
        let mut stream = client
            .subscribe(authed(request(None, start), &bearer))
            .await?
            .into_inner();
        let session = Duration::from_millis(200 + rand::random::<u64>() % 800);
        let until = tokio::time::Instant::now() + session;
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return Ok(sessions),
                _ = tokio::time::sleep_until(until) => break,
                message = stream.message() => message?,
            };
            let Some(response) = message else {
                anyhow::bail!("the stream ended on its own");
            };
            // The events and the token that follows them, together.
            delivered
                .lock()
                .expect("not poisoned")
                .extend(keys_of(&response));
            resume = Some(response.resume_token);
        }
    }
    Ok(sessions)
}

/// G10: one relay holds each of its hot transactions open for seconds
/// while another commits rows written later; a subscriber that reads
/// continuously and reconnects from resume tokens every second sees every
/// stored event exactly once, in position order, and the positions follow
/// commit order, not write order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_transactions_and_reconnects_lose_and_repeat_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new("sub_order").await?;
    let target = S3Target::new("sub-order").await?;
    let api = ApiServer::start(
        &env,
        &target,
        "sub-order-api",
        &[("api.subscribe_poll_interval", "\"200ms\"")],
    )
    .await?;
    let small = [("relay.batch_size", "20")];
    let mut relays = vec![
        StrataProcess::spawn(
            &env,
            "sub-held-relay",
            &small,
            Some("hold_hot_transaction=sleep:2s"),
        )?,
        StrataProcess::spawn(&env, "sub-relay", &small, None)?,
    ];
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let subscriber = tokio::spawn(reconnecting_subscriber(
        api.endpoint.clone(),
        token("fraud-scorer", &[SUBSCRIBE], 3600),
        delivered.clone(),
        stop.clone(),
    ));

    let ledger = Ledger::default();
    let producing = CancellationToken::new();
    let options = LoadOptions {
        connections: 2,
        pause: Duration::from_millis(20),
        ..Default::default()
    };
    let tasks = load::start(&env.source_url, ledger.clone(), options, producing.clone()).await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    load::stop(producing, tasks).await;
    let drained = wait_until(Duration::from_secs(60), || async {
        env.outbox_len().await.map(|n| n == 0).unwrap_or(false)
    })
    .await;
    anyhow::ensure!(drained, "relays did not drain: {}", relays[0].log_tail());
    let expected = stream_order(&env).await?;
    let caught_up = wait_until(Duration::from_secs(30), || async {
        delivered.lock().expect("not poisoned").len() >= expected.len()
    })
    .await;
    // A little longer: anything delivered twice would show up now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let sessions = subscriber.await??;
    for relay in &mut relays {
        relay.kill9();
    }
    let delivered = delivered.lock().expect("not poisoned").clone();
    anyhow::ensure!(
        caught_up,
        "delivered {} of {} events",
        delivered.len(),
        expected.len()
    );
    let expected_keys: Vec<Key> = expected.iter().map(|(key, _)| key.clone()).collect();
    assert_eq!(
        delivered.len(),
        expected_keys.len(),
        "each stored event exactly once"
    );
    assert_eq!(delivered, expected_keys, "in position order");
    assert!(
        sessions >= 5,
        "the subscriber reconnected ({sessions} sessions)"
    );
    assert!(expected.len() > 200, "{} events", expected.len());
    // Every stored row has a position.
    let unnumbered: i64 = env
        .hot()
        .await?
        .query_one(
            "SELECT count(*) FROM strata.activity a
              WHERE NOT EXISTS (SELECT FROM strata.stream_log l WHERE l.txid = a.stream_txid)",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(unnumbered, 0);
    // The held relay's transactions began before rows that committed
    // ahead of them: commit order differed from write order, and the
    // stream followed commit order.
    let overtaken = expected
        .windows(2)
        .any(|pair| pair[0].1 > pair[1].1 + 500_000);
    assert!(
        overtaken,
        "no transaction was overtaken; the failpoint did not hold one"
    );
    let report = check(&ledger, &env.hot().await?).await?;
    assert!(report.is_clean(), "{report:?}");
    Ok(())
}

/// Reads `request` until the stream says LIVE; returns the events and the
/// last resume token.
async fn until_live(
    endpoint: &str,
    bearer: &str,
    request: SubscribeRequest,
) -> Result<(Vec<SubscribeResponse>, String), tonic::Status> {
    let mut client = client(endpoint)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut stream = client
        .subscribe(authed(request, bearer))
        .await?
        .into_inner();
    let mut responses = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("no response"))??;
        let Some(response) = message else {
            return Err(tonic::Status::aborted("stream ended"));
        };
        let live = response.state == SubscriptionState::Live as i32;
        let token = response.resume_token.clone();
        responses.push(response);
        if live {
            return Ok((responses, token));
        }
    }
}

/// An event as the filter test looks at it: (user, kind, source, payload).
type Seen = (String, String, String, Value);
/// Which events a filter should pass.
type Expectation = Box<dyn Fn(&Seen) -> bool>;

fn events(responses: &[SubscribeResponse]) -> Vec<Seen> {
    responses
        .iter()
        .flat_map(|r| r.events.iter())
        .map(|e| {
            let event = e.event.clone().unwrap_or_default();
            let payload = serde_json::from_str(&event.payload_json).unwrap_or(Value::Null);
            (event.user_id, event.kind, event.source, payload)
        })
        .collect()
}

pub(crate) fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

fn filter(f: impl FnOnce(&mut SubscriptionFilter)) -> Option<SubscriptionFilter> {
    let mut filter = SubscriptionFilter::default();
    f(&mut filter);
    Some(filter)
}

/// Filters are applied in the database and match what they document;
/// tokens are bound to their filter and refused when tampered with or too
/// old; customers subscribe to themselves only; starts and ends are
/// audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_tokens_scopes_and_audit() -> anyhow::Result<()> {
    let env = TestEnv::new("sub_filters").await?;
    let target = S3Target::new("sub-filters").await?;
    let users = ["alice", "bob", "carol"];
    let kinds = ["deposit", "withdrawal", "login"];
    let mut produced = Vec::new();
    for (source, n0) in [("payments", 0), ("identity", 1000)] {
        let outbox = Outbox::new(source)?;
        let mut events = Vec::new();
        for i in 0..60i64 {
            let n = n0 + i;
            let user = users[(i % 3) as usize];
            let kind = kinds[(i % 7 % 3) as usize];
            let currency = if i % 4 == 0 { "EUR" } else { "USD" };
            let payload = json!({"n": n, "currency": currency, "amount": i * 10,
                                 "account": {"id": format!("acc-{}", i % 5)}});
            produced.push((
                user.to_string(),
                kind.to_string(),
                source.to_string(),
                payload.clone(),
            ));
            events.push(NewEvent::new(user, kind).payload(payload));
        }
        let mut source_client = env.source().await?;
        let tx = source_client.transaction().await?;
        outbox.enqueue_many_pg(&tx, &events).await?;
        tx.commit().await?;
    }
    let mut relay = StrataProcess::spawn(&env, "sub-filters-relay", &[], None)?;
    let shipped = wait_until(Duration::from_secs(60), || async {
        env.hot_len().await.map(|n| n == 120).unwrap_or(false)
    })
    .await;
    anyhow::ensure!(shipped, "relay did not ship: {}", relay.log_tail());
    let api = ApiServer::start(&env, &target, "sub-filters-api", &[]).await?;
    let service = token("aml-aggregator", &[SUBSCRIBE], 3600);
    let endpoint = api.endpoint.as_str();
    let beginning = || Start::FromBeginning(true);
    let n_of = |events: &[Seen]| -> HashSet<i64> {
        events
            .iter()
            .map(|e| e.3["n"].as_i64().unwrap_or(-1))
            .collect()
    };
    let expect = |keep: &dyn Fn(&Seen) -> bool| -> HashSet<i64> {
        produced
            .iter()
            .filter(|e| keep(e))
            .map(|e| e.3["n"].as_i64().unwrap_or(-1))
            .collect()
    };

    // Everything, then each kind of condition.
    let (all, _) = until_live(endpoint, &service, request(None, beginning())).await?;
    assert_eq!(n_of(&events(&all)), expect(&|_| true));
    let cases: Vec<(Option<SubscriptionFilter>, Expectation)> = vec![
        (
            filter(|f| f.kinds = vec!["deposit".into(), "login".into()]),
            Box::new(|e| e.1 == "deposit" || e.1 == "login"),
        ),
        (
            filter(|f| f.sources = vec!["identity".into()]),
            Box::new(|e| e.2 == "identity"),
        ),
        (
            filter(|f| f.user_ids = vec!["bob".into(), "carol".into()]),
            Box::new(|e| e.0 == "bob" || e.0 == "carol"),
        ),
        (
            filter(|f| {
                f.payload_contains_json =
                    r#"{"currency": "EUR", "account": {"id": "acc-0"}}"#.into()
            }),
            Box::new(|e| e.3["currency"] == "EUR" && e.3["account"]["id"] == "acc-0"),
        ),
        (
            filter(|f| {
                f.payload_comparisons = vec![
                    PayloadComparison {
                        path: vec!["amount".into()],
                        operator: ComparisonOperator::GreaterOrEqual as i32,
                        value_json: "300".into(),
                    },
                    PayloadComparison {
                        path: vec!["account".into(), "id".into()],
                        operator: ComparisonOperator::NotEqual as i32,
                        value_json: r#""acc-1""#.into(),
                    },
                ]
            }),
            Box::new(|e| {
                e.3["amount"].as_i64().unwrap_or(0) >= 300 && e.3["account"]["id"] != "acc-1"
            }),
        ),
        (
            filter(|f| {
                f.kinds = vec!["withdrawal".into()];
                f.payload_comparisons = vec![PayloadComparison {
                    path: vec!["missing".into()],
                    operator: ComparisonOperator::NotEqual as i32,
                    value_json: "1".into(),
                }];
            }),
            Box::new(|_| false),
        ),
    ];
    for (filter, keep) in cases {
        let (responses, _) =
            until_live(endpoint, &service, request(filter.clone(), beginning())).await?;
        let got = n_of(&events(&responses));
        assert_eq!(got, expect(keep.as_ref()), "{filter:?}");
    }

    // A customer sees its own events only, and may not name others.
    let alice = token("alice", &[], 3600);
    let (own, _) = until_live(endpoint, &alice, request(None, beginning())).await?;
    assert_eq!(n_of(&events(&own)), expect(&|e| e.0 == "alice"));
    let other = until_live(
        endpoint,
        &alice,
        request(filter(|f| f.user_ids = vec!["bob".into()]), beginning()),
    )
    .await
    .expect_err("another user's events");
    assert_eq!(other.code(), Code::PermissionDenied);
    assert_eq!(reason(&other), "OTHER_USER");

    // Bad filters, tokens and starts are refused with their reasons.
    let bad_filters = [
        filter(|f| f.kinds = vec!["not a kind!".into()]),
        filter(|f| f.payload_contains_json = "[1,2]".into()),
        filter(|f| f.payload_contains_json = "{\"a\":".into()),
        filter(|f| {
            f.payload_comparisons = vec![PayloadComparison {
                path: vec!["a".into()],
                operator: ComparisonOperator::Unspecified as i32,
                value_json: "1".into(),
            }]
        }),
    ];
    for bad in bad_filters {
        let err = until_live(endpoint, &service, request(bad.clone(), beginning()))
            .await
            .expect_err("bad filter");
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}");
        assert_eq!(reason(&err), "INVALID_FILTER", "{bad:?}");
    }
    let eur = filter(|f| f.payload_contains_json = r#"{"currency":"EUR"}"#.into());
    let (first, eur_token) =
        until_live(endpoint, &service, request(eur.clone(), beginning())).await?;
    assert!(!events(&first).is_empty());
    let other_filter = until_live(
        endpoint,
        &service,
        request(None, Start::ResumeToken(eur_token.clone())),
    )
    .await
    .expect_err("token of another filter");
    assert_eq!(reason(&other_filter), "RESUME_TOKEN_INVALID");
    let mut tampered = eur_token.clone().into_bytes();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered)?;
    let err = until_live(
        endpoint,
        &service,
        request(eur.clone(), Start::ResumeToken(tampered)),
    )
    .await
    .expect_err("tampered token");
    assert_eq!(reason(&err), "RESUME_TOKEN_INVALID");
    let err = until_live(endpoint, "", request(None, beginning()))
        .await
        .expect_err("no bearer token");
    assert_eq!(err.code(), Code::Unauthenticated);

    // Resuming where the first read ended delivers nothing old; new events
    // come live.
    let mut client = client(endpoint).await?;
    let mut stream = client
        .subscribe(authed(
            request(eur.clone(), Start::ResumeToken(eur_token.clone())),
            &service,
        ))
        .await?
        .into_inner();
    let outbox = Outbox::new("payments")?;
    let mut source_client = env.source().await?;
    let tx = source_client.transaction().await?;
    outbox
        .enqueue_many_pg(
            &tx,
            &[
                NewEvent::new("dave", "deposit").payload(json!({"n": 5000, "currency": "EUR"})),
                NewEvent::new("dave", "deposit").payload(json!({"n": 5001, "currency": "USD"})),
            ],
        )
        .await?;
    tx.commit().await?;
    let mut live = Vec::new();
    while live.is_empty() {
        let response = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        live.extend(events(&[response]));
    }
    assert_eq!(n_of(&live), HashSet::from([5000]));
    drop(stream);
    relay.kill9();

    // A position older than the hot store holds is OUT_OF_RANGE, pointing
    // to the history API; the beginning moves up with it.
    let newest: i64 = env
        .hot()
        .await?
        .query_one("SELECT head FROM strata.stream_head", &[])
        .await?
        .get(0);
    env.hot()
        .await?
        .execute("UPDATE strata.stream_floor SET floor = $1", &[&newest])
        .await?;
    let err = until_live(
        endpoint,
        &service,
        request(eur.clone(), Start::ResumeToken(eur_token)),
    )
    .await
    .expect_err("trimmed position");
    assert_eq!(err.code(), Code::OutOfRange);
    assert_eq!(reason(&err), "POSITION_NOT_RETAINED");
    assert!(err.message().contains("ListActivity"), "{}", err.message());
    let (after_floor, _) = until_live(endpoint, &service, request(None, beginning())).await?;
    assert!(events(&after_floor).is_empty());

    // Starts and ends are audited.
    drop(client);
    let audited = wait_until(Duration::from_secs(10), || async {
        let Ok(hot) = env.hot().await else {
            return false;
        };
        let Ok(rows) = hot
            .query(
                "SELECT detail FROM strata.api_audit
                  WHERE principal = 'aml-aggregator' AND method = 'Subscribe' AND decision = 'allowed'",
                &[],
            )
            .await
        else {
            return false;
        };
        let ends = rows
            .iter()
            .filter(|r| r.get::<_, String>(0).starts_with("subscription ended"))
            .count();
        ends >= 8 && rows.len() >= 2 * ends
    })
    .await;
    assert!(audited, "subscription starts and ends audited");
    Ok(())
}

/// A relay transaction larger than one read (2,500 events; a read takes
/// 1,000): the stream cuts it into several responses, and resuming from a
/// token that stands inside the transaction continues after the exact
/// event, with nothing skipped or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transactions_resume_inside_them() -> anyhow::Result<()> {
    let env = TestEnv::new("sub_large").await?;
    let target = S3Target::new("sub-large").await?;
    let events: Vec<NewEvent> = (0..2500)
        .map(|i| NewEvent::new(format!("user-{}", i % 37), "deposit").payload(json!({"i": i})))
        .collect();
    let mut source_client = env.source().await?;
    let tx = source_client.transaction().await?;
    Outbox::new("payments")?
        .enqueue_many_pg(&tx, &events)
        .await?;
    tx.commit().await?;
    let mut relay = StrataProcess::spawn(
        &env,
        "sub-large-relay",
        &[
            ("relay.batch_size", "5000"),
            ("relay.workers_per_source", "1"),
        ],
        None,
    )?;
    let shipped = wait_until(Duration::from_secs(60), || async {
        env.hot_len().await.map(|n| n == 2500).unwrap_or(false)
    })
    .await;
    anyhow::ensure!(shipped, "relay did not ship: {}", relay.log_tail());
    // And a small transaction after it (ten of the same events again, as
    // new ids): reading past a large transaction delivered in parts must
    // reach the next one.
    let tx = source_client.transaction().await?;
    Outbox::new("payments")?
        .enqueue_many_pg(&tx, &events[..10])
        .await?;
    tx.commit().await?;
    let shipped = wait_until(Duration::from_secs(60), || async {
        env.hot_len().await.map(|n| n == 2510).unwrap_or(false)
    })
    .await;
    anyhow::ensure!(shipped, "relay did not ship: {}", relay.log_tail());
    relay.kill9();
    let transactions: i64 = env
        .hot()
        .await?
        .query_one("SELECT count(*) FROM strata.stream_log", &[])
        .await?
        .get(0);
    assert_eq!(transactions, 2, "two relay transactions");

    let api = ApiServer::start(&env, &target, "sub-large-api", &[]).await?;
    let bearer = token("ledger", &[SUBSCRIBE], 3600);
    let mut delivered: Vec<Key> = Vec::new();
    let mut start = Start::FromBeginning(true);
    let mut sessions = 0;
    loop {
        sessions += 1;
        anyhow::ensure!(sessions < 50, "no progress after {sessions} sessions");
        let mut client = client(&api.endpoint).await?;
        let mut stream = client
            .subscribe(authed(request(None, start.clone()), &bearer))
            .await?
            .into_inner();
        // One response per session, then resume from its token.
        let response = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        delivered.extend(keys_of(&response));
        start = Start::ResumeToken(response.resume_token.clone());
        if response.state == SubscriptionState::Live as i32 {
            break;
        }
    }
    let expected: Vec<Key> = stream_order(&env)
        .await?
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(expected.len(), 2510);
    assert_eq!(delivered, expected, "every event once, in order");
    assert!(
        sessions >= 3,
        "the transaction came in parts ({sessions} sessions)"
    );

    // The Python example (README), run twice on one state file: stopped
    // after its first response, then resumed until live. Together: every
    // event once, in order.
    let stubs = python_stubs().await?;
    let state = tempfile::tempdir()?;
    let state_file = state.path().join("resume-token");
    let state_file = state_file.to_string_lossy().to_string();
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/python/subscribe.py"
    );
    let endpoint = api.endpoint.trim_start_matches("http://").to_string();
    let first = python_script(
        &stubs,
        example,
        &[&endpoint, &bearer, &state_file, "--stop-after", "1"],
    )
    .await?;
    let second = python_script(
        &stubs,
        example,
        &[&endpoint, &bearer, &state_file, "--until-live"],
    )
    .await?;
    let printed: Vec<(i64, String)> = first
        .lines()
        .chain(second.lines())
        .map(|line| -> anyhow::Result<(i64, String)> {
            let value: Value = serde_json::from_str(line)?;
            anyhow::ensure!(value.get("error").is_none(), "{line}");
            Ok((
                value["commit_sequence"].as_i64().unwrap_or(-1),
                value["event_id"].as_str().unwrap_or_default().to_string(),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let expected_ids: Vec<(i64, String)> = expected
        .iter()
        .map(|(seq, _, _, id)| (*seq, id.clone()))
        .collect();
    assert!(
        !first.is_empty() && !second.is_empty(),
        "both runs printed events"
    );
    assert_eq!(printed, expected_ids, "Python: every event once, in order");
    Ok(())
}

/// The Rust client (`strata-client`) across API crashes: producers under
/// load, relays killed and restarted, the API process killed (SIGKILL) and
/// restarted on its port twice while the client reads; it reconnects,
/// resumes from its last token and delivers every stored event exactly
/// once, in position order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_survives_api_and_relay_crashes() -> anyhow::Result<()> {
    use strata_client::{Start as ClientStart, Subscriber, SubscriptionFilter as ClientFilter};

    let env = TestEnv::new("sub_client").await?;
    let target = S3Target::new("sub-client").await?;
    let mut api = ApiServer::start(&env, &target, "sub-client-api", &[]).await?;
    let port = api.port;
    let mut relay = StrataProcess::spawn(&env, "sub-client-relay", &[], None)?;
    let ledger = Ledger::default();
    let producing = CancellationToken::new();
    let tasks = load::start(
        &env.source_url,
        ledger.clone(),
        LoadOptions {
            connections: 2,
            pause: Duration::from_millis(10),
            ..Default::default()
        },
        producing.clone(),
    )
    .await?;

    let delivered = Arc::new(Mutex::new(Vec::<Key>::new()));
    let stop = CancellationToken::new();
    let reader = {
        let (delivered, stop) = (delivered.clone(), stop.clone());
        let mut subscriber = Subscriber::new(
            api.endpoint.clone(),
            token("notifier", &[SUBSCRIBE], 3600),
            ClientFilter::default(),
            ClientStart::FromBeginning(true),
        );
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    _ = stop.cancelled() => return Ok::<u64, anyhow::Error>(subscriber.reconnects()),
                    batch = subscriber.next() => batch?,
                };
                let keys = keys_of(&SubscribeResponse {
                    events: batch.events,
                    ..Default::default()
                });
                delivered.lock().expect("not poisoned").extend(keys);
            }
        })
    };
    for round in 0..2 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        api.process.kill9();
        relay.kill9();
        tokio::time::sleep(Duration::from_millis(700)).await;
        relay = StrataProcess::spawn(&env, &format!("sub-client-relay-{round}"), &[], None)?;
        api = ApiServer::start_on(
            &env,
            &target,
            &format!("sub-client-api-{round}"),
            &[],
            None,
            port,
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    load::stop(producing, tasks).await;
    let expected = drained_stream(&env, &relay).await?;
    let caught_up = wait_until(Duration::from_secs(30), || async {
        delivered.lock().expect("not poisoned").len() >= expected.len()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let reconnects = reader.await??;
    relay.kill9();
    let delivered = delivered.lock().expect("not poisoned").clone();
    anyhow::ensure!(
        caught_up,
        "delivered {} of {}",
        delivered.len(),
        expected.len()
    );
    assert_eq!(delivered, expected, "every event once, in order");
    assert!(reconnects >= 2, "the client reconnected ({reconnects})");
    let report = check(&ledger, &env.hot().await?).await?;
    assert!(report.is_clean(), "{report:?}");
    Ok(())
}

/// A slow consumer (one response a second) next to a fast one while
/// producers write 16 KiB events: the slow one falls out of the live feed (counted in
/// `strata_api_subscription_fell_behind_total`) and goes on from the store,
/// still receiving every event exactly once, in order; the fast one
/// receives everything as it commits, unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_falls_behind_alone() -> anyhow::Result<()> {
    let env = TestEnv::new("sub_slow").await?;
    let target = S3Target::new("sub-slow").await?;
    let metrics_port = strata_tests::api::free_port()?;
    let listen = format!("\"127.0.0.1:{metrics_port}\"");
    let api = ApiServer::start(
        &env,
        &target,
        "sub-slow-api",
        &[("metrics.listen", listen.as_str())],
    )
    .await?;
    let mut relay =
        StrataProcess::spawn(&env, "sub-slow-relay", &[("relay.batch_size", "5")], None)?;
    let bearer = token("slow-and-fast", &[SUBSCRIBE], 3600);

    let stop = CancellationToken::new();
    let (fast_seen, slow_seen) = (
        Arc::new(Mutex::new(Vec::<Key>::new())),
        Arc::new(Mutex::new(Vec::<Key>::new())),
    );
    // The slow reader dawdles while the producers run, then reads at full
    // speed, so the test also sees it catch up.
    let dawdling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut readers = Vec::new();
    for (seen, pause) in [
        (fast_seen.clone(), Duration::ZERO),
        (slow_seen.clone(), Duration::from_secs(1)),
    ] {
        let dawdling = dawdling.clone();
        let mut client = client(&api.endpoint).await?;
        let mut stream = client
            .subscribe(authed(request(None, Start::FromNow(true)), &bearer))
            .await?
            .into_inner();
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => return Ok::<(), anyhow::Error>(()),
                    message = stream.message() => message?,
                };
                let Some(response) = message else {
                    anyhow::bail!("the stream ended");
                };
                seen.lock()
                    .expect("not poisoned")
                    .extend(keys_of(&response));
                if !pause.is_zero() && dawdling.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::sleep(pause).await;
                }
            }
        }));
    }
    // Both are live before the producers start. Events of 16 KiB, so the
    // slow reader's transport buffers (megabytes) fill within seconds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let filler = "x".repeat(16 * 1024);
    let outbox = Outbox::new("payments")?;
    let mut source_client = env.source().await?;
    let producing_until = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut batch = 0;
    while tokio::time::Instant::now() < producing_until {
        let events: Vec<NewEvent> = (0..10)
            .map(|i| {
                NewEvent::new(format!("user-{}", i % 7), "deposit")
                    .payload(json!({"batch": batch, "i": i, "memo": filler}))
            })
            .collect();
        let tx = source_client.transaction().await?;
        outbox.enqueue_many_pg(&tx, &events).await?;
        tx.commit().await?;
        batch += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let expected = drained_stream(&env, &relay).await?;
    let fast_done = wait_until(Duration::from_secs(10), || async {
        fast_seen.lock().expect("not poisoned").len() >= expected.len()
    })
    .await;
    assert!(fast_done, "the fast subscriber kept up");
    let fell_behind = http_get(metrics_port, "/metrics")
        .await
        .ok()
        .and_then(|body| metric_value(&body, "strata_api_subscription_fell_behind_total"))
        .unwrap_or(0.0);
    assert!(
        fell_behind >= 1.0,
        "the slow subscriber left the live feed ({fell_behind})"
    );
    // The slow one now reads at full speed and catches up from the store.
    dawdling.store(false, std::sync::atomic::Ordering::Relaxed);
    let slow_done = wait_until(Duration::from_secs(60), || async {
        slow_seen.lock().expect("not poisoned").len() >= expected.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    for reader in readers {
        reader.await??;
    }
    relay.kill9();
    assert!(slow_done, "the slow subscriber caught up");
    assert_eq!(
        *fast_seen.lock().expect("not poisoned"),
        expected,
        "fast: once, in order"
    );
    assert_eq!(
        *slow_seen.lock().expect("not poisoned"),
        expected,
        "slow: once, in order"
    );
    Ok(())
}

/// Subscriptions read from a streaming replica (`api.subscribe_database_url`,
/// the standby scripts/test made with pg_basebackup) while the primary
/// takes writes; wake-ups come from the primary, and a woken reader waits
/// for the standby to replay what it was told. Every event once, in
/// order, and the reads were the standby's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_reads_a_streaming_replica() -> anyhow::Result<()> {
    use strata_client::{Start as ClientStart, Subscriber, SubscriptionFilter as ClientFilter};

    let env = TestEnv::new("sub_replica").await?;
    let replica = strata_tests::db::replica_url(&env.hot_url)?;
    // The new database reaches the standby with the primary's WAL.
    let replayed = wait_until(Duration::from_secs(30), || async {
        match strata_tests::connect(&replica).await {
            Ok(standby) => standby
                .query_one("SELECT head FROM strata.stream_head", &[])
                .await
                .is_ok(),
            Err(_) => false,
        }
    })
    .await;
    anyhow::ensure!(replayed, "the standby did not replay the new database");
    let target = S3Target::new("sub-replica").await?;
    let setting = format!("\"{replica}\"");
    let api = ApiServer::start(
        &env,
        &target,
        "sub-replica-api",
        &[("api.subscribe_database_url", setting.as_str())],
    )
    .await?;
    let mut relay = StrataProcess::spawn(&env, "sub-replica-relay", &[], None)?;
    let ledger = Ledger::default();
    let producing = CancellationToken::new();
    let tasks = load::start(
        &env.source_url,
        ledger.clone(),
        LoadOptions {
            connections: 2,
            pause: Duration::from_millis(10),
            ..Default::default()
        },
        producing.clone(),
    )
    .await?;
    let delivered = Arc::new(Mutex::new(Vec::<Key>::new()));
    let stop = CancellationToken::new();
    let reader = {
        let (delivered, stop) = (delivered.clone(), stop.clone());
        let mut subscriber = Subscriber::new(
            api.endpoint.clone(),
            token("replica-reader", &[SUBSCRIBE], 3600),
            ClientFilter::default(),
            ClientStart::FromBeginning(true),
        );
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    _ = stop.cancelled() => return Ok::<(), anyhow::Error>(()),
                    batch = subscriber.next() => batch?,
                };
                let keys = keys_of(&SubscribeResponse {
                    events: batch.events,
                    ..Default::default()
                });
                delivered.lock().expect("not poisoned").extend(keys);
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    load::stop(producing, tasks).await;
    let expected = drained_stream(&env, &relay).await?;
    let caught_up = wait_until(Duration::from_secs(30), || async {
        delivered.lock().expect("not poisoned").len() >= expected.len()
    })
    .await;
    // Read the standby's sessions while the subscription is still open.
    let standby = strata_tests::connect(&replica).await?;
    let row = standby
        .query_one(
            "SELECT pg_is_in_recovery(),
                    (SELECT count(*) FROM pg_stat_activity
                      WHERE datname = current_database() AND application_name = 'strata-api')",
            &[],
        )
        .await?;
    let (in_recovery, api_sessions): (bool, i64) = (row.get(0), row.get(1));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    reader.await??;
    relay.kill9();
    let delivered = delivered.lock().expect("not poisoned").clone();
    anyhow::ensure!(
        caught_up,
        "delivered {} of {}",
        delivered.len(),
        expected.len()
    );
    assert!(!expected.is_empty(), "the producers wrote events");
    assert_eq!(delivered, expected, "every event once, in order");
    assert!(in_recovery, "the subscription database is a standby");
    assert!(
        api_sessions >= 1,
        "the API read through sessions on the standby ({api_sessions})"
    );
    let report = check(&ledger, &env.hot().await?).await?;
    assert!(report.is_clean(), "{report:?}");
    Ok(())
}
