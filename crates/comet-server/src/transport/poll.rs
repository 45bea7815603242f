//! Short polling: `GET /sub/{channels}?transport=poll` answers at once with what is new since
//! the client's cursor (maybe nothing) and the cursor to send next time.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use comet_core::{Event, SubscriptionSet};

use super::envelope::{envelope, presence_object, write_json_str};
use super::request::{SubRequest, open, position_text};
use crate::error::ApiError;
use crate::state::AppState;

/// Encodes a poll answer: `{"messages":[envelope,…],"cursor":"…"}` plus
/// `"gap":true,"gaps":[…]` when any channel had a gap, and `"more":true` when the answer is a full
/// batch and the client should ask again at once (docs/protocol.md "poll").
pub(crate) fn encode_answer(events: &[Event], cursor: &str, more: bool) -> Bytes {
    answer_pieces(events, cursor, more, None).concat().into()
}

/// [`encode_answer`] in pieces: the messages' shared envelopes as they are, between the
/// answer's own bytes.
pub(crate) fn answer_pieces(events: &[Event], cursor: &str, more: bool, client: Option<&str>) -> Vec<Bytes> {
    let mut pieces = Vec::with_capacity(2 + events.len() * 2);
    pieces.push(Bytes::from_static(b"{\"messages\":["));
    let mut first = true;
    let mut gaps = Vec::new();
    let mut presence = Vec::new();
    for event in events {
        match event {
            Event::Message(msg) => {
                if !first {
                    pieces.push(Bytes::from_static(b","));
                }
                first = false;
                pieces.push(envelope(msg));
            }
            Event::Gap(gap) => gaps.push(gap.channel.as_str()),
            Event::Presence(notice) => presence.push(notice),
        }
    }
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"],\"cursor\":");
    write_json_str(&mut out, cursor);
    if !gaps.is_empty() {
        out.extend_from_slice(b",\"gap\":true,\"gaps\":[");
        for (i, channel) in gaps.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_str(&mut out, channel);
        }
        out.push(b']');
    }
    if !presence.is_empty() {
        // Joins and leaves seen while a long poll was held (docs/protocol.md "Presence").
        out.extend_from_slice(b",\"presence\":[");
        for (i, notice) in presence.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&presence_object(notice, true));
        }
        out.push(b']');
    }
    if more {
        out.extend_from_slice(b",\"more\":true");
    }
    if let Some(client) = client {
        // The poller's id in presence: sent back as `?client=` it stays the same member.
        out.extend_from_slice(b",\"client\":");
        write_json_str(&mut out, client);
    }
    out.push(b'}');
    pieces.push(Bytes::from(out));
    pieces
}

/// Reads what is ready from `set` (at most `max`) and answers it.
pub(crate) fn answer_ready(set: &mut SubscriptionSet, max: usize, client: Option<&str>) -> Response {
    let mut events = Vec::new();
    set.try_read(&mut events, max);
    json_answer(&events, set, max, client)
}

/// The JSON answer for `events` read from `set` (at most `max` were asked for), telling a
/// poller in presence channels its `client` id.
pub(crate) fn json_answer(events: &[Event], set: &SubscriptionSet, max: usize, client: Option<&str>) -> Response {
    // "more" when the batch is full by count, or was cut by `max_batch_bytes` with more to read.
    let more = events.len() >= max || set.members().iter().any(|m| m.has_unread());
    let body = super::streaming::pieces_body(answer_pieces(events, &position_text(set), more, client));
    (
        [
            (http::header::CONTENT_TYPE, "application/json"),
            (http::header::CACHE_CONTROL, "no-cache, no-store"),
        ],
        body,
    )
        .into_response()
}

/// Handles a short poll.
pub(crate) async fn handle(state: AppState, req: SubRequest) -> Result<Response, ApiError> {
    // Dropped after the set: channels nobody publishes to are forgotten at once.
    let _forget = super::request::ForgetUnused(&state, &req.channels);
    let mut set = open(&state, &req).await?;
    let _guard = state.metrics.subscriber(crate::kind::Kind::Poll);
    Ok(answer_ready(&mut set, state.config.max_batch, req.poller.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use comet_core::{ChannelName, Cursor, Gap, Message};
    use std::sync::Arc;

    #[test]
    fn answer_shapes() {
        let empty: serde_json::Value = serde_json::from_slice(&encode_answer(&[], "ab-1", false)).unwrap();
        assert_eq!(empty, serde_json::json!({"messages": [], "cursor": "ab-1"}));
        let c = ChannelName::new("c").unwrap();
        let m = Arc::new(Message::new(c.clone(), Cursor::new(0xab, 2), None, b"x", 5).unwrap());
        let events = [
            Event::Gap(Gap {
                channel: c,
                after: None,
                resumed_at: Cursor::new(0xab, 1),
            }),
            Event::Message(Arc::clone(&m)),
            Event::Message(m),
        ];
        let v: serde_json::Value = serde_json::from_slice(&encode_answer(&events, "ab-2", true)).unwrap();
        assert_eq!(v["more"], true);
        assert_eq!(v["messages"].as_array().unwrap().len(), 2);
        assert_eq!(v["messages"][0]["id"], "ab-2");
        assert_eq!(v["gap"], true);
        assert_eq!(v["gaps"], serde_json::json!(["c"]));
    }
}
