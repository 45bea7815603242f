//! The only file that knows the WebSocket library, yawc (DESIGN §8). The session above speaks
//! in [`Incoming`] messages and queued text; replacing yawc means rewriting this file alone.
//!
//! yawc does the framing: masking rules (RFC 6455 §5.1, §5.3: an unmasked client frame fails
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

use std::future::poll_fn;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt};
use http::request::Parts;
use yawc::close::CloseCode;
use yawc::streaming::Streaming;
use yawc::{DeflatePool, Frame, HttpStream, IncomingUpgrade, OpCode, Options, UpgradeFut};

use crate::config::Config;
use crate::error::ApiError;

/// Messages below this many bytes go out uncompressed: deflate would not pay for itself.
const COMPRESSION_THRESHOLD: usize = 128;

/// Socket buffers start this small, so idle sockets stay cheap (S1 in bench/RESULTS.md: they were
/// a quarter of an idle WebSocket's memory at 256 and 1,024 bytes). Clients send little
/// (commands, pongs), and yawc gives a read buffer that grew for a larger frame back at once.
/// The write buffer grows to fit the first larger batch and keeps that size up to the 8 KiB
/// backpressure boundary, so a busy socket pays for growing once, not per message.
const READ_BUFFER_CAPACITY: usize = 128;
const WRITE_BUFFER_CAPACITY: usize = 256;

/// Deflate state shared by every compressed connection of the process. Both directions run
/// without context takeover, so a connection needs deflate state only while a message is being
/// (de)compressed, and idle ones cost a few KiB instead of hundreds. Sized for the messages
/// (de)compressed at the same moment: one per core (yawc keeps that many of each kind).
fn deflate_pool() -> DeflatePool {
    static POOL: OnceLock<DeflatePool> = OnceLock::new();
    POOL.get_or_init(|| DeflatePool::new(std::thread::available_parallelism().map_or(4, NonZeroUsize::get)))
        .clone()
}

/// A valid upgrade request (RFC 6455 §4.2.1), not answered yet.
pub(super) struct Handshake {
    upgrade: IncomingUpgrade,
    /// Whether to accept permessage-deflate if the client offers it.
    compress: bool,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("compress", &self.compress)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Validates the upgrade request in `parts`: an HTTP/1.1 upgrade (RFC 6455 §4.2.1) or an
    /// HTTP/2 extended CONNECT (RFC 8441 §4; yawc's `http2` feature tells them apart). The
    /// version was checked before: yawc would answer a wrong one with `400` instead of `426`.
    ///
    /// # Errors
    /// `400 bad_transport` when the request is not a WebSocket handshake.
    pub(super) async fn from_parts(parts: &mut Parts, config: &Config) -> Result<Self, ApiError> {
        let compress = config.ws_compression && deflate_offer_acceptable(&parts.headers);
        let upgrade = IncomingUpgrade::from_request_parts(parts, &()).await.map_err(|_| {
            ApiError::bad_request(
                "bad_transport",
                "not a WebSocket handshake: an HTTP/1.1 GET with Upgrade: websocket, Connection: Upgrade and \
                 Sec-WebSocket-Key (RFC 6455 §4.2.1), or an HTTP/2 CONNECT with :protocol = websocket (RFC 8441 §4)",
            )
        })?;
        Ok(Self { upgrade, compress })
    }

    /// Answers `101 Switching Protocols`, or `200` to an HTTP/2 extended CONNECT (RFC 8441 §5),
    /// with permessage-deflate when offered and enabled; the socket is ready once the response
    /// has been sent.
    ///
    /// # Errors
    /// `500 internal` if yawc cannot set up the negotiated compression.
    pub(super) fn accept(self, config: &Config) -> Result<(Response, Accepted), ApiError> {
        let mut options = Options::default()
            // yawc's bound is exclusive; ours is inclusive.
            .with_max_payload_read(config.ws_max_message_size.saturating_add(1))
            .with_read_buffer_capacity(READ_BUFFER_CAPACITY)
            .with_write_buffer_capacity(WRITE_BUFFER_CAPACITY);
        if self.compress {
            options = options
                .with_low_latency_compression()
                .server_no_context_takeover()
                .client_no_context_takeover()
                .with_deflate_pool(deflate_pool())
                .with_compression_threshold(COMPRESSION_THRESHOLD);
        }
        let (response, upgrade) = self.upgrade.upgrade(options).map_err(|e| ApiError {
            status: http::StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: format!("websocket handshake failed: {e}"),
            retry_after: None,
        })?;
        Ok((
            response.map(Body::new),
            Accepted {
                upgrade,
                max_message: config.ws_max_message_size,
            },
        ))
    }
}

/// RFC 7692 §7.1.2.1: a client may require the server to compress with a smaller window
/// (`server_max_window_bits` below 15). yawc, built without zlib, cannot, so such offers are
/// declined (the connection runs uncompressed) rather than accepted and broken.
fn deflate_offer_acceptable(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .all(|value| {
            value.to_str().is_ok_and(|offer| {
                offer.split([',', ';']).all(|param| match param.trim().split_once('=') {
                    Some((name, bits)) if name.trim() == "server_max_window_bits" => {
                        bits.trim().trim_matches('"') == "15"
                    }
                    _ => true,
                })
            })
        })
}

/// The upgrade, answered; completes once hyper has handed over the connection.
#[derive(Debug)]
pub(super) struct Accepted {
    upgrade: UpgradeFut,
    max_message: usize,
}

impl Accepted {
    /// The socket, or `None` if the connection was lost during the upgrade.
    pub(super) async fn open(self) -> Option<Socket> {
        match self.upgrade.await {
            Ok(ws) => Some(Socket {
                inner: ws.into_streaming(),
                partial: None,
                max_message: self.max_message,
                queued: Vec::new(),
            }),
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                None
            }
        }
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// Send a close frame with this code (RFC 6455 §7.4.1) and reason, then wait for the
    /// peer's close.
    Close(u16, &'static str),
    /// The close is already decided by the library: the peer closed (its close is echoed), the
    /// peer broke the protocol (yawc queued a close with the RFC's code), or the connection
    /// was lost. Only what yawc queued is sent.
    Answered,
}

/// One upgraded connection.
pub(super) struct Socket {
    inner: Streaming<HttpStream>,
    /// The message being reassembled from fragments (RFC 6455 §5.4): its opcode and bytes.
    partial: Option<(OpCode, BytesMut)>,
    /// Largest message accepted, in bytes (`ws_max_message_size`).
    max_message: usize,
    /// Frames waiting for [`flush`](Self::flush), so a batch goes out in one write.
    queued: Vec<Frame>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("queued", &self.queued.len())
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
        loop {
            match self.inner.next_frame().await {
                Ok(frame) => {
                    let ping = frame.opcode() == OpCode::Ping;
                    if let Some(incoming) = self.on_frame(frame) {
                        return incoming;
                    }
                    // yawc queues the pong and sends it only once reading would block, so a peer
                    // that floods pings and never reads made it queue pongs (and keep the pings'
                    // bytes) without end. The pong goes out before anything more is read: a peer
                    // that takes no pongs then has its pings held up by TCP.
                    if ping && poll_fn(|cx| Pin::new(&mut self.inner).poll_ready(cx)).await.is_err() {
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

    /// Queues a text frame for the next [`flush`](Self::flush).
    pub(super) fn queue_text(&mut self, text: Bytes) {
        self.queued.push(Frame::text(text));
    }

    /// Queues a binary frame for the next [`flush`](Self::flush).
    pub(super) fn queue_binary(&mut self, data: Bytes) {
        self.queued.push(Frame::binary(data));
    }

    /// Queues a ping (RFC 6455 §5.5.2) for the next [`flush`](Self::flush).
    pub(super) fn queue_ping(&mut self) {
        self.queued.push(Frame::ping(Bytes::new()));
    }

    /// Whether frames wait for [`flush`](Self::flush).
    pub(super) fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Writes every queued frame, then flushes once.
    ///
    /// # Errors
    /// The connection failed.
    ///
    /// # Cancel safety
    /// Not cancel-safe: frames may be left half written. Cancel it only to end the connection.
    pub(super) async fn flush(&mut self) -> Result<(), yawc::WebSocketError> {
        for frame in self.queued.drain(..) {
            self.inner.feed(frame).await?;
        }
        self.inner.flush().await
    }

    /// Ends the connection as `ending` says, within `linger`, then closes TCP (the server
    /// closes it first, RFC 6455 §7.1.1), or over HTTP/2 ends its stream (RFC 8441 §5.1).
    pub(super) async fn finish(mut self, ending: Ending, linger: Duration) {
        let closing = async {
            match ending {
                Ending::Close(code, reason) => {
                    self.inner.send(Frame::close(CloseCode::from(code), reason)).await?;
                    // §7.1.1: after its close the server reads (and discards) until the peer's close.
                    while let Ok(frame) = self.inner.next_frame().await {
                        if frame.opcode() == OpCode::Close {
                            break;
                        }
                    }
                }
                Ending::Answered => {
                    // Readiness writes what yawc queued (the close echo, or its error close).
                    poll_fn(|cx| Pin::new(&mut self.inner).poll_ready(cx)).await?;
                    self.inner.flush().await?;
                }
            }
            self.inner.close().await
        };
        if let Ok(Err(e)) = tokio::time::timeout(linger, closing).await {
            tracing::debug!(error = %e, "websocket close failed");
        }
    }
}

fn fail(code: u16, reason: &'static str) -> Incoming {
    Incoming::End(Ending::Close(code, reason))
}
