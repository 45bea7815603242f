//! Admission: which connections are served, and how the others are refused.
//!
//! A connection over `max_connections` gets `503`, one over `max_connections_per_ip` gets
//! `429`, both with `Retry-After: 1` and a JSON error, then is closed lingering (io/stall.rs).
//! Inside TLS the refusal needs a handshake first ([`refuse_tls`]). Out of file descriptors,
//! the accept loop gives up one of its [`Spares`] to accept and refuse (plain TCP) or close (TLS)
//! the connection, rather than leave clients hanging in the backlog.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::io::stall::WriteStall;

/// The longest TLS handshake a connection being refused (at a limit) may take before it is
/// dropped without its answer.
pub const TLS_REFUSAL_HANDSHAKE: Duration = Duration::from_secs(2);

/// How long a refused connection (at `max_connections` or `max_connections_per_ip`) is read
/// from after its answer, for a client still sending a body (io/stall.rs, lingering close).
pub(super) const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Why a connection is refused, and what the client is told.
#[derive(Debug, Clone, Copy)]
pub(super) enum Refusal {
    /// Out of descriptors or over `max_connections`: `503`.
    Full,
    /// Over `max_connections_per_ip`: `429`.
    PerIp,
}

impl Refusal {
    /// The status, and the JSON body (`{"error":{"code","message","retry_after":1}}`).
    fn status_and_body(self) -> (StatusCode, String) {
        let (status, code, message) = match self {
            Refusal::Full => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "server at its connection limit; retry later",
            ),
            Refusal::PerIp => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                "too many connections from this address (max_connections_per_ip); retry later",
            ),
        };
        let body = format!("{{\"error\":{{\"code\":\"{code}\",\"message\":\"{message}\",\"retry_after\":1}}}}");
        (status, body)
    }

    /// The whole HTTP/1.1 answer, written on a plain socket that is then closed.
    fn http1(self) -> String {
        let (status, body) = self.status_and_body();
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            status.as_str(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
    }

    /// The refusal as an answer to one request through hyper (inside TLS, or an HTTP/2 stream
    /// over the limit).
    pub(super) fn into_response(self) -> axum::response::Response {
        let (status, body) = self.status_and_body();
        let mut res = axum::response::Response::new(axum::body::Body::from(body));
        *res.status_mut() = status;
        let headers = res.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        res
    }
}

/// Answers a connection we will not serve: reads (and discards) the request head for at most
/// 500 ms and 8 KiB so the client sees an answer to its request, then closes lingering for at
/// most `linger`. Returns the socket, shut down, for [`Spares`] to keep its descriptor.
pub(super) async fn refuse(mut stream: TcpStream, why: Refusal, linger: Duration) -> TcpStream {
    let mut head = [0u8; 8192];
    let mut read = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while read < head.len() && !head[..read].windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut head[read..])).await {
            Ok(Ok(n)) if n > 0 => read += n,
            _ => break,
        }
    }
    // Closed lingering: a client still sending its request body would otherwise get a reset
    // before it reads the answer.
    let mut io = WriteStall::new(stream, Duration::from_millis(200));
    if io.write_all(why.http1().as_bytes()).await.is_ok() {
        let _ = tokio::time::timeout(linger, io.shutdown()).await;
    }
    io.into_inner()
}

/// Refuses a TLS connection as [`refuse`] does a plain one, inside TLS: the handshake (within
/// `handshake`, at most [`TLS_REFUSAL_HANDSHAKE`]), then every request on it is answered with the
/// refusal (HTTP/1.1 then close, or HTTP/2) for at most 700 ms, then the connection is closed.
pub(super) async fn refuse_tls(stream: TcpStream, tls: tokio_rustls::TlsAcceptor, why: Refusal, handshake: Duration) {
    let Ok(Ok(stream)) = tokio::time::timeout(handshake.min(TLS_REFUSAL_HANDSHAKE), tls.accept(stream)).await else {
        return;
    };
    let service = hyper::service::service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
        std::future::ready(Ok::<_, std::convert::Infallible>(why.into_response()))
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(false);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(Duration::from_millis(700), conn).await;
}

/// Whether `accept` failed for want of a descriptor: EMFILE (24, this process) or ENFILE (23,
/// the whole system).
pub(super) fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Spare descriptors, each given up to accept-and-refuse one connection when the process is
/// out of descriptors (so clients get a 503 instead of hanging in the backlog). Several, so
/// that a few clients slow to send their request head (a refusal waits up to 500 ms for it) do
/// not keep the others from their answer. A refusal gives its own descriptor back (the socket,
/// shut down): freed, it would go to the next connection, which at the limit is one more to
/// refuse, and the spares would run out.
const SPARE_FDS: usize = 8;

#[derive(Clone, Default)]
pub(super) struct Spares(Arc<std::sync::Mutex<Vec<std::os::fd::OwnedFd>>>);

impl Spares {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<std::os::fd::OwnedFd>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens spares until there are [`SPARE_FDS`] (or no descriptor is left).
    pub(super) fn top_up(&self) {
        let mut spares = self.lock();
        while spares.len() < SPARE_FDS {
            match std::fs::File::open("/dev/null") {
                Ok(fd) => spares.push(fd.into()),
                Err(_) => break,
            }
        }
    }

    pub(super) fn take(&self) -> Option<std::os::fd::OwnedFd> {
        self.lock().pop()
    }

    /// Keeps `stream`'s descriptor as a spare, if one is missing.
    pub(super) fn give_back(&self, stream: TcpStream) {
        let mut spares = self.lock();
        if spares.len() < SPARE_FDS
            && let Ok(stream) = stream.into_std()
        {
            spares.push(stream.into());
        }
    }
}

/// A connection counted in `comet_connections` (and against `max_connections`) until dropped.
pub(super) struct ConnectionCount(pub(super) Arc<AtomicI64>);

impl ConnectionCount {
    /// Counts one more connection in `count`.
    pub(super) fn enter(count: &Arc<AtomicI64>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(count))
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One HTTP/2 request in flight on its connection; `others` were in flight when it started.
pub(super) struct InFlight {
    count: Arc<AtomicI64>,
    pub(super) others: i64,
}

impl InFlight {
    pub(super) fn enter(count: &Arc<AtomicI64>) -> Self {
        let others = count.fetch_add(1, Ordering::Relaxed);
        Self {
            count: Arc::clone(count),
            others,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain-socket answer and hyper's say the same thing.
    #[test]
    fn refusals_read_the_same_on_a_socket_and_through_hyper() {
        for why in [Refusal::Full, Refusal::PerIp] {
            let (status, body) = why.status_and_body();
            let raw = why.http1();
            assert!(raw.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{raw}");
            assert!(raw.ends_with(&body), "{raw}");
            let res = why.into_response();
            assert_eq!(res.status(), status);
            assert_eq!(res.headers()[http::header::RETRY_AFTER], "1");
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["error"]["retry_after"], 1);
        }
    }
}
