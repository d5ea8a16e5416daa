//! The live end of the stream, shared by the subscriptions of one process.
//!
//! Subscribers with the same filter share one feed: after each wake-up (a
//! relay's NOTIFY, at most one per relay commit, or the poll interval) the
//! feed runs the read statement once from its position and hands the
//! result to every member, so a hundred subscribers cost one statement per
//! commit, not a hundred. Each member has a bounded buffer of batches; a
//! member whose buffer is full is dropped from the feed (its receiver then
//! ends) and goes back to reading the store on its own from its own
//! position: a slow consumer never holds up the feed, the relays or the
//! other members, and its memory stays bounded.
//!
//! A subscriber joins a feed only when its own catch-up has reached the
//! feed's position or passed it; it then skips what it already delivered.
//! So the handoff between catch-up and live has no gap (the feed goes on
//! from a position the member had reached) and no duplicate (the member
//! drops positions at or before its own).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_proto::wire::EncodedEvents;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use super::filter::Filter;
use super::position::Position;
use super::read::{self, StreamRow, PAGE_EVENTS};
use crate::lock;
use crate::pool::{Pool, PoolError};
use crate::read_error::ReadError;

/// The channel relays notify after each transaction they number
/// (`relay/src/hot_copy.rs`, `STREAM_APPEND_SQL`); the payload is its
/// number.
pub const STREAM_CHANNEL: &str = "strata_stream";
/// `application_name` of the API's LISTEN session.
pub const LISTENER_APPLICATION_NAME: &str = "strata-api-listener";

/// Batches a live member may have waiting before it is dropped to
/// catch-up.
pub const LIVE_BUFFER_BATCHES: usize = 16;

/// How long a feed waits between reads when the replica it reads has not
/// yet replayed a transaction a wake-up announced.
const REPLICA_WAIT: Duration = Duration::from_millis(5);

/// Why a feed read failed (logged; the next wake-up retries).
#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// What a feed read: events for a member, and how far it accounts for.
#[derive(Debug, Clone)]
pub struct LiveBatch {
    /// Matching events, in position order (shared by all members).
    pub events: Arc<[StreamRow]>,
    /// The same events as sent, encoded once for all members.
    pub encoded: EncodedEvents,
    /// The feed's position after these events.
    pub after: Position,
}

struct Feed {
    filter: Filter,
    state: Mutex<FeedState>,
    /// Reads that failed in a row; at [`FAILURES_BEFORE_RELEASE`] the
    /// members are let go, to meet the error on their own reads.
    failures: AtomicU32,
}

/// Failed reads in a row after which a feed lets its members go.
const FAILURES_BEFORE_RELEASE: u32 = 3;
/// Reads one feed makes per round before the others get theirs.
const PAGES_PER_ROUND: usize = 4;

struct FeedState {
    /// Everything up to here was handed to the members.
    through: Position,
    members: Vec<mpsc::Sender<LiveBatch>>,
}

/// The live feeds of one process.
pub struct Tail {
    pool: Pool,
    feeds: Mutex<HashMap<[u8; 32], Arc<Feed>>>,
    wake: Notify,
    /// Counts wake-ups, for readers outside the feeds (group members).
    wakes: watch::Sender<u64>,
    /// The newest transaction number a wake-up announced.
    announced: AtomicI64,
}

impl Tail {
    /// Feeds reading through `pool` (the subscriptions' database).
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            feeds: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            wakes: watch::Sender::new(0),
            announced: AtomicI64::new(0),
        }
    }

    /// Joins the feed of `filter` (made if needed) for a subscriber that
    /// has delivered everything up to `cursor`. `Err(position)`: the feed
    /// is already past `cursor`; read the store up to at least `position`
    /// first.
    pub fn join(
        &self,
        filter: &Filter,
        digest: [u8; 32],
        cursor: &Position,
    ) -> Result<mpsc::Receiver<LiveBatch>, Position> {
        let mut feeds = lock(&self.feeds);
        let feed = feeds.entry(digest).or_insert_with(|| {
            Arc::new(Feed {
                filter: filter.clone(),
                state: Mutex::new(FeedState {
                    through: cursor.clone(),
                    members: Vec::new(),
                }),
                failures: AtomicU32::new(0),
            })
        });
        let mut state = lock(&feed.state);
        if *cursor < state.through {
            return Err(state.through.clone());
        }
        let (sender, receiver) = mpsc::channel(LIVE_BUFFER_BATCHES);
        state.members.push(sender);
        drop(state);
        drop(feeds);
        // Read at once: the new member may be behind what is visible.
        self.wake.notify_one();
        Ok(receiver)
    }

    /// The newest transaction number a wake-up announced (0 before any).
    pub fn announced(&self) -> i64 {
        self.announced.load(Ordering::Relaxed)
    }

    /// A relay committed transaction `seq` (from its NOTIFY payload), or
    /// something may have been committed (`None`).
    pub fn wake(&self, seq: Option<i64>) {
        if let Some(seq) = seq {
            self.announced.fetch_max(seq, Ordering::Relaxed);
        }
        self.wake.notify_one();
        self.wakes
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// Changes at every wake-up (a relay commit announced, or a
    /// reconnected listener).
    pub fn wakes(&self) -> watch::Receiver<u64> {
        self.wakes.subscribe()
    }

    /// Reads for the feeds after every wake-up and every `poll`, until
    /// `cancel`.
    pub async fn run(self: Arc<Self>, poll: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
            let started = tokio::time::Instant::now();
            loop {
                let behind = self.round().await;
                // A replica that has not replayed what a wake-up announced
                // is read again shortly, within the poll interval.
                if !behind || started.elapsed() >= poll || cancel.is_cancelled() {
                    break;
                }
                tokio::time::sleep(REPLICA_WAIT).await;
            }
        }
    }

    /// One round of reads for every feed with members; true when some
    /// feed is still short of the announced transaction or of the end.
    async fn round(&self) -> bool {
        let feeds: Vec<Arc<Feed>> = {
            let mut feeds = lock(&self.feeds);
            feeds.retain(|_, feed| {
                let mut state = lock(&feed.state);
                state.members.retain(|member| !member.is_closed());
                !state.members.is_empty()
            });
            feeds.values().cloned().collect()
        };
        let announced = self.announced.load(Ordering::Relaxed);
        let mut behind = false;
        for feed in feeds {
            match self.advance(&feed).await {
                Ok((through, finished)) => {
                    feed.failures.store(0, Ordering::Relaxed);
                    behind |= through < announced || !finished;
                }
                Err(err) => {
                    let failures = feed.failures.fetch_add(1, Ordering::Relaxed) + 1;
                    if failures >= FAILURES_BEFORE_RELEASE {
                        // Members read the store on their own again; a
                        // lasting fault reaches their clients from there.
                        tracing::warn!(error = %err, failures, "live feed read keeps failing; its subscribers go back to catching up");
                        lock(&feed.state).members.clear();
                    } else {
                        tracing::warn!(error = %err, failures, "live feed read failed; retrying at the next wake-up");
                    }
                }
            }
        }
        behind
    }

    /// Reads `feed` from its position towards the visible end, at most
    /// [`PAGES_PER_ROUND`] reads so one busy feed does not hold up the
    /// others; returns the transaction it reached and whether that is the
    /// end.
    async fn advance(&self, feed: &Feed) -> Result<(i64, bool), FeedError> {
        let mut cursor = lock(&feed.state).through.clone();
        for _ in 0..PAGES_PER_ROUND {
            let mut page = {
                let mut client = self.pool.get().await?;
                crate::metrics::FEED_READS.inc();
                read::page(&mut client, &feed.filter, &cursor, PAGE_EVENTS, None).await?
            };
            // Encoded once for all members, outside the lock.
            let encoded = read::into_wire(&mut page.events);
            let mut state = lock(&feed.state);
            if cursor.is_below(page.floor) {
                // Retention dropped rows after the feed's position: its
                // members find out (OUT_OF_RANGE) by reading on their own.
                state.members.clear();
                state.through = Position::after_transaction(page.floor);
                return Ok((page.floor, true));
            }
            if page.after > state.through || !page.events.is_empty() {
                let batch = LiveBatch {
                    events: page.events.into(),
                    encoded,
                    after: page.after.clone(),
                };
                state
                    .members
                    .retain(|member| match member.try_send(batch.clone()) {
                        Ok(()) => true,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            crate::metrics::SUBSCRIPTION_FELL_BEHIND.inc();
                            false
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => false,
                    });
                state.through = page.after.clone();
            }
            drop(state);
            cursor = page.after;
            if page.at_end {
                return Ok((cursor.seq, true));
            }
        }
        Ok((cursor.seq, false))
    }
}

/// Listens on the primary (`url`) for the relays' notifications and wakes
/// `tail` with each; reconnects with backoff (waking the feeds after each
/// reconnection, as notifications may have been missed), until `cancel`.
/// Notifications are not replicated, so this is the primary even when the
/// feeds read a replica.
pub async fn listen(
    tail: Arc<Tail>,
    url: strata_core::config::DatabaseUrl,
    timeout: Duration,
    cancel: CancellationToken,
) {
    use futures_util::StreamExt;
    let mut backoff =
        strata_core::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    while !cancel.is_cancelled() {
        let (client, mut connection) =
            match strata_pg::connect_raw(&url, LISTENER_APPLICATION_NAME, timeout).await {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "subscriptions: connect the listener; retrying");
                    sleep_or_cancel(backoff.next_delay(), &cancel).await;
                    continue;
                }
            };
        let (notified, mut notifications) = mpsc::unbounded_channel::<Option<i64>>();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(note)) => {
                        if notified.send(note.payload().parse().ok()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::debug!(error = %err, "subscriptions: listener connection ended");
                        break;
                    }
                }
            }
        });
        let statement = format!("LISTEN {STREAM_CHANNEL}");
        match tokio::time::timeout(timeout, client.batch_execute(&statement)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(error = %strata_pg::describe_pg_error(&err), "subscriptions: LISTEN failed; retrying");
                driver.abort();
                sleep_or_cancel(backoff.next_delay(), &cancel).await;
                continue;
            }
            Err(_) => {
                tracing::warn!("subscriptions: LISTEN timed out; retrying");
                driver.abort();
                sleep_or_cancel(backoff.next_delay(), &cancel).await;
                continue;
            }
        }
        backoff.reset();
        tail.wake(None);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    driver.abort();
                    return;
                }
                note = notifications.recv() => match note {
                    Some(seq) => {
                        let mut newest = seq;
                        while let Ok(more) = notifications.try_recv() {
                            newest = newest.max(more);
                        }
                        tail.wake(newest);
                    }
                    None => {
                        tracing::warn!("subscriptions: listener connection lost; reconnecting");
                        break;
                    }
                },
            }
        }
        driver.abort();
    }
}

async fn sleep_or_cancel(delay: Duration, cancel: &CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}
