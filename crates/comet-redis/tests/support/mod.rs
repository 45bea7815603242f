//! Real parts for the multi-node tests: `redis-server` and `redis-sentinel` children on free
//! loopback ports (stopped by PID) and the TCP fault proxy, from the chaos suite
//! (`comet-chaos`); in-process comet nodes on the Redis broker, each comet-test-support's test
//! server.

#![allow(dead_code, unreachable_pub)]

pub mod proxy;

#[allow(unused_imports)] // each test file uses some
pub use comet_chaos::procs::{Persistence, RedisServer as Redis, Sentinels};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use comet_client::{Client, Event};
use comet_redis::{RedisBroker, RedisConfig};
use comet_server::{AppState, Config};
use serde_json::Value;

pub const SOON: Duration = Duration::from_secs(10);

/// The settings of a test node: no per-client limits (one test process stands for a thousand
/// clients), a deep history.
pub fn node_config() -> Config {
    Config {
        history_size: 1000,
        ..comet_test_support::unlimited()
    }
}

/// An in-process comet node on a free port, using the Redis broker (the shared test server,
/// comet-test-support, over it); shut down when dropped.
pub struct Node {
    pub addr: SocketAddr,
    pub state: AppState,
    _server: comet_test_support::TestServer,
}

impl Node {
    pub async fn start(redis: &Redis) -> Self {
        Self::start_at(&redis.url(), node_config()).await
    }

    /// A node on the Redis at `url` (e.g. through a [`proxy::FaultProxy`]).
    pub async fn start_at(url: &str, config: Config) -> Self {
        let broker = RedisBroker::connect(RedisConfig {
            presence_ttl: Duration::from_secs(config.presence_ttl_secs),
            ..RedisConfig::new(url, config.hub_config())
        })
        .await
        .expect("connect");
        let server = comet_test_support::start_server_on(Arc::new(broker), config).await;
        Node {
            addr: server.addr,
            state: server.state.clone(),
            _server: server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url()).unwrap()
    }

    pub async fn publish(&self, channel: &str, data: &str) -> String {
        self.client().publish(channel, data, None).await.expect("publish").id
    }

    /// Publishes, retrying `503 unavailable` (Redis coming back) for up to [`SOON`].
    pub async fn publish_retrying(&self, channel: &str, data: &str) -> String {
        let deadline = Instant::now() + SOON;
        loop {
            match self.client().publish(channel, data, None).await {
                Ok(p) => return p.id,
                Err(e) if e.code() == Some("unavailable") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("publish {data:?} to {channel}: {e}"),
            }
        }
    }

    pub async fn status(&self, path: &str) -> (u16, Value) {
        let res = reqwest::get(format!("{}{path}", self.url())).await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Waits until `/readyz` answers `status`.
    pub async fn wait_ready(&self, status: u16, within: Duration) {
        let deadline = Instant::now() + within;
        while self.status("/readyz").await.0 != status {
            assert!(
                Instant::now() < deadline,
                "/readyz of {} never answered {status}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub async fn next_event(sub: &mut comet_client::Subscription) -> Event {
    tokio::time::timeout(SOON, sub.next())
        .await
        .expect("timed out")
        .expect("ended")
        .expect("error")
}

pub async fn next_message(sub: &mut comet_client::Subscription) -> comet_client::Envelope {
    match next_event(sub).await {
        Event::Message(env) => env,
        other => panic!("expected a message, got {other:?}"),
    }
}
