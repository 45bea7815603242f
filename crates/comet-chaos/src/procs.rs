//! Real processes on 127.0.0.1, started on free ports and stopped by PID: `redis-server` (with
//! its persistence chosen), `redis-sentinel`, and `comet serve`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a process may take to start.
const START: Duration = Duration::from_secs(10);

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A fresh scratch directory under the system's temporary directory.
pub fn scratch_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("comet-{what}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// A child process, killed (SIGKILL, by PID) when asked or dropped.
#[derive(Debug, Default)]
struct Proc(Option<Child>);

impl Proc {
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a [`RedisServer`] keeps its data across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing: a restart comes back empty.
    None,
    /// Append-only file, fsync on every write: a restart keeps everything acknowledged.
    AofAlways,
    /// Append-only file, fsync once a second: a `kill -9` may lose the last second.
    AofEverysec,
    /// RDB snapshots only (taken by [`RedisServer::snapshot`]): a restart comes back as of the
    /// last one.
    Rdb,
}

impl Persistence {
    fn args(self) -> [&'static str; 4] {
        let (aof, fsync) = match self {
            Self::None | Self::Rdb => ("no", "always"),
            Self::AofAlways => ("yes", "always"),
            Self::AofEverysec => ("yes", "everysec"),
        };
        ["--appendonly", aof, "--appendfsync", fsync]
    }
}

/// A `redis-server` child process on a fixed loopback port (kept across restarts).
#[derive(Debug)]
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its data directory.
    pub dir: PathBuf,
    /// How it keeps its data; [`set_persistence`](Self::set_persistence) changes it.
    pub persistence: Persistence,
    /// More `redis-server` arguments (e.g. `--replicaof`).
    extra: Vec<String>,
    child: Proc,
}

impl RedisServer {
    /// `durable`: [`Persistence::AofAlways`], else [`Persistence::None`].
    pub fn start(durable: bool) -> Self {
        Self::with(if durable {
            Persistence::AofAlways
        } else {
            Persistence::None
        })
    }

    /// A server keeping its data as `persistence` says.
    pub fn with(persistence: Persistence) -> Self {
        Self::with_args(persistence, &[])
    }

    /// A replica (without persistence) of the server at `master`, which may be a
    /// [`FaultProxy`](crate::proxy::FaultProxy) in front of it.
    pub fn replica_of(master: SocketAddr) -> Self {
        let port = master.port().to_string();
        Self::with_args(Persistence::None, &["--replicaof", "127.0.0.1", &port])
    }

    /// A server with more arguments.
    pub fn with_args(persistence: Persistence, extra: &[&str]) -> Self {
        Self::on_port(free_port(), persistence, extra)
    }

    /// A server on `port` with more arguments.
    pub fn on_port(port: u16, persistence: Persistence, extra: &[&str]) -> Self {
        let mut redis = Self {
            port,
            dir: scratch_dir("redis"),
            persistence,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: Proc::default(),
        };
        redis.spawn();
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(self.persistence.args())
            .args(&self.extra)
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Proc(Some(child));
        let deadline = Instant::now() + START;
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

    /// Writes an RDB snapshot now (`SAVE`); a restart under [`Persistence::Rdb`] comes back as
    /// of it.
    ///
    /// # Panics
    /// When `SAVE` fails.
    pub fn snapshot(&self) {
        assert_eq!(self.cli(&["SAVE"]).as_deref().map(str::trim), Some("OK"), "SAVE failed");
    }

    /// Switches persistence while running (`CONFIG SET`), so the next restart uses it too.
    pub fn set_persistence(&mut self, persistence: Persistence) {
        let [_, aof, _, fsync] = persistence.args();
        self.cli(&["CONFIG", "SET", "appendfsync", fsync]);
        self.cli(&["CONFIG", "SET", "appendonly", aof]);
        self.persistence = persistence;
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.0.is_some()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Starts it again on the same port and directory (killing it first if it runs).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts it again with an empty directory: it comes back with no data.
    pub fn restart_empty(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).expect("recreate the data directory");
        self.spawn();
    }

    /// From now on (and at every restart) a replica of `master`.
    pub fn set_replica_of(&mut self, master: SocketAddr) {
        self.extra = vec!["--replicaof".into(), "127.0.0.1".into(), master.port().to_string()];
        self.cli(&["REPLICAOF", "127.0.0.1", &master.port().to_string()]);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.child.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster on 127.0.0.1: `masters` masters with `replicas` replicas each (Redis 7,
/// `redis-cli --cluster create`), quick to fail over (`cluster-node-timeout` 1 s); every server
/// stopped by PID when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    /// Every server, masters first as created (a failover changes who is master).
    pub servers: Vec<RedisServer>,
}

/// A port whose cluster bus port (the port + 10,000) is free too.
fn cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
        let low = 20_000 + (rand::random::<u16>() % 30_000);
        if std::net::TcpListener::bind(("127.0.0.1", low)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", low + 10_000)).is_ok()
        {
            return low;
        }
    }
    panic!("no free port pair for a cluster node");
}

impl RedisCluster {
    /// Starts the servers, joins them into a cluster and waits until every node says
    /// `cluster_state:ok`.
    ///
    /// # Panics
    /// When a server does not start or the cluster does not form within 30 s.
    pub fn start(masters: usize, replicas: usize) -> Self {
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1000",
            // A replica syncs at once (not after the default 5 s), so it can take over.
            "--repl-diskless-sync-delay",
            "0",
        ];
        let servers: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| RedisServer::on_port(cluster_port(), Persistence::None, &args))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(servers.iter().map(|s| format!("127.0.0.1:{}", s.port)))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { servers };
        cluster.wait_ok(Duration::from_secs(30));
        cluster
    }

    /// Waits until every running server says `cluster_state:ok`, and every replica has synced
    /// with its master (else it could not take over).
    ///
    /// # Panics
    /// After `limit`.
    pub fn wait_ok(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let ok = self.servers.iter().filter(|s| s.is_running()).all(|s| {
                s.cli(&["CLUSTER", "INFO"])
                    .is_some_and(|i| i.contains("cluster_state:ok"))
                    && s.cli(&["INFO", "replication"])
                        .is_some_and(|i| i.contains("role:master") || i.contains("master_link_status:up"))
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis+cluster://` with every master's address as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.servers.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The index in [`servers`](Self::servers) of the master that owns `key`'s slot now.
    pub fn master_of(&self, key: &str) -> Option<usize> {
        let any = self.servers.iter().find(|s| s.is_running())?;
        let slot: u16 = any.cli(&["CLUSTER", "KEYSLOT", key])?.trim().parse().ok()?;
        let nodes = any.cli(&["CLUSTER", "NODES"])?;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let owns = fields[8..].iter().any(|range| match range.split_once('-') {
                Some((a, b)) => a.parse::<u16>().ok() <= Some(slot) && Some(slot) <= b.parse::<u16>().ok(),
                None => range.parse::<u16>().ok() == Some(slot),
            });
            if owns {
                let port: u16 = fields[1].split('@').next()?.rsplit_once(':')?.1.parse().ok()?;
                return self.servers.iter().position(|s| s.port == port);
            }
        }
        None
    }

    /// Waits until a running server other than `old` owns `key`'s slot as its master.
    ///
    /// # Panics
    /// After `limit`.
    pub fn wait_failover(&self, key: &str, old: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(new) = self
                .master_of(key)
                .filter(|&i| i != old && self.servers[i].is_running())
            {
                return new;
            }
            if Instant::now() > deadline {
                let nodes = self
                    .servers
                    .iter()
                    .find(|s| s.is_running())
                    .and_then(|s| s.cli(&["CLUSTER", "NODES"]));
                panic!(
                    "no replica took over {key}'s slot; CLUSTER NODES:\n{}",
                    nodes.unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `redis-sentinel` processes watching one master as `mymaster` (quorum: a majority), quick to
/// fail over: a master unreachable for 1 s is down.
#[derive(Debug)]
pub struct Sentinels {
    /// Their ports on 127.0.0.1.
    pub ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Proc>,
}

impl Sentinels {
    /// `count` sentinels watching `master`.
    pub fn start(count: usize, master: &RedisServer) -> Self {
        let mut sentinels = Self {
            ports: Vec::new(),
            dir: scratch_dir("sentinels"),
            children: Vec::new(),
        };
        let quorum = count / 2 + 1;
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
            .expect("write a sentinel configuration");
            let child = Command::new("redis-sentinel")
                .arg(&file)
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-sentinel must be installed (scripts/test installs it)");
            sentinels.children.push(Proc(Some(child)));
            sentinels.ports.push(port);
        }
        let deadline = Instant::now() + START;
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

    fn ask(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.ports[0].to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The port of the master the sentinels name now.
    pub fn master_port(&self) -> Option<u16> {
        self.ask(&["SENTINEL", "get-master-addr-by-name", "mymaster"])
            .lines()
            .nth(1)?
            .trim()
            .parse()
            .ok()
    }

    /// Whether the sentinels know a replica on `port` that is up.
    pub fn knows_replica(&self, port: u16) -> bool {
        let replicas = self.ask(&["SENTINEL", "replicas", "mymaster"]);
        let mut lines = replicas.lines().map(str::trim);
        let mut found = false;
        let mut down = false;
        // A flat list of field/value pairs per replica: find the one with our port.
        while let Some(field) = lines.next() {
            let value = lines.next().unwrap_or("");
            match field {
                "name" => {
                    if found {
                        break;
                    }
                    found = value.ends_with(&format!(":{port}"));
                }
                "flags" if found => down = value.contains("down") || value.contains("disconnected"),
                _ => {}
            }
        }
        found && !down
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        self.children.clear(); // each killed as it is dropped
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `comet serve` process on a fixed port, configured by a TOML file of its own.
#[derive(Debug)]
pub struct CometNode {
    /// Its port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Proc,
}

impl CometNode {
    /// Starts `bin serve` with `broker` and the settings in `toml` (lines of `key = value`),
    /// and waits until it answers `/healthz`. Its log goes to `dir/comet-PORT.log`.
    pub fn start(bin: &Path, dir: &Path, broker: &str, toml: &str) -> Self {
        let port = free_port();
        let config = dir.join(format!("comet-{port}.toml"));
        std::fs::write(
            &config,
            format!("listen = \"127.0.0.1:{port}\"\nbroker = \"{broker}\"\n{toml}\n"),
        )
        .expect("write the node's configuration");
        let mut node = Self {
            port,
            bin: bin.to_owned(),
            log: dir.join(format!("comet-{port}.log")),
            config,
            child: Proc::default(),
        };
        node.spawn();
        node
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the node's log");
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Proc(Some(child));
        let deadline = Instant::now() + START;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "comet serve did not start; see {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.child.kill();
        self.spawn();
    }
}
