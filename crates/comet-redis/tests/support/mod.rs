//! Real parts for the multi-node tests: a `redis-server` child on a free loopback port (stopped
//! by PID), in-process comet nodes on the Redis broker, and a TCP fault proxy.

#![allow(dead_code, unreachable_pub)]

pub mod proxy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use comet_client::{Client, Event};
use comet_redis::{RedisBroker, RedisConfig};
use comet_server::{AppState, Config};
use serde_json::Value;

pub const SOON: Duration = Duration::from_secs(10);

/// How a [`Redis`] keeps its data across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing: a restart comes back empty.
    None,
    /// Append-only file, fsync on every write: a restart keeps everything acknowledged.
    AofAlways,
    /// Append-only file, fsync once a second: a `kill -9` may lose the last second.
    AofEverysec,
    /// RDB snapshots only (taken by [`Redis::snapshot`]): a restart comes back as of the last one.
    Rdb,
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` child process on a free loopback port.
pub struct Redis {
    pub port: u16,
    pub dir: PathBuf,
    pub persistence: Persistence,
    /// More `redis-server` arguments (e.g. `--replicaof`).
    extra: Vec<String>,
    child: Option<Child>,
}

impl Redis {
    /// `durable`: append-only file with fsync on every write, so a restart keeps everything.
    pub fn start(durable: bool) -> Self {
        Self::with(if durable {
            Persistence::AofAlways
        } else {
            Persistence::None
        })
    }

    pub fn with(persistence: Persistence) -> Self {
        Self::with_args(persistence, &[])
    }

    /// A replica of the server at `master` (which may be a [`proxy::FaultProxy`] in front of it).
    pub fn replica_of(master: SocketAddr) -> Self {
        let port = master.port().to_string();
        Self::with_args(Persistence::None, &["--replicaof", "127.0.0.1", &port])
    }

    pub fn with_args(persistence: Persistence, extra: &[&str]) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("comet-redis-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self {
            port,
            dir,
            persistence,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        };
        redis.spawn();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn spawn(&mut self) {
        let (aof, fsync) = match self.persistence {
            Persistence::None | Persistence::Rdb => ("no", "always"),
            Persistence::AofAlways => ("yes", "always"),
            Persistence::AofEverysec => ("yes", "everysec"),
        };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", aof, "--appendfsync", fsync])
            .args(&self.extra)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + SOON;
        loop {
            assert!(Instant::now() < deadline, "redis-server did not start");
            // Up and done loading its data: PING answers PONG (LOADING while it loads).
            if self.cli(&["PING"]).is_some_and(|out| out.trim() == "PONG") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `redis-cli` against this server; its output, or `None` when it failed.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes an RDB snapshot now (`SAVE`); a restart of an [`Persistence::Rdb`] server comes
    /// back as of it.
    pub fn snapshot(&self) {
        assert_eq!(self.cli(&["SAVE"]).as_deref().map(str::trim), Some("OK"), "SAVE failed");
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-sentinel` processes watching one master as `mymaster` (quorum: a majority), quick to
/// fail over: a master unreachable for 1 s is down.
pub struct Sentinels {
    pub ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Sentinels {
    pub fn start(count: usize, master: &Redis) -> Self {
        let dir = std::env::temp_dir().join(format!("comet-sentinels-{}-{}", std::process::id(), master.port));
        std::fs::create_dir_all(&dir).unwrap();
        let quorum = count / 2 + 1;
        let mut sentinels = Self {
            ports: Vec::new(),
            dir,
            children: Vec::new(),
        };
        for _ in 0..count {
            let port = free_port();
            // Sentinel rewrites its configuration file: one writable file each.
            let file = sentinels.dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &file,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor mymaster 127.0.0.1 {master} {quorum}\n\
                     sentinel down-after-milliseconds mymaster 1000\n\
                     sentinel failover-timeout mymaster 5000\n\
                     sentinel parallel-syncs mymaster 1\n",
                    dir = sentinels.dir.display(),
                    master = master.port,
                ),
            )
            .unwrap();
            let child = Command::new("redis-sentinel")
                .arg(&file)
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-sentinel must be installed (scripts/test installs it)");
            sentinels.children.push(child);
            sentinels.ports.push(port);
        }
        let deadline = Instant::now() + SOON;
        for port in &sentinels.ports {
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(Instant::now() < deadline, "redis-sentinel did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        sentinels
    }

    /// The broker URL: `redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,…/mymaster`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+sentinel://{}/mymaster", hosts.join(","))
    }

    /// The port of the master the sentinels name now.
    pub fn master_port(&self) -> Option<u16> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.ports[0].to_string()])
            .args(["SENTINEL", "get-master-addr-by-name", "mymaster"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().nth(1)?.trim().parse().ok()
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The settings of a test node: no per-client limits (one test process stands for a thousand
/// clients), a deep history.
pub fn node_config() -> Config {
    Config {
        history_size: 1000,
        max_connections_per_ip: 0,
        subscribes_per_sec_per_ip: 0,
        publishes_per_sec: 0,
        ..Config::default()
    }
}

/// An in-process comet node on a free port, using the Redis broker.
pub struct Node {
    pub addr: SocketAddr,
    pub state: AppState,
}

impl Node {
    pub async fn start(redis: &Redis) -> Self {
        Self::start_at(&redis.url(), node_config()).await
    }

    /// A node on the Redis at `url` (e.g. through a [`proxy::FaultProxy`]).
    pub async fn start_at(url: &str, config: Config) -> Self {
        let broker = RedisBroker::connect(RedisConfig::new(url, config.hub_config()))
            .await
            .expect("connect");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AppState::new(Arc::new(broker), config);
        tokio::spawn(comet_server::serve(listener, state.clone()));
        Node { addr, state }
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

impl Drop for Node {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
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
