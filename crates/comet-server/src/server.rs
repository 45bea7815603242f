//! The accept loop and the server's lifecycle (DESIGN §7, §8).
//!
//! Our own loop instead of `axum::serve` because we need: a header-read timeout (slowloris), a
//! connection count and limit, polite refusal when out of file descriptors, and a bounded
//! graceful drain in which every long-lived response ends itself.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::router::app;
use crate::state::AppState;

/// The listen backlog: connection storms (thousands of clients reconnecting after a restart)
/// overflow tokio's default of 1,024, and the kernel then drops SYNs that clients retry only
/// after a second or more. The kernel caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (a restarted server can bind while old
/// connections sit in TIME_WAIT).
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

const REFUSAL_BODY: &str =
    "{\"error\":{\"code\":\"unavailable\",\"message\":\"server at its connection limit; retry later\"}}";

/// Answers `503` on a connection we will not serve: reads (and discards) the request head for at
/// most 500 ms and 8 KiB so the client sees an answer to its request, then closes.
async fn refuse(mut stream: TcpStream) {
    let mut head = [0u8; 8192];
    let mut read = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while read < head.len() && !head[..read].windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut head[read..])).await {
            Ok(Ok(n)) if n > 0 => read += n,
            _ => break,
        }
    }
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{REFUSAL_BODY}",
        REFUSAL_BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.write_all(response.as_bytes())).await;
    let _ = stream.shutdown().await;
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    // EMFILE (24): this process; ENFILE (23): the whole system.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// A spare descriptor, given up to accept-and-refuse when the process is out of descriptors
/// (so clients get a 503 instead of hanging in the backlog), then taken again.
fn spare_fd() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

struct ConnectionCount(Arc<AtomicI64>);

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `listener` until `state.shutdown` is cancelled, then drains: long-lived responses end
/// themselves (they watch the same token), and connections still open after
/// `shutdown_grace_secs` are dropped.
///
/// # Errors
/// None today; accept errors are logged and survived. The `Result` leaves room for bind-time
/// checks.
pub async fn serve(listener: TcpListener, state: AppState) -> io::Result<()> {
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
    let graceful = GracefulShutdown::new();
    let connections = Arc::clone(&state.metrics.connections);
    let mut spare = spare_fd();
    loop {
        let accepted = tokio::select! {
            () = state.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(ok) => ok,
            Err(e) if is_fd_exhaustion(&e) => {
                state.metrics.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "out of file descriptors; refusing a connection");
                drop(spare.take());
                if let Ok((stream, _)) = listener.accept().await {
                    refuse(stream).await;
                }
                spare = spare_fd();
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
            tokio::spawn(refuse(stream));
            continue;
        }
        connections.fetch_add(1, Ordering::Relaxed);
        let count = ConnectionCount(Arc::clone(&connections));
        let _ = stream.set_nodelay(true);
        let service = router
            .clone()
            .map_request(move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(count);
        });
    }
    drop(listener);
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(?grace, "connections still open after the grace period; closing them");
    }
    Ok(())
}
