//! Long-lived HTTP/1.1 responses (SSE, HTTP streaming, iframe) written without hyper's
//! per-connection buffers.
//!
//! An idle SSE subscriber served by hyper keeps two buffers of 8 KiB each for the life of the
//! connection (the read buffer, and the write buffer for heads), two thirds of its memory
//! (bench/RESULTS.md, S1). So the connection layer reads each new connection's first request head
//! itself (head.rs) and, when it is a `GET /sub/…` that will stream (as the dispatcher decides,
//! transport/mod.rs `choose`), runs the router on it and writes the response here
//! ([`open`], then [`Open::serve`]): the head, then each body chunk in one write
//! (RFC 9112 §7.1 chunked coding), with `Connection: close`. Between chunks it watches the
//! socket, so a client that goes away is noticed at once, not at the next heartbeat.
//!
//! A WebSocket upgrade (`Upgrade: websocket`) on plain TCP is served here too
//! ([`serve_upgrade`]): the handler answers it without hyper ([`DirectUpgrade`]), and once its
//! `101` is written the session owns the `TcpStream` itself, not hyper's `Upgraded` wrapper around
//! it, so a message's frame goes from the shared encoding to the socket in one write.
//!

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tower::ServiceExt;

use super::head::MAX_HEAD;
use crate::http::SimpleCors;
use crate::io::gate::ReadGate;
use crate::io::hold::ConnectionHold;
use crate::io::joined::{JOIN_BELOW, with_joined};
use crate::io::stall::WriteStall;
use crate::io::upgrade::DirectUpgrade;
use crate::state::AppState;

/// How long an answer other than `101` to an upgrade may take to produce its body.
const UPGRADE_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `router` on a WebSocket upgrade read by [`read_head`]. A `101` answer is written (head
/// only) and the connection handed to the handler's session; any other answer is written whole
/// with `Connection: close`.
pub(crate) async fn serve_upgrade(mut io: TcpStream, mut request: Box<Request<Body>>, router: Router) {
    let (upgrade, handover) = DirectUpgrade::new();
    request.extensions_mut().insert(upgrade);
    let response = match router.oneshot(*request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        let head = upgrade_head(&response);
        drop(response);
        if io.write_all(&head).await.is_ok() {
            // The session takes it from here; if it is gone, dropping `io` closes the connection.
            let _ = handover.send(io);
        }
        return;
    }
    // An error (400, 401, 426, …): small, and the connection closes after it. (A route that
    // streams is not one a client would upgrade on; it gets the first seconds of its body.)
    let (parts, body) = response.into_parts();
    let Ok(Ok(body)) = tokio::time::timeout(UPGRADE_ANSWER_TIMEOUT, body.collect()).await else {
        return;
    };
    let body = body.to_bytes();
    let response = Response::from_parts(parts, Body::from(body.clone()));
    // The router's CORS layer has added its fields.
    let (head, _) = response_head(&response, None);
    if io.write_all(&head).await.is_ok() && io.write_all(&body).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
    }
}

/// The status line and headers of a `101` (RFC 9110 §15.2.2), as the handler wrote them.
fn upgrade_head(response: &Response<Body>) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    for (name, value) in response.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// A streaming response whose head is written ([`open`]): what an idle subscriber's task holds
/// while [`Open::serve`] writes the rest.
pub(crate) struct Open<IO> {
    io: WriteStall<IO>,
    body: Body,
    /// The body's length is known (written as is, not chunked).
    exact: bool,
    /// The connection's places in the connection limits, given back when the stream ends.
    hold: Option<ConnectionHold>,
}

/// Runs `router` on `request` and writes the response head as HTTP/1.1 with
/// `Connection: close` (with the body's first frame when it is ready at once); [`Open::serve`]
/// writes the rest. A body of known length goes as is, any other chunked. `None` when the
/// response is over already (written whole, or the client is gone). `stall`
/// (`write_stall_timeout_secs`) bounds how long any write may stay blocked.
///
/// The connection layer runs this in a box of its own: the router's call and the head's write
/// would otherwise size the task that every open stream keeps for its whole life (S1 and S5 in
/// bench/RESULTS.md: that task was 1.9 KB of a subscriber's 4.1).
pub(crate) async fn open<IO>(
    io: IO,
    request: Box<Request<Body>>,
    state: &AppState,
    router: &Router,
    cors: &SimpleCors,
    stall: Duration,
) -> Option<Open<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut io = WriteStall::new(io, stall);
    let span = crate::http::request_span(&request);
    let origin = request.headers().get(header::ORIGIN).cloned();
    // `GET /sub/{channels}` without the router's per-request work; anything else through it.
    // Either way the request's box is freed with this future rather than kept by the stream.
    let response = match crate::transport::subscribe_direct(state.clone(), request) {
        Ok(direct) => tracing::Instrument::instrument(direct, span).await,
        Err(request) => match tracing::Instrument::instrument(router.clone().oneshot(*request), span).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
    };
    let (head, exact) = response_head(&response, Some((cors, origin.as_ref())));
    let mut body = response.into_body();
    let exact = exact.is_some();
    // The head goes out with the body's first frame when that frame is ready at once (an SSE
    // stream's `retry:` field, a replay): one send, and one read for the client, per connection
    // instead of two (S5, bench/RESULTS.md).
    let (mut out, more) = match body.frame().now_or_never() {
        Some(frame) => Outgoing::of(head, frame, exact).ok()?,
        None => (Outgoing::head(head), true),
    };
    std::future::poll_fn(|cx| out.poll_write(cx, &mut io)).await.ok()?;
    if !more {
        shut(io).await;
        return None;
    }
    Some(Open {
        io,
        body,
        exact,
        hold: None,
    })
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Open<IO> {
    /// Keeps `hold` until the stream ends.
    pub(crate) fn holding(mut self, hold: ConnectionHold) -> Self {
        self.hold = Some(hold);
        self
    }

    /// Writes the body's frames as they come, each in one write, watching the socket between
    /// them; returns when the body ends, the client goes away (EOF, error, or more than
    /// [`MAX_HEAD`] bytes sent after its request), a write fails, or a write stays blocked for
    /// the stall limit; then closes the connection.
    ///
    /// Not an `async fn`: one would keep a second copy of `self` in its state.
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn serve(mut self) -> impl Future<Output = ()> {
        async move {
            let mut sink = [0u8; 64];
            let mut ignored = 0usize;
            // The task wakes for every message; the socket is read only when it woke it (gate.rs).
            let mut gate = ReadGate::new();
            loop {
                let io = &mut self.io;
                let read = std::future::poll_fn(|cx| {
                    gate.poll(cx, |cx| {
                        let mut buf = ReadBuf::new(&mut sink);
                        Pin::new(&mut *io)
                            .poll_read(cx, &mut buf)
                            .map_ok(|()| buf.filled().len())
                    })
                });
                let frame = tokio::select! {
                    frame = self.body.frame() => frame,
                    read = read => match read {
                        Ok(n) if n > 0 && ignored + n <= MAX_HEAD => {
                            ignored += n;
                            continue;
                        }
                        _ => return,
                    },
                };
                let Ok((mut out, more)) = Outgoing::of(Vec::new(), frame, self.exact) else {
                    return;
                };
                if std::future::poll_fn(|cx| out.poll_write(cx, &mut self.io))
                    .await
                    .is_err()
                {
                    return;
                }
                if !more {
                    break;
                }
            }
            // Boxed: its timer would size every open stream's task for a moment at its end.
            Box::pin(shut(self.io)).await;
            // Named here so that the block owns it (a block captures only the fields it names):
            // the connection is counted until its stream ends.
            drop(self.hold);
        }
    }
}

/// Closes `io` after the last byte, waiting at most a second for the client's side.
async fn shut<IO: AsyncWrite + Unpin>(mut io: IO) {
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}

/// What one body frame puts on the socket, and how much of it is written: a response head (or
/// nothing), then the frame's data as is when the body's length is known, else as one chunk
/// (RFC 9112 §7.1: size line, data, CRLF), or the last chunk when the body ended. Written by
/// [`Outgoing::poll_write`] without a future of its own, so the stream's task holds no more than
/// this while a write waits.
struct Outgoing {
    head: Vec<u8>,
    size: [u8; 18],
    size_len: u8,
    data: Bytes,
    tail: &'static [u8],
    written: usize,
}

impl Outgoing {
    /// A head alone.
    fn head(head: Vec<u8>) -> Self {
        Self {
            head,
            size: [0; 18],
            size_len: 0,
            data: Bytes::new(),
            tail: &[],
            written: 0,
        }
    }

    /// `head` (or nothing) and then `frame`, and whether more frames may follow; `Err` when the
    /// body failed.
    fn of(
        head: Vec<u8>,
        frame: Option<Result<http_body::Frame<Bytes>, axum::Error>>,
        exact: bool,
    ) -> Result<(Self, bool), ()> {
        let mut out = Self::head(head);
        let more = match frame {
            Some(Ok(frame)) => {
                // Trailers are not written (a stream has none); empty data writes nothing.
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    if !exact {
                        out.size_len = chunk_size_line(data.len(), &mut out.size) as u8;
                        out.tail = b"\r\n";
                    }
                    out.data = data;
                }
                true
            }
            Some(Err(_)) => return Err(()),
            None => {
                if !exact {
                    out.tail = b"0\r\n\r\n";
                }
                false
            }
        };
        Ok((out, more))
    }

    /// Writes what is left, in one write when the socket takes it all (copied together when
    /// small, see joined.rs; else vectored). What a first write leaves goes vectored, so nothing
    /// is copied twice.
    fn poll_write<W: AsyncWrite + Unpin>(&mut self, cx: &mut Context<'_>, io: &mut W) -> Poll<io::Result<()>> {
        loop {
            let pieces = [
                &self.head[..],
                &self.size[..usize::from(self.size_len)],
                &self.data[..],
                self.tail,
            ];
            let total: usize = pieces.iter().map(|piece| piece.len()).sum();
            if self.written >= total {
                return Poll::Ready(Ok(()));
            }
            let polled = if self.written == 0 && total <= JOIN_BELOW {
                with_joined(pieces, |joined| {
                    Pin::new(&mut *io).poll_write(cx, &joined[self.written..])
                })
            } else {
                let mut parts = pieces.map(IoSlice::new);
                let mut parts: &mut [IoSlice<'_>] = &mut parts;
                IoSlice::advance_slices(&mut parts, self.written);
                Pin::new(&mut *io).poll_write_vectored(cx, parts)
            };
            match polled {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The status line and headers of `response` (hop-by-hop ones replaced by ours), with `cors`'s
/// fields for the request's `Origin` when given, and the body length if known.
fn response_head(
    response: &Response<Body>,
    cors: Option<(&SimpleCors, Option<&HeaderValue>)>,
) -> (Vec<u8>, Option<u64>) {
    let exact = http_body::Body::size_hint(response.body()).exact();
    let mut head = Vec::with_capacity(512);
    let status = response.status();
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in response.headers() {
        if name == header::CONNECTION || name == header::TRANSFER_ENCODING || name == header::CONTENT_LENGTH {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if let Some((cors, origin)) = cors {
        cors.write(origin, &mut head);
    }
    if !response.headers().contains_key(header::DATE) {
        // RFC 9110 §6.6.1: an origin server with a clock sends Date.
        head.extend_from_slice(b"date: ");
        http_date(std::time::SystemTime::now(), &mut head);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n");
    match exact {
        Some(len) => {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(len.to_string().as_bytes());
            head.extend_from_slice(b"\r\n\r\n");
        }
        None => head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n"),
    }
    (head, exact)
}

/// Appends `now` as an HTTP date (RFC 9110 §5.6.7, "Sun, 06 Nov 1994 08:49:37 GMT"), formatted
/// once a second per thread rather than for every response (about 700 instructions of each
/// streaming connect, S5 in bench/RESULTS.md).
fn http_date(now: std::time::SystemTime, out: &mut Vec<u8>) {
    thread_local! {
        /// The second last formatted, and its text.
        static LAST: std::cell::Cell<(u64, [u8; 29])> = const { std::cell::Cell::new((u64::MAX, [0; 29])) };
    }
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    LAST.with(|last| {
        let (at, mut text) = last.get();
        if at != second {
            let formatted = httpdate::fmt_http_date(now);
            // Always 29 bytes for the years a clock gives (1970 to 9999).
            if formatted.len() != text.len() {
                out.extend_from_slice(formatted.as_bytes());
                return;
            }
            text.copy_from_slice(formatted.as_bytes());
            last.set((second, text));
        }
        out.extend_from_slice(&text);
    });
}

/// Writes `len` in hex plus CRLF into `out`; returns the length written.
fn chunk_size_line(len: usize, out: &mut [u8; 18]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        out[digits - 1 - i] = HEX[(len >> (4 * i)) & 0xf];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The date kept for a second reads as httpdate formats it, in that second and the next.
    #[test]
    fn http_dates_are_kept_for_one_second() {
        let base = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777);
        for (at, text) in [
            (base, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (base + Duration::from_millis(999), "Sun, 06 Nov 1994 08:49:37 GMT"),
            (base + Duration::from_secs(1), "Sun, 06 Nov 1994 08:49:38 GMT"),
            (base, "Sun, 06 Nov 1994 08:49:37 GMT"),
        ] {
            let mut out = Vec::new();
            http_date(at, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
        let now = std::time::SystemTime::now();
        let mut out = Vec::new();
        http_date(now, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), httpdate::fmt_http_date(now));
    }

    #[test]
    fn chunk_size_lines() {
        let mut out = [0u8; 18];
        for (len, line) in [(0, "0\r\n"), (9, "9\r\n"), (255, "ff\r\n"), (4096, "1000\r\n")] {
            let n = chunk_size_line(len, &mut out);
            assert_eq!(&out[..n], line.as_bytes());
        }
        let n = chunk_size_line(usize::MAX, &mut out);
        assert_eq!(n, 18);
    }
}
