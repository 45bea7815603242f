//! Server-Sent Events (HTML Standard §9.2 "Server-sent events"): a `text/event-stream` response
//! read by `EventSource`.
//!
//! - The stream starts with `retry:` (the reconnection time) and an `id:` with the current
//!   position and no data. Such a block dispatches nothing but sets the last event ID (HTML
//!   Standard §9.2.6, "dispatch the event", step 1 before the empty-data check), so a browser that
//!   reconnects before any message arrived still resumes from where it connected.
//! - One channel: `id:` is the message's cursor and `data:` the publisher's raw text, so `e.data`
//!   is exactly what was published. Several channels (or `?envelope=1`): `data:` is the JSON
//!   envelope and `id:` the position of the whole subscription.
//! - Data is split into one `data:` line per line; CR, LF and CRLF all end a line (§9.2.5).

use std::time::Duration;

use axum::response::Response;
use bytes::Bytes;
use comet_core::{Event, Message, Position, SubscriptionSet};

use super::envelope::{envelope, presence_object, slot};
use super::request::{SubRequest, open, position_text};
use super::streaming::{Framer, streaming_body, streaming_response};
use crate::error::ApiError;
use crate::kind::Kind;
use crate::state::AppState;

/// Appends one `data: ` line per line of `data`.
pub(crate) fn write_data_lines(out: &mut Vec<u8>, data: &str) {
    let bytes = data.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' | b'\n' => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&bytes[start..i]);
                out.push(b'\n');
                if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&bytes[start..]);
    out.push(b'\n');
}

fn write_event_line(out: &mut Vec<u8>, msg: &Message) {
    if let Some(event) = &msg.event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_str().as_bytes());
        out.push(b'\n');
    }
}

/// One-channel event, raw data: `id`, `event`, `data` lines, blank line.
pub(crate) fn event_raw(msg: &Message) -> Bytes {
    msg.encoded(slot::SSE_RAW, |m| {
        let mut out = Vec::with_capacity(48 + m.data_bytes().len());
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(m.cursor.to_string().as_bytes());
        out.push(b'\n');
        write_event_line(&mut out, m);
        write_data_lines(&mut out, m.data());
        out.push(b'\n');
        Bytes::from(out)
    })
}

/// One-channel event with the envelope as data. No `event:` line: the envelope carries the name,
/// and a named event would be invisible to `EventSource.onmessage`.
pub(crate) fn event_envelope(msg: &Message) -> Bytes {
    msg.encoded(slot::SSE_ENVELOPE, |m| {
        let mut out = b"id: ".to_vec();
        out.extend_from_slice(m.cursor.to_string().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&envelope(m));
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    })
}

/// Several-channel event without its `id:` line and final blank line (both per subscriber). No
/// `event:` line, as in [`event_envelope`].
pub(crate) fn event_multi(msg: &Message) -> Bytes {
    msg.encoded(slot::SSE_MULTI, |m| {
        let mut out = Vec::new();
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&envelope(m));
        out.push(b'\n');
        Bytes::from(out)
    })
}

struct SseFramer {
    /// Several channels: ids are positions, tracked here message by message.
    multi: Option<Position>,
    envelope: bool,
    retry_ms: u64,
}

impl SseFramer {
    fn id_block(position: &Position) -> Bytes {
        Bytes::from(format!("id: {position}\n\n"))
    }
}

impl Framer for SseFramer {
    fn frame(&mut self, events: &[Event], _set: &SubscriptionSet, out: &mut Vec<Bytes>) {
        for event in events {
            match (event, &mut self.multi) {
                (Event::Message(msg), None) => out.push(if self.envelope {
                    event_envelope(msg)
                } else {
                    event_raw(msg)
                }),
                (Event::Message(msg), Some(position)) => {
                    position.set(&msg.channel, msg.cursor);
                    out.push(event_multi(msg));
                    out.push(Self::id_block(position));
                }
                (Event::Gap(gap), position) => {
                    let id = match position {
                        Some(position) => {
                            position.set(&gap.channel, gap.resumed_at);
                            position.to_string()
                        }
                        None => gap.resumed_at.to_string(),
                    };
                    out.push(Bytes::from(format!(
                        "event: comet.gap\ndata: {}\nid: {id}\n\n",
                        gap.channel
                    )));
                }
                // No `id:`: not history, so the client's last event ID stays where it was.
                (Event::Presence(notice), _) => {
                    let name: &[u8] = if notice.joined {
                        b"event: comet.join\ndata: "
                    } else {
                        b"event: comet.leave\ndata: "
                    };
                    let mut bytes = name.to_vec();
                    bytes.extend_from_slice(&presence_object(notice, false));
                    bytes.extend_from_slice(b"\n\n");
                    out.push(Bytes::from(bytes));
                }
            }
        }
    }

    fn heartbeat(&self) -> Bytes {
        Bytes::from_static(b": heartbeat\n\n")
    }

    /// `event: comet.<name>` with the fields as `data:`, and no `id:` (not history).
    fn notice(&mut self, name: &'static str, fields: &serde_json::Value) -> Bytes {
        Bytes::from(format!("event: comet.{name}\ndata: {fields}\n\n"))
    }

    fn closing(&mut self, _set: &SubscriptionSet) -> Option<Bytes> {
        Some(Bytes::from(format!(
            ": server shutting down\nretry: {}\n\n",
            self.retry_ms
        )))
    }
}

/// The Server-Sent Events section of the configuration (made by `Config::sse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseConfig {
    /// `sse_retry_ms`: the reconnection time sent as `retry:` (HTML Standard §9.2.6), in
    /// whole milliseconds.
    pub retry: Duration,
}

/// Handles an SSE subscription.
pub(crate) async fn handle(state: AppState, req: SubRequest) -> Result<Response, ApiError> {
    let set = open(&state, &req).await?;
    let multi = set.len() > 1;
    // The start position is taken before any gap notice is read: the gap event carries its own id.
    let retry_ms = u64::try_from(state.config.sse().retry.as_millis()).unwrap_or(u64::MAX);
    let first = Bytes::from(format!("retry: {retry_ms}\nid: {}\n\n", position_text(&set)));
    let framer = SseFramer {
        multi: multi.then(|| set.position()),
        envelope: multi || super::request::SubQuery::flag(req.query.envelope.as_ref()),
        retry_ms,
    };
    let body = streaming_body(
        &state,
        Kind::Sse,
        set,
        framer,
        Some(first),
        req.expires,
        req.user.as_deref(),
    );
    Ok(streaming_response("text/event-stream; charset=utf-8", body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use comet_core::{ChannelName, Cursor, EventName};
    use proptest::prelude::*;

    /// An independent event-stream parser following HTML Standard §9.2.6 closely enough to be
    /// the oracle: returns (event type, data, last event id) per dispatched event.
    fn parse(stream: &str) -> Vec<(String, String, String)> {
        let mut events = Vec::new();
        let (mut data, mut event, mut last_id) = (String::new(), String::new(), String::new());
        let normalized = stream.replace("\r\n", "\n").replace('\r', "\n");
        for line in normalized.split('\n') {
            if line.is_empty() {
                if !data.is_empty() {
                    data.pop();
                    let ty = if event.is_empty() {
                        "message".to_owned()
                    } else {
                        event.clone()
                    };
                    events.push((ty, std::mem::take(&mut data), last_id.clone()));
                }
                data.clear();
                event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "event" => event = value.to_owned(),
                "id" if !value.contains('\0') => last_id = value.to_owned(),
                _ => {}
            }
        }
        events
    }

    fn msg(data: &str, event: Option<&str>) -> Message {
        Message::new(
            ChannelName::new("c").unwrap(),
            Cursor::new(0xa, 7),
            event.map(|e| EventName::new(e).unwrap()),
            data.as_bytes(),
            1,
        )
        .unwrap()
    }

    #[test]
    fn line_endings_all_split() {
        let mut out = Vec::new();
        write_data_lines(&mut out, "a\rb\nc\r\nd");
        assert_eq!(out, b"data: a\ndata: b\ndata: c\ndata: d\n");
        let mut out = Vec::new();
        write_data_lines(&mut out, "");
        assert_eq!(out, b"data: \n");
    }

    #[test]
    fn raw_event_bytes() {
        assert_eq!(
            &event_raw(&msg("hi", Some("say")))[..],
            b"id: a-7\nevent: say\ndata: hi\n\n"
        );
        assert_eq!(&event_raw(&msg(" x", None))[..], b"id: a-7\ndata:  x\n\n");
    }

    proptest! {
        /// Whatever the text, a real event-stream parser gets back the same data, event and id;
        /// line endings normalise to LF, as the HTML Standard says they must.
        #[test]
        fn encoder_round_trips_through_an_independent_parser(data in "(\\PC|\r|\n|\r\n|:| )*", named in any::<bool>()) {
            let m = msg(&data, named.then_some("update"));
            let stream = format!("retry: 3000\nid: a-0\n\n{}", std::str::from_utf8(&event_raw(&m)).unwrap());
            let events = parse(&stream);
            let expected = data.replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(events, vec![(if named { "update".to_owned() } else { "message".to_owned() }, expected, "a-7".to_owned())]);
        }
    }
}
