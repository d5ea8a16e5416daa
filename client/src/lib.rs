//! A consumer of Strata subscriptions (`strata.v1.SubscriptionService`):
//! [`Subscriber`] for a stream of its own, [`GroupMember`] for a share of
//! a consumer group's.
//!
//! [`Subscriber::next`] returns the next batch of events in position
//! order with the resume token that stands after it. Connection losses,
//! an API process restarting, a silent stream (the server sends something
//! at least every second) and the server's transient refusals are retried
//! with backoff, resuming from the last token handed out, so the caller
//! sees every event after its start exactly once, in order. Refusals that
//! retrying cannot fix (a bad filter or token, a position no longer held,
//! a missing scope) end with [`ClientError::Refused`].
//!
//! Exactly once across restarts of the caller is the caller's part: store
//! each batch's `resume_token` together with the effects of its events
//! (same transaction), and start the next run from it.
//!
//! ```no_run
//! # async fn run() -> Result<(), strata_client::ClientError> {
//! use strata_client::{Start, Subscriber, SubscriptionFilter};
//! let filter = SubscriptionFilter { kinds: vec!["withdrawal".into()], ..Default::default() };
//! let mut subscriber = Subscriber::new("http://127.0.0.1:50051", "<JWT>", filter, Start::FromBeginning(true));
//! loop {
//!     let batch = subscriber.next().await?;
//!     for event in &batch.events { /* act on it */ }
//!     // store batch.resume_token with what was done
//! }
//! # }
//! ```

use std::time::Duration;

use strata_core::backoff::Backoff;
pub use strata_proto::v1::subscribe_request::Start;
use strata_proto::v1::subscription_service_client::SubscriptionServiceClient;
pub use strata_proto::v1::{StreamEvent, SubscriptionFilter};
use strata_proto::v1::{SubscribeRequest, SubscribeResponse, SubscriptionState};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

/// A stream that says nothing for this long is taken for dead (the server
/// sends a response at least every second).
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the subscription cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not a valid URI.
    #[error("invalid endpoint {endpoint:?}: {message}")]
    Endpoint {
        /// What was given.
        endpoint: String,
        /// Why it was refused.
        message: String,
    },
    /// The server refused in a way retrying cannot fix.
    #[error("subscription refused: {code:?} {reason}: {message}")]
    Refused {
        /// The gRPC code.
        code: Code,
        /// The stable `ErrorInfo.reason` (empty when the status had none).
        reason: String,
        /// The server's text.
        message: String,
    },
}

/// Events and where the subscription stands after them.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Events in position order (possibly none: a checkpoint).
    pub events: Vec<StreamEvent>,
    /// Resume here to receive what follows these events.
    pub resume_token: String,
    /// The subscription is at the live end.
    pub live: bool,
    /// The newest commit sequence this batch accounts for.
    pub commit_sequence: i64,
}

/// A subscription that reconnects and resumes on its own.
pub struct Subscriber {
    endpoint: String,
    bearer: String,
    filter: SubscriptionFilter,
    start: Start,
    /// The token after the last batch handed out.
    resume: Option<String>,
    stream: Option<Streaming<SubscribeResponse>>,
    backoff: Backoff,
    /// Streams opened so far.
    opened: u64,
}

impl Subscriber {
    /// A subscription of `filter` at `endpoint` (`http://host:port`) with
    /// `bearer` (a JWT), from `start`; nothing is sent before the first
    /// [`Self::next`].
    pub fn new(
        endpoint: impl Into<String>,
        bearer: impl Into<String>,
        filter: SubscriptionFilter,
        start: Start,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            bearer: bearer.into(),
            filter,
            start,
            resume: None,
            stream: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            opened: 0,
        }
    }

    /// The token after the last batch handed out (none before the first).
    pub fn resume_token(&self) -> Option<&str> {
        self.resume.as_deref()
    }

    /// How many times the subscription was re-established.
    pub fn reconnects(&self) -> u64 {
        self.opened.saturating_sub(1)
    }

    /// The next batch; waits for one, reconnecting as needed.
    pub async fn next(&mut self) -> Result<Batch, ClientError> {
        self.endpoint()?;
        loop {
            let stream = match self.stream.as_mut() {
                Some(stream) => stream,
                None => match self.open().await {
                    Ok(stream) => self.stream.insert(stream),
                    Err(err) => {
                        self.retry_or_fail(err).await?;
                        continue;
                    }
                },
            };
            let message = match tokio::time::timeout(SILENCE_TIMEOUT, stream.message()).await {
                Ok(Ok(Some(response))) => response,
                Ok(Ok(None)) => Err(Status::unavailable("the server ended the stream"))
                    .or_else(|status| self.dropped(status))?,
                Ok(Err(status)) => Err(status).or_else(|status| self.dropped(status))?,
                Err(_) => Err(Status::unavailable("the stream went silent"))
                    .or_else(|status| self.dropped(status))?,
            };
            if message.resume_token.is_empty() {
                continue;
            }
            self.backoff.reset();
            self.resume = Some(message.resume_token.clone());
            return Ok(Batch {
                events: message.events,
                resume_token: message.resume_token,
                live: message.state == SubscriptionState::Live as i32,
                commit_sequence: message.commit_sequence,
            });
        }
    }

    /// Forgets the stream after `status`; `Err` when it cannot be retried,
    /// else waits (backoff) and yields an empty response the loop skips.
    fn dropped(&mut self, status: Status) -> Result<SubscribeResponse, ClientError> {
        self.stream = None;
        if retryable(status.code()) {
            tracing::debug!(code = ?status.code(), message = status.message(), "subscription dropped; resuming");
            Ok(SubscribeResponse::default())
        } else {
            Err(refused(&status))
        }
    }

    async fn retry_or_fail(&mut self, status: Status) -> Result<(), ClientError> {
        if !retryable(status.code()) {
            return Err(refused(&status));
        }
        let delay = self.backoff.next_delay();
        tracing::debug!(code = ?status.code(), message = status.message(), ?delay, "subscribe failed; retrying");
        tokio::time::sleep(delay).await;
        Ok(())
    }

    async fn open(&mut self) -> Result<Streaming<SubscribeResponse>, Status> {
        let channel: Channel = self
            .endpoint()
            .map_err(|err| Status::invalid_argument(err.to_string()))?
            .connect()
            .await
            .map_err(|err| Status::unavailable(format!("connect: {err}")))?;
        let start = match &self.resume {
            Some(token) => Start::ResumeToken(token.clone()),
            None => self.start.clone(),
        };
        let mut request = tonic::Request::new(SubscribeRequest {
            filter: Some(self.filter.clone()),
            start: Some(start),
        });
        let bearer = format!("Bearer {}", self.bearer)
            .parse()
            .map_err(|_| Status::invalid_argument("the bearer token is not valid metadata"))?;
        request.metadata_mut().insert("authorization", bearer);
        let mut client = SubscriptionServiceClient::new(channel);
        self.opened += 1;
        Ok(client.subscribe(request).await?.into_inner())
    }

    fn endpoint(&self) -> Result<Endpoint, ClientError> {
        endpoint_of(&self.endpoint)
    }
}

/// The transport endpoint of `endpoint` (`http://host:port`).
fn endpoint_of(endpoint: &str) -> Result<Endpoint, ClientError> {
    Endpoint::from_shared(endpoint.to_string())
        .map(|parsed| {
            parsed
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
        })
        .map_err(|err| ClientError::Endpoint {
            endpoint: endpoint.to_string(),
            message: err.to_string(),
        })
}

/// Codes a later attempt can get past: the server or the network were
/// away, busy, or shutting down. INTERNAL is not among them: it is a
/// value the server cannot read, which a retry meets again.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Aborted
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
    )
}

fn refused(status: &Status) -> ClientError {
    use tonic_types::StatusExt;
    let reason = status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default();
    ClientError::Refused {
        code: status.code(),
        reason,
        message: status.message().to_string(),
    }
}

mod group;
pub use group::{GroupDelivery, GroupMember};
pub use strata_proto::v1::{GroupEvent, GroupJoin};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_codes_are_retried() {
        for code in [Code::Unavailable, Code::ResourceExhausted, Code::Cancelled] {
            assert!(retryable(code), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::OutOfRange,
            Code::PermissionDenied,
            Code::Unauthenticated,
        ] {
            assert!(!retryable(code), "{code:?}");
        }
    }

    #[tokio::test]
    async fn a_bad_endpoint_is_an_error_not_a_retry_loop() {
        let mut subscriber = Subscriber::new(
            "not a uri",
            "t",
            SubscriptionFilter::default(),
            Start::FromNow(true),
        );
        let err = subscriber.next().await.expect_err("bad endpoint");
        assert!(matches!(err, ClientError::Endpoint { .. }), "{err}");
    }
}
