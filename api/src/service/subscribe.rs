//! Subscribe: admission and the start position in the call (so refusals
//! and bad tokens are answered and audited like any call), then a task per
//! subscription that catches up from the store, joins the live feed of its
//! filter, falls back to catching up when it falls behind, sends a resume
//! token at least every second, and audits its end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_proto::subscription_server::subscription_service_server::SubscriptionService as SubscriptionApi;
use strata_proto::v1::subscribe_request::Start;
use strata_proto::v1::{SubscribeRequest, SubscriptionState};
use strata_proto::wire::{EncodedEvents, EncodedSubscribeResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use super::{HistoryService, ServiceParts};
use crate::admission::{Call, Held, InFlight, Need};
use crate::audit::{AuditDecision, AuditRecord};
use crate::error::{self, ApiError, InvalidArgument, PermissionDenied};
use crate::read_error::ReadError;
use crate::subscribe::position::{self, Position};
use crate::subscribe::read::{self, StreamRow, PAGE_EVENTS};
use crate::subscribe::Filter;
use tracing::Instrument;

/// A resume token goes out at least this often, events or not.
pub(super) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// A response holds events of at most about this many bytes (payloads
/// and ids); a larger page goes out in several responses.
pub(super) const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Responses waiting for a slow client before the subscription stops
/// reading (catch-up) or falls behind its live feed.
const RESPONSE_BUFFER: usize = 4;

type Sender = mpsc::Sender<Result<EncodedSubscribeResponse, Status>>;

/// A subscription once admitted and positioned.
struct Subscription {
    filter: Filter,
    digest: [u8; 32],
    cursor: Position,
    /// Its place among the open subscriptions, held for the stream's life.
    _slot: Held,
}

/// How a subscription (or a group membership) ended.
pub(super) enum Ended {
    /// The client cancelled or went away.
    ClientGone,
    /// The server shuts down.
    Shutdown,
    /// Reading failed; the client got this status.
    Failed(ApiError),
}

#[tonic::async_trait]
impl SubscriptionApi for HistoryService {
    type SubscribeStream = ReceiverStream<Result<EncodedSubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut call = self
            .gate()
            .admit("Subscribe", &request, "", Need::Subscribe)
            .await?;
        let started = self.start_subscription(&mut call, request.get_ref()).await;
        let result = match started {
            Ok(subscription) => Ok(self.spawn_subscription(&call, subscription)),
            Err(err) => Err(err),
        };
        self.finish(call, result).await
    }

    type JoinGroupStream = super::group::GroupStream;

    async fn join_group(
        &self,
        request: Request<tonic::Streaming<strata_proto::v1::JoinGroupRequest>>,
    ) -> Result<Response<Self::JoinGroupStream>, Status> {
        self.join_group_call(request).await
    }
}

impl HistoryService {
    /// Checks the filter against the token, verifies the start, takes a
    /// subscription slot. The audit target becomes the filter's users.
    async fn start_subscription(
        &self,
        call: &mut Call,
        request: &SubscribeRequest,
    ) -> Result<Subscription, ApiError> {
        let mut filter = Filter::parse(request.filter.as_ref())?;
        if !call.target.is_empty() {
            // A customer token: its own user only.
            let own = std::slice::from_ref(&call.target);
            match &filter.users {
                None => filter.users = Some(own.to_vec()),
                Some(users) if users.as_slice() == own => {}
                Some(_) => return Err(PermissionDenied::OtherUser.into()),
            }
        } else if let Some(users) = &filter.users {
            call.target = crate::request::truncate(&users.join(","), 256).to_string();
        }
        let digest = filter.digest();
        let slot = self.permit(call, InFlight::Subscriptions)?;
        let at_micros = match &request.start {
            Some(Start::StartTime(at)) => crate::request::micros(at, "start_time")?,
            _ => 0,
        };
        let bounds = {
            let mut client = self.parts.streams.pool.get().await?;
            read::start(&mut client, at_micros).await?
        };
        let cursor = match &request.start {
            Some(Start::ResumeToken(token)) => {
                position::verify(&self.parts.tokens, token, &digest)?
            }
            Some(Start::FromBeginning(_)) => Position::after_transaction(bounds.floor),
            Some(Start::StartTime(_)) => Position::after_transaction(
                bounds
                    .before_time()
                    .map_err(|floor| ApiError::PositionNotRetained { floor })?,
            ),
            Some(Start::FromNow(_)) | None => Position::after_transaction(bounds.head),
        };
        if cursor.is_below(bounds.floor) {
            return Err(ApiError::PositionNotRetained {
                floor: bounds.floor,
            });
        }
        if cursor.seq > bounds.head {
            // Signed by us, so only a token of another stream (a restored
            // or replaced hot store) can be ahead of the head.
            return Err(InvalidArgument::ResumeTokenInvalid(
                crate::page_token::PageTokenError::Malformed,
            )
            .into());
        }
        Ok(Subscription {
            filter,
            digest,
            cursor,
            _slot: slot,
        })
    }

    fn spawn_subscription(
        &self,
        call: &Call,
        subscription: Subscription,
    ) -> ReceiverStream<Result<EncodedSubscribeResponse, Status>> {
        let (sender, receiver) = mpsc::channel(RESPONSE_BUFFER);
        let parts = self.parts.clone();
        let audit = EndAudit {
            method: "Subscribe",
            request_id: call.request_id.clone(),
            principal: call.principal.subject.clone(),
            target: call.target.clone(),
            peer: call.peer,
        };
        tokio::spawn(async move {
            crate::metrics::SUBSCRIBERS.inc();
            let label = audit.request_id.clone();
            let mut run = Run {
                parts: parts.clone(),
                sender,
                delivered: 0,
                last_sent: Instant::now(),
                label: label.clone(),
            };
            let ended = run.stream(subscription).await;
            let (code, how) = match &ended {
                Ended::ClientGone => (Code::Ok, "client closed".to_string()),
                Ended::Shutdown => (Code::Unavailable, "server shutting down".to_string()),
                Ended::Failed(err) => (err.code(), err.to_string()),
            };
            if let Ended::Failed(err) = ended {
                // Mid-stream: the status ends the stream; the call's
                // request id went out with its response headers.
                let status = error::status(err, &audit.request_id);
                let _ = run.sender.send(Err(status)).await;
            }
            let _ = crate::metrics::SUBSCRIPTION_LAG_TRANSACTIONS.remove_label_values(&[&label]);
            let _ = crate::metrics::SUBSCRIPTION_LAG_SECONDS.remove_label_values(&[&label]);
            crate::metrics::SUBSCRIBERS.dec();
            audit.write(&parts, code, &how, run.delivered).await;
        });
        ReceiverStream::new(receiver)
    }
}

/// Rows to send with their wire form, made once: per catch-up page, or
/// per live batch for all the feed's members.
#[derive(Clone, Copy)]
struct Outgoing<'a> {
    rows: &'a [StreamRow],
    /// Holds the events of `rows`, the first at index `first`.
    encoded: Option<&'a EncodedEvents>,
    first: usize,
}

impl<'a> Outgoing<'a> {
    /// No events (a checkpoint, or the LIVE marker).
    const NONE: Outgoing<'static> = Outgoing {
        rows: &[],
        encoded: None,
        first: 0,
    };

    fn new(rows: &'a [StreamRow], encoded: &'a EncodedEvents, first: usize) -> Self {
        debug_assert!(
            first + rows.len() <= encoded.len(),
            "rows beyond their encoding"
        );
        Self {
            rows,
            encoded: Some(encoded),
            first,
        }
    }

    /// Where the response that starts at `rows[start]` ends: as many
    /// events as fit in [`MAX_RESPONSE_BYTES`] encoded, at least one.
    fn chunk_end(&self, start: usize) -> usize {
        let Some(encoded) = self.encoded else {
            return self.rows.len();
        };
        let mut end = (start + 1).min(self.rows.len());
        let offset = self.first;
        while end < self.rows.len()
            && encoded.size(offset + start..offset + end + 1) <= MAX_RESPONSE_BYTES
        {
            end += 1;
        }
        end
    }

    /// The encoded events of `rows[range]`.
    fn encoded(&self, range: std::ops::Range<usize>) -> bytes::Bytes {
        self.encoded.map_or_else(bytes::Bytes::new, |encoded| {
            encoded.slice(self.first + range.start..self.first + range.end)
        })
    }
}

/// A catch-up page with its events encoded.
struct EncodedPage {
    page: read::Page,
    encoded: EncodedEvents,
}

/// A catch-up read running on its own task, so that it overlaps with
/// sending the page before it; aborted when dropped unfinished.
struct ReadAhead(Option<tokio::task::JoinHandle<Result<EncodedPage, ApiError>>>);

impl ReadAhead {
    fn start(pool: &crate::pool::Pool, filter: &Filter, cursor: &Position) -> Self {
        let (pool, filter, cursor) = (pool.clone(), filter.clone(), cursor.clone());
        let read = async move {
            let mut client = pool.get().await?;
            // Aborted mid-statement (the subscription ended), the
            // connection is closed rather than reused.
            client.set_reusable(false);
            let mut page = read::page(&mut client, &filter, &cursor, PAGE_EVENTS, None).await?;
            client.set_reusable(true);
            drop(client);
            // Encoded here too, while the page before goes out.
            let encoded = read::into_wire(&mut page.events);
            Ok(EncodedPage { page, encoded })
        };
        Self(Some(tokio::spawn(
            read.instrument(tracing::Span::current()),
        )))
    }

    async fn finish(mut self) -> Result<EncodedPage, ApiError> {
        let Some(handle) = self.0.as_mut() else {
            return Err(ReadError::Unexpected("a catch-up read awaited twice").into());
        };
        let result = handle.await;
        self.0 = None;
        result.map_err(|err| ApiError::internal("a catch-up read", err))?
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

/// The audit record of a subscription's (or a membership's) end.
pub(super) struct EndAudit {
    pub(super) method: &'static str,
    pub(super) request_id: String,
    pub(super) principal: String,
    pub(super) target: String,
    pub(super) peer: Option<std::net::IpAddr>,
}

impl EndAudit {
    pub(super) async fn write(&self, parts: &ServiceParts, code: Code, how: &str, delivered: u64) {
        let detail = format!("subscription ended ({how}); {delivered} events delivered");
        let record = AuditRecord {
            request_id: &self.request_id,
            principal: &self.principal,
            target: &self.target,
            method: self.method,
            decision: AuditDecision::of_admitted(code),
            code,
            detail: &detail,
            peer: self.peer,
        };
        crate::audit::write(&parts.pool, &record).await;
    }
}

/// One subscription's loop.
struct Run {
    parts: Arc<ServiceParts>,
    sender: Sender,
    delivered: u64,
    last_sent: Instant,
    label: String,
}

impl Run {
    async fn stream(&mut self, subscription: Subscription) -> Ended {
        let Subscription {
            filter,
            digest,
            mut cursor,
            _slot,
        } = subscription;
        let cancel = self.parts.cancel.clone();
        let streams = self.parts.streams.clone();
        loop {
            // Catch up from the store, reading the next page while this
            // one goes out (at most one read ahead).
            let mut ahead: Option<ReadAhead> = None;
            loop {
                if cancel.is_cancelled() {
                    return Ended::Shutdown;
                }
                let read = ahead
                    .take()
                    .unwrap_or_else(|| ReadAhead::start(&streams.pool, &filter, &cursor));
                let EncodedPage { page, encoded } = tokio::select! {
                    _ = cancel.cancelled() => return Ended::Shutdown,
                    _ = self.sender.closed() => return Ended::ClientGone,
                    page = read.finish() => match page {
                        Ok(page) => page,
                        Err(err) => return Ended::Failed(err),
                    },
                };
                if cursor.is_below(page.floor) {
                    return Ended::Failed(ApiError::PositionNotRetained { floor: page.floor });
                }
                if !page.at_end {
                    ahead = Some(ReadAhead::start(&streams.pool, &filter, &page.after));
                }
                self.observe_lag(&cursor, page.events.last(), page.at_end);
                let due = self.last_sent.elapsed() >= CHECKPOINT_INTERVAL;
                if !page.events.is_empty() || due {
                    let state = SubscriptionState::CatchingUp;
                    let out = Outgoing::new(&page.events, &encoded, 0);
                    if !self
                        .send(out, &page.after, state, &digest, "catch_up")
                        .await
                    {
                        return Ended::ClientGone;
                    }
                }
                cursor = page.after;
                if page.at_end {
                    break;
                }
            }
            // Join the live feed; if it is already past us, catch up more.
            let mut live = match streams.tail.join(&filter, digest, &cursor) {
                Ok(live) => live,
                Err(_) => continue,
            };
            if !self
                .send(
                    Outgoing::NONE,
                    &cursor,
                    SubscriptionState::Live,
                    &digest,
                    "live",
                )
                .await
            {
                return Ended::ClientGone;
            }
            self.observe_lag(&cursor, None, true);
            loop {
                let checkpoint =
                    tokio::time::Instant::from_std(self.last_sent + CHECKPOINT_INTERVAL);
                tokio::select! {
                    _ = cancel.cancelled() => return Ended::Shutdown,
                    _ = self.sender.closed() => return Ended::ClientGone,
                    batch = live.recv() => {
                        let Some(batch) = batch else {
                            // Dropped by the feed (fell behind, or the
                            // floor passed it): read the store again.
                            break;
                        };
                        // Rows come in position order: the new ones are a suffix.
                        let from = batch.events.partition_point(|row| !row.is_after(&cursor));
                        let fresh = Outgoing::new(&batch.events[from..], &batch.encoded, from);
                        let after = batch.after.clone().max(cursor.clone());
                        let due = self.last_sent.elapsed() >= CHECKPOINT_INTERVAL;
                        if (!fresh.rows.is_empty() || due)
                            && !self.send(fresh, &after, SubscriptionState::Live, &digest, "live").await
                        {
                            return Ended::ClientGone;
                        }
                        cursor = after;
                    }
                    _ = tokio::time::sleep_until(checkpoint) => {
                        if !self.send(Outgoing::NONE, &cursor, SubscriptionState::Live, &digest, "live").await {
                            return Ended::ClientGone;
                        }
                    }
                }
            }
        }
    }

    /// Sends `out`'s events (split into responses of at most
    /// [`MAX_RESPONSE_BYTES`] of events, or one larger event), the last
    /// response carrying the token of `after`. False when the client is
    /// gone.
    async fn send(
        &mut self,
        out: Outgoing<'_>,
        after: &Position,
        state: SubscriptionState,
        digest: &[u8; 32],
        mode: &'static str,
    ) -> bool {
        let events = out.rows;
        let mut start = 0;
        loop {
            let end = out.chunk_end(start);
            let chunk = &events[start..end];
            let position = if end == events.len() {
                after.clone()
            } else {
                chunk
                    .last()
                    .map_or_else(|| after.clone(), StreamRow::position)
            };
            let response = EncodedSubscribeResponse {
                events: out.encoded(start..end),
                resume_token: position::issue(&self.parts.tokens, &position, digest),
                state: state as i32,
                commit_sequence: position.seq,
            };
            if self.sender.send(Ok(response)).await.is_err() {
                return false;
            }
            self.last_sent = Instant::now();
            self.delivered += chunk.len() as u64;
            crate::metrics::SUBSCRIPTION_EVENTS
                .with_label_values(&[mode])
                .inc_by(chunk.len() as u64);
            start = end;
            if start >= events.len() {
                return true;
            }
        }
    }

    /// The lag gauges: transactions announced after `cursor`, and while
    /// behind, the age of the newest commit delivered.
    fn observe_lag(&self, cursor: &Position, newest: Option<&StreamRow>, at_end: bool) {
        let announced = self.parts.streams.tail.announced();
        crate::metrics::SUBSCRIPTION_LAG_TRANSACTIONS
            .with_label_values(&[&self.label])
            .set(announced.saturating_sub(cursor.seq).max(0));
        let seconds = match newest {
            Some(row) if !at_end => {
                let now = chrono::Utc::now().timestamp_micros();
                (now.saturating_sub(row.committed_at)).max(0) as f64 / 1e6
            }
            _ => 0.0,
        };
        crate::metrics::SUBSCRIPTION_LAG_SECONDS
            .with_label_values(&[&self.label])
            .set(seconds);
    }
}
