//! `strata bench subscribe`: producers at a fixed rate, relays shipping
//! live, the API in process, and 1, 10 and 100 subscribers (no filter,
//! from now) reading live; commit-to-delivered latency for each, with the
//! commit-to-hot-visible latency of the same run (what `bench ingest`
//! measures) as the baseline; then a consumer group of 4 members, each
//! acknowledging every delivery at once. Then the catch-up rate of one
//! subscriber replaying events stored the relay's way (binary COPY,
//! numbered).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{TimeDelta, Utc};
use clap::Args;
use futures_util::pin_mut;
use serde_json::json;
use strata_api::auth::{issue_hs256, Claims, SCOPE_SUBSCRIBE};
use strata_api::ApiOptions;
use strata_core::config::{ApiConfig, DatabaseUrl, ObjectStoreConfig, ObjectStoreKind, Secret};
use strata_proto::v1::subscribe_request::Start;
use strata_proto::v1::subscription_service_client::SubscriptionServiceClient;
use strata_proto::v1::{
    group_join, join_group_request, Event, GroupAck, GroupJoin, JoinGroupRequest, SubscribeRequest,
    SubscriptionState,
};
use strata_relay::hot_copy::{self, HotRow};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::env::BenchEnv;
use super::ingest::{produce, start_relays, OnCommit, Rate};
use super::{CommonArgs, ENSURE_PARTITION_SQL};
use crate::latency::{percentile, LatencyTracker};
use crate::pg;
use crate::synth::Synth;

/// Rows per transaction of the catch-up fill (a relay batch's size).
const FILL_TRANSACTION_ROWS: u64 = 2000;

/// `strata bench subscribe` flags.
#[derive(Debug, Args)]
pub(super) struct SubscribeArgs {
    /// Target events per second (all producers together).
    #[arg(long, default_value_t = 4000)]
    rate: u64,
    /// How long to produce, for each number of subscribers.
    #[arg(long, default_value = "20s", value_parser = strata_core::duration::parse)]
    duration: Duration,
    /// Producer connections.
    #[arg(long, default_value_t = 32)]
    connections: u64,
    /// Relays (in-process instances) shipping concurrently.
    #[arg(long, default_value_t = 2)]
    relays: usize,
    /// Numbers of concurrent subscribers to measure, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    subscribers: Vec<usize>,
    /// Members of the consumer group measured after the subscribers (0:
    /// none).
    #[arg(long, default_value_t = 4)]
    group_members: usize,
    /// Stored events one subscriber replays for the catch-up rate.
    #[arg(long, default_value_t = 1_000_000)]
    catch_up_events: u64,
    #[command(flatten)]
    common: CommonArgs,
}

/// When each produced event's transaction committed, for subscribers to
/// measure against.
type CommitClock = Arc<RwLock<HashMap<Uuid, Instant>>>;

/// One phase's figures.
struct Latency {
    subscribers: usize,
    delivered: u64,
    expected: u64,
    p50: f64,
    p99: f64,
    max: f64,
}

/// Runs the scenario.
pub(super) async fn run(args: SubscribeArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let env = BenchEnv::new(args.common.pg_url.as_deref(), &[]).await?;
    let src_url = env.fresh_database("bench_subscribe_src").await?;
    let hot_url = env.fresh_database("bench_subscribe_hot").await?;
    strata_migrations::OUTBOX
        .apply(&mut pg::connect(&src_url).await?)
        .await?;
    strata_migrations::STORE
        .apply(&mut pg::connect(&hot_url).await?)
        .await?;

    let tracker = LatencyTracker::shared();
    let relay_cancel = cancel.child_token();
    let relays = start_relays(&src_url, &hot_url, args.relays, &tracker, &relay_cancel);
    let api_cancel = cancel.child_token();
    let (address, token, server, store_dir) = start_api(&hot_url, &api_cancel).await?;
    // Let the relays connect and the reconciler create partitions.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let rate = Rate {
        events_per_second: args.rate,
        connections: args.connections,
        duration: args.duration,
    };
    let mut phases = Vec::new();
    let mut ingest_samples = Vec::new();
    for &count in &args.subscribers {
        let phase = measure_live(&src_url, address, &token, count, rate, &tracker, &cancel).await?;
        ingest_samples.extend(tracker.take_samples());
        phases.push(phase);
    }
    let group = if args.group_members > 0 {
        let phase = measure_group(
            &src_url,
            address,
            &token,
            args.group_members,
            rate,
            &tracker,
            &cancel,
        )
        .await?;
        ingest_samples.extend(tracker.take_samples());
        Some(phase)
    } else {
        None
    };
    let ingest_p99 = percentile(&mut ingest_samples, 99.0);
    let ingest_p50 = percentile(&mut ingest_samples, 50.0);

    relay_cancel.cancel();
    for relay in relays {
        relay.await??;
    }
    let catch_up =
        measure_catch_up(&hot_url, address, &token, args.catch_up_events, &cancel).await?;

    api_cancel.cancel();
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&store_dir);

    println!(
        "\nstrata bench subscribe: {} ev/s for {:.0}s per phase, {} connections, {} relays ({})",
        args.rate,
        args.duration.as_secs_f64(),
        args.connections,
        args.relays,
        env.fsync_note
    );
    println!(
        "  baseline commit->hot-visible   p50 {:>7.1} ms  p99 {:>7.1} ms",
        ingest_p50, ingest_p99
    );
    for phase in &phases {
        println!(
            "  {:>3} subscribers: commit->delivered p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  ({} of {} deliveries)",
            phase.subscribers, phase.p50, phase.p99, phase.max, phase.delivered, phase.expected
        );
    }
    if let Some(group) = &group {
        println!(
            "  group of {:>2} members: commit->delivered p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  ({} of {} events)",
            group.subscribers, group.p50, group.p99, group.max, group.delivered, group.expected
        );
    }
    println!(
        "  catch-up of {} stored events: {:.0} ev/s",
        args.catch_up_events, catch_up
    );
    if args.common.json {
        let mut out = json!({
            "scenario": "subscribe",
            "rate": args.rate,
            "duration_s": args.duration.as_secs_f64(),
            "group": group.as_ref().map(|group| json!({
                "members": group.subscribers,
                "p50": round1(group.p50),
                "p99": round1(group.p99),
                "max": round1(group.max),
                "delivered": group.delivered,
                "expected": group.expected,
                "vs_ingest_p99": round2(group.p99 / ingest_p99.max(0.1)),
            })),
            "catch_up_events": args.catch_up_events,
            "catch_up_events_per_s": catch_up.round(),
            "ingest_p50_ms": round1(ingest_p50),
            "ingest_p99_ms": round1(ingest_p99),
            "server": env.fsync_note,
        });
        for phase in &phases {
            out[format!("subscribers_{}", phase.subscribers)] = json!({
                "p50": round1(phase.p50),
                "p99": round1(phase.p99),
                "max": round1(phase.max),
                "delivered": phase.delivered,
                "expected": phase.expected,
                "vs_ingest_p99": round2(phase.p99 / ingest_p99.max(0.1)),
            });
        }
        println!("{out}");
    }
    Ok(())
}

/// The API in process on a free port, with a local-directory object
/// store; returns its address, a subscriber token, its task and the
/// store's directory.
async fn start_api(
    hot_url: &str,
    cancel: &CancellationToken,
) -> anyhow::Result<(SocketAddr, String, JoinHandle<()>, std::path::PathBuf)> {
    let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let api = ApiConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        jwt_hs256_secrets: [("bench".to_string(), Secret::new(secret.clone()))].into(),
        page_token_keys: vec![Secret::new(format!("bench={secret}"))],
        rate_per_second: 1e9,
        rate_burst: 1_000_000_000,
        max_subscriptions_per_principal: 1000,
        max_subscriptions: 1000,
        max_calls_per_principal: 1000,
        max_calls_in_flight: 10_000,
        ..ApiConfig::default()
    };
    let store_dir = std::env::temp_dir().join(format!("strata-bench-store-{}", std::process::id()));
    std::fs::create_dir_all(&store_dir)?;
    let store_config = ObjectStoreConfig {
        kind: Some(ObjectStoreKind::Local),
        local_dir: Some(store_dir.clone()),
        ..ObjectStoreConfig::default()
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let options = ApiOptions {
        api: api.clone(),
        hot_store_url: DatabaseUrl::new(hot_url.to_string()),
        object_store: store_config,
    };
    let api_cancel = cancel.clone();
    let server = tokio::spawn(async move {
        if let Err(err) =
            strata_api::serve_with_reader(options, None, api_cancel, Some(ready_tx)).await
        {
            eprintln!("strata bench subscribe: the API stopped: {err:#}");
        }
    });
    let address = ready_rx.await.context("the API did not start")?;
    let now = Utc::now().timestamp().max(0) as u64;
    let token = issue_hs256(
        "bench",
        &secret,
        &Claims {
            sub: "bench".into(),
            iss: api.jwt_issuer.clone(),
            aud: api.jwt_audience.clone(),
            exp: now + 24 * 3600,
            iat: Some(now),
            scope: SCOPE_SUBSCRIBE.into(),
        },
    )?;
    Ok((address, token, server, store_dir))
}

/// A subscription's request with the bearer token.
fn subscribe_request(token: &str, start: Start) -> tonic::Request<SubscribeRequest> {
    let mut request = tonic::Request::new(SubscribeRequest {
        filter: None,
        start: Some(start),
    });
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// `count` live subscribers while producers run at `rate`.
async fn measure_live(
    src_url: &str,
    address: SocketAddr,
    token: &str,
    count: usize,
    rate: Rate,
    tracker: &Arc<LatencyTracker>,
    cancel: &CancellationToken,
) -> anyhow::Result<Latency> {
    let clock: CommitClock = Arc::new(RwLock::new(HashMap::new()));
    let arrived = Arc::new(AtomicU64::new(0));
    let stop = cancel.child_token();
    let mut subscribers = Vec::with_capacity(count);
    let (live_tx, mut live_rx) = tokio::sync::mpsc::channel(count.max(1));
    for _ in 0..count {
        let client = SubscriptionServiceClient::connect(format!("http://{address}")).await?;
        let (stop, live_tx) = (stop.clone(), live_tx.clone());
        let request = subscribe_request(token, Start::FromNow(true));
        subscribers.push(tokio::spawn(subscriber(
            client,
            request,
            arrived.clone(),
            live_tx,
            stop,
        )));
    }
    drop(live_tx);
    for _ in 0..count {
        live_rx
            .recv()
            .await
            .context("a subscriber did not go live")?;
    }
    let on_commit: OnCommit = {
        let clock = clock.clone();
        Arc::new(move |id: Uuid| {
            if let Ok(mut clock) = clock.write() {
                clock.insert(id, Instant::now());
            }
        })
    };
    let produced = produce(
        src_url,
        rate,
        tracker.clone(),
        Some(on_commit),
        cancel.child_token(),
    )
    .await?;
    let expected = produced.committed * count as u64;
    // Let the last events arrive at every subscriber (or give up after
    // 30 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrived.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let mut samples = Vec::new();
    for subscriber in subscribers {
        let arrivals = subscriber.await??;
        samples.extend(latencies(&clock, &arrivals).into_iter().map(|(_, ms)| ms));
    }
    Ok(Latency {
        subscribers: count,
        delivered: samples.len() as u64,
        expected,
        p50: percentile(&mut samples, 50.0),
        p99: percentile(&mut samples, 99.0),
        max: percentile(&mut samples, 100.0),
    })
}

/// One subscriber: says when it is live, then notes when each event
/// arrived until `stop` (matched with commit times afterwards, so an
/// event that arrives before its producer noted the commit still counts,
/// and the client does little per event while the phase runs).
async fn subscriber(
    mut client: SubscriptionServiceClient<tonic::transport::Channel>,
    request: tonic::Request<SubscribeRequest>,
    arrived: Arc<AtomicU64>,
    live: tokio::sync::mpsc::Sender<()>,
    stop: CancellationToken,
) -> anyhow::Result<Vec<Arrival>> {
    let mut stream = client.subscribe(request).await?.into_inner();
    let mut arrivals = Vec::new();
    let mut live = Some(live);
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return Ok(arrivals),
            message = stream.message() => message?,
        };
        let Some(response) = message else {
            anyhow::bail!("the subscription ended");
        };
        let now = Instant::now();
        if response.state == SubscriptionState::Live as i32 {
            if let Some(live) = live.take() {
                let _ = live.send(()).await;
            }
        }
        let events = response.events.iter().map(|event| event.event.as_ref());
        note_arrivals(&mut arrivals, events, now, &arrived);
    }
}

/// An event's id and when it arrived.
type Arrival = (Uuid, Instant);

/// Notes `events` as arrived `now` and counts them in `arrived`.
fn note_arrivals<'a>(
    arrivals: &mut Vec<Arrival>,
    events: impl Iterator<Item = Option<&'a Event>>,
    now: Instant,
    arrived: &AtomicU64,
) {
    let before = arrivals.len();
    arrivals
        .extend(events.filter_map(|event| Some((Uuid::parse_str(&event?.event_id).ok()?, now))));
    arrived.fetch_add((arrivals.len() - before) as u64, Ordering::Relaxed);
}

/// Commit-to-arrival latencies (ms) of the arrivals of committed events
/// (an arrival before the producer noted its commit counts as 0).
fn latencies(clock: &CommitClock, arrivals: &[Arrival]) -> Vec<(Uuid, f64)> {
    let Ok(clock) = clock.read() else {
        return Vec::new();
    };
    arrivals
        .iter()
        .filter_map(|(id, at)| {
            let committed = clock.get(id)?;
            Some((
                *id,
                at.saturating_duration_since(*committed).as_secs_f64() * 1000.0,
            ))
        })
        .collect()
}

/// A group of `members` (each acknowledging every delivery at once),
/// measured once its buckets are spread over all of them, while
/// producers run at `rate`.
async fn measure_group(
    src_url: &str,
    address: SocketAddr,
    token: &str,
    members: usize,
    rate: Rate,
    tracker: &Arc<LatencyTracker>,
    cancel: &CancellationToken,
) -> anyhow::Result<Latency> {
    const BUCKETS: usize = 16;
    let clock: CommitClock = Arc::new(RwLock::new(HashMap::new()));
    let stop = cancel.child_token();
    let held: Arc<Vec<AtomicUsize>> = Arc::new((0..members).map(|_| AtomicUsize::new(0)).collect());
    // Events delivered (a repeat counts again).
    let arrived = Arc::new(AtomicU64::new(0));
    let group = format!("bench-{}", Uuid::new_v4().simple());
    let mut tasks = Vec::with_capacity(members);
    for index in 0..members {
        let client = SubscriptionServiceClient::connect(format!("http://{address}")).await?;
        let join = GroupJoin {
            group: group.clone(),
            buckets: BUCKETS as u32,
            start: Some(group_join::Start::FromNow(true)),
            ..GroupJoin::default()
        };
        let shared = GroupShared {
            held: held.clone(),
            arrived: arrived.clone(),
        };
        let stop = stop.clone();
        let token = token.to_string();
        tasks.push(tokio::spawn(async move {
            group_member(client, &token, join, shared, index, stop).await
        }));
    }
    // Spread: every member holds its share (members join one by one, and
    // buckets move within seconds).
    let deadline = Instant::now() + Duration::from_secs(30);
    let even = BUCKETS / members.max(1);
    while held.iter().any(|n| n.load(Ordering::Relaxed) < even) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the group's buckets did not spread over its members"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let on_commit: OnCommit = {
        let clock = clock.clone();
        Arc::new(move |id: Uuid| {
            if let Ok(mut clock) = clock.write() {
                clock.insert(id, Instant::now());
            }
        })
    };
    let produced = produce(
        src_url,
        rate,
        tracker.clone(),
        Some(on_commit),
        cancel.child_token(),
    )
    .await?;
    // Every committed event reached a member (or 30 s passed).
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrived.load(Ordering::Relaxed) < produced.committed && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    // An event delivered again (a bucket moved) counts once, at its
    // first delivery.
    let mut first: HashMap<Uuid, f64> = HashMap::new();
    for task in tasks {
        for (id, latency) in latencies(&clock, &task.await??) {
            let entry = first.entry(id).or_insert(latency);
            *entry = entry.min(latency);
        }
    }
    let mut samples: Vec<f64> = first.into_values().collect();
    Ok(Latency {
        subscribers: members,
        delivered: samples.len() as u64,
        expected: produced.committed,
        p50: percentile(&mut samples, 50.0),
        p99: percentile(&mut samples, 99.0),
        max: percentile(&mut samples, 100.0),
    })
}

/// What the group members of the bench share.
struct GroupShared {
    /// Each member's bucket count.
    held: Arc<Vec<AtomicUsize>>,
    /// Events delivered (a repeat counts again).
    arrived: Arc<AtomicU64>,
}

/// One group member: keeps `held[index]` at its bucket count, notes when
/// each event arrived (as [`subscriber`] does) and acknowledges each
/// delivery, until `stop`.
async fn group_member(
    mut client: SubscriptionServiceClient<tonic::transport::Channel>,
    token: &str,
    join: GroupJoin,
    shared: GroupShared,
    index: usize,
    stop: CancellationToken,
) -> anyhow::Result<Vec<Arrival>> {
    let GroupShared { held, arrived } = shared;
    let (requests, outgoing) = tokio::sync::mpsc::channel(1024);
    requests
        .send(JoinGroupRequest {
            request: Some(join_group_request::Request::Join(join)),
        })
        .await?;
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(outgoing));
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    let mut stream = client.join_group(request).await?.into_inner();
    let mut arrivals = Vec::new();
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return Ok(arrivals),
            message = stream.message() => message?,
        };
        let Some(response) = message else {
            anyhow::bail!("the group member's stream ended");
        };
        let now = Instant::now();
        if let Some(assignment) = &response.assignment {
            held[index].store(assignment.buckets.len(), Ordering::Relaxed);
        }
        if response.events.is_empty() {
            continue;
        }
        let events = response.events.iter().map(|event| event.event.as_ref());
        note_arrivals(&mut arrivals, events, now, &arrived);
        let ack = JoinGroupRequest {
            request: Some(join_group_request::Request::Ack(GroupAck {
                delivery_ids: vec![response.delivery_id],
            })),
        };
        requests.send(ack).await?;
    }
}

/// Stores `events` synthetic events the relay's way (binary COPY in
/// transactions of [`FILL_TRANSACTION_ROWS`], each numbered with the
/// relay's stream statement), then times one subscriber replaying them
/// from before the first until it is live.
async fn measure_catch_up(
    hot_url: &str,
    address: SocketAddr,
    token: &str,
    events: u64,
    cancel: &CancellationToken,
) -> anyhow::Result<f64> {
    let mut hot = pg::connect(hot_url).await?;
    let today = Utc::now().date_naive();
    hot.execute(ENSURE_PARTITION_SQL, &[&today]).await?;
    let from = Utc::now() - TimeDelta::seconds(1);
    let mut synth = Synth::new(100_000, 99);
    let mut left = events;
    while left > 0 {
        if cancel.is_cancelled() {
            anyhow::bail!("cancelled");
        }
        let rows = left.min(FILL_TRANSACTION_ROWS);
        let tx = hot.transaction().await?;
        let at = Utc::now();
        let sink = tx.copy_in(hot_copy::COPY_SQL).await?;
        let writer = hot_copy::writer(sink);
        pin_mut!(writer);
        for _ in 0..rows {
            let event = synth.event();
            let id = Uuid::now_v7();
            let row = HotRow {
                event_id: &id,
                user_id: &event.user_id,
                kind: &event.kind,
                occurred_at: &at,
                source: "bench",
                payload: &event.payload,
            };
            hot_copy::write_row(writer.as_mut(), &row).await?;
        }
        writer.finish().await?;
        let count = i32::try_from(rows).unwrap_or(i32::MAX);
        tx.query_one(hot_copy::STREAM_APPEND_SQL, &[&count, &at, &at])
            .await?;
        tx.commit().await?;
        left -= rows;
    }
    let start = Start::StartTime(prost_types::Timestamp {
        seconds: from.timestamp(),
        nanos: 0,
    });
    let mut client = SubscriptionServiceClient::connect(format!("http://{address}")).await?;
    let started = Instant::now();
    let mut stream = client
        .subscribe(subscribe_request(token, start))
        .await?
        .into_inner();
    let mut received = 0u64;
    while let Some(response) = stream.message().await? {
        received += response.events.len() as u64;
        if response.state == SubscriptionState::Live as i32 {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        received >= events,
        "the subscriber replayed {received} of {events} events"
    );
    Ok(received as f64 / seconds)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
