//! The only file that knows the WebSocket library, yawc (DESIGN §8). The session above speaks
//! in [`Incoming`] messages and queued text; replacing yawc means rewriting this file alone.
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
//! - A handshake that h1_stream.rs read on plain TCP ([`DirectUpgrade`]) is answered here
//!   (`Sec-WebSocket-Accept`, §4.2.2; permessage-deflate as [`agree_deflate`] agrees), and yawc runs
//!   on the `TcpStream` itself, shared with the session. Without compression the session writes
//!   its frames to that stream directly ([`Direct`]): a message's frame is encoded once for every
//!   socket ([`text_frame`]) and a batch goes out in one `send`, without a copy into yawc's
//!   buffer. Measured with callgrind: 2,881 → 2,317 instructions per delivered message
//!   (bench/RESULTS.md).
//! - Anything else (TLS, HTTP/2's extended CONNECT, an upgrade after another request on the
//!   same connection) goes through hyper, and yawc answers the handshake and writes every frame.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::Response;
use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, SinkExt};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, UPGRADE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};
use sha1::{Digest as _, Sha1};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::codec::Encoder as _;
use yawc::close::CloseCode;
use yawc::codec::Encoder;
use yawc::streaming::Streaming;
use yawc::{DeflatePool, Frame, HttpStream, IncomingUpgrade, OpCode, Options, Role, UpgradeFut, WebSocket};

use crate::config::Config;
use crate::error::ApiError;
use crate::io::joined::{JOIN_BELOW, with_joined};
use crate::io::upgrade::DirectUpgrade;

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

/// The permessage-deflate terms this server agrees to (RFC 7692 §7.1): no context takeover in
/// either direction (§7.1.1.1 and §7.1.1.2 let a server add both to any offer); the window is
/// the default unless the offer asks for a smaller one ([`agree_deflate`]).
const AGREED_DEFLATE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The GUID of RFC 6455 §1.3 that `Sec-WebSocket-Accept` hashes with the key.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A valid upgrade request (RFC 6455 §4.2.1), not answered yet.
pub(super) struct Handshake {
    how: How,
    /// The permessage-deflate terms agreed, if compression is enabled and an offer acceptable.
    compress: Option<Agreed>,
}

/// Who answers the handshake and hands over the connection.
enum How {
    /// hyper (HTTP/2, TLS, or a connection hyper served first): yawc answers and upgrades.
    Hyper(IncomingUpgrade),
    /// h1_stream read the request itself on a plain TCP connection: answered here, and the
    /// connection arrives on `connection` once the `101` is written.
    Direct {
        accept: HeaderValue,
        connection: oneshot::Receiver<TcpStream>,
    },
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("direct", &matches!(self.how, How::Direct { .. }))
            .field("compress", &self.compress.as_ref().map(|a| &a.answer))
            .finish_non_exhaustive()
    }
}

/// `400 bad_transport` for a request that is not a WebSocket handshake.
fn not_a_handshake() -> ApiError {
    ApiError::bad_request(
        "bad_transport",
        "not a WebSocket handshake: an HTTP/1.1 GET with Upgrade: websocket, Connection: Upgrade and \
         Sec-WebSocket-Key (RFC 6455 §4.2.1), or an HTTP/2 CONNECT with :protocol = websocket (RFC 8441 §4)",
    )
}

impl Handshake {
    /// Validates the upgrade request in `parts`: an HTTP/1.1 upgrade (RFC 6455 §4.2.1) or an
    /// HTTP/2 extended CONNECT (RFC 8441 §4; yawc's `http2` feature tells them apart). The
    /// version was checked before: yawc would answer a wrong one with `400` instead of `426`.
    ///
    /// # Errors
    /// `400 bad_transport` when the request is not a WebSocket handshake.
    pub(super) async fn from_parts(parts: &mut Parts, config: &Config) -> Result<Self, ApiError> {
        let compress = if config.ws_compression {
            agree_deflate(&parts.headers)
        } else {
            None
        };
        if let Some(direct) = parts.extensions.get::<DirectUpgrade>() {
            let accept = accept_value(handshake_key(&parts.headers).ok_or_else(not_a_handshake)?);
            let connection = direct.take().ok_or_else(not_a_handshake)?;
            return Ok(Self {
                how: How::Direct { accept, connection },
                compress,
            });
        }
        // yawc checks only that a key is there; an HTTP/1.1 upgrade is held to §4.2.1 here too.
        if parts.method == http::Method::GET && handshake_key(&parts.headers).is_none() {
            return Err(not_a_handshake());
        }
        // yawc reads one offer and merges it with our options: it is shown only the offer agreed
        // to, in the words of the answer, or none.
        match &compress {
            Some(agreed) => {
                let offer = HeaderValue::from_str(&agreed.answer).map_err(|_| not_a_handshake())?;
                parts.headers.insert(SEC_WEBSOCKET_EXTENSIONS, offer);
            }
            None => {
                parts.headers.remove(SEC_WEBSOCKET_EXTENSIONS);
            }
        }
        let upgrade = IncomingUpgrade::from_request_parts(parts, &())
            .await
            .map_err(|_| not_a_handshake())?;
        Ok(Self {
            how: How::Hyper(upgrade),
            compress,
        })
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
        if let Some(agreed) = &self.compress {
            options = options
                .with_low_latency_compression()
                .server_no_context_takeover()
                .client_no_context_takeover()
                .with_deflate_pool(deflate_pool())
                .with_compression_threshold(COMPRESSION_THRESHOLD);
            if let Some(bits) = agreed.server_max_window_bits {
                options = options.with_server_max_window_bits(bits);
            }
        }
        let max_message = config.ws_max_message_size;
        match self.how {
            How::Hyper(upgrade) => {
                let (response, upgrade) = upgrade.upgrade(options).map_err(|e| ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    code: "internal",
                    message: format!("websocket handshake failed: {e}"),
                    retry_after: None,
                })?;
                Ok((
                    response.map(Body::new),
                    Accepted {
                        how: Opening::Hyper(upgrade),
                        max_message,
                    },
                ))
            }
            How::Direct { accept, connection } => {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let headers = response.headers_mut();
                headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
                let agreed = self.compress.map(|agreed| agreed.answer);
                if let Some(answer) = &agreed {
                    let answer = HeaderValue::from_str(answer).map_err(|_| not_a_handshake())?;
                    headers.insert(SEC_WEBSOCKET_EXTENSIONS, answer);
                }
                Ok((
                    response,
                    Accepted {
                        how: Opening::Direct {
                            connection,
                            options: Box::new(options),
                            compress: agreed,
                        },
                        max_message,
                    },
                ))
            }
        }
    }
}

/// The `Sec-WebSocket-Key` of an HTTP/1.1 handshake (RFC 6455 §4.2.1), or `None` if it is not
/// one: `Upgrade` must name `websocket` and `Connection` must list `Upgrade` (case-insensitive
/// tokens), and the key must be the base64 of 16 bytes.
fn handshake_key(headers: &HeaderMap) -> Option<&[u8]> {
    let has_token = |name, token: &str| list_items(headers, name).any(|t| t.eq_ignore_ascii_case(token));
    if !has_token(UPGRADE, "websocket") || !has_token(CONNECTION, "upgrade") {
        return None;
    }
    let key = headers.get(SEC_WEBSOCKET_KEY)?.as_bytes();
    let nonce = base64::engine::general_purpose::STANDARD.decode(key).ok()?;
    (nonce.len() == 16).then_some(key)
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2 item 5.4): base64 of the SHA-1 of the key
/// and the GUID.
fn accept_value(key: &[u8]) -> HeaderValue {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(ACCEPT_GUID);
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
    // Base64 is visible ASCII.
    HeaderValue::from_str(&accept).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The items of a comma-separated header field, trimmed, over every line of it (RFC 9110 §5.6.1,
/// §5.3); lines that are not visible ASCII are skipped.
pub(super) fn list_items<'a>(
    headers: &'a HeaderMap,
    name: http::header::HeaderName,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The permessage-deflate terms agreed with a client (RFC 7692 §5, §7.1): the first offer in
/// `Sec-WebSocket-Extensions` whose parameters this server supports, answered as
/// [`AGREED_DEFLATE`] plus the `server_max_window_bits` the offer asked for, if any. `None` when
/// no offer is acceptable; the connection then runs uncompressed.
///
/// An offer is declined (§5: "the server MUST decline ... an extension parameter not defined
/// for use in an offer, ... an invalid value, ... more than one of the same name") when a
/// parameter is unknown, repeated or badly formed, and when it asks for a server window of
/// 8 bits, which the deflate implementation cannot produce (it supports 9–15). A
/// `client_max_window_bits` offer is taken and not answered: the client keeps its window of up
/// to 15 bits (§7.1.2.2), which this server always inflates with.
fn agree_deflate(headers: &HeaderMap) -> Option<Agreed> {
    list_items(headers, SEC_WEBSOCKET_EXTENSIONS).find_map(acceptable_offer)
}

/// The agreed `Sec-WebSocket-Extensions` answer and the server's window, in bits.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Agreed {
    answer: String,
    server_max_window_bits: Option<u8>,
}

/// One offer of [`agree_deflate`], or `None` if it is declined.
fn acceptable_offer(offer: &str) -> Option<Agreed> {
    let mut params = offer.split(';').map(str::trim);
    if !params.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen = [false; 4];
    let mut server_bits = None;
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        let index = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            "server_max_window_bits" => {
                server_bits = Some(window_bits(value?)?);
                2
            }
            "client_max_window_bits" => {
                if let Some(value) = value {
                    window_bits(value)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
    }
    if server_bits == Some(8) {
        return None;
    }
    let answer = match server_bits {
        Some(bits) => format!("{AGREED_DEFLATE}; server_max_window_bits={bits}"),
        None => AGREED_DEFLATE.to_owned(),
    };
    Some(Agreed {
        answer,
        server_max_window_bits: server_bits,
    })
}

/// A window size of RFC 7692 §7.1.2: an integer 8–15 without leading zeros.
fn window_bits(value: &str) -> Option<u8> {
    let bits: u8 = value.parse().ok()?;
    ((8..=15).contains(&bits) && !value.starts_with('0') && value.len() <= 2).then_some(bits)
}

/// The upgrade, answered; completes once the connection has been handed over.
#[derive(Debug)]
pub(super) struct Accepted {
    how: Opening,
    max_message: usize,
}

#[derive(Debug)]
enum Opening {
    /// hyper hands the connection over to yawc.
    Hyper(UpgradeFut),
    /// h1_stream hands over the TCP connection once it has written the `101`.
    Direct {
        connection: oneshot::Receiver<TcpStream>,
        options: Box<Options>,
        /// The permessage-deflate answer, if agreed ([`agree_deflate`]).
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

/// A TCP connection that yawc reads and writes (pongs, closes) while the session writes its own
/// frames to it directly ([`Direct`]). Reads and writes wait for readiness and then try, as
/// tokio's own split halves do.
struct SharedTcp(Arc<TcpStream>);

impl AsyncRead for SharedTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale; `try_read` cleared it, so the next poll registers.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
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

/// The session's own writes to a plain TCP connection without compression: each message's frame
/// is encoded once and shared by every socket ([`text_frame`]), and a batch goes out in one
/// vectored write, without a copy into yawc's buffer.
struct Direct {
    tcp: Arc<TcpStream>,
    /// Encoded frames not yet written; those before `written` are, and the one at `written` may
    /// have been in part (its written bytes are advanced past).
    frames: Vec<Bytes>,
    written: usize,
    /// yawc may hold bytes not yet written (a pong it queued while reading): they go first, so
    /// frames are never interleaved.
    yawc_dirty: bool,
}

impl Direct {
    /// The most frames handed to one `writev`.
    const MAX_SLICES: usize = 64;

    /// Writes every frame in `frames`.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.frames.len() {
            let pending = &self.frames[self.written..];
            // Tried first: the socket is usually writable, and `try_*` checks its readiness.
            let tried = if let [frame] = pending {
                self.tcp.try_write(frame)
            } else if pending.iter().map(Bytes::len).sum::<usize>() <= JOIN_BELOW {
                with_joined(pending.iter().map(|f| &f[..]), |joined| self.tcp.try_write(joined))
            } else {
                let mut slices = [IoSlice::new(&[]); Self::MAX_SLICES];
                let count = pending.len().min(Self::MAX_SLICES);
                for (slice, frame) in slices.iter_mut().zip(pending) {
                    *slice = IoSlice::new(frame);
                }
                self.tcp.try_write_vectored(&slices[..count])
            };
            let mut n = match tried {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_write_ready(cx))?;
                    continue;
                }
                Err(e) => return Poll::Ready(Err(e)),
            };
            while n > 0 {
                let frame = &mut self.frames[self.written];
                if n < frame.len() {
                    frame.advance(n);
                    break;
                }
                n -= frame.len();
                self.written += 1;
            }
        }
        self.written = 0;
        // A burst's room is given back; the usual batch's is kept.
        if self.frames.capacity() > Self::MAX_SLICES {
            self.frames = Vec::new();
        } else {
            self.frames.clear();
        }
        Poll::Ready(Ok(()))
    }
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
                        s.send(Frame::close(CloseCode::from(code), reason)).await?;
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
    Incoming::End(Ending::Close(code, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreed(offers: &[&str]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for offer in offers {
            headers.append(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_str(offer).unwrap());
        }
        agree_deflate(&headers).map(|a| a.answer)
    }

    #[test]
    fn the_first_acceptable_deflate_offer_is_agreed() {
        let plain = Some(AGREED_DEFLATE.to_owned());
        assert_eq!(agreed(&["permessage-deflate"]), plain);
        assert_eq!(agreed(&["permessage-deflate; client_max_window_bits"]), plain);
        assert_eq!(agreed(&["permessage-deflate; client_max_window_bits=10"]), plain);
        assert_eq!(
            agreed(&["permessage-deflate; server_no_context_takeover; server_max_window_bits=9"]),
            Some(format!("{AGREED_DEFLATE}; server_max_window_bits=9"))
        );
        assert_eq!(
            agreed(&["permessage-deflate; server_max_window_bits=\"12\""]),
            Some(format!("{AGREED_DEFLATE}; server_max_window_bits=12"))
        );
        // RFC 7692 §5: the first offer the server supports, in one header line or several.
        assert_eq!(agreed(&["x-webkit-deflate-frame, permessage-deflate"]), plain);
        assert_eq!(
            agreed(&[
                "permessage-deflate; server_max_window_bits=8",
                "permessage-deflate; server_max_window_bits=11"
            ]),
            Some(format!("{AGREED_DEFLATE}; server_max_window_bits=11"))
        );
        assert_eq!(
            agreed(&["permessage-deflate; server_max_window_bits=8, permessage-deflate; client_no_context_takeover"]),
            plain
        );
    }

    #[test]
    fn offers_with_unknown_repeated_or_bad_parameters_are_declined() {
        for offer in [
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; server_max_window_bits=ten",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
        ] {
            assert_eq!(agreed(&[offer]), None, "{offer}");
        }
        assert_eq!(agreed(&[]), None);
    }
}
