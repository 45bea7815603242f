//! HTTP streaming: one chunked `application/x-ndjson` response that never ends by itself, one
//! envelope per line, for clients that read `XMLHttpRequest.responseText` as it grows
//! (readyState 3) or `fetch` bodies.

use axum::response::Response;
use bytes::Bytes;
use comet_core::{Event, Message, SubscriptionSet};

use super::envelope::{envelope, gap_object, presence_object, slot};
use super::request::{SubRequest, open, position_text};
use super::streaming::{Framer, streaming_body, streaming_response};
use crate::error::ApiError;
use crate::kind::Kind;
use crate::state::AppState;

/// 2 KiB of spaces and a newline: makes old buffering clients start rendering.
const PRELUDE_LEN: usize = 2048;

/// The shared `envelope\n` line of `msg`.
pub(crate) fn line(msg: &Message) -> Bytes {
    msg.encoded(slot::STREAM_LINE, |m| {
        let env = envelope(m);
        let mut out = Vec::with_capacity(env.len() + 1);
        out.extend_from_slice(&env);
        out.push(b'\n');
        Bytes::from(out)
    })
}

struct NdjsonFramer;

impl Framer for NdjsonFramer {
    fn frame(&mut self, events: &[Event], _set: &SubscriptionSet, out: &mut Vec<Bytes>) {
        for event in events {
            out.push(match event {
                Event::Message(msg) => line(msg),
                Event::Gap(gap) => Bytes::from(gap_object(gap) + "\n"),
                Event::Presence(notice) => {
                    let mut line = presence_object(notice, true);
                    line.push(b'\n');
                    Bytes::from(line)
                }
            });
        }
    }

    fn heartbeat(&self) -> Bytes {
        Bytes::from_static(b"\n")
    }

    fn notice(&mut self, name: &'static str, fields: &serde_json::Value) -> Bytes {
        let mut line = super::ordered::notice_object(name, fields);
        line.push(b'\n');
        Bytes::from(line)
    }

    fn closing(&mut self, set: &SubscriptionSet) -> Option<Bytes> {
        let mut out = b"{\"type\":\"reconnect\",\"cursor\":".to_vec();
        super::envelope::write_json_str(&mut out, &position_text(set));
        out.extend_from_slice(b"}\n");
        Some(Bytes::from(out))
    }
}

/// Handles an HTTP stream.
pub(crate) async fn handle(state: AppState, req: SubRequest) -> Result<Response, ApiError> {
    let set = open(&state, &req).await?;
    let first = if super::request::SubQuery::flag(req.query.prelude.as_ref()) {
        let mut p = vec![b' '; PRELUDE_LEN];
        p.push(b'\n');
        Some(Bytes::from(p))
    } else {
        None
    };
    let body = streaming_body(
        &state,
        Kind::Stream,
        set,
        NdjsonFramer,
        first,
        req.expires,
        req.user.as_deref(),
    );
    Ok(streaming_response("application/x-ndjson", body))
}
