//! A member of a consumer group (`JoinGroup`).
//!
//! [`GroupMember::next`] returns the next delivery of the member's
//! buckets; [`GroupMember::ack`] acknowledges it once processed. Lost
//! connections, API restarts, silent streams and transient refusals are
//! retried with backoff by joining again: the group goes on from its
//! acknowledged positions, so what was delivered but not acknowledged
//! comes again (at least once). Process deliveries idempotently, keyed
//! by event id.
//!
//! ```no_run
//! # async fn run() -> Result<(), strata_client::ClientError> {
//! use strata_client::{GroupJoin, GroupMember, SubscriptionFilter};
//! let join = GroupJoin {
//!     group: "fraud-scoring".into(),
//!     filter: Some(SubscriptionFilter { kinds: vec!["withdrawal".into()], ..Default::default() }),
//!     ..Default::default()
//! };
//! let mut member = GroupMember::new("http://127.0.0.1:50051", "<JWT>", join);
//! loop {
//!     let delivery = member.next().await?;
//!     for event in &delivery.events { /* act on it, idempotently */ }
//!     member.ack(&delivery).await;
//! }
//! # }
//! ```

use std::time::Duration;

use strata_core::backoff::Backoff;
use strata_proto::v1::join_group_request::Request as GroupMessage;
use strata_proto::v1::subscription_service_client::SubscriptionServiceClient;
use strata_proto::v1::{
    GroupAck, GroupEvent, GroupJoin, JoinGroupRequest, JoinGroupResponse, SubscriptionState,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::{refused, retryable, ClientError};

/// A member's stream that says nothing for this long is taken for dead.
/// Longer than a subscription's: the server sends nothing while a
/// heartbeat or a read is in progress, each bounded by the lease (keep
/// `api.group_session_timeout` at 10 s or less).
pub const GROUP_SILENCE_TIMEOUT: Duration = Duration::from_secs(15);

/// Acknowledgements waiting to go out on one connection.
const ACK_BUFFER: usize = 1024;

/// Events for this member and how to acknowledge them.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDelivery {
    /// Events of the member's buckets (in position order per bucket).
    pub events: Vec<GroupEvent>,
    /// The id to acknowledge.
    pub delivery_id: u64,
    /// The member is at the live end.
    pub live: bool,
    /// Which connection it came on (an acknowledgement on a later one
    /// would name another delivery).
    connection: u64,
}

/// A consumer group member that joins again after failures.
pub struct GroupMember {
    endpoint: String,
    bearer: String,
    join: GroupJoin,
    stream: Option<(Streaming<JoinGroupResponse>, mpsc::Sender<JoinGroupRequest>)>,
    backoff: Backoff,
    opened: u64,
    buckets: Vec<u32>,
    member_id: String,
}

impl GroupMember {
    /// A member of `join.group` at `endpoint` with `bearer` (a JWT with
    /// the `activity:subscribe` scope); nothing is sent before the first
    /// [`Self::next`].
    pub fn new(endpoint: impl Into<String>, bearer: impl Into<String>, join: GroupJoin) -> Self {
        Self {
            endpoint: endpoint.into(),
            bearer: bearer.into(),
            join,
            stream: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            opened: 0,
            buckets: Vec::new(),
            member_id: String::new(),
        }
    }

    /// The buckets this member holds, as the server last said.
    pub fn buckets(&self) -> &[u32] {
        &self.buckets
    }

    /// The member's id in the group on its current connection.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// How many times the member joined again.
    pub fn rejoins(&self) -> u64 {
        self.opened.saturating_sub(1)
    }

    /// The next delivery with events; waits for one, joining again as
    /// needed.
    pub async fn next(&mut self) -> Result<GroupDelivery, ClientError> {
        let endpoint = super::endpoint_of(&self.endpoint)?;
        loop {
            let (stream, _) = match self.stream.as_mut() {
                Some(open) => open,
                None => match self.open(endpoint.clone()).await {
                    Ok(open) => self.stream.insert(open),
                    Err(status) => {
                        self.retry_or_fail(status).await?;
                        continue;
                    }
                },
            };
            let status = match tokio::time::timeout(GROUP_SILENCE_TIMEOUT, stream.message()).await {
                Ok(Ok(Some(response))) => {
                    self.backoff.reset();
                    if let Some(assignment) = response.assignment {
                        self.buckets = assignment.buckets;
                    }
                    self.member_id = response.member_id;
                    if response.events.is_empty() {
                        continue;
                    }
                    return Ok(GroupDelivery {
                        events: response.events,
                        delivery_id: response.delivery_id,
                        live: response.state == SubscriptionState::Live as i32,
                        connection: self.opened,
                    });
                }
                Ok(Ok(None)) => Status::unavailable("the server ended the stream"),
                Ok(Err(status)) => status,
                Err(_) => Status::unavailable("the stream went silent"),
            };
            self.stream = None;
            self.retry_or_fail(status).await?;
        }
    }

    /// Acknowledges `delivery` (processed). One from an earlier
    /// connection is dropped: the server delivers those events again.
    pub async fn ack(&mut self, delivery: &GroupDelivery) {
        if delivery.connection != self.opened {
            return;
        }
        if let Some((_, acks)) = &self.stream {
            let ack = JoinGroupRequest {
                request: Some(GroupMessage::Ack(GroupAck {
                    delivery_ids: vec![delivery.delivery_id],
                })),
            };
            // A closed stream is noticed by the next `next`.
            let _ = acks.send(ack).await;
        }
    }

    /// Leaves the group: closes the request stream and waits (a few
    /// seconds at most) for the server to store the acknowledgements and
    /// end the stream.
    pub async fn leave(mut self) {
        if let Some((mut stream, acks)) = self.stream.take() {
            drop(acks);
            let _ = tokio::time::timeout(GROUP_SILENCE_TIMEOUT, async {
                while let Ok(Some(_)) = stream.message().await {}
            })
            .await;
        }
    }

    async fn retry_or_fail(&mut self, status: Status) -> Result<(), ClientError> {
        let refusal = refused(&status);
        // RESOURCE_EXHAUSTED, but no retry makes room for another group.
        let lasting =
            matches!(&refusal, ClientError::Refused { reason, .. } if reason == "GROUP_LIMIT");
        if !retryable(status.code()) || lasting {
            return Err(refusal);
        }
        let delay = self.backoff.next_delay();
        tracing::debug!(code = ?status.code(), message = status.message(), ?delay, "group member dropped; joining again");
        tokio::time::sleep(delay).await;
        Ok(())
    }

    async fn open(
        &mut self,
        endpoint: tonic::transport::Endpoint,
    ) -> Result<(Streaming<JoinGroupResponse>, mpsc::Sender<JoinGroupRequest>), Status> {
        let channel = endpoint
            .connect()
            .await
            .map_err(|err| Status::unavailable(format!("connect: {err}")))?;
        let (acks, outgoing) = mpsc::channel(ACK_BUFFER);
        acks.send(JoinGroupRequest {
            request: Some(GroupMessage::Join(self.join.clone())),
        })
        .await
        .map_err(|_| Status::internal("the request stream closed"))?;
        let mut request =
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(outgoing));
        let bearer = format!("Bearer {}", self.bearer)
            .parse()
            .map_err(|_| Status::invalid_argument("the bearer token is not valid metadata"))?;
        request.metadata_mut().insert("authorization", bearer);
        let mut client = SubscriptionServiceClient::new(channel);
        let stream = client.join_group(request).await?.into_inner();
        self.opened += 1;
        Ok((stream, acks))
    }
}
