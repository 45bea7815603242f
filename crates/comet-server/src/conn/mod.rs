//! The connection layer (the top of the server): the accept loop and the server's lifecycle.
//!
//! Our own loop instead of `axum::serve` because we need: a header-read timeout (slowloris), a
//! connection count and limit, polite refusal when out of file descriptors, and a bounded
//! graceful drain in which every long-lived response ends itself.
//!
//! - `admit`: which connections are served, and the refusals (`503`, `429`) of the others;
//! - `connection`: one connection's task (TLS handshake, first head, then h1.rs or hyper);
//! - `head`: reading the first request head; `h1`: writing a streaming response or a
//!   WebSocket `101` without hyper; `rewind`: the bytes read put back for hyper;
//! - [`tls`]: certificates and their reload.
//!
//! With TLS ([`serve_with_tls`]) the handshake runs in the connection's task, bounded by
//! `header_read_timeout_secs` (the HTTP/1.1 header-read timeout then starts after it); a client
//! that does not finish it in time is dropped. A connection refused at a limit is refused inside
//! TLS: the handshake (bounded the same way, at most [`TLS_REFUSAL_HANDSHAKE`]) and then the same
//! `503`/`429` over HTTP/1.1 or HTTP/2, whichever ALPN chose. Out of descriptors, a TLS
//! connection is closed without an answer (the handshake cannot run in the accept loop).

mod admit;
mod connection;
mod h1;
mod head;
mod rewind;
pub mod tls;

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

pub use self::admit::TLS_REFUSAL_HANDSHAKE;
use self::admit::{ConnectionCount, REFUSAL_LINGER, Refusal, Spares, is_fd_exhaustion, refuse, refuse_tls};
use self::connection::Shared;
use self::tls::Tls;
use crate::io::hold::ConnectionHold;
use crate::limits::Limit;
use crate::state::AppState;

/// The listen backlog: connection storms (thousands of clients reconnecting after a restart)
/// overflow tokio's default of 1,024, and the kernel then drops SYNs that clients retry only
/// after a second or more. The kernel caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// How long the kernel holds a new connection that has sent nothing before handing it to
/// `accept` anyway (`TCP_DEFER_ACCEPT`, tcp(7)): one second, then the header-read timeout
/// (`header_read_timeout_secs`) applies to it as to any other. The kernel hands it over when the
/// client answers the SYN-ACK it repeats at that point; if that exchange is lost, at the next
/// repeat (about 3 s after the handshake, then 7 s, …, `net.ipv4.tcp_synack_retries`).
pub const DEFER_ACCEPT: Duration = Duration::from_secs(1);

/// Binds `addr` with [`LISTEN_BACKLOG`], `SO_REUSEADDR` (a restarted server can bind while old
/// connections sit in TIME_WAIT), `TCP_NODELAY`, which Linux gives every accepted connection
/// (one `setsockopt` fewer per connection in a connect storm, S5 in bench/RESULTS.md), and on
/// Linux `TCP_DEFER_ACCEPT` for [`DEFER_ACCEPT`]: a connection is accepted once its request (or
/// TLS ClientHello) is in, so the server is woken once per connection instead of twice and its
/// first read finds the request (S5: 6 % less time to 10,000 subscribers). Every client Comet
/// serves speaks first; one that sends nothing is accepted about a second late. Where the option
/// cannot be set, the listener works without it.
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
    #[cfg(target_os = "linux")]
    if let Err(e) = comet_sys::set_tcp_defer_accept(std::os::fd::AsFd::as_fd(&socket), DEFER_ACCEPT) {
        tracing::debug!(error = %e, "TCP_DEFER_ACCEPT not set; connections are accepted at once");
    }
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
    let tls = Tls::from_config(state.config.tls()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    serve_with_tls(listener, state, tls).await
}

/// Binds `internal_listen` and serves the internal router there (plain HTTP, axum's own
/// server: a private listener for operators), until shutdown; its address goes to
/// [`AppState::internal_addr`].
async fn serve_internal(state: &AppState) -> io::Result<()> {
    let addr: std::net::SocketAddr = state
        .config
        .internal_listen
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("internal_listen: {e}")))?;
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    state.set_internal_addr(bound);
    tracing::info!(addr = %bound, "internal listener (metrics, server API) on http://{bound}/");
    let router = crate::http::internal_app(state.clone());
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the internal listener failed");
        }
    });
    Ok(())
}

/// [`serve`] with the TLS given: `Some` serves HTTPS (ALPN `h2`, `http/1.1`) with `tls`, whose
/// [`Tls::reload`] then changes the certificate of new connections; `None` serves plain TCP.
/// The configuration's `tls_*` settings are not read here.
///
/// # Errors
/// None today; accept errors are logged and survived.
pub async fn serve_with_tls(listener: TcpListener, state: AppState, tls: Option<Tls>) -> io::Result<()> {
    let config = Arc::clone(&state.config);
    if !config.internal_listen.is_empty() {
        serve_internal(&state).await?;
    }
    let shared = Arc::new(Shared::new(&state));
    let head_timeout = shared.head_timeout;
    let graceful = GracefulShutdown::new();
    let connections = Arc::clone(&state.metrics.connections);
    let spares = Spares::default();
    spares.top_up();
    // Linux copies TCP_NODELAY from the listening socket to each connection it accepts.
    let nodelay_inherited =
        cfg!(target_os = "linux") && socket2::SockRef::from(&listener).tcp_nodelay().unwrap_or(false);
    let sweeper = tokio::spawn(sweep(state.clone(), spares.clone()));
    // The admin console's numbers of this node, kept and sent to the other nodes.
    if !config.admin_api_key.is_empty() {
        tokio::spawn(state.clone().report_nodes());
    }
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
        let refusal =
            if connections.load(Ordering::Relaxed) >= i64::try_from(config.max_connections).unwrap_or(i64::MAX) {
                state.metrics.refused.fetch_add(1, Ordering::Relaxed);
                state.metrics.limit_refused(Limit::Connections);
                Err(Refusal::Full)
            } else {
                state.limits.connection(peer.ip()).ok_or(Refusal::PerIp)
            };
        let per_ip = match refusal {
            Ok(per_ip) => per_ip,
            Err(why) => {
                match &tls {
                    None => tokio::spawn(async move { drop(refuse(stream, why, REFUSAL_LINGER).await) }),
                    Some(tls) => tokio::spawn(refuse_tls(stream, tls.acceptor(), why, head_timeout)),
                };
                continue;
            }
        };
        let hold = ConnectionHold::new((ConnectionCount::enter(&connections), per_ip));
        if !nodelay_inherited {
            let _ = stream.set_nodelay(true);
        }
        // The acceptor is taken now: it serves the certificate current at accept time.
        let acceptor = tls.as_ref().map(Tls::acceptor);
        tokio::spawn(connection::run(
            stream,
            peer,
            hold,
            Arc::clone(&shared),
            graceful.watcher(),
            acceptor,
        ));
    }
    drop(listener);
    sweeper.abort();
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    // Hyper's connections drain through `graceful`; streams written by h1.rs end themselves
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

/// Every 30 s until shutdown: drops the rate-limit state of clients back at a full allowance,
/// and opens again the spares missing (a refusal that could not give its descriptor back).
async fn sweep(state: AppState, spares: Spares) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => break,
            _ = tick.tick() => {
                state.limits.sweep();
                spares.top_up();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::AsyncWriteExt;

    use crate::io::hold::ConnectionHold;
    use crate::state::AppState;

    /// The accept loop skips `set_nodelay` when the listener's TCP_NODELAY is inherited: each
    /// connection [`bind`](super::bind) accepts must have it (else a reply written in two
    /// pieces waits for the client's delayed ACK).
    #[tokio::test]
    async fn connections_accepted_from_bind_have_nodelay() {
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The listener defers accept until the client's first bytes are in.
        client.write_all(b"GET").await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        if cfg!(target_os = "linux") {
            assert!(
                accepted.nodelay().unwrap(),
                "Linux copies TCP_NODELAY from the listener"
            );
        }
        drop(client);
    }

    /// `bind` sets TCP_DEFER_ACCEPT (`DEFER_ACCEPT`) on Linux: the connect storm's wakeups
    /// (S5 in bench/RESULTS.md). comet-sys's tests show what the option does.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn bind_defers_accept_until_the_request_is_in() {
        use std::os::fd::AsFd;
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(
            comet_sys::tcp_defer_accept(listener.as_fd()).unwrap(),
            super::DEFER_ACCEPT
        );
        let v6 = super::bind("[::1]:0".parse().unwrap());
        if let Ok(v6) = v6 {
            assert_eq!(comet_sys::tcp_defer_accept(v6.as_fd()).unwrap(), super::DEFER_ACCEPT);
        }
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let early = tokio::time::timeout(std::time::Duration::from_millis(200), listener.accept()).await;
        assert!(early.is_err(), "accepted before the client sent anything");
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let accepted = tokio::time::timeout(std::time::Duration::from_secs(5), listener.accept()).await;
        assert!(
            matches!(accepted, Ok(Ok(_))),
            "not accepted once the request was in: {accepted:?}"
        );
    }

    /// What every open stream keeps for its life is its connection's task: the connection's
    /// first step (the head read, the router's call, the head written) is boxed and freed once
    /// the stream is open (connection.rs `run`). With that step inline the task was 1,784 bytes
    /// (this debug build), half of an idle subscriber's memory (S1 in bench/RESULTS.md).
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        use std::sync::atomic::AtomicI64;

        let config = crate::config::Config::default();
        let broker = Arc::new(comet_core::MemoryBroker::new(config.hub_config()));
        let state = AppState::new(broker, config);
        let shared = Arc::new(super::Shared::new(&state));
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        client.write_all(b"GET").await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let hold = ConnectionHold::new(super::ConnectionCount::enter(&Arc::new(AtomicI64::new(0))));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let task = super::connection::run(stream, peer, hold, shared, graceful.watcher(), None);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 512, "a connection's task is {size} bytes");
        drop(task);
        drop(client);
    }
}
