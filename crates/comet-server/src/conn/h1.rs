//! Long-lived HTTP/1.1 responses (SSE, HTTP streaming, iframe) written without hyper's
//! per-connection buffers.
//!
//! An idle SSE subscriber served by hyper keeps two buffers of 8 KiB each for the life of the
//! connection (the read buffer, and the write buffer for heads), two thirds of its memory
//! (bench/RESULTS.md, S1). So the connection layer reads each new connection's first request head
//! itself (head.rs) and, when it is a `GET /sub/…` that will stream (as the dispatcher decides,
//! transport/mod.rs `choose`), runs the router on it and writes the response here
//! ([`serve_stream`]): the head, then each body chunk in one vectored write
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
use std::task::Poll;
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
use crate::io::joined::{JOIN_BELOW, with_joined};
use crate::io::stall::WriteStall;
use crate::io::upgrade::DirectUpgrade;

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

/// Runs `router` on `request` and writes the response to `io` as HTTP/1.1 with
/// `Connection: close`: a body of known length as is, any other chunked, each chunk in one
/// vectored write. Returns when the body ends, the client goes away (EOF, error, or more than
/// [`MAX_HEAD`] bytes sent after its request), a write fails, or a write stays blocked for
/// `stall` (`write_stall_timeout_secs`: the client reads nothing); then closes `io`.
pub(crate) async fn serve_stream<IO>(
    io: IO,
    request: Box<Request<Body>>,
    router: Router,
    cors: &SimpleCors,
    stall: Duration,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut io = WriteStall::new(io, stall);
    // The request comes boxed and the response is taken apart in blocks: whatever this future
    // holds across an `.await` stays in every idle subscriber's task (bench/RESULTS.md, S1).
    // The router's future is boxed too: it is large, and done with once it answers.
    let (mut body, exact) = {
        let span = crate::http::request_span(&request);
        let origin = request.headers().get(header::ORIGIN).cloned();
        let response = match Box::pin(tracing::Instrument::instrument(router.oneshot(*request), span)).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (head, exact) = response_head(&response, Some((cors, origin.as_ref())));
        let mut body = response.into_body();
        // The head goes out with the body's first frame when that frame is ready at once (an
        // SSE stream's `retry:` field, a replay): one send, and one read for the client, per
        // connection instead of two (S5, bench/RESULTS.md).
        let first = body.frame().now_or_never();
        match first {
            Some(frame) => match write_frame(&mut io, &head, frame, exact.is_some()).await {
                Ok(true) => {}
                Ok(false) => return shut(io).await,
                Err(()) => return,
            },
            None => {
                if io.write_all(&head).await.is_err() {
                    return;
                }
            }
        }
        (body, exact)
    };
    let mut sink = [0u8; 64];
    let mut ignored = 0usize;
    // The task wakes for every message; the socket is read only when it woke it (gate.rs).
    let mut gate = ReadGate::new();
    loop {
        let read = std::future::poll_fn(|cx| {
            gate.poll(cx, |cx| {
                let mut buf = ReadBuf::new(&mut sink);
                Pin::new(&mut io)
                    .poll_read(cx, &mut buf)
                    .map_ok(|()| buf.filled().len())
            })
        });
        let frame = tokio::select! {
            frame = body.frame() => frame,
            read = read => match read {
                Ok(n) if n > 0 && ignored + n <= MAX_HEAD => {
                    ignored += n;
                    continue;
                }
                _ => return,
            },
        };
        match write_frame(&mut io, &[], frame, exact.is_some()).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(()) => return,
        }
    }
    shut(io).await
}

/// Closes `io` after the last byte, waiting at most a second for the client's side.
async fn shut<IO: AsyncWrite + Unpin>(mut io: IO) {
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
}

/// Writes `before` (a response head, or nothing) and then one body frame: its data as is when
/// the body's length is `exact`, else as one chunk; the last chunk when the body ended.
/// `Ok(true)`: more frames may follow; `Ok(false)`: the body ended and is written; `Err`: the
/// body failed or the client went away.
async fn write_frame<W: AsyncWrite + Unpin>(
    io: &mut W,
    before: &[u8],
    frame: Option<Result<http_body::Frame<Bytes>, axum::Error>>,
    exact: bool,
) -> Result<bool, ()> {
    let (written, more) = match frame {
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) if data.is_empty() => (write_parts(io, [before, &[], &[], &[]]).await, true),
            Ok(data) if exact => (write_parts(io, [before, &[], &data, &[]]).await, true),
            Ok(data) => (write_chunk(io, before, &data).await, true),
            Err(_trailers) => (write_parts(io, [before, &[], &[], &[]]).await, true),
        },
        Some(Err(_)) => return Err(()),
        None if exact => (write_parts(io, [before, &[], &[], &[]]).await, false),
        None => (write_parts(io, [before, b"0\r\n\r\n", &[], &[]]).await, false),
    };
    written.map(|()| more).map_err(|_| ())
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
        head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
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

/// Writes `before` (a response head, or nothing) and then `data` as one chunk (RFC 9112 §7.1):
/// size line, data, CRLF.
async fn write_chunk<W: AsyncWrite + Unpin>(io: &mut W, before: &[u8], data: &[u8]) -> io::Result<()> {
    let mut size = [0u8; 18];
    let size_len = chunk_size_line(data.len(), &mut size);
    write_parts(io, [before, &size[..size_len], data, b"\r\n"]).await
}

/// Writes the four pieces in order, in one write when the socket takes it all (copied together
/// when small, see joined.rs; else vectored).
async fn write_parts<W: AsyncWrite + Unpin>(io: &mut W, pieces: [&[u8]; 4]) -> io::Result<()> {
    let total: usize = pieces.iter().map(|piece| piece.len()).sum();
    if total == 0 {
        return Ok(());
    }
    let mut parts = pieces.map(IoSlice::new);
    let mut parts: &mut [IoSlice<'_>] = &mut parts;
    if total <= JOIN_BELOW {
        // Copied within one poll, so no buffer is part of this future (which every idle
        // stream's task holds): what the socket does not take at once goes vectored.
        let written = std::future::poll_fn(|cx| {
            with_joined(pieces, |joined| match Pin::new(&mut *io).poll_write(cx, joined) {
                Poll::Pending => Poll::Ready(Ok(0)),
                done => done,
            })
        })
        .await?;
        IoSlice::advance_slices(&mut parts, written);
    }
    while !parts.is_empty() {
        let n = io.write_vectored(parts).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut parts, n);
    }
    Ok(())
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
