//! The socket: with handshake.rs, the only files that know the WebSocket library, yawc. The
//! session above speaks in [`Incoming`] messages and queued text; replacing yawc means
//! rewriting these two files alone.
//!
//! yawc (0.5.0 with the RFC 6455 close-code fixes of vendor/yawc/PATCHES.md) does the framing:
//! masking rules (RFC 6455 §5.1, §5.3: an unmasked client frame fails
//! with 1002), the per-frame size limit (1009), control frames (it answers a ping with a pong,
//! §5.5.2, and echoes a close, §5.5.1) and permessage-deflate (RFC 7692). Each error it detects
//! queues a close frame with the RFC's code, which [`Socket::finish`] flushes.
//!
//! We read through yawc's frame-level `Streaming` rather than its `WebSocket`: the latter
//! reassembles messages too, but its reassembly and UTF-8 errors queue no close, and the caller
//! cannot tell them from framing errors that did, so exactly one close with the right code could
//! not be guaranteed. This file therefore reassembles fragmented messages itself (§5.4, within
//! `ws_max_message_size`, else 1009), validates text (§8.1, else 1007), and runs the closing
//! handshake (§7.1.1–§7.1.2).
//!
//! Two ways in, one socket:
//! - A handshake that the connection layer read on plain TCP (io/upgrade.rs) is answered by
//!   handshake.rs (`Sec-WebSocket-Accept`, §4.2.2; permessage-deflate as agreed there), and yawc runs
//!   on the `TcpStream` itself, shared with the session. Without compression the session writes
//!   its frames to that stream directly ([`Direct`]): a message's frame is encoded once for every
//!   socket ([`text_frame`]) and a batch goes out in one `send`, without a copy into yawc's
//!   buffer. Measured with callgrind: 2,881 → 2,317 instructions per delivered message
//!   (bench/RESULTS.md).
//! - Anything else (TLS, HTTP/2's extended CONNECT, an upgrade after another request on the
//!   same connection) goes through hyper, and yawc answers the handshake and writes every frame.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt};

use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::codec::Encoder as _;
use yawc::close::CloseCode;
use yawc::codec::Encoder;
use yawc::streaming::Streaming;
use yawc::{Frame, HttpStream, OpCode, Options, Role, UpgradeFut, WebSocket};

use super::direct::{Direct, SharedTcp};

/// Close codes (RFC 6455 §7.4.1; 4000–4999 are Comet's own).
pub(super) const GOING_AWAY: u16 = 1001;
pub(super) const POLICY: u16 = 1008;
pub(super) const SLOW_CONSUMER: u16 = 4000;
pub(super) const NO_PONG: u16 = 4001;
/// The connect hook refused the client (docs/protocol.md "Hooks"); the reason is the
/// back-end's message.
pub(super) const HOOK_REFUSED: u16 = 4403;
/// The server API disconnected the peer's user (docs/protocol.md "Server API"); a
/// `disconnect` frame before it says whether to reconnect.
pub(super) const DISCONNECTED: u16 = 4010;
/// The connect hook failed (down, slow, a bad answer): try again later (RFC 6455 §7.4.1,
/// IANA's registry).
pub(super) const TRY_AGAIN_LATER: u16 = 1013;

/// The upgrade, answered; completes once the connection has been handed over.
#[derive(Debug)]
pub(super) struct Accepted {
    pub(super) how: Opening,
    /// `ws_max_message_size`: the largest message reassembled.
    pub(super) max_message: usize,
}

#[derive(Debug)]
pub(super) enum Opening {
    /// hyper hands the connection over to yawc.
    Hyper(UpgradeFut),
    /// The connection layer (conn/h1.rs) hands over the TCP connection once it has written the `101`.
    Direct {
        /// The connection, once the connection layer has written the `101`.
        connection: oneshot::Receiver<TcpStream>,
        options: Box<Options>,
        /// The permessage-deflate answer, if agreed (handshake.rs).
        compress: Option<String>,
    },
}

impl Accepted {
    /// The socket, or `None` if the connection was lost during the upgrade.
    pub(super) async fn open(self) -> Option<Socket> {
        let (inner, outbox) = match self.how {
            Opening::Hyper(upgrade) => match upgrade.await {
                Ok(ws) => (Inner::Hyper(ws.into_streaming()), Outbox::Yawc(Vec::new())),
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    return None;
                }
            },
            Opening::Direct {
                connection,
                options,
                compress,
            } => {
                let tcp = Arc::new(connection.await.ok()?);
                let io = SharedTcp(Arc::clone(&tcp));
                match WebSocket::from_stream_with_extensions(io, Role::Server, compress.as_deref(), *options) {
                    // Compressed frames differ per connection: those go through yawc.
                    Ok(ws) if compress.is_some() => (Inner::Tcp(ws.into_streaming()), Outbox::Yawc(Vec::new())),
                    Ok(ws) => (
                        Inner::Tcp(ws.into_streaming()),
                        Outbox::Direct(Direct {
                            tcp,
                            frames: Vec::new(),
                            written: 0,
                            yawc_dirty: false,
                        }),
                    ),
                    Err(e) => {
                        tracing::debug!(error = %e, "websocket setup failed");
                        return None;
                    }
                }
            }
        };
        Some(Socket {
            inner,
            outbox,
            partial: None,
            max_message: self.max_message,
        })
    }
}

/// The socket's frames, under yawc.
enum Inner {
    Hyper(Streaming<HttpStream>),
    Tcp(Streaming<SharedTcp>),
}

/// Runs `$body` with `$s` bound to the [`Streaming`] inside `$inner`, whichever kind it is.
macro_rules! with_inner {
    ($inner:expr, $s:ident => $body:expr) => {
        match $inner {
            Inner::Hyper($s) => $body,
            Inner::Tcp($s) => $body,
        }
    };
}

/// `frame`'s bytes on the wire (RFC 6455 §5.2: unmasked, as a server's are), encoded by yawc.
fn encode(frame: Frame) -> Bytes {
    let mut out = BytesMut::new();
    // yawc's encoder cannot fail on an unmasked frame; an empty frame would be dropped.
    let _ = Encoder::new(Role::Server).encode(frame, &mut out);
    out.freeze()
}

/// The text frame carrying `text`, for [`Socket::queue_encoded`] (encode once per message).
pub(super) fn text_frame(text: Bytes) -> Bytes {
    encode(Frame::text(text))
}

/// What the peer sent.
#[derive(Debug)]
pub(super) enum Incoming {
    /// A whole text message, valid UTF-8.
    Text(Bytes),
    /// A whole binary message (Comet's protocol has no use for one; the echo route sends it back).
    Binary(Bytes),
    /// A pong (RFC 6455 §5.5.3), answering our ping or unsolicited.
    Pong,
    /// The connection is over: finish it with [`Socket::finish`].
    End(Ending),
}

/// How a connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ending {
    /// Send a close frame with this code (RFC 6455 §7.4.1) and reason, then wait for the
    /// peer's close.
    Close(u16, std::borrow::Cow<'static, str>),
    /// The close is already decided by the library: the peer closed (its close is echoed), the
    /// peer broke the protocol (yawc queued a close with the RFC's code), or the connection
    /// was lost. Only what yawc queued is sent.
    Answered,
}

/// One upgraded connection.
pub(super) struct Socket {
    inner: Inner,
    /// Frames waiting for [`flush`](Self::flush), so a batch goes out in one write.
    outbox: Outbox,
    /// The message being reassembled from fragments (RFC 6455 §5.4): its opcode and bytes.
    partial: Option<(OpCode, BytesMut)>,
    /// Largest message accepted, in bytes (`ws_max_message_size`).
    max_message: usize,
}

/// Where queued frames wait, by who writes them.
enum Outbox {
    /// Handed to yawc at the flush.
    Yawc(Vec<Frame>),
    /// Written by the session itself.
    Direct(Direct),
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("direct", &self.takes_encoded())
            .field("queued", &self.has_queued())
            .finish_non_exhaustive()
    }
}

impl Socket {
    /// The next message, pong, or the end of the connection. Pings are answered by yawc
    /// while this is polled.
    ///
    /// # Cancel safety
    /// Cancel-safe: each frame is read whole and folded into the message being reassembled at
    /// once, so a cancelled call loses nothing.
    pub(super) async fn recv(&mut self) -> Incoming {
        if let Outbox::Direct(direct) = &mut self.outbox {
            // Polled only between flushes (the session flushes before it waits), so yawc's
            // writes here (pongs, a close echo) never land inside one of ours.
            debug_assert!(direct.frames.is_empty(), "recv polled with frames half written");
            direct.yawc_dirty = true;
        }
        loop {
            match with_inner!(&mut self.inner, s => s.next_frame().await) {
                Ok(frame) => {
                    let ping = frame.opcode() == OpCode::Ping;
                    if let Some(incoming) = self.on_frame(frame) {
                        return incoming;
                    }
                    // yawc queues the pong and sends it only once reading would block, so a peer
                    // that floods pings and never reads made it queue pongs (and keep the pings'
                    // bytes) without end. The pong goes out before anything more is read: a peer
                    // that takes no pongs then has its pings held up by TCP.
                    if ping
                        && with_inner!(&mut self.inner, s => poll_fn(|cx| Pin::new(&mut *s).poll_ready(cx)).await)
                            .is_err()
                    {
                        return Incoming::End(Ending::Answered);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "websocket read ended");
                    return Incoming::End(Ending::Answered);
                }
            }
        }
    }

    fn on_frame(&mut self, frame: Frame) -> Option<Incoming> {
        let (opcode, fin, payload) = frame.into_parts();
        match (opcode, self.partial.as_mut()) {
            (OpCode::Ping, _) => None,
            (OpCode::Pong, _) => Some(Incoming::Pong),
            (OpCode::Close, _) => Some(Incoming::End(Ending::Answered)),
            (OpCode::Text | OpCode::Binary, Some(_)) => Some(fail(1002, "a message began inside a fragmented one")),
            (OpCode::Continuation, None) => Some(fail(1002, "a continuation frame without a message")),
            (OpCode::Text | OpCode::Binary, None) if fin => Some(self.complete(opcode, payload)),
            (OpCode::Text | OpCode::Binary, None) => {
                self.partial = Some((opcode, BytesMut::from(&payload[..])));
                None
            }
            (OpCode::Continuation, Some((_, buf))) => {
                if buf.len() + payload.len() > self.max_message {
                    return Some(fail(1009, "message too big"));
                }
                buf.extend_from_slice(&payload);
                let (opcode, buf) = if fin { self.partial.take()? } else { return None };
                Some(self.complete(opcode, buf.freeze()))
            }
        }
    }

    fn complete(&self, opcode: OpCode, payload: Bytes) -> Incoming {
        if payload.len() > self.max_message {
            fail(1009, "message too big")
        } else if opcode != OpCode::Text {
            Incoming::Binary(payload)
        } else if std::str::from_utf8(&payload).is_err() {
            fail(1007, "text message is not UTF-8")
        } else {
            Incoming::Text(payload)
        }
    }

    fn queue(&mut self, frame: Frame) {
        match &mut self.outbox {
            Outbox::Direct(direct) => direct.frames.push(encode(frame)),
            Outbox::Yawc(queued) => queued.push(frame),
        }
    }

    /// Queues a text frame for the next [`flush`](Self::flush).
    pub(super) fn queue_text(&mut self, text: Bytes) {
        self.queue(Frame::text(text));
    }

    /// Queues a binary frame for the next [`flush`](Self::flush).
    pub(super) fn queue_binary(&mut self, data: Bytes) {
        self.queue(Frame::binary(data));
    }

    /// Queues a ping (RFC 6455 §5.5.2) for the next [`flush`](Self::flush).
    pub(super) fn queue_ping(&mut self) {
        self.queue(Frame::ping(Bytes::new()));
    }

    /// Whether this socket takes frames its caller encoded ([`queue_encoded`](Self::queue_encoded)).
    pub(super) fn takes_encoded(&self) -> bool {
        matches!(self.outbox, Outbox::Direct(_))
    }

    /// Queues a frame made by [`text_frame`]; only when [`takes_encoded`](Self::takes_encoded).
    pub(super) fn queue_encoded(&mut self, frame: Bytes) {
        match &mut self.outbox {
            Outbox::Direct(direct) => direct.frames.push(frame),
            Outbox::Yawc(_) => debug_assert!(false, "queue_encoded on a socket that yawc writes"),
        }
    }

    /// Whether frames wait for [`flush`](Self::flush).
    pub(super) fn has_queued(&self) -> bool {
        match &self.outbox {
            Outbox::Direct(direct) => !direct.frames.is_empty(),
            Outbox::Yawc(queued) => !queued.is_empty(),
        }
    }

    /// Writes every queued frame, then flushes once.
    ///
    /// # Errors
    /// The connection failed.
    ///
    /// # Cancel safety
    /// Not cancel-safe: frames may be left half written. Cancel it only to end the connection.
    pub(super) async fn flush(&mut self) -> io::Result<()> {
        match &mut self.outbox {
            Outbox::Direct(direct) => {
                if direct.yawc_dirty {
                    with_inner!(&mut self.inner, s => {
                        poll_fn(|cx| Pin::new(&mut *s).poll_ready(cx)).await.map_err(io::Error::other)?;
                        s.flush().await.map_err(io::Error::other)?;
                    });
                    direct.yawc_dirty = false;
                }
                poll_fn(|cx| direct.poll_write(cx)).await
            }
            Outbox::Yawc(queued) => with_inner!(&mut self.inner, s => {
                for frame in queued.drain(..) {
                    s.feed(frame).await.map_err(io::Error::other)?;
                }
                s.flush().await.map_err(io::Error::other)
            }),
        }
    }

    /// Ends the connection as `ending` says, within `linger`, then closes TCP (the server
    /// closes it first, RFC 6455 §7.1.1), or over HTTP/2 ends its stream (RFC 8441 §5.1).
    pub(super) async fn finish(mut self, ending: Ending, linger: Duration) {
        let closing = async {
            // A frame of ours half written goes out whole before yawc writes anything more.
            if let Outbox::Direct(direct) = &mut self.outbox {
                poll_fn(|cx| direct.poll_write(cx))
                    .await
                    .map_err(yawc::WebSocketError::from)?;
            }
            with_inner!(&mut self.inner, s => {
                match ending {
                    Ending::Close(code, reason) => {
                        s.send(Frame::close(CloseCode::from(code), reason.as_bytes())).await?;
                        // §7.1.1: after its close the server reads (and discards) until the peer's close.
                        while let Ok(frame) = s.next_frame().await {
                            if frame.opcode() == OpCode::Close {
                                break;
                            }
                        }
                    }
                    Ending::Answered => {
                        // Readiness writes what yawc queued (the close echo, or its error close).
                        poll_fn(|cx| Pin::new(&mut *s).poll_ready(cx)).await?;
                        s.flush().await?;
                    }
                }
                s.close().await
            })
        };
        if let Ok(Err(e)) = tokio::time::timeout(linger, closing).await {
            tracing::debug!(error = %e, "websocket close failed");
        }
    }
}

fn fail(code: u16, reason: &'static str) -> Incoming {
    Incoming::End(Ending::Close(code, reason.into()))
}
