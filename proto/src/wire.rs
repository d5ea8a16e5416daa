//! `SubscribeResponse` with its events encoded ahead of time.
//!
//! A live feed hands the same events to every subscriber of its filter.
//! Built as prost messages, each subscriber's response would copy every
//! event (five strings each) and encode it again; with a hundred
//! subscribers that was most of the API's work per event. Here the feed
//! encodes each event once ([`EncodedEvents`]) and every response carries
//! a cheap slice of those bytes. The bytes on the wire are those of
//! [`crate::v1::SubscribeResponse`]: clients decode it with the generated
//! types ([`crate::v1::subscription_service_client`]); the API serves it
//! through [`crate::subscription_server`].

use std::ops::Range;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::v1::StreamEvent;

/// Field number of `SubscribeResponse.events`.
const EVENTS_FIELD: u32 = 1;

/// Events in their wire form, each a complete `SubscribeResponse.events`
/// entry (key, length, message), encoded once and shared.
#[derive(Debug, Clone, Default)]
pub struct EncodedEvents {
    bytes: Bytes,
    /// Where each event's entry ends in `bytes`.
    ends: Arc<[usize]>,
}

impl EncodedEvents {
    /// Encodes `events`, in order.
    pub fn encode<'a>(events: impl IntoIterator<Item = &'a StreamEvent>) -> Self {
        let mut bytes = BytesMut::new();
        let mut ends = Vec::new();
        for event in events {
            encoding::message::encode(EVENTS_FIELD, event, &mut bytes);
            ends.push(bytes.len());
        }
        Self {
            bytes: bytes.freeze(),
            ends: ends.into(),
        }
    }

    /// How many events.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The encoded size of the events in `range` (clamped as in
    /// [`Self::slice`]).
    pub fn size(&self, range: Range<usize>) -> usize {
        let (start, end) = self.clamp(range);
        self.offset(end) - self.offset(start)
    }

    fn clamp(&self, range: Range<usize>) -> (usize, usize) {
        let end = range.end.min(self.ends.len());
        (range.start.min(end), end)
    }

    /// Where the entry of event `index` starts.
    fn offset(&self, index: usize) -> usize {
        match index {
            0 => 0,
            _ => self.ends[index - 1],
        }
    }

    /// The entries of the events in `range` (clamped to what there is),
    /// without copying.
    pub fn slice(&self, range: Range<usize>) -> Bytes {
        let (start, end) = self.clamp(range);
        self.bytes.slice(self.offset(start)..self.offset(end))
    }
}

/// A `SubscribeResponse` whose events are already encoded (see the
/// module's documentation). Encodes to the same bytes as the generated
/// message with the same content.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedSubscribeResponse {
    /// Complete `events` entries (from [`EncodedEvents::slice`]).
    pub events: Bytes,
    /// As `SubscribeResponse.resume_token`.
    pub resume_token: String,
    /// As `SubscribeResponse.state`.
    pub state: i32,
    /// As `SubscribeResponse.commit_sequence`.
    pub commit_sequence: i64,
}

impl Message for EncodedSubscribeResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.events);
        if !self.resume_token.is_empty() {
            encoding::string::encode(2, &self.resume_token, buf);
        }
        if self.state != 0 {
            encoding::int32::encode(3, &self.state, buf);
        }
        if self.commit_sequence != 0 {
            encoding::int64::encode(4, &self.commit_sequence, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            EVENTS_FIELD => {
                // Kept encoded: checked as an event, stored as its entry
                // (copies what came before: decoding is for tests only).
                let mut event = StreamEvent::default();
                encoding::message::merge(wire_type, &mut event, buf, ctx)?;
                let mut events = BytesMut::from(&self.events[..]);
                encoding::message::encode(EVENTS_FIELD, &event, &mut events);
                self.events = events.freeze();
                Ok(())
            }
            2 => encoding::string::merge(wire_type, &mut self.resume_token, buf, ctx),
            3 => encoding::int32::merge(wire_type, &mut self.state, buf, ctx),
            4 => encoding::int64::merge(wire_type, &mut self.commit_sequence, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let mut len = self.events.len();
        if !self.resume_token.is_empty() {
            len += encoding::string::encoded_len(2, &self.resume_token);
        }
        if self.state != 0 {
            len += encoding::int32::encoded_len(3, &self.state);
        }
        if self.commit_sequence != 0 {
            len += encoding::int64::encoded_len(4, &self.commit_sequence);
        }
        len
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Event, SubscribeResponse};

    fn event(n: i64) -> StreamEvent {
        StreamEvent {
            event: Some(Event {
                event_id: format!("00000000-0000-0000-0000-{n:012}"),
                user_id: format!("user-{n}"),
                kind: "login".into(),
                event_time: Some(prost_types::Timestamp {
                    seconds: n,
                    nanos: 1000,
                }),
                source: "auth".into(),
                payload_json: format!("{{\"n\":{n}}}"),
                ingest_time: None,
            }),
            commit_sequence: n,
        }
    }

    #[test]
    fn encodes_as_the_generated_message_does() {
        let events: Vec<StreamEvent> = (1..=5).map(event).collect();
        let encoded = EncodedEvents::encode(&events);
        assert_eq!(encoded.len(), 5);
        for (range, token, state, seq) in [
            (0..5, "t", 2, 9),
            (1..3, "", 0, 0),
            (4..4, "checkpoint", 1, 7),
            (3..99, "x", 2, -1),
        ] {
            let response = EncodedSubscribeResponse {
                events: encoded.slice(range.clone()),
                resume_token: token.into(),
                state,
                commit_sequence: seq,
            };
            let end = range.end.min(events.len());
            let expected = SubscribeResponse {
                events: events[range.start.min(end)..end].to_vec(),
                resume_token: token.into(),
                state,
                commit_sequence: seq,
            };
            let bytes = response.encode_to_vec();
            assert_eq!(encoded.size(range.clone()), response.events.len());
            assert_eq!(bytes.len(), response.encoded_len());
            assert_eq!(
                SubscribeResponse::decode(bytes.as_slice()),
                Ok(expected.clone())
            );
            assert_eq!(bytes, expected.encode_to_vec());
            // And back.
            assert_eq!(
                EncodedSubscribeResponse::decode(bytes.as_slice()),
                Ok(response)
            );
        }
    }
}
