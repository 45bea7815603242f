//! The accept loop and the server's lifecycle (DESIGN §7, §8).
//!
//! Our own loop instead of `axum::serve` because we need: a header-read timeout (slowloris), a
//! connection count and limit, polite refusal when out of file descriptors, and a bounded
//! graceful drain in which every long-lived response ends itself.
//!
//! With TLS ([`serve_with_tls`], tls.rs) the handshake runs in the connection's task, bounded by
//! `header_read_timeout_secs` (the HTTP/1.1 header-read timeout then starts after it); a client
//! that does not finish it in time is dropped. A connection refused at a limit is refused inside
//! TLS: the handshake (bounded the same way, at most [`TLS_REFUSAL_HANDSHAKE`]) and then the same
//! `503`/`429` over HTTP/1.1 or HTTP/2, whichever ALPN chose. Out of descriptors, a TLS
//! connection is closed without an answer (the handshake cannot run in the accept loop).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use axum::extract::ConnectInfo;
use futures_util::future::Either;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::h1_stream::{self, Head, Prefixed};
use crate::limits::Limit;
use crate::router::app;
use crate::stall::WriteStall;
use crate::state::AppState;
use crate::tls::Tls;

/// The longest TLS handshake a connection being refused (at a limit) may take before it is
/// dropped without its answer.
pub const TLS_REFUSAL_HANDSHAKE: Duration = Duration::from_secs(2);

/// How long a refused connection (at `max_connections` or `max_connections_per_ip`) is read
/// from after its answer, for a client still sending a body (stall.rs, lingering close).
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// The listen backlog: connection storms (thousands of clients reconnecting after a restart)
/// overflow tokio's default of 1,024, and the kernel then drops SYNs that clients retry only
/// after a second or more. The kernel caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with [`LISTEN_BACKLOG`], `SO_REUSEADDR` (a restarted server can bind while old
/// connections sit in TIME_WAIT) and `TCP_NODELAY`, which Linux gives every accepted connection
/// (one `setsockopt` fewer per connection in a connect storm, S5 in bench/RESULTS.md).
///
/// # Errors
/// The socket, bind or listen error (e.g. the address is in use).
pub fn bind(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raises this process's open-file soft limit to its hard limit; returns `(soft, hard)` after.
///
/// # Errors
/// The `getrlimit`/`setrlimit` error.
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    let (_, hard) = rlimit::Resource::NOFILE.get()?;
    rlimit::Resource::NOFILE.set(hard, hard)?;
    rlimit::Resource::NOFILE.get()
}

/// Why a connection is refused, and what the client is told.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// Out of descriptors or over `max_connections`: `503`.
    Full,
    /// Over `max_connections_per_ip`: `429`.
    PerIp,
}

impl Refusal {
    fn response(self) -> String {
        let (status, code, message) = match self {
            Refusal::Full => (
                "503 Service Unavailable",
                "unavailable",
                "server at its connection limit; retry later",
            ),
            Refusal::PerIp => (
                "429 Too Many Requests",
                "too_many_connections",
                "too many connections from this address (max_connections_per_ip); retry later",
            ),
        };
        let body = format!("{{\"error\":{{\"code\":\"{code}\",\"message\":\"{message}\",\"retry_after\":1}}}}");
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

/// Answers a connection we will not serve: reads (and discards) the request head for at most
/// 500 ms and 8 KiB so the client sees an answer to its request, then closes. Returns the
/// socket, shut down, for [`Spares`] to keep its descriptor.
async fn refuse(mut stream: TcpStream, why: Refusal, linger: Duration) -> TcpStream {
    let mut head = [0u8; 8192];
    let mut read = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while read < head.len() && !head[..read].windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut head[read..])).await {
            Ok(Ok(n)) if n > 0 => read += n,
            _ => break,
        }
    }
    let response = why.response();
    // Closed lingering (stall.rs), for at most `linger`: a client still sending its request
    // body would otherwise get a reset before it reads the answer.
    let mut io = WriteStall::new(stream, Duration::from_millis(200));
    if io.write_all(response.as_bytes()).await.is_ok() {
        let _ = tokio::time::timeout(linger, io.shutdown()).await;
    }
    io.into_inner()
}

impl Refusal {
    /// The refusal as an answer to one request (inside TLS, or an HTTP/2 stream over the
    /// limit).
    fn into_response(self) -> axum::response::Response {
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

    /// The status and JSON body of [`response`](Self::response), to answer through hyper.
    fn status_and_body(self) -> (http::StatusCode, String) {
        let raw = self.response();
        let status = raw
            .get("HTTP/1.1 ".len().."HTTP/1.1 000".len())
            .and_then(|code| code.parse().ok())
            .and_then(|code| http::StatusCode::from_u16(code).ok())
            .unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE);
        let body = raw.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_owned();
        (status, body)
    }
}

/// Refuses a TLS connection as [`refuse`] does a plain one, inside TLS: the handshake (within
/// `handshake`, at most [`TLS_REFUSAL_HANDSHAKE`]), then every request on it is answered with the
/// refusal (HTTP/1.1 then close, or HTTP/2) for at most 700 ms, then the connection is closed.
async fn refuse_tls(stream: TcpStream, tls: tokio_rustls::TlsAcceptor, why: Refusal, handshake: Duration) {
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

fn is_fd_exhaustion(e: &io::Error) -> bool {
    // EMFILE (24): this process; ENFILE (23): the whole system.
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
struct Spares(Arc<std::sync::Mutex<Vec<std::os::fd::OwnedFd>>>);

impl Spares {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<std::os::fd::OwnedFd>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens spares until there are [`SPARE_FDS`] (or no descriptor is left).
    fn top_up(&self) {
        let mut spares = self.lock();
        while spares.len() < SPARE_FDS {
            match std::fs::File::open("/dev/null") {
                Ok(fd) => spares.push(fd.into()),
                Err(_) => break,
            }
        }
    }

    fn take(&self) -> Option<std::os::fd::OwnedFd> {
        self.lock().pop()
    }

    /// Keeps `stream`'s descriptor as a spare, if one is missing.
    fn give_back(&self, stream: TcpStream) {
        let mut spares = self.lock();
        if spares.len() < SPARE_FDS
            && let Ok(stream) = stream.into_std()
        {
            spares.push(stream.into());
        }
    }
}

struct ConnectionCount(Arc<AtomicI64>);

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A TCP connection's place in `max_connections` and `max_connections_per_ip`, given back when
/// the last holder drops it: the connection's task, and any WebSocket upgraded from it (the
/// session outlives hyper's connection future), found in each request's extensions.
/// One HTTP/2 request in flight on its connection; `others` were in flight when it started.
struct InFlight {
    count: Arc<AtomicI64>,
    others: i64,
}

impl InFlight {
    fn enter(count: &Arc<AtomicI64>) -> Self {
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

/// An HTTP/2 request's places (see the accept loop), in its extensions: a WebSocket session
/// over the stream keeps it, as it keeps [`ConnectionHold`].
#[derive(Clone)]
pub(crate) struct StreamHold(#[allow(dead_code)] Arc<(Option<InFlight>, Option<crate::limits::Held>)>);

impl std::fmt::Debug for StreamHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamHold")
    }
}

#[derive(Clone)]
pub(crate) struct ConnectionHold(#[allow(dead_code)] Arc<(ConnectionCount, crate::limits::Held)>);

impl std::fmt::Debug for ConnectionHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionHold")
    }
}

/// Serves `listener` until `state.shutdown` is cancelled, then drains: long-lived responses end
/// themselves (they watch the same token), and connections still open after
/// `shutdown_grace_secs` are dropped. Speaks TLS when the configuration names a certificate and
/// key (`tls_cert_file`, `tls_key_file`), loaded here; to reload them later, load a [`Tls`]
/// yourself and call [`serve_with_tls`].
///
/// # Errors
/// `InvalidInput` when the TLS files cannot be loaded ([`crate::TlsError`]). Accept errors are
/// logged and survived.
pub async fn serve(listener: TcpListener, state: AppState) -> io::Result<()> {
    let tls = Tls::from_config(&state.config).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    serve_with_tls(listener, state, tls).await
}

/// [`serve`] with the TLS given: `Some` serves HTTPS (ALPN `h2`, `http/1.1`) with `tls`, whose
/// [`Tls::reload`] then changes the certificate of new connections; `None` serves plain TCP.
/// The configuration's `tls_*` settings are not read here.
///
/// # Errors
/// None today; accept errors are logged and survived.
pub async fn serve_with_tls(listener: TcpListener, state: AppState, tls: Option<Tls>) -> io::Result<()> {
    let handshake = Duration::from_secs(state.config.header_read_timeout_secs);
    let head_timeout = handshake;
    let stall = state.config.write_stall();
    let router = app(state.clone());
    let config = Arc::clone(&state.config);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(config.header_read_timeout_secs));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .enable_connect_protocol();
    // Over TLS, ALPN has already chosen the protocol: skipping auto-detection (which has no
    // timeout) lets HTTP/1.1's header-read timeout start at once after the handshake.
    let alpn_builders = Arc::new((builder.clone().http1_only(), builder.clone().http2_only()));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let connections = Arc::clone(&state.metrics.connections);
    let spares = Spares::default();
    spares.top_up();
    // Linux copies TCP_NODELAY from the listening socket to each connection it accepts.
    let nodelay_inherited =
        cfg!(target_os = "linux") && socket2::SockRef::from(&listener).tcp_nodelay().unwrap_or(false);
    // Rate-limit state of clients back at a full allowance is dropped now and then.
    // Spares missing (a refusal that could not give its descriptor back) are opened again.
    let sweeper = {
        let (limits, shutdown, spares) = (Arc::clone(&state.limits), state.shutdown.clone(), spares.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        limits.sweep();
                        spares.top_up();
                    }
                }
            }
        })
    };
    loop {
        let accepted = tokio::select! {
            () = state.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(ok) => ok,
            Err(e) if is_fd_exhaustion(&e) => {
                // Without a spare every descriptor is in use, the spares' by refusals still
                // running: the connection waits in the backlog until one gives its back.
                if let Some(fd) = spares.take() {
                    drop(fd);
                    if let Ok((stream, _)) = listener.accept().await {
                        state.metrics.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "out of file descriptors; refusing a connection");
                        // In a task of its own, so a client slow to send its request head holds up
                        // no one; over TLS the answer needs a handshake, too long to spend a
                        // descriptor on now: closed.
                        if tls.is_none() {
                            let spares = spares.clone();
                            tokio::spawn(async move {
                                let stream = refuse(stream, Refusal::Full, Duration::from_millis(300)).await;
                                spares.give_back(stream);
                            });
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
        };
        if connections.load(Ordering::Relaxed) >= i64::try_from(config.max_connections).unwrap_or(i64::MAX) {
            state.metrics.refused.fetch_add(1, Ordering::Relaxed);
            state.metrics.limit_refused(Limit::Connections);
            match &tls {
                None => tokio::spawn(async move { drop(refuse(stream, Refusal::Full, REFUSAL_LINGER).await) }),
                Some(tls) => tokio::spawn(refuse_tls(stream, tls.acceptor(), Refusal::Full, handshake)),
            };
            continue;
        }
        let Some(per_ip) = state.limits.connection(peer.ip()) else {
            match &tls {
                None => tokio::spawn(async move { drop(refuse(stream, Refusal::PerIp, REFUSAL_LINGER).await) }),
                Some(tls) => tokio::spawn(refuse_tls(stream, tls.acceptor(), Refusal::PerIp, handshake)),
            };
            continue;
        };
        connections.fetch_add(1, Ordering::Relaxed);
        let hold = ConnectionHold(Arc::new((ConnectionCount(Arc::clone(&connections)), per_ip)));
        let request_hold = hold.clone();
        let upgrade_hold = hold.clone();
        if !nodelay_inherited {
            let _ = stream.set_nodelay(true);
        }
        let streams_router = router.clone();
        // Set by the connection's first request: one that sends none within the header-read
        // timeout (an HTTP/2 preface, then silence) is dropped.
        let asked = Arc::new(AtomicBool::new(false));
        let service = {
            let (router, limits, asked) = (router.clone(), Arc::clone(&state.limits), Arc::clone(&asked));
            let in_flight = Arc::new(AtomicI64::new(0));
            tower::service_fn(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                asked.store(true, Ordering::Relaxed);
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(request_hold.clone());
                // Over HTTP/2 every request in flight past the first takes a place in
                // `max_connections_per_ip` too, as it would on a connection of its own, for
                // as long as its response lasts (a WebSocket over it: as long as the session).
                let stream = (req.version() == http::Version::HTTP_2).then(|| InFlight::enter(&in_flight));
                let extra = match &stream {
                    Some(stream) if stream.others > 0 => match limits.connection(peer.ip()) {
                        Some(held) => Some(held),
                        None => return Either::Left(std::future::ready(Ok(Refusal::PerIp.into_response()))),
                    },
                    _ => None,
                };
                let guard = Arc::new((stream, extra));
                req.extensions_mut().insert(StreamHold(Arc::clone(&guard)));
                let call = router.clone().oneshot(req.map(axum::body::Body::new));
                Either::Right(async move {
                    let res = call.await?;
                    Ok::<_, std::convert::Infallible>(res.map(|body| crate::body::guarded(body, guard)))
                })
            })
        };
        // The acceptor is taken now: it serves the certificate current at accept time.
        let alpn_builders = Arc::clone(&alpn_builders);
        let (builder, watcher, tls) = (
            Arc::clone(&builder),
            graceful.watcher(),
            tls.as_ref().map(Tls::acceptor),
        );
        let task = async move {
            let service = TowerToHyperService::new(service);
            // The first request head is read here, within the header-read timeout (hyper's
            // starts only with a request's first byte, and its protocol detection has none): a
            // streaming subscription is then written without hyper's buffers (h1_stream.rs),
            // anything else goes to hyper with the bytes read so far put back. Hyper's future
            // is boxed, so the task of a streaming connection is not sized for it.
            macro_rules! serve_io {
                ($io:expr, $builder:expr, $upgrades:ident) => {{
                    let mut io = $io;
                    match h1_stream::read_head(&mut io, head_timeout, $upgrades.is_some()).await {
                        Head::Gone => Ok(()),
                        Head::Stream(mut request) => {
                            request.extensions_mut().insert(ConnectInfo(peer));
                            h1_stream::serve_stream(io, request, streams_router, stall).await;
                            Ok(())
                        }
                        Head::Upgrade(mut request) => {
                            // Only asked for on plain TCP, where `$upgrades` is the stream itself.
                            if let Some(into_tcp) = $upgrades {
                                request.extensions_mut().insert(ConnectInfo(peer));
                                // The WebSocket session keeps the connection counted.
                                request.extensions_mut().insert(upgrade_hold);
                                // Boxed: the task of every streaming connection would be sized for it.
                                Box::pin(h1_stream::serve_upgrade(into_tcp(io), request, streams_router)).await;
                            }
                            Ok(())
                        }
                        Head::Other(prefix) => {
                            let io = TokioIo::new(WriteStall::new(Prefixed::new(prefix, io), stall));
                            let conn = $builder.serve_connection_with_upgrades(io, service);
                            let conn = Box::pin(watcher.watch(conn.into_owned()));
                            // Over HTTP/1.1 the first request head is in already; over HTTP/2 the
                            // preface is, and a request must follow within the timeout.
                            let first_request = async {
                                tokio::time::sleep(head_timeout).await;
                                if asked.load(Ordering::Relaxed) {
                                    std::future::pending::<()>().await;
                                }
                            };
                            tokio::select! {
                                served = conn => served,
                                () = first_request => {
                                    tracing::debug!(%peer, "no request within header_read_timeout_secs; dropped");
                                    Ok(())
                                }
                            }
                        }
                    }
                }};
            }
            let served = match tls {
                None => {
                    let plain = Some(|io: TcpStream| io);
                    serve_io!(stream, builder, plain)
                }
                // In this task, so a slow handshake holds up no one; bounded like a request head.
                // Boxed like hyper's.
                Some(tls) => {
                    Box::pin(async move {
                        match tokio::time::timeout(handshake, tls.accept(stream)).await {
                            // ALPN has chosen the protocol: no detection step.
                            Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => {
                                let plain = None::<fn(_) -> TcpStream>;
                                serve_io!(stream, alpn_builders.1, plain)
                            }
                            Ok(Ok(stream)) => {
                                let plain = None::<fn(_) -> TcpStream>;
                                serve_io!(stream, alpn_builders.0, plain)
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                Ok(())
                            }
                            Err(_) => {
                                tracing::debug!(%peer, ?handshake, "TLS handshake not finished in time; dropped");
                                Ok(())
                            }
                        }
                    })
                    .await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(hold);
        };
        tokio::spawn(task);
    }
    drop(listener);
    sweeper.abort();
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    // Hyper's connections drain through `graceful`; streams written by h1_stream end themselves
    // (their bodies watch the shutdown token) and are counted in `connections`.
    let drained = async {
        graceful.shutdown().await;
        while connections.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(?grace, "connections still open after the grace period; closing them");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The accept loop skips `set_nodelay` when the listener's TCP_NODELAY is inherited: each
    /// connection [`bind`](super::bind) accepts must have it (else a reply written in two
    /// pieces waits for the client's delayed ACK).
    #[tokio::test]
    async fn connections_accepted_from_bind_have_nodelay() {
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        if cfg!(target_os = "linux") {
            assert!(
                accepted.nodelay().unwrap(),
                "Linux copies TCP_NODELAY from the listener"
            );
        }
        drop(client);
    }
}
