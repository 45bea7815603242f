//! Comet's chaos suite (docs/chaos.md): real `redis-server`, replica and `redis-sentinel`
//! processes, several `comet serve` processes, a TCP fault proxy between each node and Redis,
//! publishers that retry with idempotency keys, subscribers on all six transports that move
//! between nodes with their cursors, and faults on a seeded schedule. At the end an invariant
//! checker ([`check`]) reads every subscriber's log.
//!
//! `scripts/test` runs the short form (about a minute, `crates/comet/tests/chaos.rs`); a person
//! runs the long one: `cargo build --release -p comet -p comet-chaos &&
//! target/release/comet-chaos --seconds 600 --seed 7`.

pub mod check;
pub mod procs;
pub mod proxy;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::check::{Log, Verdict};
use crate::procs::{CometNode, Persistence, RedisServer, Sentinels, scratch_dir};
use crate::proxy::FaultProxy;
use crate::workload::Shared;

/// The clusters a run goes through, one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Three nodes on one Redis, each through a fault proxy: node, Redis and link faults.
    Redis,
    /// Two nodes on Redis Sentinel (a master, a replica, three sentinels): failovers to a
    /// replica that lags, and node faults.
    Sentinel,
    /// One node on the memory broker with a 1 s history, so its sweep forgets channels between
    /// publishes: the sweep racing publishes, and the node killed.
    Memory,
    /// One node on the memory broker with its history on disk (`data_dir`, `fsync = "batch"`):
    /// the node killed and restarted on the same file loses nothing, so every resume must be
    /// gapless.
    Durable,
}

impl Scenario {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Sentinel => "sentinel",
            Self::Memory => "memory",
            Self::Durable => "durable",
        }
    }

    /// Its share of the run's time.
    fn share(self) -> f64 {
        match self {
            Self::Redis => 0.55,
            Self::Sentinel => 0.30,
            Self::Memory => 0.15,
            Self::Durable => 0.15,
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "redis" => Ok(Self::Redis),
            "sentinel" => Ok(Self::Sentinel),
            "memory" => Ok(Self::Memory),
            "durable" => Ok(Self::Durable),
            _ => Err(format!("unknown scenario {s:?}: redis, sentinel, memory or durable")),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The whole run's length (shared by the scenarios), faults included.
    pub seconds: u64,
    /// Seeds the schedule of faults and every client's choices.
    pub seed: u64,
    /// The `comet` binary to start nodes with.
    pub comet: PathBuf,
    /// The scenarios, in order.
    pub scenarios: Vec<Scenario>,
}

/// One scenario's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Which.
    pub scenario: Scenario,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u32>,
    /// Publishes acknowledged.
    pub acknowledged: u64,
    /// Publishes given up on unacknowledged (outcome unknown).
    pub unacknowledged: u64,
    /// Publishes refused with a non-transient error (should be none).
    pub refused: Vec<String>,
    /// What the checker found.
    pub verdict: Verdict,
    /// What the first violations looked like.
    pub examples: Vec<String>,
}

impl Outcome {
    /// Whether the promise held (and no publish was refused).
    pub fn holds(&self) -> bool {
        self.verdict.holds() && self.refused.is_empty()
    }
}

/// Runs every scenario of `opts`, in order.
///
/// # Errors
/// When a process cannot be started or a scenario cannot be set up.
pub async fn run(opts: &Options) -> anyhow::Result<Vec<Outcome>> {
    let total: f64 = opts.scenarios.iter().map(|s| s.share()).sum();
    let mut out = Vec::new();
    for (i, scenario) in opts.scenarios.iter().enumerate() {
        let seconds = (opts.seconds as f64 * scenario.share() / total).max(5.0);
        let seed = opts.seed.wrapping_mul(31).wrapping_add(i as u64);
        out.push(run_scenario(*scenario, Duration::from_secs_f64(seconds), seed, &opts.comet).await?);
    }
    Ok(out)
}

/// The table the long form prints.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| scenario | faults injected | acknowledged | delivered | lost silently | duplicated | reordered | false gaps | true gaps | precautionary gaps | unacknowledged |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for o in outcomes {
        let faults: Vec<String> = o.faults.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        let v = &o.verdict;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            o.scenario.name(),
            faults.join(", "),
            o.acknowledged,
            v.delivered,
            v.lost_silently,
            v.duplicated,
            v.reordered,
            v.false_gaps,
            v.true_gaps,
            v.precautionary_gaps,
            o.unacknowledged,
        );
    }
    s
}

/// The processes of one scenario.
struct Cluster {
    nodes: Vec<Arc<Mutex<CometNode>>>,
    urls: Vec<String>,
    redis: Option<Arc<Mutex<RedisServer>>>,
    /// Sentinel scenario: the server that is replica now, and the proxy it replicates through.
    replica: Option<(Arc<Mutex<RedisServer>>, FaultProxy)>,
    sentinels: Option<Sentinels>,
    proxies: Vec<FaultProxy>,
    _dir: TempDir,
}

/// A scratch directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const NODE_SETTINGS: &str = "history_size = 5000\nmax_connections_per_ip = 0\nmax_longpolls_per_ip = 0\n\
                             subscribes_per_sec_per_ip = 0\npublishes_per_sec = 0\n";

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("a blocking step panicked")
}

impl Cluster {
    async fn start(scenario: Scenario, bin: &std::path::Path) -> anyhow::Result<Self> {
        let dir = scratch_dir("chaos");
        let bin = bin.to_owned();
        let mut cluster = Self {
            nodes: Vec::new(),
            urls: Vec::new(),
            redis: None,
            replica: None,
            sentinels: None,
            proxies: Vec::new(),
            _dir: TempDir(dir.clone()),
        };
        let mut brokers = Vec::new();
        match scenario {
            Scenario::Redis => {
                let redis = blocking(|| RedisServer::with(Persistence::AofAlways)).await;
                for _ in 0..3 {
                    let proxy = FaultProxy::start(redis.addr()).await;
                    brokers.push(proxy.redis_url());
                    cluster.proxies.push(proxy);
                }
                cluster.redis = Some(Arc::new(Mutex::new(redis)));
            }
            Scenario::Sentinel => {
                let master = blocking(|| RedisServer::with(Persistence::AofAlways)).await;
                let link = FaultProxy::start(master.addr()).await;
                let addr = link.addr;
                let replica = blocking(move || RedisServer::replica_of(addr)).await;
                wait_for("the replica to sync", Duration::from_secs(20), || {
                    replica
                        .cli(&["INFO", "replication"])
                        .is_some_and(|i| i.contains("master_link_status:up"))
                })
                .await?;
                let master = Arc::new(Mutex::new(master));
                let sentinels = {
                    let master = Arc::clone(&master);
                    blocking(move || Sentinels::start(3, &master.lock().unwrap())).await
                };
                let port = replica.port;
                wait_for("the sentinels to see the replica", Duration::from_secs(20), || {
                    sentinels.knows_replica(port)
                })
                .await?;
                brokers = vec![sentinels.url(); 2];
                cluster.redis = Some(master);
                cluster.replica = Some((Arc::new(Mutex::new(replica)), link));
                cluster.sentinels = Some(sentinels);
            }
            Scenario::Memory | Scenario::Durable => brokers.push("memory".to_owned()),
        }
        let settings = match scenario {
            Scenario::Memory => format!("{NODE_SETTINGS}history_ttl_secs = 1\n"),
            Scenario::Durable => format!("{NODE_SETTINGS}data_dir = {:?}\n", dir.join("data")),
            _ => NODE_SETTINGS.to_owned(),
        };
        for broker in brokers {
            let (bin, path, settings) = (bin.clone(), dir.clone(), settings.clone());
            let node = blocking(move || CometNode::start(&bin, &path, &broker, &settings)).await;
            cluster.urls.push(node.url());
            cluster.nodes.push(Arc::new(Mutex::new(node)));
        }
        for url in &cluster.urls {
            let url = format!("{url}/readyz");
            wait_for_async("every node to be ready", Duration::from_secs(20), || {
                let url = url.clone();
                async move { reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) }
            })
            .await?;
        }
        Ok(cluster)
    }
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn wait_for_async<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> F,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done().await {
        if Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A fault; `true` when Redis may have lost acknowledged data.
async fn inject(
    scenario: Scenario,
    cluster: &mut Cluster,
    rng: &mut StdRng,
    data_losses: &mut Vec<Instant>,
) -> anyhow::Result<&'static str> {
    let kinds: &[&'static str] = match scenario {
        Scenario::Redis => &[
            "kill -9 node",
            "kill -9 redis (appendfsync always)",
            "kill -9 redis (appendfsync everysec)",
            "kill -9 redis (rdb)",
            "redis restarted empty",
            "link blackholed",
            "link reset",
            "link delayed",
            "link half-closed",
        ],
        Scenario::Sentinel => &["replica promoted", "kill -9 node", "link blackholed"],
        Scenario::Memory => &["kill -9 node"],
        Scenario::Durable => &["kill -9 node (durable history)"],
    };
    let kind = kinds[rng.random_range(0..kinds.len())];
    match kind {
        "kill -9 node" | "kill -9 node (durable history)" => {
            let node = Arc::clone(&cluster.nodes[rng.random_range(0..cluster.nodes.len())]);
            if scenario == Scenario::Memory {
                data_losses.push(Instant::now()); // the memory broker's history is gone
            }
            let pause = Duration::from_millis(rng.random_range(500..2_000));
            blocking(move || {
                node.lock().unwrap().kill();
                std::thread::sleep(pause);
                node.lock().unwrap().restart();
            })
            .await;
        }
        "kill -9 redis (appendfsync always)" | "kill -9 redis (appendfsync everysec)" | "kill -9 redis (rdb)" => {
            let redis = Arc::clone(cluster.redis.as_ref().expect("a redis"));
            let persistence = match kind {
                "kill -9 redis (appendfsync always)" => Persistence::AofAlways,
                "kill -9 redis (appendfsync everysec)" => Persistence::AofEverysec,
                _ => Persistence::Rdb,
            };
            {
                let redis = Arc::clone(&redis);
                blocking(move || redis.lock().unwrap().set_persistence(persistence)).await;
            }
            // The nodes read appendfsync every 5 s; publishing goes on meanwhile.
            tokio::time::sleep(Duration::from_secs(6)).await;
            if persistence == Persistence::Rdb {
                let redis = Arc::clone(&redis);
                blocking(move || redis.lock().unwrap().snapshot()).await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(300..1_500))).await;
            }
            if persistence != Persistence::AofAlways {
                data_losses.push(Instant::now());
            }
            blocking(move || {
                let mut redis = redis.lock().unwrap();
                redis.restart();
                redis.set_persistence(Persistence::AofAlways);
            })
            .await;
        }
        "redis restarted empty" => {
            let redis = Arc::clone(cluster.redis.as_ref().expect("a redis"));
            data_losses.push(Instant::now());
            blocking(move || redis.lock().unwrap().restart_empty()).await;
        }
        "link blackholed" | "link reset" | "link delayed" | "link half-closed" => {
            if cluster.proxies.is_empty() {
                // Sentinel: the replica's link to its master goes silent (it lags).
                if let Some((_, link)) = &cluster.replica {
                    link.blackhole_existing();
                }
                return Ok(kind);
            }
            let proxy = &cluster.proxies[rng.random_range(0..cluster.proxies.len())];
            match kind {
                "link blackholed" => proxy.blackhole_existing(),
                "link reset" => proxy.reset_all(),
                "link half-closed" => proxy.half_close_all(),
                _ => {
                    proxy.set_delay(Duration::from_millis(250));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    proxy.set_delay(Duration::ZERO);
                }
            }
        }
        "replica promoted" => failover(cluster, data_losses).await?,
        _ => unreachable!("every kind is handled"),
    }
    Ok(kind)
}

/// Kills the master; waits for the sentinels to promote the replica; brings the old master
/// back as the new one's replica, through a new proxy.
async fn failover(cluster: &mut Cluster, data_losses: &mut Vec<Instant>) -> anyhow::Result<()> {
    let (Some(master), Some((replica, _)), Some(sentinels)) = (
        cluster.redis.clone(),
        cluster.replica.as_ref(),
        cluster.sentinels.as_ref(),
    ) else {
        anyhow::bail!("no sentinel cluster");
    };
    let replica = Arc::clone(replica);
    let replica_port = replica.lock().unwrap().port;
    data_losses.push(Instant::now());
    {
        let master = Arc::clone(&master);
        blocking(move || master.lock().unwrap().kill()).await;
    }
    wait_for("the sentinels to promote the replica", Duration::from_secs(30), || {
        sentinels.master_port() == Some(replica_port)
    })
    .await?;
    let new_master = replica.lock().unwrap().addr();
    let link = FaultProxy::start(new_master).await;
    let addr = link.addr;
    let old_port = {
        let master = Arc::clone(&master);
        blocking(move || {
            let mut old = master.lock().unwrap();
            old.set_replica_of(addr);
            old.restart();
            old.port
        })
        .await
    };
    wait_for("the old master to rejoin as a replica", Duration::from_secs(30), || {
        sentinels.knows_replica(old_port)
    })
    .await?;
    cluster.redis = Some(replica);
    cluster.replica = Some((master, link));
    Ok(())
}

async fn run_scenario(
    scenario: Scenario,
    length: Duration,
    seed: u64,
    bin: &std::path::Path,
) -> anyhow::Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(scenario, bin).await?;
    let origin = Instant::now();
    let mut schedule = Vec::new();
    let shared = Arc::new(Shared::default());
    let channels: Vec<String> = ["chaos:a", "chaos:b", "chaos:c"].map(str::to_owned).to_vec();
    let mut logs = Vec::new();
    let mut subscribers = Vec::new();
    for (i, transport) in workload::transports().into_iter().cycle().take(12).enumerate() {
        let mine: Vec<String> = if i % 3 == 0 {
            channels.clone()
        } else {
            vec![channels[i % channels.len()].clone()]
        };
        let log = Arc::new(Mutex::new(Log {
            channels: mine.clone(),
            label: format!("{transport:?}"),
            ..Log::default()
        }));
        logs.push(Arc::clone(&log));
        subscribers.push(tokio::spawn(workload::subscriber(
            rng.random(),
            cluster.urls.clone(),
            mine,
            transport,
            Arc::clone(&shared),
            log,
        )));
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // subscribed from `earliest` anyway
    let interval = match scenario {
        Scenario::Memory => Duration::from_millis(400), // slower than the 1 s history: swept
        _ => Duration::from_millis(60),
    };
    let publishers: Vec<_> = (0..3)
        .map(|id| {
            tokio::spawn(workload::publisher(
                id,
                rng.random(),
                cluster.urls.clone(),
                channels.clone(),
                interval,
                Arc::clone(&shared),
            ))
        })
        .collect();
    let mut faults: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut data_losses = Vec::new();
    let end = Instant::now() + length;
    loop {
        let pause = Duration::from_millis(rng.random_range(1_500..4_000));
        if Instant::now() + pause >= end {
            break;
        }
        tokio::time::sleep(pause).await;
        let at = origin.elapsed().as_secs_f64();
        let kind = inject(scenario, &mut cluster, &mut rng, &mut data_losses).await?;
        *faults.entry(kind).or_default() += 1;
        schedule.push(format!("{kind} at {at:.2}s"));
    }
    if scenario == Scenario::Memory {
        // The node sweeps every 5 s: each sweep that forgot channels raced the publishes.
        *faults.entry("memory broker sweep").or_default() += (length.as_secs() / 5) as u32;
    }
    tokio::time::sleep(end.saturating_duration_since(Instant::now())).await;
    shared.stop_publishing.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await?;
    }
    // Settle: until every subscriber has the last message of its channels, or nothing arrives.
    let settle_until = Instant::now() + Duration::from_secs(30);
    let mut quiet_since = (Instant::now(), total_entries(&logs));
    while Instant::now() < settle_until && !workload::caught_up(&shared, &logs) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = total_entries(&logs);
        if n != quiet_since.1 {
            quiet_since = (Instant::now(), n);
        } else if quiet_since.0.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    shared.stop_subscribing.store(true, Ordering::Relaxed);
    for s in subscribers {
        s.await?;
    }
    let acks = shared.acks.lock().unwrap().clone();
    let logs: Vec<Log> = logs.iter().map(|l| l.lock().unwrap().clone()).collect();
    if let Ok(dir) = std::env::var("COMET_CHAOS_DUMP") {
        dump(&dir, scenario, origin, &acks, &logs, &schedule);
    }
    let mut examples = Vec::new();
    let verdict = check::check_explained(&acks, &logs, &data_losses, origin, &mut examples);
    if !examples.is_empty() {
        examples.push(format!("faults: {}", schedule.join(", ")));
    }
    let refused = shared.refused.lock().unwrap().clone();
    drop(cluster);
    Ok(Outcome {
        scenario,
        faults,
        acknowledged: acks.values().map(|a| a.len() as u64).sum(),
        unacknowledged: shared.unacknowledged.load(Ordering::Relaxed),
        refused,
        verdict,
        examples,
    })
}

fn total_entries(logs: &[Arc<Mutex<Log>>]) -> usize {
    logs.iter().map(|l| l.lock().unwrap().entries.len()).sum()
}

/// Writes every log and the acknowledgements as text under `dir` (`COMET_CHAOS_DUMP=dir`), to
/// look into a violation.
fn dump(
    dir: &str,
    scenario: Scenario,
    origin: Instant,
    acks: &std::collections::HashMap<String, Vec<check::Ack>>,
    logs: &[Log],
    schedule: &[String],
) {
    let dir = std::path::Path::new(dir).join(scenario.name());
    let _ = std::fs::create_dir_all(&dir);
    let t = |at: Instant| at.saturating_duration_since(origin).as_secs_f64();
    let mut out = schedule.join("\n");
    for (channel, list) in acks {
        for a in list {
            let _ = writeln!(out, "{:.3} ack {channel} {} {}", t(a.at), a.data, a.cursor);
        }
    }
    let _ = std::fs::write(dir.join("acks.txt"), out);
    for (i, log) in logs.iter().enumerate() {
        let mut out = format!("{} {:?}\n", log.label, log.channels);
        for (at, e) in &log.entries {
            let _ = match e {
                check::Entry::Message { channel, data, cursor } => {
                    writeln!(out, "{:.3} msg {channel} {data} {cursor}", t(*at))
                }
                check::Entry::Gap { channel } => writeln!(out, "{:.3} gap {channel}", t(*at)),
                check::Entry::Connect { url, since } => writeln!(out, "{:.3} connect {url} since {since}", t(*at)),
            };
        }
        let _ = std::fs::write(dir.join(format!("sub-{i}.txt")), out);
    }
}
