//! [`TestServer`]: a real server on a free loopback port, over any broker, shut down when dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use comet_core::{Broker, MemoryBroker};
use comet_server::{AppState, Config, Tls};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::wait::{SOON, recv_timeout};

/// A running server; shuts down when dropped.
#[derive(Debug)]
pub struct TestServer {
    /// Where it listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    /// Its state: broker, config, metrics, shutdown token.
    pub state: AppState,
    /// The accept loop, until [`shutdown`](Self::shutdown) awaits it.
    pub task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// `http://` + the address + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Where `internal_listen` is bound, once the server task has bound it (within
    /// [`SOON`]).
    ///
    /// # Panics
    /// When it is not bound by then.
    pub async fn internal_addr(&self) -> SocketAddr {
        let deadline = Instant::now() + SOON;
        loop {
            if let Some(addr) = self.state.internal_addr() {
                return addr;
            }
            assert!(Instant::now() < deadline, "the internal listener was never bound");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `ws://` + the address + `path`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Cancels the shutdown token and waits (bounded) for the accept loop to finish draining.
    pub async fn shutdown(&mut self) {
        self.state.shutdown.cancel();
        if let Some(task) = self.task.take() {
            recv_timeout(Duration::from_secs(15), task)
                .await
                .expect("server task panicked")
                .expect("serve failed");
        }
    }

    /// Publishes through the HTTP API and returns the cursor.
    pub async fn publish(&self, channel: &str, data: &str) -> String {
        let res = reqwest::Client::new()
            .post(self.url(&format!("/pub/{channel}")))
            .body(data.to_owned())
            .send()
            .await
            .expect("publish request");
        assert_eq!(res.status(), 201, "publish answered {}", res.status());
        let v: serde_json::Value = res.json().await.expect("publish json");
        v["id"].as_str().expect("id").to_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}

/// Starts a server with the default config on a free loopback port.
pub async fn start_server() -> TestServer {
    start_server_with(Config::default()).await
}

/// Starts a server with `config` (its `listen` is ignored) on a free loopback port, on the
/// in-memory broker.
pub async fn start_server_with(config: Config) -> TestServer {
    let broker = Arc::new(MemoryBroker::new(config.hub_config()));
    start_server_on(broker, config).await
}

/// Starts a server on `broker` (the memory broker, Redis, …) with `config` (its `listen` is
/// ignored) on a free loopback port.
pub async fn start_server_on(broker: Arc<dyn Broker>, config: Config) -> TestServer {
    // Bound as `comet serve` binds (backlog, TCP_NODELAY, TCP_DEFER_ACCEPT).
    let listener = comet_server::bind(([127, 0, 0, 1], 0).into()).expect("bind");
    let state = AppState::new(broker, config);
    let addr = listener.local_addr().expect("addr");
    // `serve`, as `comet serve` does: TLS when the configuration names its files.
    let task = tokio::spawn(comet_server::serve(listener, state.clone()));
    TestServer {
        addr,
        state,
        task: Some(task),
    }
}

/// Serves `state` on `listener` with `tls` (the configuration's `tls_*` are not read), in a
/// task of its own.
pub fn serve_tls_on(listener: tokio::net::TcpListener, state: AppState, tls: Tls) -> TestServer {
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(comet_server::serve_with_tls(listener, state.clone(), Some(tls)));
    TestServer {
        addr,
        state,
        task: Some(task),
    }
}

/// Subscribers of `channel` as `/channels/{channel}` reports them.
pub async fn subscribers(server: &TestServer, channel: &str) -> u64 {
    let res = recv_timeout(SOON, reqwest::get(server.url(&format!("/channels/{channel}"))))
        .await
        .expect("channel info");
    let v: Value = res.json().await.expect("channel info JSON");
    v["subscribers"].as_u64().expect("subscribers")
}

/// Waits (bounded) until `channel` has `n` subscribers.
pub async fn wait_subscribers(server: &TestServer, channel: &str, n: u64, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = subscribers(server, channel).await;
        if now == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{why}: {channel} still has {now} subscribers, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
