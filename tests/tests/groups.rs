//! Consumer groups as their members see them: real relays and producers,
//! two `strata api` processes, members that join, die and come back, one
//! API process killed; a ledger of every delivery checks at least once,
//! nothing uncommitted, each user's events in order; then what was
//! acknowledged is what a new member starts from. Refusals and the ack
//! timeout too.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_client::{GroupMember, SubscriptionFilter as ClientFilter};
use strata_proto::v1::group_join::Start;
use strata_proto::v1::join_group_request::Request as GroupMessage;
use strata_proto::v1::subscription_service_client::SubscriptionServiceClient;
use strata_proto::v1::{
    GroupAck, GroupEvent, GroupJoin, JoinGroupRequest, JoinGroupResponse, SubscriptionState,
};
use strata_tests::api::{authed, token, ApiServer};
use strata_tests::archive::S3Target;
use strata_tests::load::{self, LoadOptions};
use strata_tests::{check, wait_until, Ledger, StrataProcess, TestEnv};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, Streaming};

use crate::subscribe::{drained_stream, reason, Key, SUBSCRIBE};

const SETTINGS: [(&str, &str); 2] = [
    ("api.group_session_timeout", "\"3s\""),
    ("api.group_ack_timeout", "\"3s\""),
];

fn key_of(event: &GroupEvent) -> Key {
    let inner = event.event.clone().unwrap_or_default();
    let at = inner.event_time.unwrap_or_default();
    (
        event.commit_sequence,
        inner.user_id,
        at.seconds * 1_000_000 + i64::from(at.nanos / 1000),
        inner.event_id,
    )
}

fn join(group: &str, buckets: u32) -> GroupJoin {
    GroupJoin {
        group: group.into(),
        filter: Some(ClientFilter::default()),
        buckets,
        start: Some(Start::FromBeginning(true)),
        ..Default::default()
    }
}

/// A member without the client: the raw stream and its request side.
async fn raw_member(
    endpoint: &str,
    bearer: &str,
    join: GroupJoin,
) -> Result<(Streaming<JoinGroupResponse>, mpsc::Sender<JoinGroupRequest>), Status> {
    let mut client = SubscriptionServiceClient::connect(endpoint.to_string())
        .await
        .map_err(|err| Status::unavailable(err.to_string()))?;
    let (requests, outgoing) = mpsc::channel(16);
    let _ = requests
        .send(JoinGroupRequest {
            request: Some(GroupMessage::Join(join)),
        })
        .await;
    let stream = client
        .join_group(authed(
            tokio_stream::wrappers::ReceiverStream::new(outgoing),
            bearer,
        ))
        .await?
        .into_inner();
    Ok((stream, requests))
}

/// Reads `stream` until it ends with a status (or `within` passes).
async fn ending(stream: &mut Streaming<JoinGroupResponse>, within: Duration) -> Option<Status> {
    tokio::time::timeout(within, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// One delivery as a member recorded it.
#[derive(Debug, Clone)]
struct Recorded {
    member: usize,
    connection: u64,
    acked: bool,
    keys: Vec<Key>,
}

type Log = Arc<Mutex<Vec<Recorded>>>;

/// Runs a member until `stop` (then it leaves) or until aborted (a
/// crash: its stream is dropped). It acknowledges each delivery after
/// recording it while `acking` holds.
fn run_member(
    endpoint: String,
    index: usize,
    join: GroupJoin,
    log: Log,
    acking: Arc<AtomicBool>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        let mut member = GroupMember::new(endpoint, token("ledger", &[SUBSCRIBE], 3600), join);
        loop {
            let delivery = tokio::select! {
                _ = stop.cancelled() => break,
                delivery = member.next() => delivery?,
            };
            let acked = acking.load(Ordering::SeqCst);
            log.lock().expect("not poisoned").push(Recorded {
                member: index,
                connection: member.rejoins(),
                acked,
                keys: delivery.events.iter().map(key_of).collect(),
            });
            if acked {
                member.ack(&delivery).await;
            }
        }
        member.leave().await;
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_shares_the_stream_through_member_and_api_deaths() -> anyhow::Result<()> {
    let env = TestEnv::new("groups").await?;
    let target = S3Target::new("groups").await?;
    let api_a = ApiServer::start(&env, &target, "groups-api-a", &SETTINGS).await?;
    let mut api_b = ApiServer::start(&env, &target, "groups-api-b", &SETTINGS).await?;
    let port_b = api_b.port;
    let mut relay = StrataProcess::spawn(&env, "groups-relay", &[], None)?;
    let service = token("ledger", &[SUBSCRIBE], 3600);

    // Refusals: a bad name, a customer token.
    let refused = raw_member(&api_a.endpoint, &service, join("no spaces", 8))
        .await
        .expect_err("bad name");
    assert_eq!(
        (refused.code(), reason(&refused)),
        (Code::InvalidArgument, "INVALID_GROUP".into())
    );
    let customer = token("user-1", &[], 3600);
    let refused = raw_member(&api_a.endpoint, &customer, join("ledger", 8))
        .await
        .expect_err("customer token");
    assert_eq!(
        (refused.code(), reason(&refused)),
        (Code::PermissionDenied, "SCOPE_MISSING".into())
    );

    let ledger = Ledger::default();
    let producing = CancellationToken::new();
    let tasks = load::start(
        &env.source_url,
        ledger.clone(),
        LoadOptions {
            connections: 2,
            pause: Duration::from_millis(10),
            users: 40,
            ..Default::default()
        },
        producing.clone(),
    )
    .await?;

    let log: Log = Arc::default();
    let stop = CancellationToken::new();
    let group = GroupJoin {
        max_unacknowledged: 50,
        ..join("ledger", 8)
    };
    let always = Arc::new(AtomicBool::new(true));
    let careless_acking = Arc::new(AtomicBool::new(true));
    // Member 0 (on A) stops acknowledging, then dies; 1 stays on A; 2
    // and 3 are on B, which is killed.
    let careless = run_member(
        api_a.endpoint.clone(),
        0,
        group.clone(),
        log.clone(),
        careless_acking.clone(),
        stop.clone(),
    );
    let mut members = vec![
        run_member(
            api_a.endpoint.clone(),
            1,
            group.clone(),
            log.clone(),
            always.clone(),
            stop.clone(),
        ),
        run_member(
            api_b.endpoint.clone(),
            2,
            group.clone(),
            log.clone(),
            always.clone(),
            stop.clone(),
        ),
    ];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hot = env.hot().await?;
    let created = wait_until(Duration::from_secs(30), || async {
        hot.query_opt(
            "SELECT 1 FROM strata.stream_groups WHERE name = 'ledger'",
            &[],
        )
        .await
        .map(|row| row.is_some())
        .unwrap_or(false)
    })
    .await;
    anyhow::ensure!(created, "the first members did not create the group");

    // The group exists now: another definition is refused.
    let refused = raw_member(&api_a.endpoint, &service, join("ledger", 4))
        .await
        .expect_err("other bucket count");
    assert_eq!(
        (refused.code(), reason(&refused)),
        (Code::FailedPrecondition, "GROUP_MISMATCH".into())
    );

    members.push(run_member(
        api_b.endpoint.clone(),
        3,
        group.clone(),
        log.clone(),
        always.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    careless_acking.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    careless.abort();
    tokio::time::sleep(Duration::from_secs(1)).await;
    api_b.process.kill9();
    tokio::time::sleep(Duration::from_secs(5)).await;
    api_b = ApiServer::start_on(&env, &target, "groups-api-b2", &SETTINGS, None, port_b).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    load::stop(producing, tasks).await;

    let expected = drained_stream(&env, &relay).await?;
    let expected_set: HashSet<Key> = expected.iter().cloned().collect();
    let all_delivered = wait_until(Duration::from_secs(60), || async {
        let log = log.lock().expect("not poisoned");
        let seen: HashSet<&Key> = log.iter().flat_map(|r| r.keys.iter()).collect();
        expected_set.iter().all(|key| seen.contains(key))
    })
    .await;
    // Let the last acknowledgements out, then everyone leaves.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    for member in members {
        member.await??;
    }
    relay.kill9();
    let log = log.lock().expect("not poisoned").clone();
    let delivered: Vec<&Key> = log.iter().flat_map(|r| r.keys.iter()).collect();
    assert!(
        all_delivered,
        "every committed event delivered at least once ({} deliveries of {} events)",
        delivered.len(),
        expected.len()
    );
    for key in &delivered {
        assert!(
            expected_set.contains(*key),
            "delivered but never committed: {key:?}"
        );
    }
    // Within one connection, each user's events in position order (an
    // event may come again, after a bucket's lease was lost and claimed
    // back, but nothing new comes before what it follows); and each
    // event's first delivery after those of the user's earlier ones.
    let mut last: HashMap<(usize, u64, String), Key> = HashMap::new();
    let mut seen_on: HashSet<(usize, u64, Key)> = HashSet::new();
    let mut first_seen: HashSet<Key> = HashSet::new();
    let mut newest_first: HashMap<String, Key> = HashMap::new();
    for record in &log {
        for key in &record.keys {
            let stream = (record.member, record.connection, key.1.clone());
            let again = !seen_on.insert((record.member, record.connection, key.clone()));
            if !again {
                if let Some(previous) = last.get(&stream) {
                    assert!(
                        previous < key,
                        "out of order on one stream: {previous:?} then {key:?}"
                    );
                }
                last.insert(stream, key.clone());
            }
            if first_seen.insert(key.clone()) {
                if let Some(previous) = newest_first.get(&key.1) {
                    assert!(
                        previous < key,
                        "user {} first saw {key:?} after {previous:?}",
                        key.1
                    );
                }
                newest_first.insert(key.1.clone(), key.clone());
            }
        }
    }
    // Member 0's unacknowledged events: at most its limit, and each
    // delivered again by another member.
    let unacked: HashSet<&Key> = log
        .iter()
        .filter(|r| r.member == 0 && !r.acked)
        .flat_map(|r| r.keys.iter())
        .collect();
    assert!(
        unacked.len() <= 50,
        "member 0 held {} unacknowledged events, over its limit of 50",
        unacked.len()
    );
    assert!(
        !unacked.is_empty(),
        "member 0 received events it did not acknowledge"
    );
    for key in &unacked {
        assert!(
            log.iter().any(|r| r.member != 0 && r.keys.contains(key)),
            "unacknowledged {key:?} was not delivered again"
        );
    }
    let report = check(&ledger, &env.hot().await?).await?;
    assert!(report.is_clean(), "{report:?}");

    // Everything was acknowledged: a new member holding every bucket
    // receives nothing.
    let (mut stream, requests) = raw_member(&api_b.endpoint, &service, group.clone()).await?;
    let mut events = 0;
    let mut buckets = Vec::new();
    let all: Vec<u32> = (0..8).collect();
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(message) = tokio::time::timeout_at(until, stream.message()).await {
        let Some(response) = message? else { break };
        events += response.events.len();
        if let Some(assignment) = response.assignment {
            buckets = assignment.buckets;
        }
        // Holding every bucket and at the end of what is stored.
        if buckets == all && response.state == SubscriptionState::Live as i32 {
            break;
        }
    }
    assert_eq!(
        buckets,
        (0..8).collect::<Vec<u32>>(),
        "the lone member holds every bucket"
    );
    assert_eq!(events, 0, "acknowledged events are not delivered again");
    drop(requests);

    // An acknowledgement of a delivery never sent ends the stream.
    let (mut stream, requests) = raw_member(&api_b.endpoint, &service, group.clone()).await?;
    requests
        .send(JoinGroupRequest {
            request: Some(GroupMessage::Ack(GroupAck {
                delivery_ids: vec![999_999],
            })),
        })
        .await?;
    let status = ending(&mut stream, Duration::from_secs(10))
        .await
        .expect("the stream ends with a status");
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::InvalidArgument, "INVALID_GROUP".into())
    );

    // A member that never acknowledges is dropped after the ack timeout,
    // and its events go to the next member.
    let fresh = GroupJoin {
        start: Some(Start::FromBeginning(true)),
        ..join("ack-timeout", 2)
    };
    let (mut stream, _requests) = raw_member(&api_a.endpoint, &service, fresh.clone()).await?;
    let mut first_sent = None;
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(Some(response))) = tokio::time::timeout_at(until, stream.message()).await {
        if let Some(event) = response.events.first() {
            first_sent = Some(key_of(event));
            break;
        }
    }
    let first_sent = first_sent.expect("the member received events");
    let status = ending(&mut stream, Duration::from_secs(15))
        .await
        .expect("the stream ends with a status");
    assert_eq!(
        (status.code(), reason(&status)),
        (Code::DeadlineExceeded, "ACK_TIMEOUT".into())
    );
    let (mut stream, _requests) = raw_member(&api_a.endpoint, &service, fresh).await?;
    let mut again = None;
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(Some(response))) = tokio::time::timeout_at(until, stream.message()).await {
        if let Some(event) = response.events.first() {
            again = Some(key_of(event));
            break;
        }
    }
    // Nothing was acknowledged: the next member starts where the first did.
    assert_eq!(
        again,
        Some(first_sent),
        "the timed-out member's events were delivered again from its first"
    );
    Ok(())
}
