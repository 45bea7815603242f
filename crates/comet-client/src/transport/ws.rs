//! `ws` transport: WebSocket (RFC 6455) with the `comet.v1` subprotocol, text frames of JSON
//! (`docs/protocol.md` §ws).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use super::{Conn, Frame, parse_object};
use crate::Error;

/// The subprotocol offered (and required by the handshake once offered).
const SUBPROTOCOL: &str = "comet.v1";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Decodes one text frame. Frames this client ignores (`ack`, `pong`, `unsubscribed`) give
/// `None`; a frame that is not a protocol object gives a non-fatal [`Frame::Error`].
pub(crate) fn decode_text(text: &str) -> Option<Frame> {
    match parse_object(text.as_bytes()) {
        Ok(frame) => frame,
        Err(e) => Some(Frame::Error(e)),
    }
}

/// An open WebSocket.
pub(crate) struct WsConn {
    socket: Socket,
    /// Frames read while waiting for the `subscribed` answers, not yet handed out.
    pending: VecDeque<Frame>,
    /// Considered dead when nothing (not even the server's pings, every 25 s) arrives for
    /// this long.
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
}

impl std::fmt::Debug for WsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsConn")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl WsConn {
    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame, Error>>> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            let msg = match self.socket.poll_next_unpin(cx) {
                Poll::Ready(msg) => msg,
                Poll::Pending => {
                    if let Some((d, sleep)) = &mut self.idle {
                        ready!(sleep.as_mut().poll(cx));
                        return Poll::Ready(Some(Err(Error::Idle(*d))));
                    }
                    return Poll::Pending;
                }
            };
            if let Some((d, sleep)) = &mut self.idle {
                sleep.as_mut().reset(Instant::now() + *d);
            }
            match msg {
                // Pings are answered by tungstenite itself on the next read.
                Some(Ok(msg)) => match read(msg) {
                    Read::Frame(frame) => return Poll::Ready(Some(Ok(frame))),
                    Read::Nothing => {}
                    Read::Closed(e) => return Poll::Ready(e.map(Err)),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => return Poll::Ready(Some(Err(Error::Ended))),
            }
        }
    }
}

enum Read {
    Frame(Frame),
    Nothing,
    /// A close frame: `None` for a normal close (1000 or no code: the subscription is over), else the
    /// error to reconnect after (or give up on).
    Closed(Option<Error>),
}

fn read(msg: Message) -> Read {
    match msg {
        Message::Text(text) => decode_text(text.as_str()).map_or(Read::Nothing, Read::Frame),
        Message::Binary(_) => Read::Frame(Frame::Error(Error::protocol("unexpected binary WebSocket frame"))),
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Read::Nothing,
        Message::Close(close) => {
            let (code, reason) = close.map_or((1005, String::new()), |c| {
                (u16::from(c.code), c.reason.as_str().to_owned())
            });
            // 1000 (normal) and a close without a code (1005, RFC 6455 §7.1.5) are the
            // server ending the subscription on purpose; anything else is a drop to recover.
            if code == 1000 || code == 1005 {
                Read::Closed(None)
            } else {
                Read::Closed(Some(Error::Closed { code, reason }))
            }
        }
    }
}

/// Connects to `url` (a `ws://…/sub/{channels}?since=…` URL) offering `comet.v1`, then waits
/// until every one of `channels` is answered by a `subscribed` frame, so that nothing published
/// after this returns can be missed. Frames read meanwhile are kept, in order. All of it takes
/// at most `head_timeout`.
pub(crate) async fn connect(
    url: Url,
    channels: Vec<String>,
    head_timeout: Duration,
    idle: Option<Duration>,
) -> Result<Conn, Error> {
    tokio::time::timeout(head_timeout, connect_inner(url, channels, idle))
        .await
        .map_err(|_| Error::Idle(head_timeout))?
}

async fn connect_inner(url: Url, channels: Vec<String>, idle: Option<Duration>) -> Result<Conn, Error> {
    let mut req = url.as_str().into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
    let (mut socket, _response) = tokio_tungstenite::connect_async(req).await?;
    let mut waiting = channels;
    let mut pending = VecDeque::new();
    while !waiting.is_empty() {
        let msg = match socket.next().await {
            Some(msg) => msg?,
            None => return Err(Error::Ended),
        };
        match read(msg) {
            Read::Frame(Frame::Error(e @ Error::Server(_))) => return Err(e),
            Read::Frame(frame) => {
                if let Frame::Subscribed { channel, .. } = &frame {
                    waiting.retain(|c| c != channel);
                }
                pending.push_back(frame);
            }
            Read::Nothing => {}
            Read::Closed(e) => return Err(e.unwrap_or(Error::Ended)),
        }
    }
    Ok(Conn::Ws(WsConn {
        socket,
        pending,
        idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    #[test]
    fn frames() {
        let m = decode_text(r#"{"type":"message","channel":"c","id":"1-1","event":"message","data":"x","time":3}"#);
        assert!(matches!(m, Some(Frame::Message(e)) if e.data == "x" && e.time == 3));
        assert!(matches!(
            decode_text(r#"{"type":"subscribed","channel":"c","recovered":false}"#),
            Some(Frame::Subscribed { recovered: false, .. })
        ));
        assert!(decode_text(r#"{"type":"ack","ref":"1","id":"1-1"}"#).is_none());
        assert!(decode_text(r#"{"type":"pong","ref":"1"}"#).is_none());
        assert!(decode_text(r#"{"type":"unsubscribed","channel":"c"}"#).is_none());
        assert!(matches!(
            decode_text(r#"{"type":"error","code":"bad_channel","message":"m"}"#),
            Some(Frame::Error(Error::Server(e))) if e.code == "bad_channel"
        ));
        assert!(matches!(
            decode_text("nope"),
            Some(Frame::Error(Error::Protocol { .. }))
        ));
    }

    #[test]
    fn close_codes() {
        let close = |code: u16| {
            Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "bye".into(),
            }))
        };
        assert!(matches!(read(close(1000)), Read::Closed(None)));
        assert!(matches!(read(Message::Close(None)), Read::Closed(None)));
        let Read::Closed(Some(e)) = read(close(4000)) else {
            panic!()
        };
        assert!(e.is_transient(), "slow consumer reconnects");
        let Read::Closed(Some(e)) = read(close(1001)) else {
            panic!()
        };
        assert!(e.is_transient(), "going away reconnects");
        let Read::Closed(Some(e)) = read(close(1008)) else {
            panic!()
        };
        assert!(!e.is_transient(), "policy violation is final");
    }
}
