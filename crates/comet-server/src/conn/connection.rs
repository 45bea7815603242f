//! One accepted connection, in its own task: the TLS handshake (bounded by the header-read
//! timeout), the first request head (head.rs), then either the router on a connection of its
//! own (h1.rs: a streaming subscription, or a WebSocket upgrade on plain TCP) or hyper, with the
//! bytes read so far put back (rewind.rs) and every request given the connection's places.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use futures_util::FutureExt;
use futures_util::future::Either;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;

use super::admit::{InFlight, Refusal};
use super::h1;
use super::head::{self, Head};
use super::rewind::Prefixed;
use crate::io::hold::{ConnectionHold, StreamHold};
use crate::io::stall::WriteStall;
use crate::limits::Limits;

/// What every connection's task shares, made once by the accept loop.
pub(super) struct Shared {
    pub(super) router: Router,
    /// The streaming subscriptions' router (`crate::http::stream_app`): their route alone,
    /// without the request-trace layer, which would also wrap every chunk they send.
    pub(super) stream_router: Router,
    /// The server's state, for the streaming subscriptions h1.rs serves without the router
    /// (`crate::transport::subscribe_direct`).
    pub(super) state: crate::state::AppState,
    /// The CORS fields h1.rs writes into the streaming subscriptions' heads.
    pub(super) stream_cors: crate::http::SimpleCors,
    pub(super) limits: Arc<Limits>,
    /// Protocol detection (plain TCP), then HTTP/1.1 only and HTTP/2 only (over TLS, ALPN has
    /// already chosen: skipping detection, which has no timeout, lets HTTP/1.1's header-read
    /// timeout start at once after the handshake).
    pub(super) auto: auto::Builder<TokioExecutor>,
    pub(super) http1: auto::Builder<TokioExecutor>,
    pub(super) http2: auto::Builder<TokioExecutor>,
    /// `header_read_timeout_secs`: the TLS handshake, then the first request head (or, over
    /// HTTP/2, the first request after the preface), each within it.
    pub(super) head_timeout: Duration,
    /// `write_stall_timeout_secs`.
    pub(super) stall: Duration,
}

impl Shared {
    /// What the connections of `state`'s server share.
    pub(super) fn new(state: &crate::state::AppState) -> Self {
        let config = &state.config;
        let head_timeout = Duration::from_secs(config.header_read_timeout_secs);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(head_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .enable_connect_protocol();
        Self {
            router: crate::http::app(state.clone()),
            stream_router: crate::http::stream_app(state.clone()),
            state: state.clone(),
            stream_cors: crate::http::SimpleCors::new(config),
            limits: Arc::clone(&state.limits),
            http1: builder.clone().http1_only(),
            http2: builder.clone().http2_only(),
            auto: builder,
            head_timeout,
            stall: config.write_stall(),
        }
    }
}

/// A connection's transport: plain TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP connection itself, to hand a WebSocket upgrade to without hyper; `None` over TLS
    /// (upgrades then go through hyper, and [`head::read_head`] is not asked for them).
    fn into_tcp(self) -> Option<TcpStream>;
    const PLAIN: bool;
}

impl Io for TcpStream {
    fn into_tcp(self) -> Option<TcpStream> {
        Some(self)
    }
    const PLAIN: bool = true;
}

impl Io for TlsStream<TcpStream> {
    fn into_tcp(self) -> Option<TcpStream> {
        None
    }
    const PLAIN: bool = false;
}

/// Serves one accepted connection until it ends; `hold` (its places in the connection limits)
/// is given back when it and every WebSocket session upgraded from it are done.
///
/// In two steps. The first, boxed, serves everything but a plain streaming response: the TLS
/// handshake, the first request head, hyper's connections, WebSocket upgrades, and a stream up to
/// its written head. The task then keeps only the open stream: its allocation is 512 bytes
/// where it was 1,920 with the first step inline, in every idle subscriber (S1 and S5 in
/// bench/RESULTS.md).
pub(super) fn run(
    stream: TcpStream,
    peer: SocketAddr,
    hold: ConnectionHold,
    shared: Arc<Shared>,
    watcher: Watcher,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> impl Future<Output = ()> + Send + 'static {
    Box::pin(start(stream, peer, hold, shared, watcher, tls)).then(|open| match open {
        Some(open) => Either::Left(open.serve()),
        None => Either::Right(std::future::ready(())),
    })
}

/// [`run`]'s first step: the connection served whole, or a plain streaming response whose head
/// is written, holding the connection's `hold`.
async fn start(
    stream: TcpStream,
    peer: SocketAddr,
    hold: ConnectionHold,
    shared: Arc<Shared>,
    watcher: Watcher,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Option<h1::Open<TcpStream>> {
    let served = match tls {
        None => match serve(stream, peer, &hold, &shared, &shared.auto, watcher).await {
            Ok(Some(open)) => return Some(open.holding(hold)),
            served => served.map(drop),
        },
        // In this task, so a slow handshake holds up no one; bounded like a request head.
        // Boxed: a TLS connection's state is several KB, which every plain one would otherwise
        // reserve while it starts.
        Some(tls) => Box::pin(serve_tls(stream, peer, &hold, &shared, watcher, tls)).await,
    };
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
    drop(hold);
    None
}

/// A TLS connection served whole: the handshake (within the header-read timeout), then
/// [`serve`] over HTTP/1.1 or HTTP/2, as ALPN chose.
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    hold: &ConnectionHold,
    shared: &Shared,
    watcher: Watcher,
    tls: tokio_rustls::TlsAcceptor,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match tokio::time::timeout(shared.head_timeout, tls.accept(stream)).await {
        // ALPN has chosen the protocol: no detection step.
        Ok(Ok(stream)) => {
            let builder = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => &shared.http2,
                _ => &shared.http1,
            };
            match serve(stream, peer, hold, shared, builder, watcher).await {
                Ok(Some(open)) => {
                    open.serve().await;
                    Ok(())
                }
                served => served.map(drop),
            }
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            Ok(())
        }
        Err(_) => {
            let handshake = shared.head_timeout;
            tracing::debug!(%peer, ?handshake, "TLS handshake not finished in time; dropped");
            Ok(())
        }
    }
}

/// Reads the first request head of `io` and serves the connection: a streaming subscription
/// (opened here, its head written, and returned for the caller to serve) or a plain-TCP
/// WebSocket upgrade on its own (h1.rs), anything else through hyper.
async fn serve<IO: Io>(
    mut io: IO,
    peer: SocketAddr,
    hold: &ConnectionHold,
    shared: &Shared,
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
) -> Result<Option<h1::Open<IO>>, Box<dyn std::error::Error + Send + Sync>> {
    match head::read_head(&mut io, shared.head_timeout, IO::PLAIN).await {
        Head::Gone => Ok(None),
        Head::Stream(mut request) => {
            request.extensions_mut().insert(ConnectInfo(peer));
            Ok(h1::open(
                io,
                request,
                &shared.state,
                &shared.stream_router,
                &shared.stream_cors,
                shared.stall,
            )
            .await)
        }
        Head::Upgrade(mut request) => {
            // Only asked for on plain TCP.
            if let Some(tcp) = io.into_tcp() {
                request.extensions_mut().insert(ConnectInfo(peer));
                // The WebSocket session keeps the connection counted.
                request.extensions_mut().insert(hold.clone());
                h1::serve_upgrade(tcp, request, shared.router.clone()).await;
            }
            Ok(None)
        }
        Head::Other(prefix) => {
            // Set by the connection's first request: one that sends none within the header-read
            // timeout (an HTTP/2 preface, then silence) is dropped.
            let asked = Arc::new(AtomicBool::new(false));
            let service = service(shared, peer, hold.clone(), Arc::clone(&asked));
            let io = TokioIo::new(WriteStall::new(Prefixed::new(prefix, io), shared.stall));
            let conn = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service));
            let conn = Box::pin(watcher.watch(conn.into_owned()));
            // Over HTTP/1.1 the first request head is in already; over HTTP/2 the preface is,
            // and a request must follow within the timeout.
            let first_request = async {
                tokio::time::sleep(shared.head_timeout).await;
                if asked.load(Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                served = conn => served.map(|()| None),
                () = first_request => {
                    tracing::debug!(%peer, "no request within header_read_timeout_secs; dropped");
                    Ok(None)
                }
            }
        }
    }
}

/// The service hyper runs for each request of a connection: the peer's address and the
/// connection's places go in the request's extensions, and over HTTP/2 every request in flight
/// past the first takes a place in `max_connections_per_ip` too, as it would on a connection of
/// its own, for as long as its response lasts (a WebSocket over it: as long as the session).
fn service(
    shared: &Shared,
    peer: SocketAddr,
    hold: ConnectionHold,
    asked: Arc<AtomicBool>,
) -> impl tower::Service<
    axum::extract::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    let (router, limits) = (shared.router.clone(), Arc::clone(&shared.limits));
    let in_flight = Arc::new(AtomicI64::new(0));
    tower::service_fn(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
        asked.store(true, Ordering::Relaxed);
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(hold.clone());
        let stream = (req.version() == http::Version::HTTP_2).then(|| InFlight::enter(&in_flight));
        let extra = match &stream {
            Some(stream) if stream.others > 0 => match limits.connection(peer.ip()) {
                Some(held) => Some(held),
                None => return Either::Left(std::future::ready(Ok(Refusal::PerIp.into_response()))),
            },
            _ => None,
        };
        let guard = Arc::new((stream, extra));
        req.extensions_mut().insert(StreamHold::new(Arc::clone(&guard)));
        let call = router.clone().oneshot(req.map(axum::body::Body::new));
        Either::Right(async move {
            let res = call.await?;
            Ok::<_, std::convert::Infallible>(res.map(|body| crate::io::body::guarded(body, guard)))
        })
    })
}
