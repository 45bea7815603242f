//! The six transports: choosing one ([`Transport`]), and for each a parser from the wire to
//! [`Frame`]s plus a connection type. The subscription state machine on top
//! (`subscription.rs`) is the same for all of them.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use tokio::time::{Instant, Sleep};

use crate::{ApiError, Envelope, Error};

pub(crate) mod iframe;
pub(crate) mod ndjson;
pub(crate) mod poll;
pub(crate) mod sse;
pub(crate) mod ws;

/// How a [`Subscription`](crate::Subscription) receives messages (`docs/protocol.md`
/// §Subscribe). All transports yield the same [`Event`](crate::Event)s.
///
/// Parsed from `poll`, `longpoll`, `stream`, `iframe`, `sse`, `sse-raw` and `ws` (or
/// `websocket`) with [`FromStr`], taking the defaults below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// Short polling: one `?transport=poll` request per `interval`, carrying the answer's
    /// `cursor` as the next `since`; polls again at once after a full batch (256 messages).
    Poll {
        /// Time between the end of one poll and the start of the next. `"poll"` parses to
        /// 1 second.
        interval: Duration,
    },
    /// Long polling: `?transport=longpoll`, re-requested as soon as each answer arrives.
    LongPoll {
        /// How long the server holds a request with nothing new, in seconds (`?timeout=`).
        /// `None` leaves it to the server (30 s by default, at most `longpoll_max_timeout`,
        /// 120 s by default).
        timeout_secs: Option<u32>,
    },
    /// HTTP streaming of NDJSON lines (`?transport=stream`).
    Stream,
    /// An htmlfile document of `<script>p(…)</script>` chunks (`?transport=iframe`), reopened
    /// after each byte budget the server ends it at.
    Iframe,
    /// Server-Sent Events (`Accept: text/event-stream`), resumed with `Last-Event-ID`.
    Sse {
        /// Ask for JSON envelopes in `data` (`?envelope=1`). With `false` and a single
        /// channel, `data` is the raw published text as a plain `EventSource` sees it, and
        /// [`Envelope::time`] is `0`. Several channels always get envelopes. `"sse"` parses to
        /// `true`, `"sse-raw"` to `false`.
        envelope: bool,
    },
    /// WebSocket with the `comet.v1` subprotocol.
    WebSocket,
}

impl Transport {
    /// The protocol's name for the transport: `poll`, `longpoll`, `stream`, `iframe`, `sse`
    /// (`sse-raw` for raw SSE) or `ws`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Transport::Poll { .. } => "poll",
            Transport::LongPoll { .. } => "longpoll",
            Transport::Stream => "stream",
            Transport::Iframe => "iframe",
            Transport::Sse { envelope: true } => "sse",
            Transport::Sse { envelope: false } => "sse-raw",
            Transport::WebSocket => "ws",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Transport`] from a name it does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0:?} (expected poll, longpoll, stream, iframe, sse, sse-raw or ws)")]
pub struct ParseTransportError(String);

impl FromStr for Transport {
    type Err = ParseTransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "poll" => Transport::Poll {
                interval: Duration::from_secs(1),
            },
            "longpoll" | "long-poll" => Transport::LongPoll { timeout_secs: None },
            "stream" => Transport::Stream,
            "iframe" => Transport::Iframe,
            "sse" => Transport::Sse { envelope: true },
            "sse-raw" => Transport::Sse { envelope: false },
            "ws" | "websocket" => Transport::WebSocket,
            _ => return Err(ParseTransportError(s.to_owned())),
        })
    }
}

/// One unit of what a connection received, before de-duplication.
#[derive(Debug)]
pub(crate) enum Frame {
    Message(Envelope),
    /// A gap notice for a channel.
    Gap(String),
    /// WebSocket `subscribed`; `recovered: false` is a gap notice. `cursor` is not in the
    /// protocol yet: when a server adds the cursor the subscription starts after, it is
    /// tracked, so a reconnection resumes channels that had no message yet.
    Subscribed {
        channel: String,
        recovered: bool,
        cursor: Option<String>,
    },
    /// The server ends this connection and says where to resume (stream shutdown, iframe
    /// budget).
    Reconnect(Option<String>),
    /// A cursor or position the server announced as passed (poll `cursor`, SSE `id`).
    Cursor(String),
    /// SSE `retry:` reconnection time.
    Retry(Duration),
    /// This connection ends by design; open the next one after this delay without counting a
    /// failure (poll answers, iframe budget).
    Reopen(Duration),
    /// A non-fatal error to hand to the user (WebSocket `error` frame, one bad line).
    Error(Error),
}

/// Every JSON object a transport can carry: envelopes and typed frames. Fields absent from one
/// kind are `None`.
#[derive(Deserialize)]
struct Object {
    #[serde(rename = "type")]
    kind: Option<String>,
    channel: Option<String>,
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    time: Option<u64>,
    cursor: Option<String>,
    recovered: Option<bool>,
    code: Option<String>,
    message: Option<String>,
}

/// Decodes one JSON object of the stream, iframe, SSE-envelope or WebSocket encodings.
///
/// Returns `Ok(None)` for kinds this client ignores (`ack`, `pong`, `unsubscribed`, unknown
/// future kinds).
///
/// # Errors
/// [`Error::Protocol`] when `json` is not an object of the protocol or lacks a required field.
pub(crate) fn parse_object(json: &[u8]) -> Result<Option<Frame>, Error> {
    let o: Object = serde_json::from_slice(json).map_err(|e| Error::bad_json("frame", json, e))?;
    let missing = |field: &str| Error::protocol(format!("frame without {field:?}: {}", String::from_utf8_lossy(json)));
    Ok(Some(match o.kind.as_deref() {
        None | Some("message") => Frame::Message(Envelope {
            channel: o.channel.ok_or_else(|| missing("channel"))?,
            id: o.id.ok_or_else(|| missing("id"))?,
            event: o.event.unwrap_or_else(crate::types::default_event),
            data: o.data.ok_or_else(|| missing("data"))?,
            time: o.time.unwrap_or(0),
        }),
        Some("gap") => Frame::Gap(o.channel.ok_or_else(|| missing("channel"))?),
        Some("reconnect") => Frame::Reconnect(o.cursor.filter(|c| !c.is_empty())),
        Some("subscribed") => Frame::Subscribed {
            channel: o.channel.ok_or_else(|| missing("channel"))?,
            recovered: o.recovered.unwrap_or(true),
            cursor: o.cursor.filter(|c| !c.is_empty()),
        },
        Some("error") => Frame::Error(Error::Server(ApiError {
            code: o.code.unwrap_or_else(|| "unknown".to_owned()),
            message: o.message.unwrap_or_default(),
        })),
        Some(_) => return Ok(None),
    }))
}

/// A response body as a stream of chunks that fails with [`Error::Idle`] when no chunk arrives
/// for the idle timeout (heartbeats count as chunks).
pub(crate) struct Body {
    inner: BoxStream<'static, reqwest::Result<Bytes>>,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
}

impl Body {
    pub(crate) fn new(resp: reqwest::Response, idle: Option<Duration>) -> Self {
        Body {
            inner: resp.bytes_stream().boxed(),
            idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body")
            .field("idle", &self.idle.as_ref().map(|(d, _)| d))
            .finish_non_exhaustive()
    }
}

impl Stream for Body {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some((d, sleep)) = &mut self.idle {
                    sleep.as_mut().reset(Instant::now() + *d);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match &mut self.idle {
                Some((d, sleep)) => match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Error::Idle(*d)))),
                    Poll::Pending => Poll::Pending,
                },
                None => Poll::Pending,
            },
        }
    }
}

/// An open connection of any transport.
#[derive(Debug)]
pub(crate) enum Conn {
    /// A poll or long-poll answer, already complete.
    Batch(VecDeque<Frame>),
    Stream(ndjson::StreamConn),
    Iframe(iframe::IframeConn),
    Sse(sse::SseConn),
    Ws(ws::WsConn),
}

impl Conn {
    /// The next frame. `Ready(Some(Err))` when the connection failed or dropped (it is then
    /// over: reconnect unless the error is final); `Ready(None)` when it ended as the protocol
    /// intends: after a [`Frame::Reopen`], or for good (WebSocket close 1000).
    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame, Error>>> {
        match self {
            Conn::Batch(frames) => Poll::Ready(frames.pop_front().map(Ok)),
            Conn::Stream(c) => c.poll_frame(cx),
            Conn::Iframe(c) => c.poll_frame(cx),
            Conn::Sse(c) => c.poll_frame(cx),
            Conn::Ws(c) => c.poll_frame(cx),
        }
    }
}

/// Sends `req`, waiting at most `timeout` for the response head, and checks its status.
///
/// # Errors
/// [`Error::Idle`] on timeout, [`Error::Transport`], or [`Error::Http`] for a non-2xx status.
pub(crate) async fn send_head(req: reqwest::RequestBuilder, timeout: Duration) -> Result<reqwest::Response, Error> {
    let resp = tokio::time::timeout(timeout, req.send())
        .await
        .map_err(|_| Error::Idle(timeout))??;
    check_status(resp).await
}

/// Checks that `resp` is a success, or turns it into [`Error::Http`] with the server's error
/// object.
pub(crate) async fn check_status(resp: reqwest::Response) -> Result<reqwest::Response, Error> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.bytes().await.unwrap_or_default();
    Err(Error::from_status(status.as_u16(), &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names_round_trip() {
        for name in ["poll", "longpoll", "stream", "iframe", "sse", "sse-raw", "ws"] {
            let t: Transport = name.parse().unwrap();
            assert_eq!(t.as_str(), name);
        }
        assert_eq!("WebSocket".parse::<Transport>(), Ok(Transport::WebSocket));
        assert!("carrier-pigeon".parse::<Transport>().is_err());
    }

    #[test]
    fn object_kinds() {
        let f = parse_object(br#"{"channel":"c","id":"1-1","event":"e","data":"d","time":5}"#);
        assert!(matches!(f, Ok(Some(Frame::Message(e))) if e.event == "e" && e.time == 5));
        let f = parse_object(br#"{"type":"message","channel":"c","id":"1-1","data":"d"}"#);
        assert!(matches!(f, Ok(Some(Frame::Message(e))) if e.event == "message"));
        let f = parse_object(br#"{"type":"gap","channel":"c"}"#);
        assert!(matches!(f, Ok(Some(Frame::Gap(c))) if c == "c"));
        let f = parse_object(br#"{"type":"reconnect","cursor":"a=1-2"}"#);
        assert!(matches!(f, Ok(Some(Frame::Reconnect(Some(c)))) if c == "a=1-2"));
        let f = parse_object(br#"{"type":"subscribed","channel":"c","recovered":false}"#);
        assert!(matches!(
            f,
            Ok(Some(Frame::Subscribed {
                recovered: false,
                cursor: None,
                ..
            }))
        ));
        let f = parse_object(br#"{"type":"subscribed","channel":"c","recovered":true,"cursor":"1-2"}"#);
        assert!(matches!(f, Ok(Some(Frame::Subscribed { recovered: true, cursor: Some(c), .. })) if c == "1-2"));
        let f = parse_object(br#"{"type":"error","code":"bad_channel","message":"no"}"#);
        assert!(matches!(f, Ok(Some(Frame::Error(e))) if e.code() == Some("bad_channel")));
        assert!(matches!(
            parse_object(br#"{"type":"ack","ref":"r","id":"1-1"}"#),
            Ok(None)
        ));
        assert!(matches!(parse_object(br#"{"type":"pong"}"#), Ok(None)));
        assert!(parse_object(br#"{"channel":"c","id":"1-1"}"#).is_err());
        assert!(parse_object(b"[1]").is_err());
        assert!(parse_object(b"{").is_err());
    }
}
