//! `sse` transport: Server-Sent Events (HTML Standard §9.2 "Server-sent events"), decoded by
//! `sse-stream`, mapped to frames here (`docs/protocol.md` §sse).

use std::collections::VecDeque;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::StreamExt;
use sse_stream::{Sse, SseByteStream};
use url::Url;

use super::{Body, Conn, Frame, parse_object, send_head};
use crate::{Envelope, Error};

/// The event name of gap notices.
const GAP_EVENT: &str = "comet.gap";

/// Maps decoded event blocks to frames, keeping the event stream's "last event ID" state.
#[derive(Debug)]
pub(crate) struct SseMapper {
    /// `Some(channel)` in raw mode (one channel, no `?envelope=1`): `data` is the published text
    /// and the envelope is rebuilt from the block. `None`: `data` is the JSON envelope.
    raw_channel: Option<String>,
    /// The last `id:` seen. Kept across blocks as the HTML Standard's "last event ID buffer",
    /// so a block without `id:` still gets one.
    last_event_id: String,
}

impl SseMapper {
    pub(crate) fn new(raw_channel: Option<String>) -> Self {
        SseMapper {
            raw_channel,
            last_event_id: String::new(),
        }
    }

    /// Turns one event block into frames: a message or gap (when the block has data), then the
    /// block's `id:` as a [`Frame::Cursor`] (so the position moves only after delivery), and its
    /// `retry:` as a [`Frame::Retry`]. Event names starting with `comet.` other than
    /// `comet.gap` are reserved notices this client does not know: skipped.
    pub(crate) fn map(&mut self, sse: Sse, out: &mut VecDeque<Frame>) {
        if let Some(ms) = sse.retry {
            out.push_back(Frame::Retry(Duration::from_millis(ms)));
        }
        if let Some(id) = &sse.id {
            self.last_event_id.clone_from(id);
        }
        // HTML Standard: a block without data is not dispatched (only its id/retry count).
        if let Some(data) = sse.data {
            // An empty `event:` means the default too.
            let event = sse.event.filter(|e| !e.is_empty());
            match event.as_deref() {
                Some(GAP_EVENT) => out.push_back(Frame::Gap(data)),
                Some(e) if e.starts_with("comet.") => {}
                _ => out.push_back(match &self.raw_channel {
                    Some(channel) => Frame::Message(Envelope {
                        channel: channel.clone(),
                        id: self.last_event_id.clone(),
                        event: event.unwrap_or_else(crate::types::default_event),
                        data,
                        time: 0,
                    }),
                    None => match parse_object(data.as_bytes()) {
                        Ok(Some(frame @ (Frame::Message(_) | Frame::Gap(_)))) => frame,
                        Ok(_) => Frame::Error(Error::protocol(format!("SSE data is not an envelope: {data}"))),
                        Err(e) => Frame::Error(e),
                    },
                }),
            }
        }
        if let Some(id) = sse.id.filter(|id| !id.is_empty()) {
            out.push_back(Frame::Cursor(id));
        }
    }
}

/// An open SSE response.
pub(crate) struct SseConn {
    events: SseByteStream<Body>,
    mapper: SseMapper,
    pending: VecDeque<Frame>,
}

impl std::fmt::Debug for SseConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseConn")
            .field("mapper", &self.mapper)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl SseConn {
    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame, Error>>> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            match ready!(self.events.poll_next_unpin(cx)) {
                Some(Ok(sse)) => self.mapper.map(sse, &mut self.pending),
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                // A server shutdown ends the stream after a `retry:`; either way, reconnect.
                None => return Poll::Ready(Some(Err(Error::Ended))),
            }
        }
    }
}

/// Opens `url` (carrying `since`/`envelope` as needed) as an event stream, with
/// `Last-Event-ID: last_event_id` when given, and waits for the response head, at most
/// `head_timeout`. `raw_channel` selects raw mode (see [`SseMapper`]).
pub(crate) async fn connect(
    http: reqwest::Client,
    url: Url,
    last_event_id: Option<String>,
    raw_channel: Option<String>,
    head_timeout: Duration,
    idle: Option<Duration>,
) -> Result<Conn, Error> {
    let mut req = http
        .get(url)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .header(reqwest::header::CACHE_CONTROL, "no-cache");
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let resp = send_head(req, head_timeout).await?;
    Ok(Conn::Sse(SseConn {
        events: SseByteStream::new(Body::new(resp, idle)),
        mapper: SseMapper::new(raw_channel),
        pending: VecDeque::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_all(mapper: &mut SseMapper, blocks: Vec<Sse>) -> Vec<Frame> {
        let mut out = VecDeque::new();
        for b in blocks {
            mapper.map(b, &mut out);
        }
        out.into()
    }

    #[test]
    fn raw_mode_builds_envelope() {
        let mut m = SseMapper::new(Some("chat".into()));
        let frames = map_all(
            &mut m,
            vec![
                Sse::default().retry(3000),
                Sse::default().id("1d0c-7").data("line1\nline2"),
                Sse::default().id("1d0c-8").event("typing").data(""),
            ],
        );
        match &frames[..] {
            [
                Frame::Retry(r),
                Frame::Message(a),
                Frame::Cursor(ca),
                Frame::Message(b),
                Frame::Cursor(cb),
            ] => {
                assert_eq!(*r, Duration::from_secs(3));
                assert_eq!(
                    a,
                    &Envelope {
                        channel: "chat".into(),
                        id: "1d0c-7".into(),
                        event: "message".into(),
                        data: "line1\nline2".into(),
                        time: 0
                    }
                );
                assert_eq!(ca, "1d0c-7");
                assert_eq!((&*b.event, &*b.data, &*b.id), ("typing", "", "1d0c-8"));
                assert_eq!(cb, "1d0c-8");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn raw_mode_inherits_last_event_id() {
        let mut m = SseMapper::new(Some("c".into()));
        let frames = map_all(
            &mut m,
            vec![Sse::default().id("1-1").data("a"), Sse::default().data("b")],
        );
        assert!(matches!(&frames[2], Frame::Message(e) if e.id == "1-1" && e.data == "b"));
    }

    #[test]
    fn envelope_mode_parses_data_and_tracks_position() {
        let mut m = SseMapper::new(None);
        let frames = map_all(
            &mut m,
            vec![
                Sse::default()
                    .id("a=1-5,b=2-1")
                    .event("x")
                    .data(r#"{"channel":"a","id":"1-5","event":"x","data":"hi","time":99}"#),
            ],
        );
        match &frames[..] {
            [Frame::Message(e), Frame::Cursor(c)] => {
                assert_eq!(
                    (&*e.channel, &*e.id, &*e.event, &*e.data, e.time),
                    ("a", "1-5", "x", "hi", 99)
                );
                assert_eq!(c, "a=1-5,b=2-1");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gap_and_reserved_events() {
        let mut m = SseMapper::new(None);
        let frames = map_all(
            &mut m,
            vec![
                Sse::default().event("comet.gap").data("chat:b"),
                Sse::default().event("comet.future").data("whatever"),
                Sse::default().id("1-1"),
            ],
        );
        assert!(matches!(&frames[..], [Frame::Gap(c), Frame::Cursor(id)] if c == "chat:b" && id == "1-1"));
    }

    #[test]
    fn envelope_mode_bad_data_is_nonfatal_error() {
        let mut m = SseMapper::new(None);
        let frames = map_all(&mut m, vec![Sse::default().data("not json")]);
        assert!(matches!(&frames[..], [Frame::Error(Error::Protocol { .. })]));
    }

    #[tokio::test]
    async fn decoder_and_mapper_on_split_bytes() {
        let wire = "retry: 3000\n\n: heartbeat\n\nid: 1-1\nevent: e\ndata: a\ndata: b\r\n\r\nid: 1-2\rdata: c\r\r";
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = wire
            .as_bytes()
            .chunks(3)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let mut events = SseByteStream::new(futures_util::stream::iter(chunks));
        let mut m = SseMapper::new(Some("c".into()));
        let mut out = VecDeque::new();
        while let Some(sse) = events.next().await {
            m.map(sse.unwrap(), &mut out);
        }
        let messages: Vec<_> = out
            .into_iter()
            .filter_map(|f| match f {
                Frame::Message(e) => Some((e.id, e.event, e.data)),
                _ => None,
            })
            .collect();
        assert_eq!(
            messages,
            vec![
                ("1-1".into(), "e".into(), "a\nb".into()),
                ("1-2".into(), "message".into(), "c".into())
            ]
        );
    }
}
