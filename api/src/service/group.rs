//! JoinGroup: a consumer group member's stream. Admission, the join (the
//! group created or checked) and a subscription slot in the call; then a
//! task per member that every second beats its heartbeat, stores what was
//! acknowledged, renews, releases and claims buckets (`subscribe/group.rs`),
//! and in between reads its buckets' events from the store after each
//! wake-up, within its limit of unacknowledged events.
//!
//! Each held bucket has a delivered position (what was sent) and a list
//! of unacknowledged deliveries, each with the bucket's position before
//! it. The bucket's acknowledged position is the one before its oldest
//! unacknowledged delivery, or the delivered position when none is
//! waiting; that is what is stored, under the claim's generation. A read
//! starts at the lowest delivered position of the buckets held and skips,
//! per bucket, what was already sent, so a bucket claimed far behind the
//! others catches up without repeating theirs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_proto::v1::group_join::Start;
use strata_proto::v1::join_group_request::Request as GroupMessage;
use strata_proto::v1::{
    GroupAssignment, GroupEvent, JoinGroupRequest, JoinGroupResponse, SubscriptionState,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use uuid::Uuid;

use super::subscribe::{EndAudit, Ended, CHECKPOINT_INTERVAL, MAX_RESPONSE_BYTES};
use super::{HistoryService, ServiceParts};
use crate::admission::{Call, Held, InFlight, Need};
use crate::convert::to_proto;
use crate::error::{self, ApiError, InvalidArgument, PermissionDenied};
use crate::subscribe::group::{self, Ack, Existing, GroupSpec, MAX_UNACKNOWLEDGED};
use crate::subscribe::position::Position;
use crate::subscribe::read::{self, Split, StreamRow, PAGE_EVENTS};

/// The responses of a member's stream.
pub(super) type GroupStream = ReceiverStream<Result<JoinGroupResponse, Status>>;

type Sender = mpsc::Sender<Result<JoinGroupResponse, Status>>;

/// How often a member beats, stores acknowledgements and renews leases.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// The join must arrive within this.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses waiting for a slow client.
const RESPONSE_BUFFER: usize = 4;
/// How long a member waits between reads when the replica it reads has
/// not replayed a transaction a wake-up announced.
const REPLICA_WAIT: Duration = Duration::from_millis(5);
/// Acknowledgement messages waiting for the member's loop.
const ACK_MESSAGES: usize = 16;
/// Most ids in one acknowledgement (no member holds more deliveries).
const MAX_ACK_IDS: usize = MAX_UNACKNOWLEDGED as usize;

/// The most a member's departure (acknowledgements stored, buckets
/// freed) may take.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// `events` cut into runs of at most about [`MAX_RESPONSE_BYTES`] (payloads
/// and ids; at least one event each), one per response.
fn response_chunks(events: &[StreamRow]) -> impl Iterator<Item = &[StreamRow]> {
    let mut rest = events;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = 0;
        let mut bytes = 0;
        while end < rest.len() && (end == 0 || bytes < MAX_RESPONSE_BYTES) {
            let event = &rest[end].event;
            bytes += event.payload.len() + event.user_id.len() + event.kind.len() + 64;
            end += 1;
        }
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

fn invalid(field: &'static str, problem: &str) -> ApiError {
    InvalidArgument::Group {
        field,
        problem: problem.into(),
    }
    .into()
}

/// A member once its group is created or checked.
struct Joined {
    spec: GroupSpec,
    max_unacked: usize,
    _slot: Held,
}

impl HistoryService {
    pub(super) async fn join_group_call(
        &self,
        request: Request<Streaming<JoinGroupRequest>>,
    ) -> Result<Response<GroupStream>, Status> {
        let mut call = self
            .gate()
            .admit("JoinGroup", &request, "", Need::Subscribe)
            .await?;
        let mut inbound = request.into_inner();
        let joined = self.join(&mut call, &mut inbound).await;
        let result = match joined {
            Ok(joined) => Ok(self.spawn_member(&call, joined, inbound)),
            Err(err) => Err(err),
        };
        self.finish(call, result).await
    }

    /// Reads the join, checks it, takes a subscription slot, creates the
    /// group or checks that it is the same.
    async fn join(
        &self,
        call: &mut Call,
        inbound: &mut Streaming<JoinGroupRequest>,
    ) -> Result<Joined, ApiError> {
        if !call.target.is_empty() {
            return Err(PermissionDenied::GroupScope.into());
        }
        let first = tokio::time::timeout(JOIN_TIMEOUT, inbound.message()).await;
        let Ok(Ok(Some(JoinGroupRequest {
            request: Some(GroupMessage::Join(join)),
        }))) = first
        else {
            return Err(invalid(
                "join",
                "the first message must be a GroupJoin, sent within 10 s",
            ));
        };
        let (spec, max_unacked) = GroupSpec::parse(&join)?;
        call.target = format!("group {}", spec.name);
        let slot = self.permit(call, InFlight::Subscriptions)?;
        let at_micros = match &join.start {
            Some(Start::StartTime(at)) => crate::request::micros(at, "join.start_time")?,
            _ => 0,
        };
        let mut client = self.parts.streams.groups.get().await?;
        let mut existing = group::look_up(&mut client, &spec).await?;
        if existing == Existing::Missing {
            // The start matters only to the member that creates the group
            // (a member joining again later repeats its join).
            let bounds = read::start(&mut client, at_micros).await?;
            let start = match &join.start {
                Some(Start::FromBeginning(_)) => bounds.floor,
                Some(Start::StartTime(_)) => bounds
                    .before_time()
                    .map_err(|floor| ApiError::PositionNotRetained { floor })?,
                Some(Start::FromNow(_)) | None => bounds.head,
            };
            existing = group::create(&mut client, &spec, start).await?;
        }
        match existing {
            Existing::Same => {}
            Existing::Other => return Err(ApiError::GroupMismatch { group: spec.name }),
            Existing::Full => {
                return Err(ApiError::GroupLimit {
                    max: group::MAX_GROUPS,
                })
            }
            Existing::Missing => {
                return Err(crate::read_error::ReadError::Unexpected("the group's creation").into())
            }
        }
        Ok(Joined {
            spec,
            max_unacked,
            _slot: slot,
        })
    }

    fn spawn_member(
        &self,
        call: &Call,
        joined: Joined,
        mut inbound: Streaming<JoinGroupRequest>,
    ) -> GroupStream {
        let (sender, receiver) = mpsc::channel(RESPONSE_BUFFER);
        let (acks_in, mut acks) = mpsc::channel::<Result<Vec<u64>, ApiError>>(ACK_MESSAGES);
        let reader = tokio::spawn(async move {
            loop {
                let forwarded = match inbound.message().await {
                    Ok(Some(JoinGroupRequest {
                        request: Some(GroupMessage::Ack(ack)),
                    })) if ack.delivery_ids.len() > MAX_ACK_IDS => {
                        let _ = acks_in
                            .send(Err(invalid(
                                "ack.delivery_ids",
                                "at most 10,000 ids in one GroupAck",
                            )))
                            .await;
                        break;
                    }
                    Ok(Some(JoinGroupRequest {
                        request: Some(GroupMessage::Ack(ack)),
                    })) => acks_in.send(Ok(ack.delivery_ids)).await,
                    Ok(Some(_)) => {
                        let _ = acks_in
                            .send(Err(invalid(
                                "join",
                                "after the GroupJoin, only GroupAcks may follow",
                            )))
                            .await;
                        break;
                    }
                    // The client closed its side (it leaves) or went away.
                    Ok(None) | Err(_) => break,
                };
                if forwarded.is_err() {
                    break;
                }
            }
        });
        let parts = self.parts.clone();
        let audit = EndAudit {
            method: "JoinGroup",
            request_id: call.request_id.clone(),
            principal: call.principal.subject.clone(),
            target: call.target.clone(),
            peer: call.peer,
        };
        tokio::spawn(async move {
            let Joined {
                spec,
                max_unacked,
                _slot,
            } = joined;
            let group_label = [spec.name.clone()];
            crate::metrics::SUBSCRIBERS.inc();
            crate::metrics::GROUP_MEMBERS
                .with_label_values(&group_label)
                .inc();
            let base = first_id();
            let mut member = Member {
                parts: parts.clone(),
                spec,
                id: Uuid::new_v4(),
                label: audit.request_id.clone(),
                sender,
                held: BTreeMap::new(),
                deliveries: HashMap::new(),
                unacked: 0,
                max_unacked,
                // Ids of this stream only: an acknowledgement of an id from
                // an earlier stream (a client that kept them across a
                // reconnection) is refused, not taken for a new delivery.
                first_id: base,
                last_id: base,
                lease_ok_until: Instant::now(),
                assignment_changed: true,
                caught_up: false,
                last_sent: Instant::now(),
                delivered: 0,
            };
            let ended = member.run(&mut acks).await;
            reader.abort();
            member.leave().await;
            let (code, how) = match &ended {
                Ended::ClientGone => (Code::Ok, "member left".to_string()),
                Ended::Shutdown => (Code::Unavailable, "server shutting down".to_string()),
                Ended::Failed(err) => (err.code(), err.to_string()),
            };
            if let Ended::Failed(err) = ended {
                let status = error::status(err, &audit.request_id);
                let _ = member.sender.send(Err(status)).await;
            }
            let label = [member.label.as_str()];
            let _ = crate::metrics::SUBSCRIPTION_LAG_TRANSACTIONS.remove_label_values(&label);
            let _ = crate::metrics::SUBSCRIPTION_LAG_SECONDS.remove_label_values(&label);
            crate::metrics::GROUP_UNACKNOWLEDGED
                .with_label_values(&group_label)
                .sub(member.unacked as i64);
            let members = crate::metrics::GROUP_MEMBERS.with_label_values(&group_label);
            members.dec();
            if members.get() <= 0 {
                // The group's last member here: its series go (a group
                // name is the client's, and groups come and go).
                crate::metrics::forget_group(&group_label[0]);
            }
            crate::metrics::SUBSCRIBERS.dec();
            audit.write(&parts, code, &how, member.delivered).await;
        });
        ReceiverStream::new(receiver)
    }
}

/// A bucket a member holds.
struct Bucket {
    /// The claim's generation.
    generation: i64,
    /// Everything of the bucket up to here was sent.
    delivered: Position,
    /// The acknowledged position last stored.
    stored: Position,
    /// Unacknowledged deliveries with events of this bucket, oldest
    /// first, each with the bucket's delivered position before it.
    pending: VecDeque<(u64, Position)>,
    /// Assigned to another member: no longer read; freed at the next
    /// heartbeat, after the acknowledgements that came meanwhile.
    releasing: bool,
}

impl Bucket {
    /// Everything of the bucket up to here was acknowledged.
    fn acknowledged(&self) -> &Position {
        self.pending
            .front()
            .map_or(&self.delivered, |(_, before)| before)
    }
}

/// A delivery not yet acknowledged.
struct Delivery {
    buckets: Vec<i32>,
    events: usize,
    sent_at: Instant,
}

/// One member's loop.
struct Member {
    parts: Arc<ServiceParts>,
    spec: GroupSpec,
    id: Uuid,
    label: String,
    sender: Sender,
    held: BTreeMap<i32, Bucket>,
    deliveries: HashMap<u64, Delivery>,
    unacked: usize,
    max_unacked: usize,
    /// Delivery ids of this stream are above this.
    first_id: u64,
    last_id: u64,
    /// Deliver only before this: the leases were renewed with a margin.
    lease_ok_until: Instant,
    assignment_changed: bool,
    caught_up: bool,
    last_sent: Instant,
    delivered: u64,
}

impl Member {
    fn session_timeout(&self) -> Duration {
        self.parts.settings.group_session_timeout
    }

    async fn run(&mut self, acks: &mut mpsc::Receiver<Result<Vec<u64>, ApiError>>) -> Ended {
        let cancel = self.parts.cancel.clone();
        let mut wakes = self.parts.streams.tail.wakes();
        let mut next_beat = Instant::now();
        let mut failing_since: Option<Instant> = None;
        loop {
            if cancel.is_cancelled() {
                return Ended::Shutdown;
            }
            if Instant::now() >= next_beat {
                next_beat = Instant::now() + HEARTBEAT;
                match self.heartbeat().await {
                    Ok(()) => failing_since = None,
                    Err(err) => {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        tracing::warn!(error = %err, group = %self.spec.name, "group heartbeat failed; retrying");
                        if since.elapsed() >= self.session_timeout() {
                            return Ended::Failed(err);
                        }
                    }
                }
                if let Some(overdue) = self.deliveries.values().map(|d| d.sent_at).min() {
                    let timeout = self.parts.settings.group_ack_timeout;
                    if overdue.elapsed() > timeout {
                        return Ended::Failed(ApiError::AckTimeout { timeout });
                    }
                }
                // The poll fallback for a missed wake-up.
                self.caught_up = false;
            }
            if self.assignment_changed || self.last_sent.elapsed() >= CHECKPOINT_INTERVAL {
                if let Err(ended) = self.checkpoint().await {
                    return ended;
                }
            }
            loop {
                match acks.try_recv() {
                    Ok(Ok(ids)) => {
                        if let Err(err) = self.acknowledge(&ids) {
                            return Ended::Failed(err);
                        }
                    }
                    Ok(Err(err)) => return Ended::Failed(err),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return Ended::ClientGone,
                }
            }
            if self.can_read() {
                if let Err(ended) = self.read().await {
                    return ended;
                }
                continue;
            }
            let checkpoint = self.last_sent + CHECKPOINT_INTERVAL;
            let until = tokio::time::Instant::from_std(next_beat.min(checkpoint));
            tokio::select! {
                // Acknowledgements already received go first, so a client
                // that drops after acknowledging gets no avoidable repeats.
                biased;
                _ = cancel.cancelled() => return Ended::Shutdown,
                message = acks.recv() => match message {
                    Some(Ok(ids)) => {
                        if let Err(err) = self.acknowledge(&ids) {
                            return Ended::Failed(err);
                        }
                    }
                    Some(Err(err)) => return Ended::Failed(err),
                    None => return Ended::ClientGone,
                },
                _ = self.sender.closed() => return Ended::ClientGone,
                changed = wakes.changed() => {
                    if changed.is_err() {
                        return Ended::Shutdown;
                    }
                    self.caught_up = false;
                }
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Buckets read now: held and not being released.
    fn active(&self) -> Vec<i32> {
        self.held
            .iter()
            .filter(|(_, bucket)| !bucket.releasing)
            .map(|(number, _)| *number)
            .collect()
    }

    fn can_read(&self) -> bool {
        !self.caught_up
            && self.unacked < self.max_unacked
            && Instant::now() < self.lease_ok_until
            && self.held.values().any(|bucket| !bucket.releasing)
    }

    /// One read of the active buckets from the lowest delivered position;
    /// sends what each bucket has not had yet, at most the room left
    /// under the unacknowledged limit, and only while the leases hold.
    async fn read(&mut self) -> Result<(), Ended> {
        let active = self.active();
        let Some(cursor) = active
            .iter()
            .filter_map(|number| self.held.get(number))
            .map(|bucket| bucket.delivered.clone())
            .min()
        else {
            self.caught_up = true;
            return Ok(());
        };
        let split = Split {
            key_path: self.spec.key_path.as_deref(),
            buckets: self.spec.buckets,
            owned: &active,
        };
        let lease_end = tokio::time::Instant::from_std(self.lease_ok_until);
        let read = async {
            let mut client = self.parts.streams.pool.get().await?;
            // Cut off by the lease mid-statement: closed, not reused.
            client.set_reusable(false);
            let page = read::page(
                &mut client,
                &self.spec.filter,
                &cursor,
                PAGE_EVENTS,
                Some(split),
            )
            .await
            .map_err(ApiError::from)?;
            client.set_reusable(true);
            Ok::<_, ApiError>(page)
        };
        let page = match tokio::time::timeout_at(lease_end, read).await {
            Ok(page) => page.map_err(Ended::Failed)?,
            // The leases may have lapsed meanwhile: renew first.
            Err(_) => return Ok(()),
        };
        if Instant::now() >= self.lease_ok_until {
            return Ok(());
        }
        if cursor.is_below(page.floor) {
            return Err(Ended::Failed(ApiError::PositionNotRetained {
                floor: page.floor,
            }));
        }
        let mut fresh: Vec<StreamRow> = page
            .events
            .into_iter()
            .filter(|row| {
                row.bucket
                    .and_then(|number| self.held.get(&number))
                    .is_some_and(|bucket| !bucket.releasing && row.position() > bucket.delivered)
            })
            .collect();
        // Every row of the active buckets up to `through` is sent now or
        // was before.
        let room = self.max_unacked.saturating_sub(self.unacked);
        let (through, full) = if fresh.len() > room {
            fresh.truncate(room);
            let last = fresh
                .last()
                .map_or_else(|| cursor.clone(), StreamRow::position);
            (last, true)
        } else {
            (page.after.clone(), false)
        };
        let announced = self.parts.streams.tail.announced();
        let at_end = page.at_end && page.after.seq >= announced && !full;
        self.caught_up = at_end;
        if !self.deliver(&fresh).await? {
            self.caught_up = false;
            return Ok(());
        }
        for number in &active {
            if let Some(bucket) = self.held.get_mut(number) {
                if through > bucket.delivered {
                    bucket.delivered = through.clone();
                }
            }
        }
        crate::metrics::SUBSCRIPTION_LAG_TRANSACTIONS
            .with_label_values(&[&self.label])
            .set(announced.saturating_sub(through.seq).max(0));
        let seconds = match fresh.last() {
            Some(row) if !at_end => {
                let now = chrono::Utc::now().timestamp_micros();
                now.saturating_sub(row.committed_at).max(0) as f64 / 1e6
            }
            _ => 0.0,
        };
        crate::metrics::SUBSCRIPTION_LAG_SECONDS
            .with_label_values(&[&self.label])
            .set(seconds);
        if page.at_end && page.after.seq < announced {
            // A replica behind what the primary announced.
            tokio::time::sleep(REPLICA_WAIT).await;
        }
        Ok(())
    }

    fn state(&self) -> SubscriptionState {
        if self.caught_up {
            SubscriptionState::Live
        } else {
            SubscriptionState::CatchingUp
        }
    }

    fn assignment(&mut self) -> Option<GroupAssignment> {
        std::mem::take(&mut self.assignment_changed).then(|| GroupAssignment {
            buckets: self
                .active()
                .into_iter()
                .filter_map(|number| u32::try_from(number).ok())
                .collect(),
        })
    }

    /// A response without events: where the member stands, its
    /// assignment when it changed.
    /// Bounded like deliveries: a client that stopped reading must not
    /// hold up the heartbeat (the next try is at the next turn of the
    /// loop).
    async fn checkpoint(&mut self) -> Result<(), Ended> {
        let assignment = self.assignment();
        let carried = assignment.is_some();
        let response = JoinGroupResponse {
            events: Vec::new(),
            delivery_id: 0,
            assignment,
            state: self.state() as i32,
            member_id: self.id.to_string(),
        };
        let until =
            tokio::time::Instant::from_std(self.lease_ok_until.max(Instant::now() + HEARTBEAT));
        match tokio::time::timeout_at(until, self.sender.send(Ok(response))).await {
            Ok(Ok(())) => {
                self.last_sent = Instant::now();
                Ok(())
            }
            Ok(Err(_)) => Err(Ended::ClientGone),
            Err(_) => {
                self.assignment_changed |= carried;
                Ok(())
            }
        }
    }

    /// Sends `rows` in responses of bounded size, each a delivery to
    /// acknowledge, recording each once it is out. False when the leases
    /// ran out before all went (the client is not reading): the rest is
    /// read again after the next renewal.
    async fn deliver(&mut self, rows: &[StreamRow]) -> Result<bool, Ended> {
        for chunk in response_chunks(rows) {
            let delivery_id = self.last_id + 1;
            let assignment = self.assignment();
            let carried = assignment.is_some();
            let response = JoinGroupResponse {
                events: chunk
                    .iter()
                    .map(|row| GroupEvent {
                        event: Some(to_proto(&row.event)),
                        commit_sequence: row.seq,
                        bucket: row
                            .bucket
                            .and_then(|number| u32::try_from(number).ok())
                            .unwrap_or_default(),
                    })
                    .collect(),
                delivery_id,
                assignment,
                state: self.state() as i32,
                member_id: self.id.to_string(),
            };
            let lease_end = tokio::time::Instant::from_std(self.lease_ok_until);
            match tokio::time::timeout_at(lease_end, self.sender.send(Ok(response))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Ended::ClientGone),
                Err(_) => {
                    // Not sent: the assignment goes with the next response.
                    self.assignment_changed |= carried;
                    return Ok(false);
                }
            }
            self.last_id = delivery_id;
            let mut touched = Vec::new();
            for row in chunk {
                let Some(number) = row.bucket else { continue };
                let Some(bucket) = self.held.get_mut(&number) else {
                    continue;
                };
                if !touched.contains(&number) {
                    bucket
                        .pending
                        .push_back((delivery_id, bucket.delivered.clone()));
                    touched.push(number);
                }
                bucket.delivered = row.position();
            }
            self.deliveries.insert(
                delivery_id,
                Delivery {
                    buckets: touched,
                    events: chunk.len(),
                    sent_at: Instant::now(),
                },
            );
            self.unacked += chunk.len();
            crate::metrics::GROUP_UNACKNOWLEDGED
                .with_label_values(&[&self.spec.name])
                .add(chunk.len() as i64);
            self.last_sent = Instant::now();
            self.delivered += chunk.len() as u64;
            crate::metrics::SUBSCRIPTION_EVENTS
                .with_label_values(&["group"])
                .inc_by(chunk.len() as u64);
        }
        Ok(true)
    }

    /// The client processed deliveries `ids`.
    fn acknowledge(&mut self, ids: &[u64]) -> Result<(), ApiError> {
        for &id in ids {
            if id <= self.first_id || id > self.last_id {
                return Err(invalid(
                    "ack.delivery_ids",
                    "a delivery id this stream never sent",
                ));
            }
            let Some(delivery) = self.deliveries.remove(&id) else {
                continue;
            };
            self.unacked = self.unacked.saturating_sub(delivery.events);
            crate::metrics::GROUP_UNACKNOWLEDGED
                .with_label_values(&[&self.spec.name])
                .sub(delivery.events as i64);
            for number in delivery.buckets {
                if let Some(bucket) = self.held.get_mut(&number) {
                    // Ids grow along each bucket's list.
                    if let Ok(at) = bucket
                        .pending
                        .binary_search_by_key(&id, |(pending, _)| *pending)
                    {
                        bucket.pending.remove(at);
                    }
                }
            }
        }
        Ok(())
    }

    /// Acknowledged positions of held buckets that moved since stored.
    fn acks_to_store(&self) -> Vec<Ack> {
        self.held
            .iter()
            .filter(|(_, bucket)| *bucket.acknowledged() > bucket.stored)
            .map(|(number, bucket)| Ack {
                bucket: *number,
                generation: bucket.generation,
                position: bucket.acknowledged().clone(),
            })
            .collect()
    }

    /// Stores acknowledgements; forgets buckets the member lost.
    async fn store_acks(&mut self, client: &mut crate::pool::PooledClient) -> Result<(), ApiError> {
        let acks = self.acks_to_store();
        let stored = group::store_acks(client, &self.spec.name, self.id, &acks).await?;
        for ack in acks {
            if stored.contains(&ack.bucket) {
                if let Some(bucket) = self.held.get_mut(&ack.bucket) {
                    bucket.stored = ack.position;
                }
            } else {
                self.lose(ack.bucket);
            }
        }
        Ok(())
    }

    fn lose(&mut self, number: i32) {
        if self.held.remove(&number).is_some() {
            tracing::info!(group = %self.spec.name, member = %self.id, bucket = number, "bucket taken over by another member");
            self.assignment_changed = true;
        }
    }

    /// Heartbeat, acknowledgements, releases, lease renewal, claims.
    async fn heartbeat(&mut self) -> Result<(), ApiError> {
        let timeout = self.session_timeout();
        let started = Instant::now();
        let mut client = self.parts.streams.groups.get().await?;
        let name = self.spec.name.clone();
        let members = group::heartbeat(&mut client, &name, self.id, timeout).await?;
        self.store_acks(&mut client).await?;
        // A bucket assigned elsewhere goes once what was sent from it is
        // acknowledged (or the ack timeout ends this member), so its next
        // holder does not repeat what this one is still processing.
        let releasing: Vec<(i32, i64)> = self
            .held
            .iter()
            .filter(|(_, bucket)| bucket.releasing && bucket.pending.is_empty())
            .map(|(number, bucket)| (*number, bucket.generation))
            .collect();
        group::release(&mut client, &name, self.id, &releasing).await?;
        for (number, _) in &releasing {
            self.held.remove(number);
        }
        let held: Vec<(i32, i64)> = self
            .held
            .iter()
            .map(|(number, bucket)| (*number, bucket.generation))
            .collect();
        let renewed = group::renew(&mut client, &name, self.id, &held, timeout).await?;
        for (number, generation) in held {
            if !renewed.contains(&(number, generation)) {
                self.lose(number);
            }
        }
        self.lease_ok_until = started + timeout.saturating_sub(HEARTBEAT);
        let assigned = group::assigned(&members, self.id, self.spec.buckets);
        for (number, bucket) in self.held.iter_mut() {
            let keep = assigned.contains(number);
            if bucket.releasing == keep {
                // Assigned elsewhere now, or back to this member.
                bucket.releasing = !keep;
                self.assignment_changed = true;
            }
        }
        let wanted: Vec<i32> = assigned
            .into_iter()
            .filter(|number| !self.held.contains_key(number))
            .collect();
        let claimed = group::claim(&mut client, &name, self.id, &wanted, timeout).await?;
        if !claimed.is_empty() {
            crate::metrics::GROUP_BUCKET_CLAIMS
                .with_label_values(&[&name])
                .inc_by(claimed.len() as u64);
            self.assignment_changed = true;
            self.caught_up = false;
        }
        for claim in claimed {
            self.held.insert(
                claim.bucket,
                Bucket {
                    generation: claim.generation,
                    delivered: claim.acked.clone(),
                    stored: claim.acked,
                    pending: VecDeque::new(),
                    releasing: false,
                },
            );
        }
        if let Some(oldest) = self.held.values().map(|bucket| bucket.stored.seq).min() {
            let announced = self.parts.streams.tail.announced();
            crate::metrics::GROUP_LAG_TRANSACTIONS
                .with_label_values(&[&name])
                .set(announced.saturating_sub(oldest).max(0));
        }
        Ok(())
    }

    /// Stores what was acknowledged, frees every bucket and leaves, so
    /// that the others take the buckets at their next heartbeat.
    async fn leave(&mut self) {
        let work = async {
            let mut client = self.parts.streams.groups.get().await?;
            self.store_acks(&mut client).await?;
            let all: Vec<(i32, i64)> = self
                .held
                .iter()
                .map(|(number, bucket)| (*number, bucket.generation))
                .collect();
            group::release(&mut client, &self.spec.name, self.id, &all).await?;
            group::leave(&mut client, &self.spec.name, self.id).await?;
            Ok::<(), ApiError>(())
        };
        match tokio::time::timeout(LEAVE_TIMEOUT, work).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(error = %err, group = %self.spec.name, "group member could not leave cleanly; its leases lapse instead")
            }
            Err(_) => {
                tracing::warn!(group = %self.spec.name, "group member's leave timed out; its leases lapse instead")
            }
        }
        self.held.clear();
    }
}

/// A random start for a stream's delivery ids (below 2^62, so they never
/// run out).
fn first_id() -> u64 {
    Uuid::new_v4().as_u64_pair().0 >> 2
}
